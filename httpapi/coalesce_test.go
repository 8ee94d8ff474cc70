package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// Single allocations that reach a follower at once are forwarded to the
// leader in shared batches, and every caller still gets its own answer:
// 201 and a distinct allocation for each new request id, the same
// allocation flagged duplicate for a repeat, its own refusal for a bad
// request mixed into the same batches. Nothing is lost or granted twice.
func TestFollowerCoalescesForwardedAllocations(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	leader := c.WaitLeader(30 * time.Second)
	follower := c.Followers()[0]
	term := leader.Agent.Node.Status().Term
	cl := api.NewClient(follower.Cfg.HTTPAddr).WithToken(c.Token)
	if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 1 << 20}); err != nil {
		t.Fatal(err)
	}

	const callers, each = 64, 5
	type answer struct {
		id  string
		dup bool
		err error
	}
	send := func() map[string]answer {
		out := map[string]answer{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					rid := fmt.Sprintf("co-%d-%d", w, i)
					req := api.AllocateRequest{RequestID: rid, Room: fmt.Sprintf("r%d", w%7), Units: 1}
					if i == 2 {
						req.Units = 0 // refused, in the same batches as the others
					}
					a, err := cl.Allocate(ctx, req)
					mu.Lock()
					out[rid] = answer{a.ID, a.Duplicate, err}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return out
	}
	first := send()
	ids := map[string]string{}
	for rid, a := range first {
		if rid[len(rid)-1] == '2' {
			if !errors.Is(a.err, fsm.ErrInvalid) {
				t.Fatalf("%s (zero units): %v, want invalid_argument", rid, a.err)
			}
			continue
		}
		if a.err != nil || a.id == "" || a.dup {
			t.Fatalf("%s: %+v", rid, a)
		}
		if other, ok := ids[a.id]; ok {
			t.Fatalf("allocation %s granted to %s and %s", a.id, other, rid)
		}
		ids[a.id] = rid
	}
	again := send()
	for rid, a := range again {
		if rid[len(rid)-1] == '2' {
			continue
		}
		if a.err != nil || !a.dup || a.id != first[rid].id {
			t.Fatalf("repeat of %s: %+v, want the duplicate of %s", rid, a, first[rid].id)
		}
	}
	if want := callers * (each - 1); len(ids) != want {
		t.Fatalf("%d allocations, want %d", len(ids), want)
	}
	c.WaitConverged(30 * time.Second)
	active := c.WaitLeader(30 * time.Second).Agent.Node.FSM().Allocations(fsm.AllocationFilter{ActiveOnly: true})
	if len(active) != len(ids) {
		t.Fatalf("leader holds %d active allocations, %d were acknowledged", len(active), len(ids))
	}
	for _, a := range active {
		if _, ok := ids[a.GetId()]; !ok {
			t.Fatalf("leader holds %s, never acknowledged", a.GetId())
		}
	}
	// Every allocation went to the leader inside a batch, and batches were
	// shared (fewer batches than allocations).
	batches, batched := forwardMetric(t, c, follower, "switchyard_forward_batches_total"), forwardMetric(t, c, follower, "switchyard_forward_batched_allocations_total")
	// The bad requests (zero units) go alone; every other one inside a
	// batch — unless leadership moved meanwhile (a busy machine), which
	// changes who forwards what.
	if want := float64(2 * callers * (each - 1)); batched != want {
		if now := c.WaitLeader(30 * time.Second).Agent.Node.Status().Term; now == term {
			t.Fatalf("%v allocations forwarded in batches, want %v", batched, want)
		}
		t.Logf("leadership moved during the test: %v allocations forwarded in batches", batched)
	}
	if batches >= batched {
		t.Fatalf("%v batches for %v allocations: nothing was shared", batches, batched)
	}
	t.Logf("%v allocations forwarded in %v batches", batched, batches)
}

// forwardMetric reads a counter from nd's /metrics (with c's token).
func forwardMetric(t *testing.T, c *testcluster.Cluster, nd *testcluster.Node, name string) float64 {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+nd.Cfg.HTTPAddr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(c.Authorize(req))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not exported by %s", name, nd.ID)
	return 0
}

// A request the leader would refuse on its input (here a 600 KB room name)
// is forwarded alone: it gets its own refusal and never spoils the batch of
// the valid requests sent beside it.
func TestCoalescingIsolatesBadRequests(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.WaitLeader(30 * time.Second)
	cl := api.NewClient(c.Followers()[0].Cfg.HTTPAddr).WithToken(c.Token)
	if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	huge := strings.Repeat("a", 600_000) // two of them exceed the leader's 1 MiB body cap together
	var wg sync.WaitGroup
	errs := make([]error, 68)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			room := "r"
			if i%17 == 0 {
				room = huge
			}
			_, errs[i] = cl.Allocate(ctx, api.AllocateRequest{RequestID: fmt.Sprintf("iso-%d", i), Room: room, Units: 1})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		switch {
		case i%17 == 0 && !errors.Is(err, fsm.ErrInvalid):
			t.Errorf("request %d (huge room): %v, want invalid_argument", i, err)
		case i%17 != 0 && err != nil:
			t.Errorf("request %d: %v", i, err)
		}
	}
}
