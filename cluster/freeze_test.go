package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/proccluster"
)

// TestFrozenLeaderCostsOneElection freezes (SIGSTOP) the leader of a
// 3-process cluster running the default raft timing and allocates through
// a follower: the follower must fail the forwarded request over to the new
// leader (same request id) instead of leaving it parked on the frozen one,
// so the allocation is acknowledged well within a 15 s client timeout.
// Then the SDK, given the frozen agent first, must move on to another
// agent after one attempt. Latencies are logged, not asserted.
// SWITCHYARD_FREEZE_ROUNDS repeats the freeze (default 1) for figures.
func TestFrozenLeaderCostsOneElection(t *testing.T) {
	rounds := 1
	if v, err := strconv.Atoi(os.Getenv("SWITCHYARD_FREEZE_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	bin := proccluster.BuildBinary(t)
	c := proccluster.New(t, bin, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rounds)*60*time.Second+60*time.Second)
	defer cancel()
	all := api.NewClient(c.Addrs()...)
	if _, err := all.RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 1 << 30}); err != nil {
		t.Fatalf("register: %v", err)
	}
	var viaFollower, viaSDK []time.Duration
	granted := 0
	for round := 0; round < rounds; round++ {
		// Through a follower, raw HTTP: one request, the follower fails over.
		leader := waitLeader(ctx, t, c)
		follower := otherThan(c, leader)
		freeze(t, c, leader)
		start := time.Now()
		// A client's retries (same request id) of retryable answers
		// (no leader yet) go to the same follower, within a 15 s timeout:
		// a request parked on the frozen leader would use all of it.
		pctx, pcancel := context.WithTimeout(ctx, 15*time.Second)
		var (
			code  int
			hdr   http.Header
			body  string
			tries int
		)
		for {
			tries++
			code, hdr, body = post(pctx, t, follower.HTTPAddr, api.AllocateRequest{RequestID: fmt.Sprintf("freeze-%d", round), Room: "r", Units: 1})
			if code != http.StatusServiceUnavailable || pctx.Err() != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		pcancel()
		lat := time.Since(start)
		thaw(c, leader)
		if code != http.StatusCreated {
			t.Fatalf("round %d: allocation through follower %s with leader %s frozen: HTTP %d %s\n%s", round, follower.ID, leader.ID, code, body, c.Logs())
		}
		granted++
		leaders := strings.Split(hdr.Get("X-Switchyard-Forward-Leaders"), ",")
		attempts, _ := strconv.Atoi(hdr.Get("X-Switchyard-Forward-Attempts"))
		if leaders[0] == leader.ID && (attempts < 2 || leaders[len(leaders)-1] == leader.ID) {
			t.Fatalf("round %d: forwarded to frozen %s and answered without failing over (attempts %d, leaders %v)", round, leader.ID, attempts, leaders)
		}
		viaFollower = append(viaFollower, lat)
		t.Logf("round %d: leader %s frozen; acknowledged through follower %s after %v (%d client request(s); last one forwarded %d time(s), leaders %v)", round, leader.ID, follower.ID, lat.Round(time.Millisecond), tries, attempts, leaders)

		// The SDK, frozen agent first: one attempt there, then the others.
		leader = waitLeader(ctx, t, c)
		addrs := []string{leader.HTTPAddr}
		for _, p := range c.Nodes {
			if p != leader {
				addrs = append(addrs, p.HTTPAddr)
			}
		}
		cl := api.NewClient(addrs...)
		freeze(t, c, leader)
		cctx, ccancel := context.WithTimeout(ctx, 15*time.Second)
		start = time.Now()
		_, err := cl.Allocate(cctx, api.AllocateRequest{RequestID: fmt.Sprintf("freeze-sdk-%d", round), Room: "r", Units: 1})
		lat = time.Since(start)
		ccancel()
		stillStopped := allStopped(t, leader.Pid())
		thaw(c, leader)
		if err != nil {
			t.Fatalf("round %d: SDK allocation with %s (first address) frozen: %v\n%s", round, leader.ID, err, c.Logs())
		}
		granted++
		if n := cl.Attempts.Load(); n < 2 {
			t.Fatalf("round %d: the SDK made %d attempt(s); the first went to the frozen agent %s (pid %d, all threads still stopped when it answered: %v) and cannot have answered\n%s",
				round, n, leader.ID, leader.Pid(), stillStopped, c.Logs())
		}
		viaSDK = append(viaSDK, lat)
		t.Logf("round %d: leader %s frozen; SDK acknowledged after %v in %d attempts", round, leader.ID, lat.Round(time.Millisecond), cl.Attempts.Load())
	}
	t.Logf("frozen leader -> ack through a follower: median %v of %d; SDK with the frozen agent first: median %v", median(viaFollower), len(viaFollower), median(viaSDK))

	// The elections after the freezes were started by a survivor that
	// found a majority silent, not left to raft's timers. A starved
	// machine could let raft's timers go first now and then, so one
	// early election of the 2×rounds freezes is required, the count logged.
	waitLeader(ctx, t, c)
	early := 0
	for _, p := range c.Nodes {
		early += counter(ctx, t, p.HTTPAddr, "switchyard_silent_leader_failovers_total")
	}
	t.Logf("elections started early on a silent majority: %d for %d freezes", early, 2*rounds)
	if early == 0 {
		t.Fatalf("no election after %d freezes was started early on a silent majority\n%s", 2*rounds, c.Logs())
	}

	// Each request id was granted once, on every replica.
	for _, p := range c.Nodes {
		cl := api.NewClient(p.HTTPAddr)
		for {
			s, err := cl.Servers(ctx, true)
			if err == nil && len(s) == 1 && s[0].Used == int64(granted) {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("%s: servers %+v (err %v), want %d units used", p.ID, s, err, granted)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// waitLeader waits for an agreed leader, for every node to have applied
// the same index (a node thawed a moment ago has caught up) and to know
// every member's HTTP address (the survivors ask each other about a
// silence), so that each freeze is a single fault.
func waitLeader(ctx context.Context, t *testing.T, c *proccluster.Cluster) *proccluster.Proc {
	t.Helper()
	for {
		l, err := c.WaitLeader(ctx)
		if err != nil {
			t.Fatalf("%v\n%s", err, c.Logs())
		}
		same := true
		var idx uint64
		for i, p := range c.Nodes {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			cl := api.NewClient(p.HTTPAddr)
			cl.Retry = false
			st, err := cl.Status(sctx)
			cancel()
			if err != nil || (i > 0 && st.AppliedIndex != idx) || knownAddrs(st) != len(c.Nodes) {
				same = false
				break
			}
			idx = st.AppliedIndex
		}
		if same {
			return l
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// knownAddrs counts the members whose HTTP address st lists.
func knownAddrs(st api.Status) int {
	n := 0
	for _, m := range st.Members {
		if m.HTTPAddr != "" {
			n++
		}
	}
	return n
}

func otherThan(c *proccluster.Cluster, p *proccluster.Proc) *proccluster.Proc {
	i := slices.IndexFunc(c.Nodes, func(q *proccluster.Proc) bool { return q != p })
	return c.Nodes[i]
}

// freeze SIGSTOPs p and returns once the kernel reports every thread of
// the process stopped: a stop reaches each thread as it next runs, so on a
// busy machine a thread could still answer a request sent right after
// kill(2).
func freeze(t *testing.T, c *proccluster.Cluster, p *proccluster.Proc) {
	t.Helper()
	c.Signal(p, syscall.SIGSTOP)
	t.Cleanup(func() { c.Signal(p, syscall.SIGCONT) })
	deadline := time.Now().Add(10 * time.Second)
	for !allStopped(t, p.Pid()) {
		if time.Now().After(deadline) {
			t.Fatalf("freeze %s: not stopped after 10 s", p.ID)
		}
		time.Sleep(time.Millisecond)
	}
}

// allStopped reports whether every thread of pid is in state T (stopped).
func allStopped(t *testing.T, pid int) bool {
	t.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads of %d: %v", pid, err)
	}
	for _, stat := range tasks {
		b, err := os.ReadFile(stat)
		if err != nil {
			return false // a thread that just ended
		}
		// Field 3, after the parenthesised command name, is the state.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || len(b) <= i+2 || b[i+2] != 'T' {
			return false
		}
	}
	return true
}

func thaw(c *proccluster.Cluster, p *proccluster.Proc) { c.Signal(p, syscall.SIGCONT) }

// post sends one allocation to addr (no client retries) and returns the
// status, headers and body.
func post(ctx context.Context, t *testing.T, addr string, r api.AllocateRequest) (int, http.Header, string) {
	t.Helper()
	b, _ := json.Marshal(r)
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+addr+"/v1/allocations", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST to %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// counter reads an unlabelled counter from the agent's /metrics.
func counter(ctx context.Context, t *testing.T, addr, name string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("metrics of %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metrics of %s: %q", addr, line)
			}
			return int(f)
		}
	}
	t.Fatalf("metrics of %s: no %s", addr, name)
	return 0
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2].Round(time.Millisecond)
}

// TestLeaderFrozenRightAfterElection freezes the first leader as soon as
// it is elected, before every member's entry (its HTTP address) is
// recorded, and allocates through a follower: the next leader must record
// its own entry at once, or no follower can forward to it until the old
// leader comes back. The allocation is answered while the old leader is
// still frozen (the latency is logged, not asserted).
func TestLeaderFrozenRightAfterElection(t *testing.T) {
	bin := proccluster.BuildBinary(t)
	c := proccluster.New(t, bin, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	leader, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatalf("%v\n%s", err, c.Logs())
	}
	follower := otherThan(c, leader)
	freeze(t, c, leader)
	start := time.Now()
	// Whether the scenario was reached: the members' entries were still
	// being recorded when the leader froze.
	fcl := api.NewClient(follower.HTTPAddr)
	fcl.Retry = false
	known := 0
	if st, err := fcl.Status(ctx); err == nil {
		known = knownAddrs(st)
	}
	t.Logf("leader %s frozen; follower %s knew the HTTP address of %d of %d members", leader.ID, follower.ID, known, len(c.Nodes))
	pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
	defer pcancel()
	for {
		code, _, body := post(pctx, t, follower.HTTPAddr, api.AllocateRequest{RequestID: "early", Room: "r", Units: 1})
		if code != http.StatusServiceUnavailable {
			// No media server is registered: a leader's refusal is the answer.
			if !strings.Contains(body, `"insufficient_capacity"`) || !allStopped(t, leader.Pid()) {
				t.Fatalf("through follower %s with %s frozen: HTTP %d %s\n%s", follower.ID, leader.ID, code, body, c.Logs())
			}
			break
		}
		if pctx.Err() != nil {
			t.Fatalf("no leader answered through follower %s in 20 s while %s was frozen: %s\n%s", follower.ID, leader.ID, body, c.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("leader %s frozen right after its election; a new leader answered through %s after %v", leader.ID, follower.ID, time.Since(start).Round(time.Millisecond))
}

// TestEveryAgentFrozen freezes all three agents: an SDK allocation with
// a 2 s deadline must end with the SDK's clear "no leader reachable"
// error (an unknown outcome: retryable) when its deadline passes, not
// hang on a frozen connection. The test allows it 30 s.
func TestEveryAgentFrozen(t *testing.T) {
	bin := proccluster.BuildBinary(t)
	c := proccluster.New(t, bin, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	waitLeader(ctx, t, c)
	for _, p := range c.Nodes {
		freeze(t, c, p)
	}
	defer func() {
		for _, p := range c.Nodes {
			thaw(c, p)
		}
	}()
	cl := api.NewClient(c.Addrs()...)
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		defer acancel()
		_, err := cl.Allocate(actx, api.AllocateRequest{RequestID: "all-frozen", Room: "r", Units: 1})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "no leader reachable through 3 agent(s)") || !api.IsRetryable(err) {
			t.Fatalf("allocation with every agent frozen: %v (retryable %v), want a retryable \"no leader reachable through 3 agent(s)\"", err, api.IsRetryable(err))
		}
		t.Logf("every agent frozen: the SDK gave up after %v: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(30 * time.Second):
		t.Fatal("the SDK call hung with every agent frozen")
	}
}
