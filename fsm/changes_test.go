package fsm_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// mirror is what a watcher keeps by following the change log.
type mirror struct {
	servers map[string]*fsmpb.Server
	allocs  map[string]*fsmpb.Allocation
	rooms   map[string]*fsmpb.Room
	cur     fsm.ChangeCursor
	starts  int // how often it started over from a copy
}

func (m *mirror) load(f *fsm.FSM) {
	st, cur := f.ExportAt()
	m.servers, m.allocs, m.rooms = map[string]*fsmpb.Server{}, map[string]*fsmpb.Allocation{}, map[string]*fsmpb.Room{}
	for _, v := range st.GetServers() {
		m.servers[v.Id] = v
	}
	for _, v := range st.GetAllocations() {
		m.allocs[v.Id] = v
	}
	for _, v := range st.GetRooms() {
		m.rooms[v.Name] = v
	}
	m.cur = cur
	m.starts++
}

func follow[V any](have, changed map[string]*V) {
	for k, v := range changed {
		if v == nil {
			delete(have, k)
		} else {
			have[k] = v
		}
	}
}

func (m *mirror) follow(f *fsm.FSM) {
	d, next, ok := f.DeltaSince(m.cur)
	if !ok {
		m.load(f)
		return
	}
	follow(m.servers, d.Servers)
	follow(m.allocs, d.Allocations)
	follow(m.rooms, d.Rooms)
	m.cur = next
}

func sameAs[V proto.Message](t *testing.T, step int, what string, have map[string]V, want []V, key func(V) string) {
	t.Helper()
	if len(have) != len(want) {
		t.Fatalf("step %d: the change log's reader holds %d %s, the state %d", step, len(have), what, len(want))
	}
	for _, w := range want {
		if h, ok := have[key(w)]; !ok || !proto.Equal(h, w) {
			t.Fatalf("step %d: %s %s: reader has %v, state %v", step, what, key(w), h, w)
		}
	}
}

// TestDeltaFollowsState: a reader that follows the change log from a copy
// holds exactly the state's servers, allocations and rooms after random
// registrations, allocations, releases, expiries and tombstone purges,
// state changes, deregistrations, room placements and releases; a
// snapshot restore makes it start over from a copy.
func TestDeltaFollowsState(t *testing.T) {
	a := newApplier(t)
	r := rand.New(rand.NewPCG(11, 3))
	var m mirror
	m.load(a.f)
	var live []string
	placed := map[string]string{} // room → allocation id of a live allocation in it
	for step := range 500 {
		var cmds []*fsmpb.Command
		for range 1 + r.IntN(8) {
			id := fmt.Sprintf("m%d", r.IntN(10))
			room := fmt.Sprintf("room-%d", r.IntN(6))
			switch k := r.IntN(12); {
			case k < 2:
				cmds = append(cmds, register(id, 5+r.Int64N(20)))
			case k < 5:
				req := fmt.Sprintf("q%d-%d", step, len(cmds))
				c := alloc(req, room, id, 1+r.Int64N(3))
				if r.IntN(3) == 0 {
					c.GetAllocate().TtlMs = 5
				}
				cmds = append(cmds, c)
				live = append(live, req)
			case k < 7 && len(live) > 0:
				cmds = append(cmds, release(live[r.IntN(len(live))]))
			case k < 8:
				cmds = append(cmds, setState(id, fsmpb.ServerState(1+r.IntN(3))))
			case k < 9:
				cmds = append(cmds, &fsmpb.Command{Cmd: &fsmpb.Command_DeregisterServer{DeregisterServer: &fsmpb.DeregisterServer{Id: id}}})
			case k < 11:
				// Place a room on one of its live allocations.
				for _, al := range a.f.Allocations(fsm.AllocationFilter{ActiveOnly: true}) {
					if al.Room == room {
						cur, _ := a.f.Room(room)
						cmds = append(cmds, placeRoom(room, al.Server, al.Id, cur.GetGeneration()))
						placed[room] = al.Id
						break
					}
				}
			default:
				cmds = append(cmds, releaseRoom(room))
			}
		}
		if r.IntN(8) == 0 {
			if r.IntN(3) == 0 {
				a.now += fsm.DefaultTombstoneRetentionMs // purge tombstones too
			}
			cmds = append(cmds, &fsmpb.Command{Cmd: &fsmpb.Command_Expire{Expire: true}})
		}
		a.apply(cmds...)
		if step == 250 {
			snapshotInto(t, a.f, a.f)
		}
		if r.IntN(3) == 0 && step != 499 {
			continue // let changes pile up between reads
		}
		m.follow(a.f)
		st := a.f.Export()
		sameAs(t, step, "servers", m.servers, st.GetServers(), (*fsmpb.Server).GetId)
		sameAs(t, step, "allocations", m.allocs, st.GetAllocations(), (*fsmpb.Allocation).GetId)
		sameAs(t, step, "rooms", m.rooms, st.GetRooms(), (*fsmpb.Room).GetName)
	}
	if len(placed) == 0 {
		t.Fatal("no room was ever placed: the test did not exercise rooms")
	}
	if m.starts != 2 {
		t.Fatalf("the reader started over %d times, want 2 (the first copy and the restore)", m.starts)
	}
	if _, _, ok := a.f.DeltaSince(fsm.ChangeCursor{}); ok {
		t.Fatal("the zero cursor was answered")
	}
}

// keyed is a collection of an exported state by key.
func keyed[V proto.Message](vs []V, key func(V) string) map[string]V {
	m := make(map[string]V, len(vs))
	for _, v := range vs {
		m[key(v)] = v
	}
	return m
}

// differing is the keys whose object differs between two exports of one
// collection (added, changed or gone).
func differing[V proto.Message](a, b []V, key func(V) string) []string {
	ma, mb := keyed(a, key), keyed(b, key)
	var out []string
	for k, v := range ma {
		if w, ok := mb[k]; !ok || !proto.Equal(v, w) {
			out = append(out, k)
		}
	}
	for k := range mb {
		if _, ok := ma[k]; !ok {
			out = append(out, k)
		}
	}
	return out
}

// TestChangedSinceCoversEveryChange: from any applied index since the
// last restore, ChangedSince names every server, allocation, room and
// intent that differs between the state then and now; before the restore,
// past the marks' reach or ahead of the state it says it cannot answer.
func TestChangedSinceCoversEveryChange(t *testing.T) {
	a := newApplier(t)
	r := rand.New(rand.NewPCG(5, 9))
	type point struct {
		applied uint64
		st      *fsmpb.State
	}
	var points []point
	var open []string // intents not final
	restoredAt := -1
	for step := range 300 {
		var cmds []*fsmpb.Command
		for range 1 + r.IntN(6) {
			id := fmt.Sprintf("m%d", r.IntN(8))
			room := fmt.Sprintf("room-%d", r.IntN(5))
			switch k := r.IntN(10); {
			case k < 2:
				cmds = append(cmds, register(id, 5+r.Int64N(20)))
			case k < 4:
				cmds = append(cmds, alloc(fmt.Sprintf("q%d-%d", step, len(cmds)), room, id, 1))
			case k < 5:
				cmds = append(cmds, setState(id, fsmpb.ServerState(1+r.IntN(3))))
			case k < 6:
				for _, al := range a.f.Allocations(fsm.AllocationFilter{ActiveOnly: true}) {
					if al.Room == room {
						cur, _ := a.f.Room(room)
						cmds = append(cmds, placeRoom(room, al.Server, al.Id, cur.GetGeneration()))
						break
					}
				}
			case k < 8:
				cmds = append(cmds, intentCmd(&fsmpb.ProvisionIntent{Kind: fsmpb.IntentKind_INTENT_KIND_PROVISION, Units: 1, RequestIds: []string{fmt.Sprintf("i%d-%d", step, len(cmds))}}))
			default:
				if len(open) > 0 {
					j := r.IntN(len(open))
					cmds = append(cmds, updateCmd(&fsmpb.UpdateIntent{Id: open[j], State: fsmpb.IntentState_INTENT_STATE_DONE}))
					open = append(open[:j], open[j+1:]...)
				}
			}
		}
		if r.IntN(10) == 0 {
			a.now += fsm.DefaultTombstoneRetentionMs // final intents and tombstones go
			cmds = append(cmds, &fsmpb.Command{Cmd: &fsmpb.Command_Expire{Expire: true}})
		}
		for _, res := range a.apply(cmds...) {
			if it := res.GetIntent(); it != nil && it.GetState() == fsmpb.IntentState_INTENT_STATE_PENDING {
				open = append(open, it.GetId())
			}
		}
		if step == 120 {
			snapshotInto(t, a.f, a.f)
			restoredAt = len(points)
		}
		points = append(points, point{a.f.AppliedIndex(), a.f.Export()})
	}
	now := a.f.Export()
	intents := 0
	for k, p := range points {
		c, applied, ok := a.f.ChangedSince(p.applied)
		if k < restoredAt {
			if ok {
				t.Fatalf("index %d, before the restore, was answered", p.applied)
			}
			continue
		}
		if !ok || applied != now.GetAppliedIndex() {
			t.Fatalf("index %d: ok %v, applied %d (want %d)", p.applied, ok, applied, now.GetAppliedIndex())
		}
		for _, cmp := range []struct {
			what     string
			want     []string
			reported []string
		}{
			{"servers", differing(p.st.GetServers(), now.GetServers(), (*fsmpb.Server).GetId), c.Servers},
			{"allocations", differing(p.st.GetAllocations(), now.GetAllocations(), (*fsmpb.Allocation).GetId), c.Allocations},
			{"rooms", differing(p.st.GetRooms(), now.GetRooms(), (*fsmpb.Room).GetName), c.Rooms},
			{"intents", differing(p.st.GetIntents(), now.GetIntents(), (*fsmpb.ProvisionIntent).GetId), c.Intents},
		} {
			rep := map[string]bool{}
			for _, k := range cmp.reported {
				if rep[k] {
					t.Fatalf("index %d: %s %q reported twice", p.applied, cmp.what, k)
				}
				rep[k] = true
			}
			for _, k := range cmp.want {
				if !rep[k] {
					t.Fatalf("index %d: %s %q changed since and was not reported (reported %v)", p.applied, cmp.what, k, cmp.reported)
				}
			}
			if cmp.what == "intents" {
				intents += len(cmp.want)
			}
		}
	}
	if intents == 0 {
		t.Fatal("no intent changed: the test did not exercise intents")
	}
	if c, _, ok := a.f.ChangedSince(now.GetAppliedIndex()); !ok || len(c.Servers)+len(c.Allocations)+len(c.Rooms)+len(c.Intents) != 0 {
		t.Fatalf("since the current index: %+v %v", c, ok)
	}
	if _, _, ok := a.f.ChangedSince(now.GetAppliedIndex() + 1); ok {
		t.Fatal("an index ahead of the state was answered")
	}
	// Past the marks' reach (16,384 entries that each change something).
	from := a.f.AppliedIndex()
	for i := range 16_400 {
		a.apply(register(fmt.Sprintf("x%d", i%100), 10+int64(i)))
	}
	if _, _, ok := a.f.ChangedSince(from); ok {
		t.Fatal("an index 16,400 entries back was answered")
	}
	if c, _, ok := a.f.ChangedSince(a.f.AppliedIndex() - 1000); !ok || len(c.Servers) != 100 {
		t.Fatalf("1,000 entries back: %d servers, ok %v", len(c.Servers), ok)
	}
	// Past the change log's reach (more than 65,536 changes in a few
	// entries), and just within it.
	from = a.f.AppliedIndex()
	for e := range 3 {
		var cmds []*fsmpb.Command
		for i := range 30_000 {
			cmds = append(cmds, register(fmt.Sprintf("y%d-%d", e, i), 10))
		}
		a.apply(cmds...)
	}
	if _, _, ok := a.f.ChangedSince(from); ok {
		t.Fatal("an index 90,000 changes back was answered")
	}
	if c, _, ok := a.f.ChangedSince(from + 1); !ok || len(c.Servers) != 60_000 {
		t.Fatalf("60,000 changes back: %d servers, ok %v", len(c.Servers), ok)
	}
}
