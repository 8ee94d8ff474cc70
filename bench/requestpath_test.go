package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/internal/ports"
	"github.com/switchyard/switchyard/internal/proccluster"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// The bare-raft yardstick runs as three child processes of this test
// binary: TestMain turns a child into one raft node when this variable
// names its id.
const yardstickEnv = "SWITCHYARD_BENCH_RAFT_NODE"

func TestMain(m *testing.M) {
	if id := os.Getenv(yardstickEnv); id != "" {
		if err := runYardstickNode(id); err != nil {
			fmt.Fprintln(os.Stderr, "yardstick:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// yardstickResult is what the yardstick's leader measured: latencies of
// one client applying one entry at a time, and of 16 clients at once.
type yardstickResult struct {
	C1P50, C1P99, C16P50, C16P99 time.Duration
	C16PerSec                    float64
}

// counterFSM is the smallest state machine: it counts applied entries.
type counterFSM struct{ n atomic.Uint64 }

func (f *counterFSM) Apply(*raft.Log) any { return f.n.Add(1) }
func (f *counterFSM) Snapshot() (raft.FSMSnapshot, error) {
	return counterSnap{}, nil
}
func (f *counterFSM) Restore(rc io.ReadCloser) error { return rc.Close() }

type counterSnap struct{}

func (counterSnap) Persist(s raft.SnapshotSink) error { return s.Close() }
func (counterSnap) Release()                          {}

// runYardstickNode runs one bare raft node with the agents' durability and
// transport settings (bolt log with fsync, TCP, no pipelining, default
// timing). Whichever node leads measures raft.Apply of a 64-byte entry
// and writes the result to $OUT, then idles until killed.
func runYardstickNode(id string) error {
	dir, out := os.Getenv("DIR"), os.Getenv("OUT")
	var servers []raft.Server
	var self string
	for _, kv := range strings.Split(os.Getenv("ADDRS"), ",") {
		sid, addr, _ := strings.Cut(kv, "=")
		servers = append(servers, raft.Server{ID: raft.ServerID(sid), Address: raft.ServerAddress(addr)})
		if sid == id {
			self = addr
		}
	}
	store, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
	if err != nil {
		return err
	}
	snaps, err := raft.NewFileSnapshotStore(dir, 1, io.Discard)
	if err != nil {
		return err
	}
	trans, err := raft.NewTCPTransportWithConfig(self, nil, &raft.NetworkTransportConfig{MaxPool: 3, Timeout: 10 * time.Second, MaxRPCsInFlight: 1})
	if err != nil {
		return err
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(id)
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = cluster.DefaultHeartbeatTimeout, cluster.DefaultElectionTimeout, cluster.DefaultLeaderLeaseTimeout
	rc.LogOutput = io.Discard
	r, err := raft.NewRaft(rc, &counterFSM{}, store, store, snaps, trans)
	if err != nil {
		return err
	}
	if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return err
	}
	for r.State() != raft.Leader {
		if _, err := os.Stat(out); err == nil {
			select {} // another node measured; wait to be killed
		}
		time.Sleep(10 * time.Millisecond)
	}
	payload := make([]byte, 64)
	apply := func() (time.Duration, error) {
		t0 := time.Now()
		err := r.Apply(payload, 10*time.Second).Error()
		return time.Since(t0), err
	}
	for range 50 { // warm up connections and the log
		if _, err := apply(); err != nil {
			return err
		}
	}
	var res yardstickResult
	var c1 []time.Duration
	for range 300 {
		d, err := apply()
		if err != nil {
			return err
		}
		c1 = append(c1, d)
	}
	res.C1P50, res.C1P99 = percentile(c1, 0.5), percentile(c1, 0.99)
	var mu sync.Mutex
	var c16 []time.Duration
	var wg sync.WaitGroup
	var failed atomic.Int64
	start := time.Now()
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				d, err := apply()
				if err != nil {
					failed.Add(1)
					continue
				}
				mu.Lock()
				c16 = append(c16, d)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		return fmt.Errorf("%d applies failed", failed.Load())
	}
	res.C16PerSec = float64(len(c16)) / time.Since(start).Seconds()
	res.C16P50, res.C16P99 = percentile(c16, 0.5), percentile(c16, 0.99)
	b, _ := json.Marshal(res)
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	select {}
}

// measureYardstick runs the bare-raft yardstick on three processes.
func measureYardstick(b *testing.B) yardstickResult {
	b.Helper()
	dir := b.TempDir()
	out := filepath.Join(dir, "result.json")
	var addrs []string
	for i := 1; i <= 3; i++ {
		addrs = append(addrs, fmt.Sprintf("y%d=%s", i, ports.Free(b, "tcp")))
	}
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
	}()
	for i := 1; i <= 3; i++ {
		nd := filepath.Join(dir, fmt.Sprintf("y%d", i))
		if err := os.MkdirAll(nd, 0o755); err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), yardstickEnv+"="+fmt.Sprintf("y%d", i), "DIR="+nd, "OUT="+out, "ADDRS="+strings.Join(addrs, ","))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		procs = append(procs, cmd)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		raw, err := os.ReadFile(out)
		if err == nil {
			var res yardstickResult
			if err := json.Unmarshal(raw, &res); err != nil {
				b.Fatal(err)
			}
			return res
		}
		if time.Now().After(deadline) {
			b.Fatal("bare raft yardstick produced no result in 2 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// measureLoop is the in-process leader loop at c clients: allocations per
// second straight into the decision loop of a 3-node cluster.
func measureLoop(b *testing.B, c, ops int) float64 {
	b.Helper()
	tc := testcluster.New(b, 3, testcluster.Options{Mutate: func(_ int, cfg *agent.Config) {
		cfg.HeartbeatTimeout, cfg.ElectionTimeout = cluster.DefaultHeartbeatTimeout, cluster.DefaultElectionTimeout
		cfg.LeaderLeaseTimeout = cluster.DefaultLeaderLeaseTimeout
	}})
	ctx := context.Background()
	if _, err := tc.Client().RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 1 << 40}); err != nil {
		b.Fatal(err)
	}
	leader := tc.WaitLeader(30 * time.Second)
	rate, _ := drive(b, c, ops, func(w int, req string) error {
		_, _, err := leader.Agent.Node.Allocate(ctx, cluster.AllocateRequest{RequestID: req, Room: "r", Units: 1})
		return err
	})
	return rate
}

// drive runs c workers issuing ops requests in all, one at a time each,
// and returns acknowledged requests per second and every latency. Any
// failure fails the benchmark.
func drive(b *testing.B, c, ops int, do func(worker int, reqID string) error) (float64, []time.Duration) {
	b.Helper()
	var next, failed atomic.Int64
	lat := make([][]time.Duration, c)
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for w := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(ops) {
					return
				}
				t0 := time.Now()
				if err := do(w, fmt.Sprintf("w%d-%d", w, i)); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if failed.Load() > 0 {
		b.Fatalf("%d of %d requests failed, first: %v", failed.Load(), ops, firstErr.Load())
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	return float64(len(all)) / elapsed.Seconds(), all
}

// cpuTicks is a process's user+system CPU time in clock ticks (Linux).
func cpuTicks(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) start at ")".
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s, nil
}

// BenchmarkRequestPath measures the public request path the way an
// application uses it: three `switchyard agent` processes on loopback
// (production raft timing, fsync), clients in this process spread over all
// three agents (two thirds forwarded by followers), least-loaded pick,
// exactly-once request ids, every acknowledgement checked afterwards. In
// the same run it measures the yardsticks: a bare raft.Apply with fsync on
// three processes, and the in-process leader loop at 256 clients. It
// reports absolute figures and the ratios the request-path targets are
// stated in, for single calls and for the SDK's batched calls
// (Client.Batch), plus the agents' CPU time per acknowledged allocation
// over all rounds.
func BenchmarkRequestPath(b *testing.B) {
	bin := proccluster.BuildBinary(b)
	for range b.N {
		y := measureYardstick(b)
		loop := measureLoop(b, 256, 20_000)

		pc := proccluster.New(b, bin, 3)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		if _, err := pc.WaitLeader(ctx); err != nil {
			b.Fatal(err)
		}
		cl := api.NewClient(pc.Addrs()...)
		if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 1 << 40}); err != nil {
			b.Fatal(err)
		}
		for _, s := range []string{"m2", "m3", "m4"} { // a small fleet: least-loaded has a choice
			if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: s, Capacity: 1 << 40}); err != nil {
				b.Fatal(err)
			}
		}
		clients, batched := make([]*api.Client, 3), make([]*api.Client, 3)
		for i, a := range pc.Addrs() {
			clients[i], batched[i] = api.NewClient(a), api.NewClient(a)
			batched[i].Batch = true
		}
		var ticks0 int64
		for _, p := range pc.Nodes {
			t, err := cpuTicks(p.Pid())
			if err != nil {
				b.Fatal(err)
			}
			ticks0 += t
		}
		acked := 0
		round := func(name string, c, ops int) (float64, []time.Duration) {
			cls := clients
			if strings.HasPrefix(name, "b") {
				cls = batched
			}
			rate, lat := drive(b, c, ops, func(w int, req string) error {
				_, err := cls[w%3].Allocate(ctx, api.AllocateRequest{RequestID: name + req, Room: "r" + strconv.Itoa(w%50), Units: 1})
				return err
			})
			acked += len(lat)
			return rate, lat
		}
		_, c1 := round("c1-", 1, 300)
		c16rate, c16 := round("c16-", 16, 3000)
		c256rate, _ := round("c256-", 256, 20_000)
		bc16rate, bc16 := round("bc16-", 16, 3000)
		bc256rate, _ := round("bc256-", 256, 20_000)
		var ticks1 int64
		for _, p := range pc.Nodes {
			t, err := cpuTicks(p.Pid())
			if err != nil {
				b.Fatal(err)
			}
			ticks1 += t
		}
		// Every acknowledgement is in the state, once: units used on the
		// fleet equal the acknowledged allocations (one unit each).
		raw, err := cl.ServersRaw(ctx, false)
		if err != nil {
			b.Fatal(err)
		}
		used := int64(0)
		for _, s := range raw {
			if u, ok := s["used"].(float64); ok {
				used += int64(u)
			}
		}
		if used != int64(acked) {
			b.Fatalf("fleet uses %d units for %d acknowledged allocations", used, acked)
		}
		cancel()
		pc.Close()

		raftP50 := ms(y.C1P50)
		b.ReportMetric(raftP50, "raft-p50-ms")
		b.ReportMetric(y.C16PerSec, "raft-c16-applies/s")
		b.ReportMetric(ms(y.C16P50), "raft-c16-p50-ms")
		b.ReportMetric(ms(percentile(c1, 0.5)), "c1-p50-ms")
		b.ReportMetric(ms(percentile(c1, 0.5))/raftP50, "c1-p50/raft")
		b.ReportMetric(c16rate, "c16-allocs/s")
		b.ReportMetric(ms(percentile(c16, 0.5)), "c16-p50-ms")
		b.ReportMetric(ms(percentile(c16, 0.99)), "c16-p99-ms")
		b.ReportMetric(ms(percentile(c16, 0.99))/raftP50, "c16-p99/raft")
		b.ReportMetric(c256rate, "c256-allocs/s")
		b.ReportMetric(loop, "loop256-allocs/s")
		b.ReportMetric(c256rate/loop, "c256/loop")
		b.ReportMetric(bc16rate, "batched-c16-allocs/s")
		b.ReportMetric(ms(percentile(bc16, 0.99))/raftP50, "batched-c16-p99/raft")
		b.ReportMetric(bc256rate, "batched-c256-allocs/s")
		b.ReportMetric(bc256rate/loop, "batched-c256/loop")
		b.ReportMetric(float64(ticks1-ticks0)*1e6/100/float64(acked), "cpu-us/alloc")
		b.ReportMetric(0, "ns/op")
	}
}
