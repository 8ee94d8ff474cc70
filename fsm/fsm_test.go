package fsm_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

func register(id string, capacity int64) *fsmpb.Command {
	return &fsmpb.Command{Cmd: &fsmpb.Command_RegisterServer{RegisterServer: &fsmpb.RegisterServer{Server: &fsmpb.Server{Id: id, CapacityUnits: capacity}}}}
}

func alloc(req, room, server string, units int64) *fsmpb.Command {
	return &fsmpb.Command{Cmd: &fsmpb.Command_Allocate{Allocate: &fsmpb.AllocateDecision{RequestId: req, Room: room, Server: server, Units: units}}}
}

func release(id string) *fsmpb.Command {
	return &fsmpb.Command{Cmd: &fsmpb.Command_Release{Release: &fsmpb.Release{Id: id}}}
}

func setState(id string, st fsmpb.ServerState) *fsmpb.Command {
	return &fsmpb.Command{Cmd: &fsmpb.Command_SetServerState{SetServerState: &fsmpb.SetServerState{Id: id, State: st}}}
}

// applier feeds commands to an FSM through raft.Log entries, as raft does.
type applier struct {
	t     *testing.T
	f     *fsm.FSM
	index uint64
	now   int64
}

func newApplier(t *testing.T) *applier { return &applier{t: t, f: fsm.New(), now: 1_000_000} }

func (a *applier) apply(cmds ...*fsmpb.Command) []*fsmpb.Result {
	a.t.Helper()
	a.index++
	a.now += 10
	data, err := fsm.Encode(a.now, cmds...)
	if err != nil {
		a.t.Fatal(err)
	}
	out := a.f.Apply(&raft.Log{Index: a.index, Type: raft.LogCommand, Data: data})
	res, ok := out.([]*fsmpb.Result)
	if !ok {
		a.t.Fatalf("apply returned %T: %v", out, out)
	}
	return res
}

// snapshotInto takes a snapshot of from, persists it and restores it into
// into (from itself, or a fresh FSM), as raft does for a follower.
func snapshotInto(t testing.TB, from, into *fsm.FSM) {
	t.Helper()
	if err := into.Restore(io.NopCloser(bytes.NewReader(persisted(t, from)))); err != nil {
		t.Fatal(err)
	}
}

// persisted is a snapshot of f as raft would store it.
func persisted(t testing.TB, f *fsm.FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

func (a *applier) one(c *fsmpb.Command) (*fsmpb.Result, error) {
	r := a.apply(c)[0]
	return r, fsm.ResultError(r)
}

func TestAllocateChecksHardLimits(t *testing.T) {
	tests := []struct {
		name    string
		setup   []*fsmpb.Command
		cmd     *fsmpb.Command
		wantErr error
	}{
		{"fits", []*fsmpb.Command{register("s1", 10)}, alloc("r1", "room", "s1", 10), nil},
		{"exceeds capacity", []*fsmpb.Command{register("s1", 10), alloc("r0", "room", "s1", 8)}, alloc("r1", "room", "s1", 3), fsm.ErrCapacity},
		{"unknown server", nil, alloc("r1", "room", "nope", 1), fsm.ErrNotFound},
		{"draining server", []*fsmpb.Command{register("s1", 10), setState("s1", fsmpb.ServerState_SERVER_STATE_DRAINING)}, alloc("r1", "room", "s1", 1), fsm.ErrServerNotActive},
		{"down server", []*fsmpb.Command{register("s1", 10), setState("s1", fsmpb.ServerState_SERVER_STATE_DOWN)}, alloc("r1", "room", "s1", 1), fsm.ErrServerNotActive},
		{"zero units", []*fsmpb.Command{register("s1", 10)}, alloc("r1", "room", "s1", 0), fsm.ErrInvalid},
		{"negative units", []*fsmpb.Command{register("s1", 10)}, alloc("r1", "room", "s1", -2), fsm.ErrInvalid},
		{"no room", []*fsmpb.Command{register("s1", 10)}, alloc("r1", "", "s1", 1), fsm.ErrInvalid},
		{"no request id", []*fsmpb.Command{register("s1", 10)}, alloc("", "room", "s1", 1), fsm.ErrInvalid},
		{"request id reused differently", []*fsmpb.Command{register("s1", 10), alloc("r1", "room", "s1", 1)}, alloc("r1", "other", "s1", 1), fsm.ErrRequestIDReused},
		{"released units are free again", []*fsmpb.Command{register("s1", 2), alloc("r0", "room", "s1", 2), release("r0")}, alloc("r1", "room", "s1", 2), nil},
		{"register needs capacity", nil, register("s1", 0), fsm.ErrInvalid},
		{"capacity below used units", []*fsmpb.Command{register("s1", 10), alloc("r0", "room", "s1", 6)}, register("s1", 5), fsm.ErrServerBusy},
		{"release unknown", nil, release("zzz"), fsm.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newApplier(t)
			for _, c := range tt.setup {
				if _, err := a.one(c); err != nil {
					t.Fatalf("setup: %v", err)
				}
			}
			before := a.f.Hash()
			_, err := a.one(tt.cmd)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil && a.f.Hash() != before {
				t.Fatal("a refused command changed the state")
			}
			for _, s := range a.f.Servers() {
				if s.UsedUnits > s.CapacityUnits || s.UsedUnits < 0 {
					t.Fatalf("server %s used %d of %d", s.Id, s.UsedUnits, s.CapacityUnits)
				}
			}
		})
	}
}

func TestAllocateIsIdempotentPerRequestID(t *testing.T) {
	a := newApplier(t)
	a.apply(register("s1", 10))
	first, err := a.one(alloc("r1", "room", "s1", 4))
	if err != nil || first.Duplicate {
		t.Fatalf("first: %v dup=%v", err, first.GetDuplicate())
	}
	// Same request id in the same entry and in a later entry.
	res := a.apply(alloc("r1", "room", "s1", 4), alloc("r1", "room", "s1", 4))
	for _, r := range res {
		if fsm.ResultError(r) != nil || !r.Duplicate || r.Allocation.Id != first.Allocation.Id {
			t.Fatalf("retry got %v", r)
		}
	}
	s, _ := a.f.Server("s1")
	if s.UsedUnits != 4 {
		t.Fatalf("used %d units after retries, want 4", s.UsedUnits)
	}
	// Released: a retry still answers with the same (now released) allocation.
	a.apply(release(first.Allocation.Id))
	r, err := a.one(alloc("r1", "room", "s1", 4))
	if err != nil || r.Allocation.State != fsmpb.AllocationState_ALLOCATION_STATE_RELEASED {
		t.Fatalf("retry after release: %v %v", err, r)
	}
	// Releasing twice is fine and frees nothing twice.
	if _, err := a.one(release("r1")); err != nil {
		t.Fatal(err)
	}
	s, _ = a.f.Server("s1")
	if s.UsedUnits != 0 {
		t.Fatalf("used %d after double release", s.UsedUnits)
	}
}

func TestExpiryUsesLeaderTimeAndForgetsTombstones(t *testing.T) {
	a := newApplier(t)
	a.apply(register("s1", 10))
	ttl := &fsmpb.Command{Cmd: &fsmpb.Command_Allocate{Allocate: &fsmpb.AllocateDecision{RequestId: "r1", Room: "x", Server: "s1", Units: 2, TtlMs: 100}}}
	r, _ := a.one(ttl)
	if r.Allocation.ExpiresAtUnixMs != r.Allocation.CreatedAtUnixMs+100 {
		t.Fatalf("expiry %d created %d", r.Allocation.ExpiresAtUnixMs, r.Allocation.CreatedAtUnixMs)
	}
	expire := &fsmpb.Command{Cmd: &fsmpb.Command_Expire{Expire: true}}
	a.apply(expire) // 10 ms later: nothing expires
	if got, _ := a.f.Allocation("r1"); got.State != fsmpb.AllocationState_ALLOCATION_STATE_ACTIVE {
		t.Fatal("expired too early")
	}
	a.now += 200
	a.apply(expire)
	got, _ := a.f.Allocation("r1")
	if got.State != fsmpb.AllocationState_ALLOCATION_STATE_EXPIRED {
		t.Fatalf("state %v, want expired", got.State)
	}
	if s, _ := a.f.Server("s1"); s.UsedUnits != 0 {
		t.Fatal("expired units not freed")
	}
	a.now += fsm.DefaultTombstoneRetentionMs
	a.apply(expire)
	if _, ok := a.f.Allocation("r1"); ok {
		t.Fatal("tombstone kept past retention")
	}
}

func TestDeregisterRefusesBusyServer(t *testing.T) {
	a := newApplier(t)
	a.apply(register("s1", 10), alloc("r1", "x", "s1", 1))
	dereg := &fsmpb.Command{Cmd: &fsmpb.Command_DeregisterServer{DeregisterServer: &fsmpb.DeregisterServer{Id: "s1"}}}
	if _, err := a.one(dereg); !errors.Is(err, fsm.ErrServerBusy) {
		t.Fatalf("err %v", err)
	}
	a.apply(release("r1"))
	if _, err := a.one(dereg); err != nil {
		t.Fatal(err)
	}
	if _, err := a.one(dereg); !errors.Is(err, fsm.ErrNotFound) {
		t.Fatalf("second deregister: %v", err)
	}
}

func TestApplyRefusesUndecodableEntries(t *testing.T) {
	f := fsm.New()
	before := f.Hash()
	for _, data := range [][]byte{{0xff, 0xff, 0xff}, mustEncodeVersion(t, 99)} {
		out := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data})
		if _, ok := out.(error); !ok {
			t.Fatalf("apply(%x) = %T, want error", data, out)
		}
	}
	if f.Hash() != before {
		t.Fatal("bad entry changed state")
	}
}

func mustEncodeVersion(t *testing.T, v uint32) []byte {
	data, err := fsm.Encode(1, register("s", 1))
	if err != nil {
		t.Fatal(err)
	}
	env, err := fsm.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	env.Version = v
	b, err := proto.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// randomCommands builds a reproducible mix of commands, many of which
// fail (over capacity, unknown ids, duplicates).
func randomCommands(seed uint64, n int) [][]*fsmpb.Command {
	r := rand.New(rand.NewPCG(seed, seed))
	var out [][]*fsmpb.Command
	for i := 0; i < n; i++ {
		var batch []*fsmpb.Command
		for j := 0; j < 1+r.IntN(5); j++ {
			srv := fmt.Sprintf("s%d", r.IntN(6))
			switch r.IntN(8) {
			case 0:
				batch = append(batch, register(srv, int64(1+r.IntN(20))))
			case 1, 2, 3:
				c := alloc(fmt.Sprintf("r%d", r.IntN(n)), fmt.Sprintf("room%d", r.IntN(4)), srv, int64(r.IntN(6)))
				c.GetAllocate().RecordRefusal = r.IntN(2) == 0
				batch = append(batch, c)
			case 4:
				batch = append(batch, release(fmt.Sprintf("r%d", r.IntN(n))))
			case 5:
				batch = append(batch, setState(srv, fsmpb.ServerState(1+r.IntN(3))))
			case 6:
				batch = append(batch, &fsmpb.Command{Cmd: &fsmpb.Command_Expire{Expire: true}})
			case 7:
				batch = append(batch, &fsmpb.Command{Cmd: &fsmpb.Command_RefuseAllocation{RefuseAllocation: &fsmpb.Refusal{
					RequestId: fmt.Sprintf("r%d", r.IntN(n)), ErrorCode: "insufficient_capacity", ErrorMessage: "full"}}})
			}
		}
		out = append(out, batch)
	}
	return out
}

func TestDeterminismSameCommandsSameHash(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			cmds := randomCommands(seed, 300)
			a, b := newApplier(t), newApplier(t)
			for _, batch := range cmds {
				ra, rb := a.apply(batch...), b.apply(batch...)
				for i := range ra {
					if ra[i].String() != rb[i].String() {
						t.Fatalf("results differ: %v vs %v", ra[i], rb[i])
					}
				}
			}
			if a.f.Hash() != b.f.Hash() {
				t.Fatal("same commands, different hashes")
			}
			for _, s := range a.f.Servers() {
				var used int64
				for _, al := range a.f.Allocations(fsm.AllocationFilter{Server: s.Id, ActiveOnly: true}) {
					used += al.Units
				}
				if used != s.UsedUnits || used > s.CapacityUnits {
					t.Fatalf("server %s: used_units %d, sum of active allocations %d", s.Id, s.UsedUnits, used)
				}
			}
			// A different history gives a different hash (the hash is not constant).
			c := newApplier(t)
			for _, batch := range randomCommands(seed+100, 300) {
				c.apply(batch...)
			}
			if c.f.Hash() == a.f.Hash() {
				t.Fatal("different histories hashed equal")
			}
		})
	}
}

func TestSnapshotRestoreReproducesHash(t *testing.T) {
	a := newApplier(t)
	for _, batch := range randomCommands(42, 500) {
		a.apply(batch...)
	}
	restored := fsm.New()
	snapshotInto(t, a.f, restored)
	if restored.Hash() != a.f.Hash() {
		t.Fatal("restore changed the state hash")
	}
	// Both continue identically.
	for _, batch := range randomCommands(43, 100) {
		a.index++
		data, _ := fsm.Encode(a.now+1, batch...)
		a.f.Apply(&raft.Log{Index: a.index, Type: raft.LogCommand, Data: data})
		restored.Apply(&raft.Log{Index: a.index, Type: raft.LogCommand, Data: data})
	}
	if restored.Hash() != a.f.Hash() {
		t.Fatal("replicas diverged after restore")
	}
	// A snapshot older than the state (a leader's stale snapshot sent to a
	// follower that is ahead) is refused and changes nothing; one taken at
	// the state's own index is taken.
	old := fsm.New()
	snapshotInto(t, restored, old)
	for _, batch := range randomCommands(44, 20) {
		a.index++
		data, _ := fsm.Encode(a.now+2, batch...)
		restored.Apply(&raft.Log{Index: a.index, Type: raft.LogCommand, Data: data})
	}
	ahead := restored.Hash()
	if err := restored.Restore(io.NopCloser(bytes.NewReader(persisted(t, old)))); !errors.Is(err, fsm.ErrInvalid) {
		t.Fatalf("restore of an older snapshot: %v", err)
	}
	if restored.Hash() != ahead || restored.AppliedIndex() != a.index {
		t.Fatal("a refused restore changed the state")
	}
	snapshotInto(t, restored, restored)
	// A snapshot of an unknown version is refused.
	bad := fsm.New()
	if err := bad.Restore(io.NopCloser(bytes.NewReader([]byte{0x08, 0x63}))); !errors.Is(err, fsm.ErrUnsupportedVersion) {
		t.Fatalf("restore of version 99: %v", err)
	}
}

type memSink struct{ bytes.Buffer }

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { return nil }
func (m *memSink) Close() error  { return nil }

func TestValidateStateRefusesInconsistentSnapshots(t *testing.T) {
	a := newApplier(t)
	for _, batch := range randomCommands(11, 200) {
		a.apply(batch...)
	}
	good := a.f.Export()
	if err := fsm.ValidateState(good); err != nil {
		t.Fatalf("a real state is refused: %v", err)
	}
	var active *fsmpb.Allocation
	for _, al := range good.Allocations {
		if al.State == fsmpb.AllocationState_ALLOCATION_STATE_ACTIVE {
			active = al
			break
		}
	}
	if active == nil || len(good.Servers) == 0 {
		t.Fatal("fixture has no active allocation")
	}
	tests := []struct {
		name   string
		mutate func(st *fsmpb.State)
	}{
		{"used units off", func(st *fsmpb.State) { st.Servers[0].UsedUnits++ }},
		{"over capacity", func(st *fsmpb.State) {
			for _, s := range st.Servers {
				if s.Id == active.Server {
					s.CapacityUnits = s.UsedUnits - 1
				}
			}
		}},
		{"zero capacity", func(st *fsmpb.State) { st.Servers[0].CapacityUnits = 0 }},
		{"repeated request id", func(st *fsmpb.State) {
			c := proto.Clone(st.Allocations[0]).(*fsmpb.Allocation)
			c.Id += "-copy"
			st.Allocations = append(st.Allocations, c)
		}},
		{"active allocation on unknown server", func(st *fsmpb.State) {
			for _, al := range st.Allocations {
				if al.Id == active.Id {
					al.Server = "ghost"
				}
			}
		}},
		{"wrong version", func(st *fsmpb.State) { st.Version = 9 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := proto.Clone(good).(*fsmpb.State)
			tt.mutate(st)
			if err := fsm.ValidateState(st); err == nil {
				t.Fatal("inconsistent snapshot accepted")
			}
		})
	}
}

// TestExpireIsTheSameOnEveryReplica: replicas (each with its own hash
// seed for the record tables) applying the same allocations and one
// Expire end up with every expired allocation ended and the same state.
func TestExpireIsTheSameOnEveryReplica(t *testing.T) {
	for n := 100; n <= 400; n += 3 {
		hashes := map[string]int{}
		for range 4 {
			ap := newApplier(t)
			ap.apply(register("s1", 1_000_000))
			var cmds []*fsmpb.Command
			for i := range n {
				c := alloc(fmt.Sprintf("r%d", i), "room", "s1", 1)
				c.GetAllocate().TtlMs = 1
				cmds = append(cmds, c)
			}
			ap.apply(cmds...)
			ap.now += 1000
			ap.apply(&fsmpb.Command{Cmd: &fsmpb.Command_Expire{Expire: true}})
			for _, a := range ap.f.Allocations(fsm.AllocationFilter{}) {
				if a.State == fsmpb.AllocationState_ALLOCATION_STATE_ACTIVE {
					t.Fatalf("n=%d: %s still active after Expire", n, a.Id)
				}
			}
			hashes[ap.f.Hash()]++
		}
		if len(hashes) > 1 {
			t.Fatalf("n=%d: replicas disagree: %d different hashes at the same index", n, len(hashes))
		}
	}
}
