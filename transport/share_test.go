package transport_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/testcluster"
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

// After the leader dies, the new leader already holds fresh reports of
// every server connected to a surviving agent (shared by every agent, not
// only forwarded to the old leader), and of the rest once they reconnect.
// Progress is asserted; the times are logged.
func TestNewLeaderHasFleetViewAtTakeover(t *testing.T) {
	c := newCluster(t, 3, 0, nil)
	leader := leaderNode(t, c)
	nodes := c.Running()
	const servers = 12
	var reps []*reporter
	home := map[string]string{} // server -> agent it reports to first
	for i := 0; i < servers; i++ {
		id := fmt.Sprintf("m%d", i)
		nd := nodes[i%len(nodes)]
		addrs := []string{nd.Cfg.QUICAddr}
		for _, o := range nodes {
			if o != nd {
				addrs = append(addrs, o.Cfg.QUICAddr)
			}
		}
		cl := newClient(t, c, id, addrs...)
		register(t, cl, id, 10, 1)
		home[id] = nd.ID
		reps = append(reps, startReporter(cl, 50*time.Millisecond, func() transport.Load { return transport.Load{CPU: 0.1} }))
	}
	defer func() {
		for _, r := range reps {
			r.Stop()
		}
	}()
	for i := 0; i < servers; i++ {
		for _, nd := range nodes {
			waitView(t, nd, fmt.Sprintf("m%d", i), 2)
		}
	}
	killed := time.Now()
	c.Kill(leader)
	next := leaderNode(t, c)
	ready := time.Since(killed)
	fresh := func(id string) bool {
		e, ok := next.Agent.Loads.Get(id)
		return ok && e.Received.After(killed)
	}
	var atTakeover, survivors int
	for i := 0; i < servers; i++ {
		id := fmt.Sprintf("m%d", i)
		if home[id] != leader.ID {
			survivors++
			if fresh(id) {
				atTakeover++
			}
		}
	}
	testcluster.Eventually(t, pollTimeout, func() error {
		for i := 0; i < servers; i++ {
			if id := fmt.Sprintf("m%d", i); !fresh(id) {
				return fmt.Errorf("new leader %s has no report of %s (first connected to %s) since the kill", next.ID, id, home[id])
			}
		}
		return nil
	})
	t.Logf("new leader %s ready %v after the kill with fresh reports of %d/%d servers on surviving agents; all %d fresh after %v",
		next.ID, ready.Round(time.Millisecond), atTakeover, survivors, servers, time.Since(killed).Round(time.Millisecond))
}
