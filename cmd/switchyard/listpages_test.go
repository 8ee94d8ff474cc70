package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// jsonArray prints, element by element, exactly what printJSON prints for
// the whole slice.
func TestJSONArrayMatchesPrintJSON(t *testing.T) {
	for _, items := range [][]any{
		{},
		{map[string]any{"id": "a", "labels": map[string]string{"k": "<v>&"}, "n": 1, "list": []int{1, 2}, "empty": []int{}}},
		{api.Allocation{ID: "x"}, api.Allocation{ID: "y", Room: "r\u2028"}, map[string]any{}, nil, "s"},
	} {
		var whole, streamed bytes.Buffer
		if err := printJSON(&whole, items); err != nil {
			t.Fatal(err)
		}
		arr := &jsonArray{w: &streamed}
		for _, it := range items {
			if err := arr.add(it); err != nil {
				t.Fatal(err)
			}
		}
		if err := arr.close(); err != nil {
			t.Fatal(err)
		}
		if whole.String() != streamed.String() {
			t.Fatalf("streamed:\n%s\nprintJSON:\n%s", streamed.String(), whole.String())
		}
	}
}

func TestListFooter(t *testing.T) {
	for _, tc := range []struct {
		r    listResult
		want string
	}{
		{listResult{n: 23, total: 23}, "23 servers"},
		{listResult{n: 0, total: 0}, "0 servers"},
		{listResult{n: 7, total: 23, next: "s06"}, "7 of 23 servers shown; the next page: --after s06"},
		{listResult{n: 2, total: 23}, "2 of 23 servers shown; no more follow"},
		{listResult{n: 1, total: 2, next: "it's a room"}, `1 of 2 servers shown; the next page: --after 'it'\''s a room'`},
		{listResult{n: 1, total: 2, next: "bell\a"}, `1 of 2 servers shown; the next page: --after 'bell\a'`},
	} {
		if got := tc.r.footer("servers"); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.r, got, tc.want)
		}
	}
}

// runCLI runs the CLI in-process to its end and returns stdout, stderr and
// the error it ended with.
func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// TestListCommandsPage runs `server list`, `alloc list` and `room list`
// against a cluster through a proxy that records the requests: every
// list is read in pages of --page-size, the --json output is byte for
// byte the array the one-request list printed, the tables end with the
// totals, and --limit and --after print a window and say how to go on.
func TestListCommandsPage(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{NoQUIC: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := c.Client()
	const n = 23
	for i := range n {
		if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: fmt.Sprintf("s%02d", i), Capacity: 10, Region: []string{"eu", "us", ""}[i%3]}); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: fmt.Sprintf("a%02d", i), Room: fmt.Sprint("r", i%2), Units: 1}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		if _, err := cl.PlaceRoom(ctx, fmt.Sprint("room-", i), api.PlaceRoomRequest{}); err != nil {
			t.Fatal(err)
		}
	}

	var mu sync.Mutex
	var seen []string
	target, _ := url.Parse("http://" + c.Addrs()[0])
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.Path+"?"+r.URL.RawQuery)
		mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	addr, tok := "--addr="+strings.TrimPrefix(proxy.URL, "http://"), "--token="+c.Token
	// requests runs the CLI and returns what it printed and the queries it
	// sent to path.
	requests := func(path string, args ...string) (string, string, []string) {
		t.Helper()
		mu.Lock()
		seen = nil
		mu.Unlock()
		out, errOut, err := runCLI(t, append(args, addr, tok)...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errOut)
		}
		mu.Lock()
		defer mu.Unlock()
		// A request the client sent again (an election under load) is
		// counted once.
		var qs []string
		for _, s := range seen {
			if p, q, _ := strings.Cut(s, "?"); p == path {
				qs = append(qs, q)
			}
		}
		return out, errOut, slices.Compact(qs)
	}
	jsonOf := func(v any) string {
		var b bytes.Buffer
		if err := printJSON(&b, v); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}

	allocs, err := cl.Allocations(ctx, api.AllocationListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out, _, qs := requests("/v1/allocations", "alloc", "list", "--json", "--page-size", "4")
	if out != jsonOf(allocs) {
		t.Fatalf("alloc list --json in pages differs from the whole list:\n%s\nwant\n%s", out, jsonOf(allocs))
	}
	if len(qs) != (len(allocs)+3)/4 || qs[0] != "limit=4" || qs[1] != "after="+allocs[3].ID+"&limit=4" {
		t.Fatalf("alloc list sent %v", qs)
	}
	rooms, err := cl.Rooms(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	if out, _, qs = requests("/v1/rooms", "room", "list", "--json", "--page-size", "2"); out != jsonOf(rooms) || len(qs) != 3 {
		t.Fatalf("room list --json (%d requests):\n%s\nwant\n%s", len(qs), out, jsonOf(rooms))
	}
	if out, _, _ = requests("/v1/allocations", "alloc", "list", "--json", "--room", "none"); out != "[]\n" {
		t.Fatalf("empty alloc list --json: %q", out)
	}

	// Servers carry their load age, which moves: compare ids and fields.
	out, _, qs = requests("/v1/servers", "server", "list", "--json", "--page-size", "5")
	var got []map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	raw, err := cl.ServersRaw(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n || len(raw) != n || len(qs) != 5 {
		t.Fatalf("server list --json: %d servers in %d requests, want %d in 5", len(got), len(qs), n)
	}
	for i := range got {
		if got[i]["id"] != raw[i]["id"] || !slices.Equal(keys(got[i]), keys(raw[i])) {
			t.Fatalf("server %d: %v, whole list has %v", i, got[i], raw[i])
		}
	}

	out, _, qs = requests("/v1/servers", "server", "list", "--page-size", "5")
	if !strings.HasPrefix(out, "23 servers: 23 active, 0 draining, 0 down; 28 of 230 units used (12%)\n") || strings.Count(out, "\ns") != n || len(qs) != 5 {
		t.Fatalf("server list (%d requests):\n%s", len(qs), out)
	}
	out, _, _ = requests("/v1/servers", "server", "list", "--summary", "--json", "--page-size", "5")
	plain, err := cl.Servers(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if out != jsonOf(summarizeServers(plain)) {
		t.Fatalf("server list --summary --json:\n%s\nwant\n%s", out, jsonOf(summarizeServers(plain)))
	}

	// A window: the requests ask for no more than the limit leaves.
	out, _, qs = requests("/v1/servers", "server", "list", "--limit", "7", "--page-size", "5")
	if strings.Contains(out, "servers:") || strings.Count(out, "\ns") != 7 || !strings.HasSuffix(out, "\n7 of 23 servers shown; the next page: --after s06\n") ||
		!slices.Equal(qs, []string{"limit=5", "after=s04&limit=2"}) {
		t.Fatalf("server list --limit 7 sent %v, printed:\n%s", qs, out)
	}
	out, errOut, _ := requests("/v1/servers", "server", "list", "--json", "--after", "s06", "--limit", "7")
	got = nil
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 7 || got[0]["id"] != "s07" || got[6]["id"] != "s13" ||
		errOut != "7 of 23 servers shown; the next page: --after s13\n" {
		t.Fatalf("server list --json --after s06 --limit 7: %v %v, stderr %q", got, err, errOut)
	}
	out, _, _ = requests("/v1/allocations", "alloc", "list", "--room", "r1", "--active", "--page-size", "4")
	if strings.Count(out, " r1 ") != 11 || !strings.HasSuffix(out, "\n11 allocations\n") {
		t.Fatalf("alloc list --room r1:\n%s", out)
	}
	out, _, _ = requests("/v1/allocations", "alloc", "list", "--after", allocs[len(allocs)-3].ID)
	if !strings.HasSuffix(out, fmt.Sprintf("\n2 of %d allocations shown; no more follow\n", len(allocs))) {
		t.Fatalf("alloc list --after the third last:\n%s", out)
	}
	if out, _, _ = requests("/v1/rooms", "room", "list", "--limit", "2"); !strings.HasSuffix(out, "\n2 of 5 rooms shown; the next page: --after room-1\n") {
		t.Fatalf("room list --limit 2:\n%s", out)
	}

	for _, bad := range [][]string{
		{"server", "list", "--page-size", "0"},
		{"server", "list", "--page-size", fmt.Sprint(api.MaxPageLimit + 1)},
		{"alloc", "list", "--limit", "-1"},
		{"server", "list", "--summary", "--limit", "3"},
		{"server", "list", "--watch", "--after", "s01"},
	} {
		if _, _, err := runCLI(t, append(bad, addr)...); err == nil || !strings.Contains(fmt.Sprintf("%T", err), "usageError") {
			t.Fatalf("%v: %v, want a usage error", bad, err)
		}
	}

	// `policy intents` pages like the other lists; its --json is the
	// array the one-request list printed.
	const intents = 5
	testcluster.EditState(t, ctx, cl, func(st *fsmpb.State) { st.Intents = append(st.Intents, testcluster.FinalIntents(intents)...) })
	its, err := cl.Intents(ctx, false)
	if err != nil || len(its) != intents {
		t.Fatalf("intents: %d %v", len(its), err)
	}
	out, _, qs = requests("/v1/provisioning/intents", "policy", "intents", "--json")
	if out != jsonOf(its) || !slices.Equal(qs, []string{fmt.Sprint("limit=", api.DefaultPageSize)}) {
		t.Fatalf("policy intents --json sent %v, printed:\n%s\nwant\n%s", qs, out, jsonOf(its))
	}
	if out, _, qs = requests("/v1/provisioning/intents", "policy", "intents", "--json", "--page-size", "2"); out != jsonOf(its) || len(qs) != 3 {
		t.Fatalf("policy intents --json --page-size 2 (%d requests):\n%s", len(qs), out)
	}
	if out, _, _ = requests("/v1/provisioning/intents", "policy", "intents"); !strings.HasPrefix(out, "ID ") || strings.Count(out, "\ni0") != intents || !strings.HasSuffix(out, "\n5 intents\n") {
		t.Fatalf("policy intents:\n%s", out)
	}
	out, _, qs = requests("/v1/provisioning/intents", "policy", "intents", "--limit", "3", "--page-size", "2")
	if strings.Count(out, "\ni0") != 3 || !strings.HasSuffix(out, "\n3 of 5 intents shown; the next page: --after i02\n") || !slices.Equal(qs, []string{"limit=2", "after=i01&limit=1"}) {
		t.Fatalf("policy intents --limit 3 sent %v, printed:\n%s", qs, out)
	}
	out, errOut, _ = requests("/v1/provisioning/intents", "policy", "intents", "--json", "--after", "i02")
	if out != jsonOf(its[3:]) || errOut != "" {
		t.Fatalf("policy intents --json --after i02: %s (stderr %q)", out, errOut)
	}

	// --state: the agent filters; the summary and the totals count the
	// servers that match.
	for _, id := range []string{"s01", "s05", "s09"} {
		if _, err := cl.DrainServer(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	out, _, qs = requests("/v1/servers", "server", "list", "--state", "draining", "--page-size", "2")
	if !strings.HasPrefix(out, "3 servers: 0 active, 3 draining, 0 down;") || strings.Count(out, "\ns") != 3 || strings.Count(out, " draining ") != 3 ||
		!slices.Equal(qs, []string{"limit=2&state=draining", "after=s05&limit=2&state=draining"}) {
		t.Fatalf("server list --state draining sent %v, printed:\n%s", qs, out)
	}
	out, errOut, _ = requests("/v1/servers", "server", "list", "--state", "draining", "--json", "--limit", "2")
	got = nil
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 2 || got[0]["id"] != "s01" || got[1]["id"] != "s05" || got[1]["state"] != "draining" ||
		errOut != "2 of 3 servers shown; the next page: --after s05\n" {
		t.Fatalf("server list --state draining --json --limit 2: %v %v, stderr %q", got, err, errOut)
	}
	out, _, _ = requests("/v1/servers", "server", "list", "--state", "active,draining", "--summary")
	if !strings.HasPrefix(out, "23 servers: 20 active, 3 draining, 0 down;") {
		t.Fatalf("server list --state active,draining --summary:\n%s", out)
	}
	if out, _, _ = requests("/v1/servers", "server", "list", "--state", "down", "--after", "s00"); !strings.HasSuffix(out, "\n0 servers\n") {
		t.Fatalf("server list --state down --after s00:\n%s", out)
	}
	// --prefix: the agent keeps the ids that start with it, alone or
	// with --state.
	out, _, qs = requests("/v1/servers", "server", "list", "--prefix", "s1", "--page-size", "4")
	if !strings.HasPrefix(out, "10 servers: 10 active, 0 draining, 0 down;") || strings.Count(out, "\ns1") != 10 || strings.Count(out, "\ns0") != 0 ||
		!slices.Equal(qs, []string{"limit=4&prefix=s1", "after=s13&limit=4&prefix=s1", "after=s17&limit=4&prefix=s1"}) {
		t.Fatalf("server list --prefix s1 sent %v, printed:\n%s", qs, out)
	}
	out, _, _ = requests("/v1/servers", "server", "list", "--prefix", "s0", "--state", "draining", "--json")
	got = nil
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 3 || got[0]["id"] != "s01" || got[2]["id"] != "s09" {
		t.Fatalf("server list --prefix s0 --state draining --json: %v %v", got, err)
	}
	// An unknown state: the agent's refusal, naming the states it takes.
	if _, _, err := runCLI(t, "server", "list", "--state", "asleep", addr, tok); err == nil || !strings.Contains(err.Error(), "active, draining, down") {
		t.Fatalf("server list --state asleep: %v", err)
	}
	for _, bad := range [][]string{
		{"server", "list", "--state", ","},
		{"server", "list", "--watch", "--state", "asleep"},
		{"server", "list", "--prefix", strings.Repeat("s", 129)},
		{"policy", "intents", "--page-size", "0"},
		{"policy", "intents", "--limit", "-2"},
	} {
		if _, _, err := runCLI(t, append(bad, addr)...); err == nil || !strings.Contains(fmt.Sprintf("%T", err), "usageError") {
			t.Fatalf("%v: %v, want a usage error", bad, err)
		}
	}
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
