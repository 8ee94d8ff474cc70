package fsm_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// TestDerivedIndexes: after random registrations, allocations, releases,
// expiries, state changes, deregistrations and a snapshot restore, the
// by-room and by-server indexes and a reader following the change feed
// agree with the registry itself.
func TestDerivedIndexes(t *testing.T) {
	a := newApplier(t)
	r := rand.New(rand.NewPCG(7, 7))
	// follower keeps what the change feed told it.
	seen := map[string]fsm.ServerUse{}
	var cur fsm.FeedCursor
	follow := func() {
		fresh := map[string]fsm.ServerUse{}
		next, _, full := a.f.ServerChanges("", cur, func(s fsm.ServerUse, present bool) {
			fresh[s.ID] = s
			if present {
				seen[s.ID] = s
			} else {
				delete(seen, s.ID)
			}
		})
		if full {
			seen = fresh
		}
		cur = next
	}
	check := func(step int) {
		t.Helper()
		follow()
		rooms := map[string]map[string]int64{}
		on := map[string]int{}
		for _, al := range a.f.Allocations(fsm.AllocationFilter{ActiveOnly: true}) {
			if rooms[al.Room] == nil {
				rooms[al.Room] = map[string]int64{}
			}
			rooms[al.Room][al.Server] += al.Units
			on[al.Server]++
		}
		for room, want := range rooms {
			if got := a.f.RoomUnits(room); !maps.Equal(got, want) {
				t.Fatalf("step %d: room %s: index %v, registry %v", step, room, got, want)
			}
		}
		if got := a.f.RoomUnits("nope"); got != nil {
			t.Fatalf("step %d: unknown room %v", step, got)
		}
		servers := a.f.Servers()
		if len(servers) != len(seen) {
			t.Fatalf("step %d: feed reader holds %d servers, registry %d", step, len(seen), len(servers))
		}
		for _, s := range servers {
			n := 0
			a.f.ActiveAllocationsOn(s.Id, func(*fsmpb.Allocation) { n++ })
			if n != on[s.Id] {
				t.Fatalf("step %d: %s: %d active by index, %d by registry", step, s.Id, n, on[s.Id])
			}
			u := seen[s.Id]
			if u.Used != s.UsedUnits || u.State != s.State || u.Capacity != s.CapacityUnits {
				t.Fatalf("step %d: %s: feed says %+v, registry %v", step, s.Id, u, s)
			}
		}
	}
	var live []string
	for step := range 400 {
		var cmds []*fsmpb.Command
		for range 1 + r.IntN(8) {
			id := fmt.Sprintf("m%d", r.IntN(12))
			switch k := r.IntN(10); {
			case k < 2:
				cmds = append(cmds, register(id, 5+r.Int64N(20)))
			case k < 6:
				req := fmt.Sprintf("q%d", step*10+len(cmds))
				c := alloc(req, fmt.Sprintf("room-%d", r.IntN(5)), id, 1+r.Int64N(3))
				if r.IntN(3) == 0 {
					c.GetAllocate().TtlMs = 5
				}
				cmds = append(cmds, c)
				live = append(live, req)
			case k < 8 && len(live) > 0:
				cmds = append(cmds, release(live[r.IntN(len(live))]))
			case k < 9:
				cmds = append(cmds, setState(id, fsmpb.ServerState(1+r.IntN(3))))
			default:
				cmds = append(cmds, &fsmpb.Command{Cmd: &fsmpb.Command_DeregisterServer{DeregisterServer: &fsmpb.DeregisterServer{Id: id}}})
			}
		}
		if r.IntN(10) == 0 {
			cmds = append(cmds, &fsmpb.Command{Cmd: &fsmpb.Command_Expire{Expire: true}})
		}
		a.apply(cmds...)
		if step == 200 {
			// A restore replaces everything: the indexes are rebuilt and
			// the feed's readers start over.
			snapshotInto(t, a.f, a.f)
		}
		check(step)
	}
}
