package cluster_test

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// allocIndex is the log index an allocation was committed at (ids are
// a-<index>-<pos>).
func allocIndex(t *testing.T, id string) uint64 {
	parts := strings.Split(id, "-")
	if len(parts) != 3 {
		t.Fatalf("allocation id %q", id)
	}
	n, err := strconv.ParseUint(parts[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPolicyLiveSwitchUnderLoad changes the policy twice while clients
// allocate continuously through every node, with a leadership change in
// between: every allocation committed after a policy's log index follows
// that policy, on whichever node leads, no request fails, and every replica
// holds the same policy and state.
func TestPolicyLiveSwitchUnderLoad(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{NoQUIC: true})
	cl := c.Client()
	ctx := testcluster.Context(t, 60*time.Second)
	for i := 1; i <= 4; i++ {
		if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: fmt.Sprintf("m%d", i), Capacity: 100000}); err != nil {
			t.Fatal(err)
		}
	}
	var placed atomic.Int64
	var failures []error
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: fmt.Sprintf("w%d-%d", w, i), Room: fmt.Sprintf("room-%d", i%7), Units: 1})
				if err != nil {
					mu.Lock()
					failures = append(failures, err)
					mu.Unlock()
					return
				}
				placed.Add(1)
			}
		}()
	}
	waitPlaced := func(n int64) {
		t.Helper()
		target := placed.Load() + n
		testcluster.Eventually(t, 30*time.Second, func() error {
			if placed.Load() < target {
				return fmt.Errorf("%d of %d placed", placed.Load(), target)
			}
			return nil
		})
	}
	waitPlaced(80)

	p1, err := cl.SetPolicy(ctx, api.Policy{Strategy: "least-loaded", Expr: `server.id == "m3" ? 1 : 0`})
	if err != nil {
		t.Fatal(err)
	}
	waitPlaced(60)
	// The policy lives in the log: a leader of a later term (its decision
	// loop starts afresh) places with it too. On a busy machine leadership
	// may come back to the old node after the transfer; a new term is what
	// counts.
	old := c.WaitLeader(5 * time.Second)
	term := old.Agent.Node.Status().Term
	if err := old.Agent.Node.TransferLeadership(ctx, ""); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 30*time.Second, func() error {
		if l := c.WaitLeader(10 * time.Second); l.Agent.Node.Status().Term <= term {
			return fmt.Errorf("still term %d under %s", term, l.ID)
		}
		return nil
	})
	waitPlaced(60)
	// A bad policy is refused and changes nothing, under load.
	if _, err := cl.SetPolicy(ctx, api.Policy{Strategy: "least-loaded", Expr: `server.id`}); !errors.Is(err, fsm.ErrInvalid) {
		t.Fatalf("bad expression: got %v, want ErrInvalid", err)
	}
	p2, err := cl.SetPolicy(ctx, api.Policy{Strategy: "least-loaded"})
	if err != nil {
		t.Fatal(err)
	}
	waitPlaced(30)
	close(stop)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d requests failed while the policy switched, first: %v", len(failures), failures[0])
	}
	c.WaitConverged(10 * time.Second)

	if p2.Version != p1.Version+1 || p2.AppliedAtIndex <= p1.AppliedAtIndex {
		t.Fatalf("versions: %+v then %+v", p1, p2)
	}
	for _, nd := range c.Running() {
		pol := nd.Agent.Node.FSM().Policy()
		if pol.GetVersion() != p2.Version || pol.GetAppliedAtIndex() != p2.AppliedAtIndex || pol.GetExpr() != "" {
			t.Fatalf("%s holds policy %v, want version %d from index %d", nd.ID, pol, p2.Version, p2.AppliedAtIndex)
		}
	}
	var before, pinned, after int
	perServer := map[string]int{}
	for _, a := range c.WaitLeader(5 * time.Second).Agent.Node.FSM().Allocations(fsm.AllocationFilter{}) {
		idx := allocIndex(t, a.Id)
		switch {
		case idx == p1.AppliedAtIndex || idx == p2.AppliedAtIndex:
			// Same entry as the policy change: decided before or after it
			// depending on its position in the batch.
		case idx <= p1.AppliedAtIndex:
			before++
			perServer[a.Server]++
		case idx <= p2.AppliedAtIndex:
			pinned++
			if a.Server != "m3" {
				t.Errorf("allocation %s at index %d (after policy 1 at %d) is on %s, not m3", a.Id, idx, p1.AppliedAtIndex, a.Server)
			}
		default:
			after++
			if a.Server == "m3" {
				t.Errorf("allocation %s at index %d (after policy 2 at %d) is on the fullest server m3", a.Id, idx, p2.AppliedAtIndex)
			}
		}
	}
	if len(perServer) != 4 || pinned < 100 || after < 20 {
		t.Fatalf("before %d on %d servers, pinned %d, after %d", before, len(perServer), pinned, after)
	}
	t.Logf("placed %d before the switch (spread over %v), %d pinned to m3, %d spread again", before, perServer, pinned, after)
}

// TestPolicyRefusedKeepsOld sends bad policies through the API: each is
// refused with a clear error and the committed policy stays as it was.
func TestPolicyRefusedKeepsOld(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{NoQUIC: true})
	cl := c.Client()
	ctx := testcluster.Context(t, 30*time.Second)
	good, err := cl.SetPolicy(ctx, api.Policy{Strategy: "bin-pack", Hard: api.Limits{Units: 0.9}, Soft: api.Limits{CPU: 0.7}})
	if err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		p   api.Policy
		msg string
	}{
		{api.Policy{Strategy: "fastest"}, `unknown strategy "fastest"`},
		{api.Policy{Strategy: "bin-pack", Expr: "server.cpu * "}, "does not compile"},
		{api.Policy{Strategy: "bin-pack", Expr: `server.region == "eu"`}, "must return a number"},
		{api.Policy{Strategy: "bin-pack", Hard: api.Limits{EgressBps: -1}}, "must not be negative"},
		{api.Policy{Strategy: "bin-pack", Weights: api.Weights{CPU: -2}}, "weight cpu"},
		{api.Policy{Strategy: "bin-pack", IfVersion: good.Version + 5}, "no longer current"},
	}
	for _, tc := range bad {
		_, err := cl.SetPolicy(ctx, tc.p)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("policy %+v: got %v, want an error containing %q", tc.p, err, tc.msg)
		}
		if _, verr := cl.ValidatePolicy(ctx, tc.p); tc.p.IfVersion == 0 && !errors.Is(verr, fsm.ErrInvalid) {
			t.Errorf("validate %+v: got %v", tc.p, verr)
		}
	}
	for _, nd := range c.Running() {
		testcluster.Eventually(t, 5*time.Second, func() error {
			p := nd.Agent.Node.FSM().Policy()
			if p.GetVersion() != good.Version || p.GetStrategy() != "bin-pack" || p.GetHard().GetUnits() != 0.9 {
				return fmt.Errorf("%s: %v", nd.ID, p)
			}
			return nil
		})
	}
	got, err := cl.Policy(ctx, false)
	if err != nil || got.Version != good.Version || got.Soft.CPU != 0.7 {
		t.Fatalf("policy get: %+v %v", got, err)
	}
	// A conditional change at the right version goes through.
	if _, err := cl.SetPolicy(ctx, api.Policy{Strategy: "two-choice", IfVersion: good.Version}); err != nil {
		t.Fatal(err)
	}
}
