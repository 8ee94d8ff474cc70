package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// startCLI runs the CLI in-process until the returned stop is called.
func startCLI(t *testing.T, args ...string) (*testcluster.LogBuffer, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &testcluster.LogBuffer{}
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(out)
	root.SetErr(out)
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	return out, func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return fmt.Errorf("the CLI did not stop")
		}
	}
}

// TestListWatch: `alloc list --watch --json` prints the current list and
// then each allocation as it is granted and released; `server list
// --watch` prints servers and their changes as text. Interrupting ends
// them without an error.
func TestListWatch(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := c.Client()
	if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 10}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: "before", Room: "r", Units: 1}); err != nil {
		t.Fatal(err)
	}
	addrs := strings.Join(c.Addrs(), ",")
	aout, astop := startCLI(t, "alloc", "list", "--watch", "--json", "--room", "r", "--addr", addrs, "--token", c.Token)
	sout, sstop := startCLI(t, "server", "list", "--watch", "--addr", addrs, "--token", c.Token)
	dout, dstop := startCLI(t, "server", "list", "--watch", "--state", "draining", "--addr", addrs, "--token", c.Token)
	wait := func(b *testcluster.LogBuffer, want ...string) {
		t.Helper()
		testcluster.Eventually(t, 30*time.Second, func() error {
			s := b.String()
			for _, w := range want {
				if !strings.Contains(s, w) {
					return fmt.Errorf("output lacks %q:\n%s", w, s)
				}
			}
			return nil
		})
	}
	wait(aout, `"kind":"reset"`, `"request_id":"before"`, `"kind":"synced"`)
	wait(sout, "# full list at index", "upsert\tm1\tstate=active used=", "# the list above is complete")
	wait(dout, "# full list at index", "# the list above is complete")
	if copied, _, _ := strings.Cut(dout.String(), "# the list above is complete"); strings.Contains(copied, "m1") {
		t.Fatalf("--state draining copied an active server:\n%s", dout.String())
	}
	a, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: "after", Room: "r", Units: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: "elsewhere", Room: "other", Units: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Release(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	wait(aout, `"request_id":"after"`, `"state":"released"`)
	// Changes applied close together may come as one (the latest state).
	wait(sout, "used=2 capacity=10 free=8")
	// The filtered watch shows a server entering the state, and not one
	// outside it.
	if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: "m2", Capacity: 10}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.DrainServer(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	wait(sout, "upsert\tm2\tstate=active", "upsert\tm1\tstate=draining")
	wait(dout, "upsert\tm1\tstate=draining")
	if err := dstop(); err != nil {
		t.Fatalf("server list --watch --state draining: %v", err)
	}
	if strings.Contains(dout.String(), "m2") {
		t.Fatalf("--state draining printed an active server:\n%s", dout.String())
	}
	if err := astop(); err != nil {
		t.Fatalf("alloc list --watch: %v", err)
	}
	if err := sstop(); err != nil {
		t.Fatalf("server list --watch: %v", err)
	}
	if strings.Contains(aout.String(), `"request_id":"elsewhere"`) {
		t.Fatalf("--room r printed another room's allocation:\n%s", aout.String())
	}
}

// The filter of `server list --watch --state`: the copy holds the servers
// in the states; afterwards a server is printed while in them, and once
// more when it leaves them (its new state or its deletion).
func TestWatchStateFilter(t *testing.T) {
	ev := func(op, id, state string) api.WatchEvent {
		return api.WatchEvent{Kind: api.WatchServer, Op: op, ID: id, Server: &api.Server{ID: id, State: state}}
	}
	type step struct {
		ev     api.WatchEvent
		inCopy bool
		want   bool
	}
	for _, tc := range []struct {
		name   string
		states []string
		steps  []step
	}{
		{"draining", []string{"draining"}, []step{
			{ev("upsert", "a", "active"), true, false},
			{ev("upsert", "b", "draining"), true, true},
			{ev("upsert", "a", "active"), false, false},
			{ev("upsert", "a", "draining"), false, true},
			{ev("upsert", "a", "down"), false, true}, // leaves: shown once
			{ev("upsert", "a", "down"), false, false},
			{ev("delete", "b", "draining"), false, true},
			{ev("upsert", "b", "draining"), false, true}, // back again
		}},
		{"two states", []string{"down", "draining"}, []step{
			{ev("upsert", "a", "down"), true, true},
			{ev("upsert", "a", "draining"), false, true},
			{ev("upsert", "a", "active"), false, true},
			{ev("upsert", "a", "active"), false, false},
		}},
		{"a server that left is not shown by a new copy", []string{"active"}, []step{
			{ev("upsert", "a", "active"), false, true},
			{ev("upsert", "a", "down"), true, false},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keep, err := watchStateFilter(newRootCmd(), tc.states)
			if err != nil {
				t.Fatal(err)
			}
			for i, st := range tc.steps {
				if got := keep(st.ev, st.inCopy); got != st.want {
					t.Fatalf("step %d (%s %s %s, copy %v): %v, want %v", i, st.ev.Op, st.ev.ID, st.ev.Server.State, st.inCopy, got, st.want)
				}
			}
		})
	}
	if keep, err := watchStateFilter(newRootCmd(), nil); keep != nil || err != nil {
		t.Fatalf("no states: a filter (%v)", err)
	}
	if _, err := watchStateFilter(newRootCmd(), []string{"active", "asleep"}); err == nil || !strings.Contains(err.Error(), "asleep") {
		t.Fatalf("unknown state: %v", err)
	}
}

// The filter of `server list --watch --prefix`: only servers whose id
// starts with the prefix, then the state filter if any; other kinds of
// events pass.
func TestWatchPrefixFilter(t *testing.T) {
	srv := func(id, state string) api.WatchEvent {
		return api.WatchEvent{Kind: api.WatchServer, Op: "upsert", ID: id, Server: &api.Server{ID: id, State: state}}
	}
	alloc := api.WatchEvent{Kind: api.WatchAllocation, Op: "upsert", ID: "a-1-0"}
	draining, err := watchStateFilter(newRootCmd(), []string{"draining"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		prefix string
		next   func(api.WatchEvent, bool) bool
		ev     api.WatchEvent
		want   bool
	}{
		{"matching id", "m1", nil, srv("m10", "active"), true},
		{"other id", "m1", nil, srv("m20", "active"), false},
		{"the prefix itself", "m1", nil, srv("m1", "active"), true},
		{"not a server", "m1", nil, alloc, true},
		{"matching id, other state", "m1", draining, srv("m11", "active"), false},
		{"matching id and state", "m1", draining, srv("m12", "draining"), true},
		{"other id, matching state", "m1", draining, srv("m22", "draining"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := watchPrefixFilter(tc.prefix, tc.next)(tc.ev, true); got != tc.want {
				t.Fatalf("%+v: %v, want %v", tc.ev, got, tc.want)
			}
		})
	}
	if watchPrefixFilter("", nil) != nil {
		t.Fatal("no prefix and no state: a filter")
	}
}
