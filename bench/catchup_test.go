package bench

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// BenchmarkFollowerCatchUpAtScale: how long a follower that was stopped
// takes, once started again, to apply everything the leader applied
// meanwhile, with 100,000 servers and 1,000,000 allocations in the state
// (three agents in this process, real raft over TCP with bolt files):
//   - log: 600 allocations were committed while it was down, fewer than
//     the leader keeps in its log: it restores its own latest snapshot and
//     replays its log and the leader's entries;
//   - snapshot: 3,000 were committed and the leader snapshotted and
//     compacted its log meanwhile: the leader sends its snapshot (≈ 64 MB)
//     and the follower restores that.
//
// The state is installed through the cluster's own restore (the same as
// POST /v1/snapshot), so building it costs seconds rather than a million
// requests.
func BenchmarkFollowerCatchUpAtScale(b *testing.B) {
	const servers, allocs = 100_000, 1_000_000
	st := scaleFSM(servers, allocs).Export()
	c := testcluster.New(b, 3, testcluster.Options{NoQUIC: true, Mutate: func(_ int, cfg *agent.Config) {
		cfg.SnapshotThreshold, cfg.TrailingLogs, cfg.SnapshotInterval = 1024, 512, time.Second
		cfg.ApplyTimeout = 2 * time.Minute // restoring 1M allocations takes seconds
	}})
	ctx := testcluster.Context(b, 15*time.Minute)
	var leader *testcluster.Node
	// Installing a 64 MB state on three agents of one busy process can
	// cost the leader its lease (every follower is restoring at once); the
	// restore then either took effect anyway or is sent again.
	for attempt := 1; ; attempt++ {
		leader = c.WaitLeader(time.Minute)
		err := leader.Agent.Node.Restore(ctx, st, true)
		if err == nil || len(c.WaitLeader(time.Minute).Agent.Node.FSM().Servers()) == servers {
			break
		}
		if attempt == 3 {
			b.Fatalf("restore the state: %v", err)
		}
		b.Logf("restore the state (attempt %d): %v", attempt, err)
	}
	leader = c.WaitLeader(time.Minute)
	st = nil
	waitApplied := func(nodes []*testcluster.Node, timeout time.Duration) {
		b.Helper()
		testcluster.Eventually(b, timeout, func() error {
			want := leader.Agent.Node.FSM().AppliedIndex()
			for _, nd := range nodes {
				if got := nd.Agent.Node.FSM().AppliedIndex(); got != want {
					return fmt.Errorf("%s applied %d, leader %d", nd.ID, got, want)
				}
			}
			return nil
		})
	}
	waitApplied(c.Followers(), 5*time.Minute)
	cl := c.Client()
	seq := 0
	allocate := func(n int) {
		b.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		per := n / 16
		for w := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range per {
					req := fmt.Sprintf("catchup-%d-%d-%d", seq, w, i)
					if _, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: req, Room: req, Units: 1}); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		seq++
		close(errs)
		for err := range errs {
			b.Fatalf("allocate while the follower is down: %v", err)
		}
	}
	for _, tc := range []struct {
		name   string
		writes int
	}{{"log", 600}, {"snapshot", 3000}} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				f := c.Followers()[0]
				c.Stop(f)
				before := testcluster.LastSnapshotIndex(b, leader.Cfg.DataDir)
				allocate(tc.writes)
				if tc.name == "snapshot" {
					// Wait for the leader to snapshot past what the
					// follower holds (its log then starts after it).
					testcluster.Eventually(b, 5*time.Minute, func() error {
						if i := testcluster.LastSnapshotIndex(b, leader.Cfg.DataDir); i <= before {
							return fmt.Errorf("leader's last snapshot at %d, not after %d yet", i, before)
						}
						return nil
					})
				}
				start := time.Now()
				c.Start(f)
				waitApplied([]*testcluster.Node{f}, 5*time.Minute)
				b.ReportMetric(time.Since(start).Seconds(), "catchup-s")
				b.ReportMetric(0, "ns/op")
			}
		})
	}
}

// scaleFSM is a state machine holding servers and allocs active
// allocations (servers registered by hand, incarnation 0: no failure
// detector watches them).
func scaleFSM(servers, allocs int) *fsm.FSM {
	f := fsm.New()
	var cmds []*fsmpb.Command
	for i := range servers {
		cmds = append(cmds, &fsmpb.Command{Cmd: &fsmpb.Command_RegisterServer{RegisterServer: &fsmpb.RegisterServer{Server: &fsmpb.Server{
			Id: fmt.Sprintf("media-%06d", i), CapacityUnits: 100, Region: []string{"eu-west", "us-east", "ap-south"}[i%3], Zone: "a",
			Addresses: []string{fmt.Sprintf("10.0.%d.%d:8081", i/256%256, i%256)}}}}})
	}
	f.ApplyEnvelope(1, &fsmpb.Envelope{Version: fsm.EnvelopeVersion, NowUnixMs: 1, Batch: &fsmpb.Batch{Commands: cmds}})
	for e := range allocs / 10_000 {
		cmds = cmds[:0]
		for j := range 10_000 {
			i := e*10_000 + j
			cmds = append(cmds, &fsmpb.Command{Cmd: &fsmpb.Command_Allocate{Allocate: &fsmpb.AllocateDecision{
				RequestId: fmt.Sprintf("req-%08d", i), Room: fmt.Sprintf("room-%d", i%50_000), Server: fmt.Sprintf("media-%06d", i%servers), Units: 1}}})
		}
		f.ApplyEnvelope(uint64(2+e), &fsmpb.Envelope{Version: fsm.EnvelopeVersion, NowUnixMs: 2, Batch: &fsmpb.Batch{Commands: cmds}})
	}
	return f
}
