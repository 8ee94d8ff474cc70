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
	cl := api.NewClient(follower.Cfg.HTTPAddr)
	cl.Retry = false // every answer is the follower's first
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
	active := leader.Agent.Node.FSM().Allocations(fsm.AllocationFilter{ActiveOnly: true})
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
	batches, batched := forwardMetric(t, follower, "switchyard_forward_batches_total"), forwardMetric(t, follower, "switchyard_forward_batched_allocations_total")
	if batched != 2*callers*each {
		t.Fatalf("%v allocations forwarded in batches, want %d", batched, 2*callers*each)
	}
	if batches >= batched {
		t.Fatalf("%v batches for %v allocations: nothing was shared", batches, batched)
	}
	t.Logf("%v allocations forwarded in %v batches", batched, batches)
}

// forwardMetric reads a counter from nd's /metrics.
func forwardMetric(t *testing.T, nd *testcluster.Node, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + nd.Cfg.HTTPAddr + "/metrics")
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
