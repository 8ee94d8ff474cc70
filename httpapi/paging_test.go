package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
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
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(c.Authorize(req))
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

// TestServerStateFilterAndIntentPages: GET /v1/servers?state= keeps the
// servers in the states named (one, a comma-separated list, or the
// parameter repeated) and ?prefix= those whose id starts with it, before
// paging, X-Total-Count counts those, from the
// leader (through a follower) and from a follower's replica (stale);
// GET /v1/provisioning/intents pages like every list. Bad input (an
// unknown state, a bad limit) is refused with 400 invalid_argument and a
// message naming what is accepted.
func TestServerStateFilterAndIntentPages(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{NoQUIC: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c.WaitLeader(30 * time.Second)
	cl := c.Client()
	now := time.Now().UnixMilli()
	states := []fsmpb.ServerState{fsmpb.ServerState_SERVER_STATE_ACTIVE, fsmpb.ServerState_SERVER_STATE_DRAINING,
		fsmpb.ServerState_SERVER_STATE_DOWN, fsmpb.ServerState_SERVER_STATE_ACTIVE}
	byState := map[string][]string{}
	var servers []*fsmpb.Server
	for i := range 14 {
		s := &fsmpb.Server{Id: fmt.Sprintf("s%02d", i), CapacityUnits: 10, State: states[i%len(states)], RegisteredAtUnixMs: now, StateChangedAtUnixMs: now}
		servers = append(servers, s)
		byState[fsm.StateName(s.State)] = append(byState[fsm.StateName(s.State)], s.Id)
	}
	var intents []*fsmpb.ProvisionIntent
	var intentIDs []string
	for i := range 7 {
		it := &fsmpb.ProvisionIntent{Id: fmt.Sprintf("i%02d", i), Kind: fsmpb.IntentKind_INTENT_KIND_PROVISION, State: fsmpb.IntentState_INTENT_STATE_DONE,
			ServerId: fmt.Sprintf("p%02d", i), Units: 10, CreatedAtUnixMs: now, UpdatedAtUnixMs: now}
		if i%3 == 0 {
			it.Kind, it.State, it.Error = fsmpb.IntentKind_INTENT_KIND_DEPROVISION, fsmpb.IntentState_INTENT_STATE_FAILED, "provider exited 1"
		}
		intents = append(intents, it)
		intentIDs = append(intentIDs, it.Id)
	}
	testcluster.EditState(t, ctx, cl, func(st *fsmpb.State) {
		st.Servers = append(st.Servers, servers...)
		st.Intents = append(st.Intents, intents...)
	})
	c.WaitConverged(30 * time.Second)

	base := "http://" + c.Followers()[0].Cfg.HTTPAddr
	get := func(path string) (int, http.Header, []map[string]any, api.Error) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, "GET", base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(c.Authorize(req))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var items []map[string]any
		var e api.Error
		if resp.StatusCode == 200 {
			err = json.NewDecoder(resp.Body).Decode(&items)
		} else {
			err = json.NewDecoder(resp.Body).Decode(&e)
		}
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header, items, e
	}
	concat := func(lists ...[]string) []string { return slices.Sorted(slices.Values(slices.Concat(lists...))) }

	t.Run("pages", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			path  string // without limit and after
			limit int
			want  []string // ids, in order, over every page
			state string   // the state every item has ("" any)
		}{
			{"intents", "/v1/provisioning/intents?", 3, intentIDs, ""},
			{"intents in one page", "/v1/provisioning/intents?", 0, intentIDs, ""},
			{"intents, stale", "/v1/provisioning/intents?stale=true&", 2, intentIDs, ""},
			{"draining servers", "/v1/servers?state=draining&", 2, byState["draining"], "draining"},
			{"down servers, stale", "/v1/servers?stale=true&state=down&", 2, byState["down"], "down"},
			{"active servers", "/v1/servers?state=active&", 4, byState["active"], "active"},
			{"two states, comma-separated", "/v1/servers?state=down,draining&", 3, concat(byState["down"], byState["draining"]), ""},
			{"two states, repeated", "/v1/servers?state=active&state=down&", 5, concat(byState["active"], byState["down"]), ""},
			{"every state", "/v1/servers?state=active,draining,down&", 5, concat(byState["active"], byState["draining"], byState["down"]), ""},
			{"no filter", "/v1/servers?", 5, concat(byState["active"], byState["draining"], byState["down"]), ""},
			{"empty filter", "/v1/servers?state=&", 5, concat(byState["active"], byState["draining"], byState["down"]), ""},
			{"id prefix", "/v1/servers?prefix=s0&", 4, []string{"s00", "s01", "s02", "s03", "s04", "s05", "s06", "s07", "s08", "s09"}, ""},
			{"id prefix and state, stale", "/v1/servers?stale=true&prefix=s1&state=active&", 1, []string{"s11", "s12"}, "active"},
			{"id prefix matching nothing", "/v1/servers?prefix=x&", 2, nil, ""},
			{"empty id prefix", "/v1/servers?prefix=&", 0, concat(byState["active"], byState["draining"], byState["down"]), ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var got []string
				after := ""
				for pages := 0; ; pages++ {
					if pages > len(tc.want) {
						t.Fatalf("more pages than items: %v", got)
					}
					path := tc.path + "after=" + after
					if tc.limit > 0 {
						path += fmt.Sprintf("&limit=%d", tc.limit)
					}
					code, h, items, e := get(path)
					if code != 200 || h.Get(api.TotalCountHeader) != fmt.Sprint(len(tc.want)) {
						t.Fatalf("%s: %d %+v, total %q, want %d", path, code, e, h.Get(api.TotalCountHeader), len(tc.want))
					}
					if tc.limit > 0 && len(items) > tc.limit {
						t.Fatalf("%s: %d items", path, len(items))
					}
					for _, it := range items {
						if tc.state != "" && it["state"] != tc.state {
							t.Fatalf("%s: %v", path, it)
						}
						got = append(got, it["id"].(string))
					}
					if after = h.Get(api.NextCursorHeader); after == "" {
						break
					}
				}
				if !slices.Equal(got, tc.want) {
					t.Fatalf("pages hold %v, want %v", got, tc.want)
				}
			})
		}
	})

	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			path string
			msg  []string // what the message must name
		}{
			{"/v1/servers?state=sleeping", []string{`"sleeping"`, "active, draining, down"}},
			{"/v1/servers?state=Active", []string{`"Active"`, "active, draining, down"}},
			{"/v1/servers?state=active,", []string{`""`, "active, draining, down"}},
			{"/v1/servers?state=active&state=unknown", []string{`"unknown"`}},
			{"/v1/servers?stale=true&state=gone", []string{`"gone"`}},
			{"/v1/servers?state=active&limit=0", []string{"limit", "10000"}},
			{"/v1/servers?prefix=" + strings.Repeat("s", 129), []string{"prefix", "129", "128"}},
			{"/v1/provisioning/intents?limit=0", []string{"limit", "10000"}},
			{"/v1/provisioning/intents?limit=x", []string{"limit", `"x"`}},
			{"/v1/provisioning/intents?limit=-1", []string{"limit"}},
			{fmt.Sprintf("/v1/provisioning/intents?stale=true&limit=%d", api.MaxPageLimit+1), []string{"limit"}},
		} {
			t.Run(tc.path, func(t *testing.T) {
				code, h, _, e := get(tc.path)
				if code != 400 || e.Code != "invalid_argument" || h.Get(api.TotalCountHeader) != "" {
					t.Fatalf("%d %+v (total %q), want 400 %s", code, e, h.Get(api.TotalCountHeader), "invalid_argument")
				}
				for _, m := range tc.msg {
					if !strings.Contains(e.Error, m) {
						t.Fatalf("message %q does not name %s", e.Error, m)
					}
				}
			})
		}
	})
}
