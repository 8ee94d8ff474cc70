package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// List endpoints page with ?limit= and ?after=: pages follow each other
// through X-Next-Cursor without a gap or a repeat, X-Total-Count counts
// every match, the last page has no cursor, no limit lists everything, and
// a bad limit is refused. Asked of a follower, which forwards the read.
func TestListPaging(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c.WaitLeader(30 * time.Second)
	cl := c.Client()
	const n = 25
	for i := range n {
		if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: fmt.Sprintf("s%02d", i), Capacity: 10}); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: fmt.Sprintf("a%02d", i), Room: "r", Units: 1}); err != nil {
			t.Fatal(err)
		}
	}
	base := "http://" + c.Followers()[0].Cfg.HTTPAddr
	get := func(path string) (int, http.Header, []map[string]any) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var items []map[string]any
		if resp.StatusCode == 200 {
			if err := json.NewDecoder(resp.Body).Decode(&items); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, resp.Header, items
	}
	for _, tc := range []struct{ path, key string }{{"/v1/servers", "id"}, {"/v1/allocations", "id"}} {
		t.Run(tc.path, func(t *testing.T) {
			seen := map[string]bool{}
			var pages []int
			after := ""
			for {
				code, h, items := get(fmt.Sprintf("%s?limit=10&after=%s", tc.path, after))
				if code != 200 || h.Get(api.TotalCountHeader) != fmt.Sprint(n) {
					t.Fatalf("page after %q: %d, total %q", after, code, h.Get(api.TotalCountHeader))
				}
				pages = append(pages, len(items))
				for _, it := range items {
					k := it[tc.key].(string)
					if seen[k] || k <= after {
						t.Fatalf("%s repeated or out of order after %q", k, after)
					}
					seen[k] = true
				}
				if after = h.Get(api.NextCursorHeader); after == "" {
					break
				}
			}
			if len(seen) != n || fmt.Sprint(pages) != "[10 10 5]" {
				t.Fatalf("pages %v, %d distinct items, want [10 10 5] and %d", pages, len(seen), n)
			}
			if code, h, items := get(tc.path); code != 200 || len(items) != n || h.Get(api.NextCursorHeader) != "" {
				t.Fatalf("without a limit: %d, %d items, cursor %q", code, len(items), h.Get(api.NextCursorHeader))
			}
			for _, bad := range []string{"0", "-1", "x", fmt.Sprint(api.MaxPageLimit + 1)} {
				if code, _, _ := get(tc.path + "?limit=" + bad); code != 400 {
					t.Fatalf("limit=%s: %d, want 400", bad, code)
				}
			}
		})
	}
}
