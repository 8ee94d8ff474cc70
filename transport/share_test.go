package transport_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/transport"
)

// Every agent keeps the whole fleet's latest reports: a media node
// connected to one follower is seen, with its latest sequence numbers, by
// the other follower too (which would place on it at once if it became
// the leader), and by the leader.
func TestReportsReachEveryAgent(t *testing.T) {
	c := newCluster(t, 3, 0, nil)
	leader := leaderNode(t, c)
	fs := c.Followers()
	cl := newClient(t, c, "m1", fs[0].Cfg.QUICAddr)
	register(t, cl, "m1", 10, 1)
	var n atomic.Int64
	r := startReporter(cl, 20*time.Millisecond, func() transport.Load {
		return transport.Load{CPU: 0.5, Peers: n.Add(1)}
	})
	defer r.Stop()
	waitView(t, fs[0], "m1", 3)
	waitView(t, leader, "m1", 3)
	waitView(t, fs[1], "m1", 3)
	// And they keep coming (not a one-off).
	e, _ := fs[1].Agent.Loads.Get("m1")
	waitView(t, fs[1], "m1", e.Report.GetSeq()+3)
	if l, ok := fs[1].Agent.Loads.Load("m1"); !ok || l.CPU != 0.5 {
		t.Fatalf("other follower's load for m1: %+v ok=%v", l, ok)
	}
}
