package loadview_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/loadview"
	"github.com/switchyard/switchyard/transport/transportpb"
)

type fakeRegistry struct {
	allocs []*fsmpb.Allocation
}

func (f *fakeRegistry) ActiveAllocationsOn(server string, fn func(a *fsmpb.Allocation)) {
	for _, a := range f.allocs {
		if a.Server == server {
			fn(a)
		}
	}
}

func rep(id string, inc, seq uint64, allocs ...string) *transportpb.LoadReport {
	return &transportpb.LoadReport{ServerId: id, Incarnation: inc, Seq: seq, AllocationIds: allocs}
}

func TestOfferOrdering(t *testing.T) {
	v := loadview.New(nil)
	now := time.Now()
	for _, tc := range []struct {
		name string
		r    *transportpb.LoadReport
		want bool
	}{
		{"first", rep("m1", 2, 5), true},
		{"duplicate", rep("m1", 2, 5), false},
		{"older seq", rep("m1", 2, 4), false},
		{"newer seq", rep("m1", 2, 6), true},
		{"older incarnation", rep("m1", 1, 100), false},
		{"newer incarnation resets seq", rep("m1", 3, 1), true},
		{"no id", rep("", 9, 9), false},
	} {
		if got := v.Offer(tc.r, now); got != tc.want {
			t.Fatalf("%s: Offer = %v, want %v", tc.name, got, tc.want)
		}
	}
	e, _ := v.Get("m1")
	if e.Incarnation != 3 || e.Seq != 1 {
		t.Fatalf("kept %+v", e)
	}
}

func TestUnmaterialized(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	reg := &fakeRegistry{allocs: []*fsmpb.Allocation{
		{Id: "a1", Server: "m1", Units: 2, CreatedAtUnixMs: now.Add(-time.Minute).UnixMilli()},
		{Id: "a2", Server: "m1", Units: 3, CreatedAtUnixMs: now.UnixMilli()},
		{Id: "a3", Server: "m2", Units: 5, CreatedAtUnixMs: now.UnixMilli()},
	}}
	v := loadview.New(clock)
	if _, ok := v.Load("m1"); ok {
		t.Fatal("load without a report")
	}
	v.Attach(reg)
	for _, tc := range []struct {
		name string
		r    *transportpb.LoadReport
		want int64
	}{
		{"none hosted", rep("m1", 1, 1), 5},
		{"old one hosted", rep("m1", 1, 2, "a1"), 3},
		{"both hosted", rep("m1", 1, 3, "a2", "a1"), 0},
		// A truncated report that omits a1 (old) and a2 (new): only the
		// recent one counts.
		{"truncated", &transportpb.LoadReport{ServerId: "m1", Incarnation: 1, Seq: 4, Truncated: true}, 3},
	} {
		v.Offer(tc.r, now)
		l, ok := v.Load("m1")
		if !ok || l.Unmaterialized != tc.want {
			t.Fatalf("%s: unmaterialized %d, want %d", tc.name, l.Unmaterialized, tc.want)
		}
	}
	// The view follows the registry at once.
	reg.allocs = reg.allocs[2:]
	if l, _ := v.Load("m1"); l.Unmaterialized != 0 {
		t.Fatalf("after release: %d", l.Unmaterialized)
	}
	now = now.Add(1500 * time.Millisecond)
	if l, _ := v.Load("m1"); l.AgeMs != 1500 {
		t.Fatalf("age %d", l.AgeMs)
	}
}

// LoadChanges lists each server whose entry changed once, and says when a
// reader is too far behind to be told.
func TestLoadChanges(t *testing.T) {
	v := loadview.New(nil)
	now := time.Now()
	_, cur, _ := v.LoadChanges(0)
	v.Offer(rep("m1", 1, 1), now)
	v.Offer(rep("m1", 1, 2), now)
	v.Offer(rep("m2", 1, 1), now)
	v.Offer(rep("m2", 1, 1), now) // not newer: no change
	ids, cur, full := v.LoadChanges(cur)
	if full || len(ids) != 2 || ids[0] != "m1" || ids[1] != "m2" {
		t.Fatalf("changes %v full %v", ids, full)
	}
	v.Forget("m1")
	if ids, _, _ := v.LoadChanges(cur); len(ids) != 1 || ids[0] != "m1" {
		t.Fatalf("after forget: %v", ids)
	}
	for i := range 1<<16 + 1 {
		v.Offer(rep("m3", 1, uint64(i+1)), now)
	}
	if _, _, full := v.LoadChanges(cur); !full {
		t.Fatal("a reader 65,537 changes behind must re-read everything")
	}
}

type fakeNode struct {
	mu   sync.Mutex
	cmds []*fsmpb.Command
}

// fakeNode records the detector's decisions as the commands the node
// would commit.
func (f *fakeNode) record(c *fsmpb.Command) {
	f.mu.Lock()
	f.cmds = append(f.cmds, c)
	f.mu.Unlock()
}

func (f *fakeNode) SetServerState(_ context.Context, id string, st fsmpb.ServerState, ifInc uint64) (*fsmpb.Server, error) {
	f.record(&fsmpb.Command{Cmd: &fsmpb.Command_SetServerState{SetServerState: &fsmpb.SetServerState{Id: id, State: st, IfIncarnation: ifInc}}})
	return &fsmpb.Server{Id: id, State: st}, nil
}

func (f *fakeNode) RegisterServer(_ context.Context, s *fsmpb.Server) (*fsmpb.Server, error) {
	f.record(&fsmpb.Command{Cmd: &fsmpb.Command_RegisterServer{RegisterServer: &fsmpb.RegisterServer{Server: s}}})
	return s, nil
}

type fakeServers []*fsmpb.Server

func (f fakeServers) Servers() []*fsmpb.Server { return f }

// The detector's decisions, step by step on a fake clock.
func TestDetectorDecisions(t *testing.T) {
	start := time.Unix(1000, 0)
	now := start
	v := loadview.New(func() time.Time { return now })
	const window = 2 * time.Second
	servers := fakeServers{
		{Id: "reporting", Incarnation: 1, State: fsmpb.ServerState_SERVER_STATE_ACTIVE},
		{Id: "silent", Incarnation: 1, State: fsmpb.ServerState_SERVER_STATE_ACTIVE},
		{Id: "manual", Incarnation: 0, State: fsmpb.ServerState_SERVER_STATE_ACTIVE},
		{Id: "back", Incarnation: 1, State: fsmpb.ServerState_SERVER_STATE_DOWN},
		{Id: "old-process", Incarnation: 2, State: fsmpb.ServerState_SERVER_STATE_ACTIVE},
	}
	node := &fakeNode{}
	d := &loadview.Detector{View: v, Servers: servers, Node: node, Window: window, Now: func() time.Time { return now }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_ = d
	// Drive check through Run's logic with the exported test hook.
	check := loadview.CheckForTest(d)
	// Within the first window after takeover nothing happens, even for
	// servers never heard of.
	now = start.Add(window - time.Millisecond)
	v.Offer(rep("reporting", 1, 1), now)
	v.Offer(rep("back", 2, 1), now)
	v.Offer(rep("old-process", 1, 50), now)
	check(ctx, now, start, window)
	if len(node.cmds) != 1 || node.cmds[0].GetRegisterServer().GetServer().GetId() != "back" ||
		node.cmds[0].GetRegisterServer().GetServer().GetIncarnation() != 2 {
		t.Fatalf("first window: %v", node.cmds)
	}
	node.cmds = nil
	now = start.Add(window + time.Millisecond)
	check(ctx, now, start, window)
	downs := map[string]uint64{}
	for _, c := range node.cmds {
		if s := c.GetSetServerState(); s != nil && s.GetState() == fsmpb.ServerState_SERVER_STATE_DOWN {
			downs[s.GetId()] = s.GetIfIncarnation()
		}
	}
	if len(downs) != 2 || downs["silent"] != 1 || downs["old-process"] != 2 {
		t.Fatalf("marked down: %v", downs)
	}
}

// A stall of the leader itself (no pass, no report read for longer than
// the window) is not the servers' silence: the first pass after it marks
// nobody down, a server whose reports were only waiting to be read is kept,
// and one that really went silent is marked down once the detector has run
// a window's worth of passes without hearing from it.
func TestDetectorIgnoresItsOwnStall(t *testing.T) {
	start := time.Unix(1000, 0)
	now := start
	v := loadview.New(func() time.Time { return now })
	const (
		window = 2 * time.Second
		tick   = window / 8
	)
	servers := fakeServers{
		{Id: "reporting", Incarnation: 1, State: fsmpb.ServerState_SERVER_STATE_ACTIVE},
		{Id: "dies", Incarnation: 1, State: fsmpb.ServerState_SERVER_STATE_ACTIVE},
	}
	node := &fakeNode{}
	d := &loadview.Detector{View: v, Servers: servers, Node: node, Window: window, Now: func() time.Time { return now }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pass := loadview.PassesForTest(d, int(window/tick))
	downs := func() []string {
		var out []string
		for _, c := range node.cmds {
			if s := c.GetSetServerState(); s != nil && s.GetState() == fsmpb.ServerState_SERVER_STATE_DOWN {
				out = append(out, s.GetId())
			}
		}
		return out
	}
	var seq uint64
	report := func(ids ...string) {
		seq++
		for _, id := range ids {
			v.Offer(rep(id, 1, seq), now)
		}
	}
	// Two windows of normal running: both report, nobody is marked down.
	for i := 0; i < 16; i++ {
		now = now.Add(tick)
		report("reporting", "dies")
		pass(ctx, now, start, window)
	}
	// "dies" stops for good; then the leader stalls for twice the window:
	// no pass runs and nothing is read meanwhile.
	now = now.Add(2 * window)
	pass(ctx, now, start, window)
	if got := downs(); len(got) != 0 {
		t.Fatalf("the first pass after the leader's own stall marked %v down", got)
	}
	// The queued reports of "reporting" are read now; "dies" has none.
	for i := 0; i < 6; i++ {
		report("reporting")
		now = now.Add(tick)
		pass(ctx, now, start, window)
	}
	if got := downs(); len(got) != 0 {
		t.Fatalf("marked %v down before the detector ran a window's worth of passes", got)
	}
	for i := 0; i < 4; i++ {
		report("reporting")
		now = now.Add(tick)
		pass(ctx, now, start, window)
	}
	if got := slices.Compact(downs()); len(got) != 1 || got[0] != "dies" {
		t.Fatalf("after a window's worth of passes without its reports: marked down %v, want [dies]", got)
	}
}
