package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/internal/testcluster"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustRegister(t *testing.T, c *api.Client, id string, capacity int64) {
	t.Helper()
	if _, err := c.RegisterServer(ctxT(t, 20*time.Second), api.RegisterServerRequest{ID: id, Capacity: capacity}); err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
}

func TestSingleNodeBootstrap(t *testing.T) {
	c := testcluster.New(t, 1)
	cl := c.Client()
	mustRegister(t, cl, "m1", 2)
	if _, err := cl.Allocate(ctxT(t, 10*time.Second), api.AllocateRequest{RequestID: "a", Room: "r", Units: 2}); err != nil {
		t.Fatal(err)
	}
	st, err := cl.Status(ctxT(t, 5*time.Second))
	if err != nil || st.Leader != "n1" || len(st.Members) != 1 || st.ClusterID == "" {
		t.Fatalf("status %+v %v", st, err)
	}
}

func TestJoinAddsVoter(t *testing.T) {
	c := testcluster.New(t, 3)
	mustRegister(t, c.Client(), "m1", 5)
	nd := &testcluster.Node{ID: "n4", Cfg: agent.Config{Config: cluster.Config{
		ID: "n4", DataDir: filepath.Join(t.TempDir(), "n4"),
		RaftAddr: testcluster.FreeAddr(t), HTTPAddr: testcluster.FreeAddr(t),
		Join: c.Addrs(), Logger: testcluster.Logger(t),
	}, Token: c.Token}} // over plain HTTP a joining agent records itself with a token (--token)
	c.Nodes = append(c.Nodes, nd)
	c.Start(nd)
	testcluster.Eventually(t, 20*time.Second, func() error {
		st := nd.Agent.Node.Status()
		if len(st.Members) != 4 {
			return fmt.Errorf("%d members", len(st.Members))
		}
		for _, m := range st.Members {
			if m.Suffrage != "Voter" || m.HTTPAddr == "" {
				return fmt.Errorf("member %+v", m)
			}
		}
		return nil
	})
	// The new node holds the state written before it joined.
	if _, ok := nd.Agent.Node.FSM().Server("m1"); !ok {
		c.WaitConverged(10 * time.Second)
	}
	c.WaitConverged(10 * time.Second)
	// A write through the new node works (forwarded to the leader).
	if _, err := api.NewClient(nd.Cfg.HTTPAddr).WithToken(c.Token).Allocate(ctxT(t, 10*time.Second), api.AllocateRequest{RequestID: "j", Room: "r", Units: 1}); err != nil {
		t.Fatal(err)
	}
}

func TestFollowersForwardAndReadsAreLinearizable(t *testing.T) {
	c := testcluster.New(t, 3)
	mustRegister(t, c.Client(), "m1", 100)
	for i, f := range c.Followers() {
		fc := api.NewClient(f.Cfg.HTTPAddr).WithToken(c.Token)
		a, err := fc.Allocate(ctxT(t, 10*time.Second), api.AllocateRequest{RequestID: fmt.Sprintf("f%d", i), Room: "r", Units: 1})
		if err != nil {
			t.Fatalf("allocate via follower %s: %v", f.ID, err)
		}
		// Read back through the other follower, immediately: default reads
		// go to the leader, so the write is visible.
		other := c.Followers()[(i+1)%2]
		got, err := api.NewClient(other.Cfg.HTTPAddr).WithToken(c.Token).Allocations(ctxT(t, 10*time.Second), api.AllocationListOptions{Room: "r"})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, g := range got {
			found = found || g.ID == a.ID
		}
		if !found {
			t.Fatalf("allocation %s not visible through %s right after it was acknowledged", a.ID, other.ID)
		}
	}
}

func TestExactlyOnceUnderConcurrentRetries(t *testing.T) {
	c := testcluster.New(t, 3)
	mustRegister(t, c.Client(), "m1", 1000)
	const reqs, dup = 40, 8
	ids := make([][]string, reqs)
	var wg sync.WaitGroup
	var mu sync.Mutex
	errs := []error{}
	for r := 0; r < reqs; r++ {
		ids[r] = make([]string, dup)
		for d := 0; d < dup; d++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				nd := c.Nodes[(r+d)%3]
				a, err := api.NewClient(nd.Cfg.HTTPAddr).WithToken(c.Token).Allocate(ctxT(t, 20*time.Second), api.AllocateRequest{RequestID: fmt.Sprintf("req-%d", r), Room: "r", Units: 2})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				ids[r][d] = a.ID
			}()
		}
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d errors, first: %v", len(errs), errs[0])
	}
	for r := range ids {
		for d := range ids[r] {
			if ids[r][d] != ids[r][0] {
				t.Fatalf("request %d got allocations %v", r, ids[r])
			}
		}
	}
	c.WaitConverged(10 * time.Second)
	// The leaders' metrics (summed: leadership may move on a loaded machine)
	// saw each request id granted at most once; grants plus unknown outcomes
	// (maybe granted by a deposed leader) cover every request id.
	var granted, unknown int
	for _, nd := range c.Running() {
		body := scrape(t, c, nd.Cfg.HTTPAddr)
		granted += max(metricValue(body, `switchyard_allocations_total{outcome="granted"}`), 0)
		unknown += max(metricValue(body, `switchyard_allocations_total{outcome="unknown"}`), 0)
	}
	if granted > reqs || granted+unknown < reqs {
		t.Fatalf("metrics count %d grants and %d unknown outcomes for %d request ids", granted, unknown, reqs)
	}
	for _, nd := range c.Running() {
		s, _ := nd.Agent.Node.FSM().Server("m1")
		if s.UsedUnits != 2*reqs {
			t.Fatalf("%s: %d units used, want %d (each request granted once)", nd.ID, s.UsedUnits, 2*reqs)
		}
	}
}

func TestBatchingSharesLogEntries(t *testing.T) {
	c := testcluster.New(t, 3)
	mustRegister(t, c.Client(), "m1", 100000)
	leader := c.WaitLeader(10 * time.Second)
	before := leader.Agent.Node.Status().LastIndex
	const n = 400
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := leader.Agent.Node.Allocate(ctxT(t, 20*time.Second), cluster.AllocateRequest{RequestID: fmt.Sprint("b", i), Room: "r", Units: 1})
			errc <- err
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
	entries := leader.Agent.Node.Status().LastIndex - before
	t.Logf("%d concurrent allocations took %d log entries", n, entries)
	if entries >= n {
		t.Fatalf("%d allocations used %d entries: no batching", n, entries)
	}
}

func TestCapacityRefusalSaysWhy(t *testing.T) {
	c := testcluster.New(t, 3)
	cl := c.Client()
	mustRegister(t, cl, "m1", 3)
	mustRegister(t, cl, "m2", 3)
	for i := 0; i < 2; i++ {
		if _, err := cl.Allocate(ctxT(t, 10*time.Second), api.AllocateRequest{RequestID: fmt.Sprint("x", i), Room: "r", Units: 2}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := cl.Allocate(ctxT(t, 10*time.Second), api.AllocateRequest{RequestID: "x9", Room: "r", Units: 2})
	if !errors.Is(err, fsm.ErrCapacity) {
		t.Fatalf("err = %v, want capacity", err)
	}
	if !strings.Contains(err.Error(), "no server has 2 free units") || !strings.Contains(err.Error(), "with 1") {
		t.Fatalf("refusal does not say which capacity was missing: %q", err)
	}
	// Pinned to a draining server.
	if _, err := cl.DrainServer(ctxT(t, 10*time.Second), "m1"); err != nil {
		t.Fatal(err)
	}
	_, err = cl.Allocate(ctxT(t, 10*time.Second), api.AllocateRequest{RequestID: "x10", Room: "r", Units: 1, Server: "m1"})
	if !errors.Is(err, fsm.ErrServerNotActive) {
		t.Fatalf("pinned to draining server: %v", err)
	}
}

func TestLeaderKillThenAllocationsContinue(t *testing.T) {
	c := testcluster.New(t, 3)
	cl := c.Client()
	mustRegister(t, cl, "m1", 100000)
	acked := map[string]string{}
	for i := 0; i < 20; i++ {
		a, err := cl.Allocate(ctxT(t, 10*time.Second), api.AllocateRequest{RequestID: fmt.Sprint("k", i), Room: "r", Units: 1})
		if err != nil {
			t.Fatal(err)
		}
		acked[a.RequestID] = a.ID
	}
	old := c.WaitLeader(10 * time.Second)
	c.Kill(old)
	newLeader := c.WaitLeader(20 * time.Second)
	if newLeader.ID == old.ID {
		t.Fatal("killed leader still leads")
	}
	cl = c.Client()
	for i := 20; i < 40; i++ {
		a, err := cl.Allocate(ctxT(t, 20*time.Second), api.AllocateRequest{RequestID: fmt.Sprint("k", i), Room: "r", Units: 1})
		if err != nil {
			t.Fatal(err)
		}
		acked[a.RequestID] = a.ID
	}
	// Retrying an old request id on the new leader returns the same grant.
	a, err := cl.Allocate(ctxT(t, 10*time.Second), api.AllocateRequest{RequestID: "k3", Room: "r", Units: 1})
	if err != nil || a.ID != acked["k3"] || !a.Duplicate {
		t.Fatalf("retry after failover: %+v %v (want %s)", a, err, acked["k3"])
	}
	// Nothing acknowledged was lost, and the killed node catches up on restart.
	c.Start(old)
	c.WaitConverged(20 * time.Second)
	for _, nd := range c.Running() {
		for req, id := range acked {
			got, ok := nd.Agent.Node.FSM().AllocationByRequest(req)
			if !ok || got.Id != id {
				t.Fatalf("%s lost acknowledged allocation %s (%s)", nd.ID, id, req)
			}
		}
	}
}

func TestGracefulLeaderShutdownHandsOver(t *testing.T) {
	c := testcluster.New(t, 3)
	old := c.WaitLeader(10 * time.Second)
	term := old.Agent.Node.Status().Term
	c.Stop(old) // transfers leadership first
	nl := c.WaitLeader(10 * time.Second)
	if got := nl.Agent.Node.Status().Term; got != term+1 {
		t.Logf("term went from %d to %d", term, got)
	}
	mustRegister(t, c.Client(), "m1", 1)
}

func TestRestartFromDataDir(t *testing.T) {
	// A low snapshot threshold makes the restart go through a snapshot too.
	c := testcluster.New(t, 3, testcluster.Options{Mutate: func(_ int, cfg *agent.Config) {
		cfg.SnapshotThreshold = 16
		cfg.TrailingLogs = 8
		cfg.SnapshotInterval = 200 * time.Millisecond
	}})
	cl := c.Client()
	mustRegister(t, cl, "m1", 1000)
	for i := 0; i < 60; i++ {
		if _, err := cl.Allocate(ctxT(t, 10*time.Second), api.AllocateRequest{RequestID: fmt.Sprint("p", i), Room: "r", Units: 1}); err != nil {
			t.Fatal(err)
		}
	}
	hash := c.WaitConverged(10 * time.Second)
	// Wait for at least one snapshot on disk.
	testcluster.Eventually(t, 20*time.Second, func() error {
		m, _ := filepath.Glob(filepath.Join(c.Nodes[0].Cfg.DataDir, "snapshots", "*"))
		if len(m) == 0 {
			return errors.New("no snapshot yet")
		}
		return nil
	})
	c.Close()
	for _, nd := range c.Nodes {
		c.Start(nd) // same config, same data dir: no ErrCantBootstrap
	}
	c.WaitLeader(20 * time.Second)
	if got := c.WaitConverged(20 * time.Second); got != hash {
		t.Fatalf("state hash after restart %s, before %s", got, hash)
	}
	if _, err := c.Client().Allocate(ctxT(t, 10*time.Second), api.AllocateRequest{RequestID: "after", Room: "r", Units: 1}); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshotSaveRestoreEquality(t *testing.T) {
	c := testcluster.New(t, 3)
	cl := c.Client()
	mustRegister(t, cl, "m1", 50)
	mustRegister(t, cl, "m2", 50)
	for i := 0; i < 30; i++ {
		if _, err := cl.Allocate(ctxT(t, 10*time.Second), api.AllocateRequest{RequestID: fmt.Sprint("s", i), Room: fmt.Sprint("room", i%3), Units: 1}); err != nil {
			t.Fatal(err)
		}
	}
	hash := c.WaitConverged(10 * time.Second)
	var buf bytes.Buffer
	if err := cl.SaveSnapshot(ctxT(t, 10*time.Second), &buf); err != nil {
		t.Fatal(err)
	}
	// Change the state, then restore the saved one.
	for i := 0; i < 10; i++ {
		if _, err := cl.Release(ctxT(t, 10*time.Second), fmt.Sprint("s", i)); err != nil {
			t.Fatal(err)
		}
	}
	if c.WaitConverged(10*time.Second) == hash {
		t.Fatal("state did not change")
	}
	r, err := cl.RestoreSnapshot(ctxT(t, 20*time.Second), buf.Bytes(), false)
	if err != nil {
		t.Fatal(err)
	}
	if r.StateHash != hash {
		t.Fatalf("restore reports hash %s, saved %s", r.StateHash, hash)
	}
	testcluster.Eventually(t, 20*time.Second, func() error {
		for _, nd := range c.Running() {
			if h := nd.Agent.Node.FSM().Hash(); h != hash {
				return fmt.Errorf("%s hash %.8s want %.8s", nd.ID, h, hash)
			}
		}
		return nil
	})
	// Garbage is refused with a reason and changes nothing.
	if _, err := cl.RestoreSnapshot(ctxT(t, 10*time.Second), []byte("not a snapshot"), false); !errors.Is(err, fsm.ErrInvalid) && !errors.Is(err, fsm.ErrUnsupportedVersion) {
		t.Fatalf("garbage restore: %v", err)
	}
	if h := c.WaitConverged(10 * time.Second); h != hash {
		t.Fatal("refused restore changed state")
	}
}

// TestRestoreOverAStateAheadOfTheLog: a release before this one restored
// a backup without stamping it, leaving every state machine's applied
// index at the backup's (here 5,000,000), far past raft's log. A restore
// now must still reach every replica (the stamp goes past both), and the
// leader must not refuse it (raft panics when a leader's state machine
// refuses a user restore).
func TestRestoreOverAStateAheadOfTheLog(t *testing.T) {
	c := testcluster.New(t, 3)
	cl := c.Client()
	mustRegister(t, cl, "m1", 50)
	hash := c.WaitConverged(10 * time.Second)
	var backup bytes.Buffer
	if err := cl.SaveSnapshot(ctxT(t, 10*time.Second), &backup); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Allocate(ctxT(t, 10*time.Second), api.AllocateRequest{RequestID: "later", Room: "r", Units: 1}); err != nil {
		t.Fatal(err)
	}
	changed := c.WaitConverged(10 * time.Second)
	for _, nd := range c.Running() {
		st := nd.Agent.Node.FSM().Export()
		st.AppliedIndex = 5_000_000
		var b bytes.Buffer
		if err := fsm.WriteState(&b, st); err != nil {
			t.Fatal(err)
		}
		if err := nd.Agent.Node.FSM().Restore(io.NopCloser(&b)); err != nil {
			t.Fatal(err)
		}
	}
	if c.WaitConverged(10*time.Second) != changed {
		t.Fatal("setting the applied index changed the state")
	}
	if _, err := cl.RestoreSnapshot(ctxT(t, 20*time.Second), backup.Bytes(), false); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 20*time.Second, func() error {
		for _, nd := range c.Running() {
			if h := nd.Agent.Node.FSM().Hash(); h != hash {
				return fmt.Errorf("%s hash %.8s want %.8s", nd.ID, h, hash)
			}
		}
		return nil
	})
	if _, err := cl.Allocate(ctxT(t, 10*time.Second), api.AllocateRequest{RequestID: "after", Room: "r", Units: 1}); err != nil {
		t.Fatalf("allocation after the restore: %v", err)
	}
	c.WaitConverged(10 * time.Second)
}

func TestDataDirOwnedByAnotherNodeOrCluster(t *testing.T) {
	a := testcluster.New(t, 3)
	b := testcluster.New(t, 1)
	mustRegister(t, b.Client(), "x", 1)
	b.WaitConverged(5 * time.Second)
	// Wait for the identity file to hold the cluster id.
	testcluster.Eventually(t, 10*time.Second, func() error {
		data, err := readFile(filepath.Join(b.Nodes[0].Cfg.DataDir, "node.json"))
		if err != nil || !strings.Contains(data, "cluster_id") {
			return fmt.Errorf("identity: %q %v", data, err)
		}
		return nil
	})
	b.Close()
	dir := b.Nodes[0].Cfg.DataDir

	// Same dir, another node id.
	cfg := b.Nodes[0].Cfg
	cfg.ID = "other"
	cfg.HTTPAddr = testcluster.FreeAddr(t)
	cfg.RaftAddr = testcluster.FreeAddr(t)
	if _, err := agent.Start(context.Background(), cfg); !errors.Is(err, cluster.ErrDataDirMismatch) {
		t.Fatalf("start with another node's dir: %v", err)
	}
	// Same node id, but pointed at cluster a.
	cfg = b.Nodes[0].Cfg
	cfg.DataDir = dir
	cfg.Join = a.Addrs()
	// It still holds b's token (and b's peer client): the probe of the open
	// GET /v1/internal/info goes out without it (a refuses a token it does
	// not know, even there, and a refusal would look like an unreachable
	// peer and let the node start).
	cfg.HTTPAddr = testcluster.FreeAddr(t)
	cfg.RaftAddr = testcluster.FreeAddr(t)
	_, err := agent.Start(context.Background(), cfg)
	if !errors.Is(err, cluster.ErrDataDirMismatch) || !strings.Contains(err.Error(), "cluster") {
		t.Fatalf("start with another cluster's dir: %v", err)
	}
}

func readFile(p string) (string, error) {
	b, err := os.ReadFile(p)
	return string(b), err
}

func TestBadInputGetsClearErrors(t *testing.T) {
	c := testcluster.New(t, 3)
	addr := c.Followers()[0].Cfg.HTTPAddr
	mustRegister(t, c.Client(), "m1", 5)
	tests := []struct {
		method, path, body string
		status             int
		code, contains     string
	}{
		{"POST", "/v1/allocations", `{"request_id": "a", "room": `, 400, "invalid_argument", "malformed JSON"},
		{"POST", "/v1/allocations", `{"request_id": "a", "room": "r", "units": 0}`, 400, "invalid_argument", "units must be positive"},
		{"POST", "/v1/allocations", `{"request_id": "a", "room": "r", "units": -3}`, 400, "invalid_argument", "units must be positive"},
		{"POST", "/v1/allocations", `{"request_id": "a", "room": "r", "units": 1, "bogus": 1}`, 400, "invalid_argument", "unknown field"},
		{"POST", "/v1/allocations", `{"room": "r", "units": 1}`, 400, "invalid_argument", "request id is required"},
		{"POST", "/v1/allocations", `{"request_id": "a", "room": "r", "units": 1, "server": "ghost"}`, 404, "not_found", "ghost"},
		{"POST", "/v1/servers", `{"id": "m9", "capacity": -1}`, 400, "invalid_argument", "capacity must be positive"},
		{"DELETE", "/v1/servers/ghost", ``, 404, "not_found", "ghost"},
		{"POST", "/v1/servers/ghost/drain", ``, 404, "not_found", "ghost"},
		{"DELETE", "/v1/allocations/ghost", ``, 404, "not_found", "ghost"},
		{"GET", "/v1/nope", ``, 404, "not_found", "no such endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path+" "+tt.body, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, "http://"+addr+tt.path, strings.NewReader(tt.body))
			resp, err := http.DefaultClient.Do(c.Authorize(req))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			var e api.Error
			_ = json.Unmarshal(body, &e)
			if resp.StatusCode != tt.status || e.Code != tt.code || !strings.Contains(e.Error, tt.contains) {
				t.Fatalf("got %d %s", resp.StatusCode, body)
			}
		})
	}
	// Nothing was lost or granted by the bad requests.
	if as, err := c.Client().Allocations(ctxT(t, 5*time.Second), api.AllocationListOptions{}); err != nil || len(as) != 0 {
		t.Fatalf("allocations after bad input: %v %v", as, err)
	}
}

// metricValue returns the value of the sample line that starts with name.
func metricValue(body, name string) int {
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return int(f)
		}
	}
	return -1
}

// scrape returns an agent's /metrics page, read with c's token.
func scrape(t *testing.T, c *testcluster.Cluster, httpAddr string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(c.Authorize(req))
	if err != nil {
		t.Fatalf("metrics of %s: %v", httpAddr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// When the leader's process is gone (its raft port refuses connections),
// a survivor starts an election without waiting out the heartbeat
// timeout (cluster/failover.go), and the cluster keeps serving. A 2 s
// heartbeat timeout against a 400 ms lease makes the two paths easy to
// tell apart; which path ran is read from the fast-failover counter, not
// from timing. Disabled, the counter stays 0 and raft's timeout elects.
func TestFastFailoverAfterLeaderDies(t *testing.T) {
	for _, tc := range []struct {
		name     string
		disabled bool
	}{{"enabled", false}, {"disabled", true}} {
		t.Run(tc.name, func(t *testing.T) {
			c := testcluster.New(t, 3, testcluster.Options{Mutate: func(_ int, cfg *agent.Config) {
				cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 2*time.Second, 2*time.Second, 400*time.Millisecond
				cfg.DisableFastFailover = tc.disabled
			}})
			cl := c.Client()
			mustRegister(t, cl, "m1", 100)
			old := c.WaitLeader(20 * time.Second)
			c.Kill(old)
			leader := c.WaitLeader(30 * time.Second)
			if leader == old {
				t.Fatal("killed leader still leads")
			}
			if _, err := cl.Allocate(ctxT(t, 20*time.Second), api.AllocateRequest{RequestID: "after", Room: "r", Units: 1}); err != nil {
				t.Fatalf("allocate after failover: %v", err)
			}
			fast := 0
			for _, nd := range c.Running() {
				switch metricValue(scrape(t, c, nd.Cfg.HTTPAddr), "switchyard_fast_failovers_total") {
				case -1:
					t.Fatalf("%s has no switchyard_fast_failovers_total", nd.ID)
				case 0:
				default:
					fast++
				}
			}
			if tc.disabled && fast != 0 {
				t.Fatalf("%d nodes took the fast path while it was disabled", fast)
			}
			if !tc.disabled && fast == 0 {
				t.Fatal("no survivor took the fast path after the leader's process was gone")
			}
		})
	}
}
