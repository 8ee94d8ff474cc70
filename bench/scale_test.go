package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/loadview"
	"github.com/switchyard/switchyard/placement"
	"github.com/switchyard/switchyard/transport/transportpb"
)

// fleetState is a restorable state of n servers (three regions, two zones
// each, capacity 1,000,000 so that no run fills them) under policy pol.
func fleetState(n int, pol *fsmpb.Policy) *fsmpb.State {
	st := &fsmpb.State{Version: fsm.StateVersion, Policy: pol}
	for i := range n {
		st.Servers = append(st.Servers, &fsmpb.Server{Id: fmt.Sprintf("s%06d", i), CapacityUnits: 1_000_000,
			Region: []string{"eu", "us", "ap"}[i%3], Zone: []string{"a", "b"}[(i/3)%2], State: fsmpb.ServerState_SERVER_STATE_ACTIVE})
	}
	return st
}

// scalePolicies are the built-in strategies measured at scale.
func scalePolicies() []*fsmpb.Policy {
	return []*fsmpb.Policy{
		{Strategy: "least-loaded", Weights: &fsmpb.Weights{Units: 1, Cpu: 1}},
		{Strategy: "bin-pack"},
		{Strategy: "room-affinity"},
		{Strategy: "region", Distances: []*fsmpb.RegionDistance{{From: "eu", To: "us", Distance: 80}}},
		{Strategy: "two-choice"},
	}
}

// runLeader fires ops allocations from clients goroutines straight at the
// leader's decision loop and returns allocations/s and the p50/p99 latency.
// A request that fails (leadership moved: the shared machine can starve a
// node) is retried with the same request id on the current leader, as a
// client would; the retries are counted.
func runLeader(b *testing.B, c *testcluster.Cluster, clients, ops int, tag string) (float64, time.Duration, time.Duration, int64) {
	ctx := context.Background()
	var next, retries atomic.Int64
	var leader atomic.Pointer[cluster.Node]
	leader.Store(c.WaitLeader(30 * time.Second).Agent.Node)
	lat := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(ops) {
					return
				}
				t0 := time.Now()
				req := cluster.AllocateRequest{RequestID: fmt.Sprintf("%s-%d", tag, i),
					Room: fmt.Sprintf("room-%d", i%997), Units: 1, Region: []string{"eu", "us", "ap"}[i%3]}
				for try := 0; ; try++ {
					_, _, err := leader.Load().Allocate(ctx, req)
					if err == nil {
						break
					}
					if try == 20 {
						b.Errorf("allocation %s: %v", req.RequestID, err)
						return
					}
					retries.Add(1)
					time.Sleep(50 * time.Millisecond)
					leader.Store(c.WaitLeader(30 * time.Second).Agent.Node)
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	return float64(len(all)) / elapsed.Seconds(), percentile(all, 0.5), percentile(all, 0.99), retries.Load()
}

// BenchmarkLeaderScale measures, per built-in strategy, acknowledged
// allocations per second through the leader's decision loop (3 nodes in
// one process, 256 clients) with 20 registered
// servers and then, in the same cluster, with 100,000 (each with a load
// report in the leader's view), and reports the ratio: the cost of a
// decision must not grow with the fleet. The two sizes alternate twice and
// the better run of each counts (the machine is shared; interference only
// ever slows a run down).
func BenchmarkLeaderScale(b *testing.B) {
	const clients, ops = 256, 10_000
	for _, pol := range scalePolicies() {
		b.Run(pol.Strategy, func(b *testing.B) {
			// The test clusters' relaxed raft timing: a restore of 100,000
			// servers on a loaded 2-core machine can outlast the 100 ms
			// lease of the production timing. Elections are not measured.
			c := testcluster.New(b, 3, testcluster.Options{Mutate: func(_ int, cfg *agent.Config) { cfg.FailureWindow = 0 }})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			rates := map[int]float64{}
			for round, n := range []int{20, 100_000, 20, 100_000} {
				var leader *testcluster.Node
				for try := 0; ; try++ {
					leader = c.WaitLeader(30 * time.Second)
					// Keep the cluster's identity and member table; replace
					// servers, allocations and policy.
					st, err := leader.Agent.Node.Snapshot(ctx)
					if err == nil {
						fl := fleetState(n, pol)
						st.Servers, st.Allocations, st.Policy, st.Intents = fl.Servers, nil, pol, nil
						err = leader.Agent.Node.Restore(ctx, st, false)
					}
					if err == nil {
						break
					}
					if try == 5 {
						b.Fatal(err)
					}
					b.Logf("restore: %v; retrying", err)
					time.Sleep(time.Second)
				}
				now := time.Now()
				for i := range n {
					leader.Agent.Loads.Offer(&transportpb.LoadReport{ServerId: fmt.Sprintf("s%06d", i), Incarnation: 1, Seq: uint64(now.UnixNano()),
						Cpu: float64(i%20) / 40, EgressBps: int64(i%7) * 10e6, Rooms: []string{fmt.Sprintf("room-%d", i)}}, now)
				}
				// One allocation first: the leader rebuilds its index.
				runLeader(b, c, 1, 1, fmt.Sprintf("warm%d-%d", round, n))
				runtime.GC()
				rate, p50, p99, retries := runLeader(b, c, clients, ops, fmt.Sprintf("r%d-n%d", round, n))
				b.Logf("%d servers: %.0f allocs/s, p50 %.1f ms, p99 %.1f ms, %d retries", n, rate, ms(p50), ms(p99), retries)
				if rate > rates[n] {
					rates[n] = rate
					b.ReportMetric(rate, fmt.Sprintf("allocs/s@%d", n))
					b.ReportMetric(ms(p50), fmt.Sprintf("p50-ms@%d", n))
					b.ReportMetric(ms(p99), fmt.Sprintf("p99-ms@%d", n))
				}
			}
			b.ReportMetric(rates[100_000]/rates[20], "ratio-100k/20")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// heapAfter returns the live heap after a full GC.
func heapAfter() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkMemoryPerServer reports the live heap an agent holds per
// registered server (replicated registry; the leader's placement index;
// one load report in the load view) and per active allocation
// (replicated, with its request id and the by-server and by-room
// indexes), measured on 100,000 servers and 1,000,000 allocations.
func BenchmarkMemoryPerServer(b *testing.B) {
	const servers, allocs = 100_000, 1_000_000
	for range b.N {
		base := heapAfter()
		f := fsm.New()
		var cmds []*fsmpb.Command
		for i := range servers {
			cmds = append(cmds, &fsmpb.Command{Cmd: &fsmpb.Command_RegisterServer{RegisterServer: &fsmpb.RegisterServer{Server: &fsmpb.Server{
				// Names decoded from a log entry are copies, not constants.
				Id: fmt.Sprintf("media-%06d", i), CapacityUnits: 100, Region: strings.Clone([]string{"eu-west", "us-east", "ap-south"}[i%3]), Zone: strings.Clone("a"),
				Addresses: []string{fmt.Sprintf("10.0.%d.%d:8081", i/256%256, i%256)}, Incarnation: 1}}}})
		}
		f.ApplyEnvelope(1, &fsmpb.Envelope{Version: fsm.EnvelopeVersion, NowUnixMs: 1, Batch: &fsmpb.Batch{Commands: cmds}})
		cmds = nil
		afterServers := heapAfter()
		v := loadview.New(nil)
		now := time.Now()
		for i := range servers {
			v.Offer(&transportpb.LoadReport{ServerId: fmt.Sprintf("media-%06d", i), Incarnation: 1, Seq: 1, Cpu: 0.3, EgressBps: 1e6, Peers: 3,
				Rooms: []string{fmt.Sprintf("room-%d", i)}}, now)
		}
		afterView := heapAfter()
		ix := placement.NewIndex(placement.MustCompile(&fsmpb.Policy{Strategy: "least-loaded"}))
		for _, s := range f.Servers() {
			l, _ := v.Load(s.Id)
			ix.Upsert(placement.Candidate{ID: s.Id, Region: s.Region, Zone: s.Zone, Capacity: s.CapacityUnits, Active: true, State: "active", Load: &l})
		}
		afterIndex := heapAfter()
		for e := range allocs / 10_000 {
			cmds = cmds[:0]
			for j := range 10_000 {
				i := e*10_000 + j
				cmds = append(cmds, &fsmpb.Command{Cmd: &fsmpb.Command_Allocate{Allocate: &fsmpb.AllocateDecision{
					RequestId: fmt.Sprintf("req-%08d", i), Room: fmt.Sprintf("room-%d", i%50_000), Requester: fmt.Sprintf("media-%06d", (i+1)%servers),
					Server: fmt.Sprintf("media-%06d", i%servers), Units: 1}}})
			}
			f.ApplyEnvelope(uint64(2+e), &fsmpb.Envelope{Version: fsm.EnvelopeVersion, NowUnixMs: 2, Batch: &fsmpb.Batch{Commands: cmds}})
		}
		cmds = nil
		afterAllocs := heapAfter()
		b.ReportMetric(float64(afterServers-base)/servers, "fsm-B/server")
		b.ReportMetric(float64(afterView-afterServers)/servers, "loadview-B/server")
		b.ReportMetric(float64(afterIndex-afterView)/servers, "index-B/server")
		b.ReportMetric(float64(afterIndex-base)/servers, "total-B/server")
		b.ReportMetric(float64(afterAllocs-afterIndex)/allocs, "B/allocation")
		b.ReportMetric(0, "ns/op")
		runtime.KeepAlive(f)
		runtime.KeepAlive(v)
		runtime.KeepAlive(ix)
	}
}

// fileSink is a raft.SnapshotSink writing to a file.
type fileSink struct{ *os.File }

func (s fileSink) ID() string    { return "bench" }
func (s fileSink) Cancel() error { return s.File.Close() }

// BenchmarkSnapshotAtScale measures what a follower pays to catch up from
// a snapshot at fleet scale: the state of 100,000 servers and 1,000,000
// allocations taken (the copy under the read lock), persisted to a file
// (encoded, written, synced) and restored into a fresh state machine (read,
// decoded, indexes rebuilt); `snapshot-MB` is its size. The restore is
// timed twice: `restore-s` in a process that holds nothing else (an agent
// starting from its snapshot: the source state is dropped first), and
// `restore-beside-s` while the source state is still alive (a follower
// replacing a state of the same size: the collector marks both).
func BenchmarkSnapshotAtScale(b *testing.B) {
	const servers, allocs = 100_000, 1_000_000
	path := filepath.Join(b.TempDir(), "snapshot")
	restore := func(want string) time.Duration {
		start := time.Now()
		rc, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		g := fsm.New()
		if err := g.Restore(rc); err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		if h, _ := g.HashAt(); h != want {
			b.Fatal("restored state differs")
		}
		return d
	}
	b.StopTimer()
	for range b.N {
		f := scaleFSM(servers, allocs) // catchup_test.go
		runtime.GC()
		b.StartTimer()
		start := time.Now()
		snap, err := f.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		// raft calls Snapshot on the goroutine that applies entries: no
		// entry is applied (no allocation acknowledged) for this long.
		b.ReportMetric(time.Since(start).Seconds(), "take-s")
		file, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		if err := snap.Persist(syncingSink{fileSink{file}}); err != nil {
			b.Fatal(err)
		}
		save := time.Since(start)
		fi, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		want, _ := f.HashAt()
		beside := restore(want)
		runtime.KeepAlive(f)
		f, snap = nil, nil
		runtime.GC()
		alone := restore(want)
		b.StopTimer()
		b.ReportMetric(save.Seconds(), "save-s")
		b.ReportMetric(alone.Seconds(), "restore-s")
		b.ReportMetric(beside.Seconds(), "restore-beside-s")
		b.ReportMetric(float64(fi.Size())/1e6, "snapshot-MB")
		b.ReportMetric(0, "ns/op")
	}
}

// syncingSink fsyncs the file before closing it, as raft's file snapshot
// store does.
type syncingSink struct{ fileSink }

func (s syncingSink) Close() error {
	if err := s.File.Sync(); err != nil {
		return err
	}
	return s.File.Close()
}
