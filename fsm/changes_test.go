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
