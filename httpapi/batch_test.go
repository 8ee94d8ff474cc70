package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
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
	"github.com/switchyard/switchyard/internal/testcluster"
)

// Batched allocations (Client.Batch) answer exactly as single calls do:
// the same allocation for a new request, the same status and code for
// every refusal, duplicates flagged; many concurrent callers through a
// follower all get distinct allocations, none lost or granted twice.
func TestBatchedAllocateMatchesSingle(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c.WaitLeader(30 * time.Second)
	follower := c.Followers()[0]
	single := api.NewClient(follower.Cfg.HTTPAddr).WithToken(c.Token)
	batched := api.NewClient(follower.Cfg.HTTPAddr).WithToken(c.Token)
	batched.Batch = true
	if _, err := single.RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 1000}); err != nil {
		t.Fatal(err)
	}
	if _, err := single.Allocate(ctx, api.AllocateRequest{RequestID: "taken", Room: "a", Units: 1}); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name    string
		req     api.AllocateRequest
		status  int    // 0: success
		code    string // wire code on refusal
		dupFlag bool
	}{
		{name: "new", req: api.AllocateRequest{Room: "r", Units: 1}},
		{name: "zero units", req: api.AllocateRequest{Room: "r"}, status: 400, code: "invalid_argument"},
		{name: "negative ttl", req: api.AllocateRequest{Room: "r", Units: 1, TTLMs: -1}, status: 400, code: "invalid_argument"},
		{name: "no room", req: api.AllocateRequest{Units: 1}, status: 400, code: "invalid_argument"},
		{name: "too big", req: api.AllocateRequest{Room: "r", Units: 5000}, status: 409, code: "insufficient_capacity"},
		{name: "request id reused", req: api.AllocateRequest{RequestID: "taken", Room: "b", Units: 1}, status: 409, code: "request_id_reused"},
		{name: "duplicate", req: api.AllocateRequest{RequestID: "taken", Room: "a", Units: 1}, dupFlag: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got [2]error
			var allocs [2]api.Allocation
			for i, cl := range []*api.Client{single, batched} {
				req := tc.req
				if req.RequestID == "" {
					req.RequestID = fmt.Sprintf("%s-%d", tc.name, i)
				}
				allocs[i], got[i] = cl.Allocate(ctx, req)
			}
			for i, err := range got {
				path := [2]string{"single", "batched"}[i]
				if tc.status == 0 {
					if err != nil {
						t.Fatalf("%s: %v", path, err)
					}
					if allocs[i].Server != "m1" || allocs[i].Duplicate != tc.dupFlag {
						t.Fatalf("%s: %+v", path, allocs[i])
					}
					continue
				}
				var ae *api.APIError
				if !errors.As(err, &ae) || ae.Status != tc.status || ae.Body.Code != tc.code {
					t.Fatalf("%s: got %v (%#v), want %d %s", path, err, ae, tc.status, tc.code)
				}
			}
			if tc.status != 0 && got[0].Error() != got[1].Error() {
				t.Fatalf("messages differ: single %q, batched %q", got[0], got[1])
			}
		})
	}

	// Many concurrent callers: every one answered, all distinct, and the
	// server's used units count each exactly once.
	const callers = 300
	var wg sync.WaitGroup
	ids := make([]string, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := batched.Allocate(ctx, api.AllocateRequest{RequestID: fmt.Sprintf("many-%d", i), Room: "m", Units: 1})
			ids[i], errs[i] = a.ID, err
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
		if seen[ids[i]] {
			t.Fatalf("allocation %s granted twice", ids[i])
		}
		seen[ids[i]] = true
	}
	s, err := server(ctx, single, "m1")
	if err != nil {
		t.Fatal(err)
	}
	// "taken", "new-0", "new-1", the duplicate adds nothing, plus the callers.
	if want := int64(3 + callers); s.Used != want {
		t.Fatalf("m1 uses %d units, want %d", s.Used, want)
	}

	// They were coalesced: the follower served fewer batch requests than
	// there were callers.
	if n := batchRequests(t, c.Token, follower.Cfg.HTTPAddr); n == 0 || n >= callers {
		t.Fatalf("%d batch requests for %d callers", n, callers)
	} else {
		t.Logf("%d callers in %d batch requests", callers, n)
	}

	// A batch over the cap is refused whole, before anything runs.
	big := api.BatchAllocateRequest{Requests: make([]api.AllocateRequest, api.MaxBatch+1)}
	for i := range big.Requests {
		big.Requests[i] = api.AllocateRequest{RequestID: fmt.Sprintf("big-%d", i), Room: "b", Units: 1}
	}
	body, _ := json.Marshal(big)
	req, err := http.NewRequest(http.MethodPost, "http://"+follower.Cfg.HTTPAddr+"/v1/allocations/batch", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(c.Authorize(req))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e api.Error
	_ = json.NewDecoder(resp.Body).Decode(&e)
	if resp.StatusCode != 400 || e.Code != "invalid_argument" {
		t.Fatalf("oversized batch: %d %+v", resp.StatusCode, e)
	}
	if s2, err := server(ctx, single, "m1"); err != nil || s2.Used != s.Used {
		t.Fatalf("oversized batch changed state: %+v %v", s2, err)
	}
}

// batchRequests sums switchyard_http_requests_total for the batch route
// on the agent at addr, read with token.
func batchRequests(t *testing.T, token, addr string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	n := 0
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, `switchyard_http_requests_total{code="200",route="POST /v1/allocations/batch"}`) {
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			n += int(v)
		}
	}
	return n
}

func server(ctx context.Context, cl *api.Client, id string) (api.Server, error) {
	ss, err := cl.Servers(ctx, false)
	if err != nil {
		return api.Server{}, err
	}
	for _, s := range ss {
		if s.ID == id {
			return s, nil
		}
	}
	return api.Server{}, fmt.Errorf("no server %s", id)
}
