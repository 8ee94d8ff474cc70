package quicapi_test

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/transport"
)

// forwarded reads one direction of an agent's shared-report counter.
func forwarded(nd *testcluster.Node, dir string) float64 {
	return testutil.ToFloat64(nd.Agent.QUIC.Metrics().Forwarded.WithLabelValues(dir))
}

// Every agent keeps the whole fleet's latest reports: a media node
// connected to one follower is seen, with its latest sequence numbers, by
// the other follower too (which would place on it at once if it became the
// leader) and by the leader; one connected to the leader is seen by both
// followers. An agent shares only what its own media nodes send: the
// follower without media nodes receives shared reports and sends none.
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
	cl2 := newClient(t, c, "m2", leader.Cfg.QUICAddr)
	register(t, cl2, "m2", 10, 1)
	r2 := startReporter(cl2, 20*time.Millisecond, func() transport.Load { return transport.Load{CPU: 0.75} })
	defer r2.Stop()

	for _, nd := range []*testcluster.Node{fs[0], leader, fs[1]} {
		waitView(t, nd, "m1", 3)
		waitView(t, nd, "m2", 3)
	}
	// And they keep coming (not a one-off), to both followers.
	for _, nd := range fs {
		for _, id := range []string{"m1", "m2"} {
			e, _ := nd.Agent.Loads.Get(id)
			waitView(t, nd, id, e.Seq+3)
		}
	}
	if l, ok := fs[1].Agent.Loads.Load("m1"); !ok || l.CPU != 0.5 {
		t.Fatalf("other follower's load for m1: %+v ok=%v", l, ok)
	}
	if l, ok := fs[1].Agent.Loads.Load("m2"); !ok || l.CPU != 0.75 {
		t.Fatalf("follower's load for m2 (on the leader): %+v ok=%v", l, ok)
	}
	if got := forwarded(fs[1], "received"); got == 0 {
		t.Fatal("the follower without media nodes counted no received reports")
	}
	if got := forwarded(fs[1], "sent"); got != 0 {
		t.Fatalf("the follower without media nodes sent %v reports: shared reports were shared again", got)
	}
}

// A dead agent holds up nobody: with one follower stopped (still a member,
// so the others keep trying to reach it), reports of a media node on the
// leader keep reaching the surviving follower, and those of one on the
// surviving follower keep reaching the leader.
func TestDeadAgentHoldsUpNobody(t *testing.T) {
	c := newCluster(t, 3, 0, nil)
	leader := leaderNode(t, c)
	fs := c.Followers()
	live, dead := fs[0], fs[1]
	c.Stop(dead)
	onLeader := newClient(t, c, "m1", leader.Cfg.QUICAddr)
	register(t, onLeader, "m1", 10, 1)
	onFollower := newClient(t, c, "m2", live.Cfg.QUICAddr)
	register(t, onFollower, "m2", 10, 1)
	for _, cl := range []*transport.Client{onLeader, onFollower} {
		r := startReporter(cl, 20*time.Millisecond, func() transport.Load { return transport.Load{} })
		defer r.Stop()
	}
	// Many report intervals, each dial to the dead agent running into its
	// timeout meanwhile.
	for _, step := range []uint64{3, 30, 60} {
		waitView(t, live, "m1", step)
		waitView(t, leader, "m2", step)
	}
}

// The figure of the shared view: the time from the leader's death until
// the new leader's view holds, for every reporting server, a report younger
// than two report intervals (received before or after the death), and
// holds one from then on. Servers connected to the dead leader fail over
// to a survivor meanwhile. The test asserts that the new leader's view
// ends up fresh for every server; the figures are logged (run with -v and
// -count=N for a distribution), never asserted.
func TestNewLeaderViewAtTakeover(t *testing.T) {
	// Media nodes report every 500 ms in production. Two intervals leave
	// room for one late tick of a reporter on a loaded machine; shorter
	// intervals make the reporters' own late ticks (not the view) look
	// like stale reports, even of servers on the new leader itself.
	const (
		servers  = 12
		interval = 500 * time.Millisecond
		fresh    = 2 * interval
	)
	c := newCluster(t, 3, 0, nil)
	leader := leaderNode(t, c)
	nodes := c.Running()
	home := map[string]string{} // server -> agent it reports to first
	var ids []string
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
		home[id], ids = nd.ID, append(ids, id)
		r := startReporter(cl, interval, func() transport.Load { return transport.Load{CPU: 0.1} })
		defer r.Stop()
	}
	// Only the leader's view is waited for, so that the same test measures
	// a cluster where followers forward to the leader alone (the survivors'
	// views then lack each other's servers).
	for _, id := range ids {
		waitView(t, leader, id, 3)
	}
	survivors := slices.DeleteFunc(slices.Clone(nodes), func(nd *testcluster.Node) bool { return nd == leader })
	// covered reports whether nd's view holds a report younger than fresh
	// of every server at now, and otherwise the first server it lacks.
	covered := func(nd *testcluster.Node, now time.Time) (bool, string) {
		for _, id := range ids {
			if e, ok := nd.Agent.Loads.Get(id); !ok || now.Sub(e.Received) > fresh {
				return false, id
			}
		}
		return true, ""
	}
	killed := time.Now()
	// since[i]: start of survivor i's current stretch of full coverage
	// (zero while it lacks a server); sampled from the kill on, beside it,
	// under mu.
	var mu sync.Mutex
	since := make([]time.Time, len(survivors))
	lacking := make([]string, len(survivors))
	// worst[i][id]: the oldest survivor i's report of id was at a sample.
	worst := make([]map[string]time.Duration, len(survivors))
	for i := range worst {
		worst[i] = map[string]time.Duration{}
	}
	var takeover time.Time
	var atTakeover bool
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			now := time.Now()
			mu.Lock()
			for i, nd := range survivors {
				for _, id := range ids {
					if e, ok := nd.Agent.Loads.Get(id); ok && now.Sub(e.Received) > worst[i][id] {
						worst[i][id] = now.Sub(e.Received)
					}
				}
				ok, id := covered(nd, now)
				switch {
				case ok && since[i].IsZero():
					since[i] = now
				case !ok:
					since[i], lacking[i] = time.Time{}, id
				}
			}
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	c.Kill(leader)
	next := leaderNode(t, c)
	ready := time.Since(killed)
	idx := slices.Index(survivors, next)
	// Every server (those of the dead leader once they failed over) reported
	// to the new leader since the kill, and its view is fully fresh.
	var coveredFrom time.Time
	testcluster.Eventually(t, pollTimeout, func() error {
		for _, id := range ids {
			if e, ok := next.Agent.Loads.Get(id); !ok || !e.Received.After(killed) {
				return fmt.Errorf("new leader %s has no report of %s (first connected to %s) since the kill", next.ID, id, home[id])
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if since[idx].IsZero() {
			return fmt.Errorf("new leader %s has no report of %s younger than %v", next.ID, lacking[idx], fresh)
		}
		coveredFrom = since[idx]
		return nil
	})
	close(stop)
	<-sampled
	if takeover = killed.Add(ready); !coveredFrom.After(takeover) {
		atTakeover = true
	}
	from := coveredFrom.Sub(killed)
	if from < 0 {
		from = 0
	}
	t.Logf("figure: new leader %s ready %v after the kill; its view fresh (< %v) for all %d servers %v after the kill, without a lapse since (at takeover: %v; last lacking before that: %q)",
		next.ID, ready.Round(time.Millisecond), fresh, servers, from.Round(time.Millisecond), atTakeover, lacking[idx])
	var stale []string
	for _, id := range ids {
		if w := worst[idx][id]; w > fresh {
			stale = append(stale, fmt.Sprintf("%s(on %s):%v", id, home[id], w.Round(time.Millisecond)))
		}
	}
	t.Logf("servers whose report in the new leader's view got older than %v after the kill: %v", fresh, stale)
	// The oldest any server's report got in the new leader's view after the
	// kill, for the servers that were on the dead leader (they fail over)
	// and for the others.
	var movedAge, stayedAge time.Duration
	for _, id := range ids {
		if home[id] == leader.ID {
			movedAge = max(movedAge, worst[idx][id])
		} else {
			stayedAge = max(stayedAge, worst[idx][id])
		}
	}
	t.Logf("oldest report in the new leader's view after the kill: %v of servers on the dead leader, %v of the others",
		movedAge.Round(time.Millisecond), stayedAge.Round(time.Millisecond))
	t.Logf("forwarded reports on the new leader: received %v, sent %v, dropped %v",
		forwarded(next, "received"), forwarded(next, "sent"), forwarded(next, "dropped"))
}
