package fsm_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

func placeRoom(room, server, allocID string, ifGen uint64) *fsmpb.Command {
	return &fsmpb.Command{Cmd: &fsmpb.Command_PlaceRoom{PlaceRoom: &fsmpb.PlaceRoom{Room: room, Server: server, AllocationId: allocID, Sfu: fsm.SFUSwitchyard, IfGeneration: ifGen}}}
}

func releaseRoom(room string) *fsmpb.Command {
	return &fsmpb.Command{Cmd: &fsmpb.Command_ReleaseRoom{ReleaseRoom: &fsmpb.ReleaseRoom{Room: room}}}
}

func TestRoomPlacementLifecycle(t *testing.T) {
	a := newApplier(t)
	a.apply(register("s1", 10), register("s2", 10))
	a1 := a.apply(alloc("room:lobby:0", "lobby", "s1", 2))[0].GetAllocation()
	r, err := a.one(placeRoom("lobby", "s1", a1.Id, 0))
	if err != nil {
		t.Fatal(err)
	}
	room := r.GetRoom()
	if room.Server != "s1" || room.Moved || room.Generation != 1 || room.AllocationId != a1.Id || room.Number == 0 || room.PlacedAtUnixMs == 0 {
		t.Fatalf("first placement: %+v", room)
	}
	// A second placement decided against generation 0 lost the race.
	if _, err := a.one(placeRoom("lobby", "s1", a1.Id, 0)); !errors.Is(err, fsm.ErrVersionMismatch) {
		t.Fatalf("stale placement: %v", err)
	}
	// An allocation of another room, or an ended one, is refused.
	other := a.apply(alloc("x", "other", "s2", 1))[0].GetAllocation()
	if _, err := a.one(placeRoom("lobby", "s2", other.Id, 1)); !errors.Is(err, fsm.ErrInvalid) {
		t.Fatalf("foreign allocation: %v", err)
	}
	if _, err := a.one(placeRoom("lobby", "s2", "a-999-0", 1)); !errors.Is(err, fsm.ErrNotFound) {
		t.Fatalf("unknown allocation: %v", err)
	}

	// s1 is marked down: the room is vacated and its allocation ended.
	a.apply(setState("s1", fsmpb.ServerState_SERVER_STATE_DOWN))
	got, _ := a.f.Room("lobby")
	if got.Server != "" || got.LastServer != "s1" {
		t.Fatalf("room after its server went down: %+v", got)
	}
	if al, _ := a.f.Allocation(a1.Id); al.State != fsmpb.AllocationState_ALLOCATION_STATE_RELEASED {
		t.Fatalf("allocation of a vacated room: %v", al.State)
	}
	if s1, _ := a.f.Server("s1"); s1.UsedUnits != 0 {
		t.Fatalf("s1 still holds %d units", s1.UsedUnits)
	}
	// Re-placed on s2: moved, same number.
	a2 := a.apply(alloc("room:lobby:1", "lobby", "s2", 2))[0].GetAllocation()
	r, err = a.one(placeRoom("lobby", "s2", a2.Id, 1))
	if err != nil {
		t.Fatal(err)
	}
	if m := r.GetRoom(); m.Server != "s2" || !m.Moved || m.Generation != 2 || m.Number != room.Number {
		t.Fatalf("re-placement: %+v", m)
	}
	if rs := a.f.Rooms("s2"); len(rs) != 1 || rs[0].Name != "lobby" {
		t.Fatalf("rooms on s2: %v", rs)
	}

	// A move between live servers ends the old allocation.
	a3 := a.apply(alloc("room:lobby:2", "lobby", "s2", 1))[0].GetAllocation()
	_ = a3
	a.apply(register("s3", 5))
	a4 := a.apply(alloc("room:lobby:2b", "lobby", "s3", 1))[0].GetAllocation()
	if _, err := a.one(placeRoom("lobby", "s3", a4.Id, 2)); err != nil {
		t.Fatal(err)
	}
	if al, _ := a.f.Allocation(a2.Id); al.State != fsmpb.AllocationState_ALLOCATION_STATE_RELEASED {
		t.Fatalf("replaced allocation still %v", al.State)
	}

	// Release ends the allocation and forgets the room; again is a no-op.
	r, err = a.one(releaseRoom("lobby"))
	if err != nil || r.GetRoom().GetName() != "lobby" {
		t.Fatalf("release: %v %v", r, err)
	}
	if al, _ := a.f.Allocation(a4.Id); al.State != fsmpb.AllocationState_ALLOCATION_STATE_RELEASED {
		t.Fatalf("released room's allocation is %v", al.State)
	}
	if r, err = a.one(releaseRoom("lobby")); err != nil || r.GetRoom() != nil {
		t.Fatalf("second release: %v %v", r, err)
	}
	if _, ok := a.f.Room("lobby"); ok {
		t.Fatal("room still there")
	}
}

func TestRoomsSurviveSnapshotAndHash(t *testing.T) {
	a := newApplier(t)
	a.apply(register("s1", 10))
	for _, name := range []string{"a", "b", "c"} {
		al := a.apply(alloc("room:"+name+":0", name, "s1", 1))[0].GetAllocation()
		if _, err := a.one(placeRoom(name, "s1", al.Id, 0)); err != nil {
			t.Fatal(err)
		}
	}
	before := a.f.Hash()
	snap, err := a.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	buf := sink.Buffer
	st, err := fsm.ReadState(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if err := fsm.ValidateState(st); err != nil {
		t.Fatal(err)
	}
	g := fsm.New()
	if err := g.Restore(io.NopCloser(bytes.NewReader(buf.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if g.Hash() != before || len(g.Rooms("")) != 3 {
		t.Fatalf("restored: hash %s vs %s, rooms %d", g.Hash(), before, len(g.Rooms("")))
	}
	// Numbers are unique and a duplicate is refused on restore.
	st.Rooms[1].Number = st.Rooms[0].Number
	if err := fsm.ValidateState(st); !errors.Is(err, fsm.ErrInvalid) {
		t.Fatalf("duplicate room numbers accepted: %v", err)
	}
}

func TestServerSFU(t *testing.T) {
	if k := fsm.ServerSFU(&fsmpb.Server{}); k != fsm.SFUSwitchyard {
		t.Fatal(k)
	}
	if k := fsm.ServerSFU(&fsmpb.Server{Labels: map[string]string{fsm.SFULabel: fsm.SFUJanus}}); k != fsm.SFUJanus {
		t.Fatal(k)
	}
	if fsm.ValidSFU("jitsi") || !fsm.ValidSFU("livekit") {
		t.Fatal("ValidSFU")
	}
}

// A server that gives a room up (its SFU refused it) vacates the record
// with its reason, only while the room is still on that server; the next
// placement clears the reason and says the room moved.
func TestRoomVacatedWithReason(t *testing.T) {
	a := newApplier(t)
	a.apply(register("s1", 10), register("s2", 10))
	a1 := a.apply(alloc("room:talk:0", "talk", "s1", 1))[0].GetAllocation()
	if _, err := a.one(placeRoom("talk", "s1", a1.Id, 0)); err != nil {
		t.Fatal(err)
	}
	vacate := func(server, why string) (*fsmpb.Room, error) {
		r, err := a.one(&fsmpb.Command{Cmd: &fsmpb.Command_ReleaseRoom{ReleaseRoom: &fsmpb.ReleaseRoom{Room: "talk", IfServer: server, VacateReason: why}}})
		return r.GetRoom(), err
	}
	if _, err := vacate("s2", "not mine"); !errors.Is(err, fsm.ErrVersionMismatch) {
		t.Fatalf("vacated by a server the room is not on: %v", err)
	}
	if _, err := a.one(&fsmpb.Command{Cmd: &fsmpb.Command_ReleaseRoom{ReleaseRoom: &fsmpb.ReleaseRoom{Room: "talk", IfServer: "s1", IfAllocation: "a-1-9", VacateReason: "x"}}}); !errors.Is(err, fsm.ErrVersionMismatch) {
		t.Fatalf("vacate of another placement of the room: %v", err)
	}
	if g, ok := a.f.AllocationByRequest("room:talk:0"); !ok || g.State != fsmpb.AllocationState_ALLOCATION_STATE_ACTIVE {
		t.Fatalf("a refused vacate ended the allocation: %v", g)
	}
	r, err := vacate("s1", "the SFU refused to create it: 426 room name")
	if err != nil {
		t.Fatal(err)
	}
	if r.Server != "" || r.LastServer != "s1" || r.VacatedReason != "the SFU refused to create it: 426 room name" {
		t.Fatalf("vacated room: %+v", r)
	}
	if g, _ := a.f.AllocationByRequest("room:talk:0"); g.State == fsmpb.AllocationState_ALLOCATION_STATE_ACTIVE {
		t.Fatal("the vacated room's allocation is still active")
	}
	if got, ok := a.f.Room("talk"); !ok || got.VacatedReason == "" {
		t.Fatalf("record after the vacate: %+v %v", got, ok)
	}
	a2 := a.apply(alloc("room:talk:1", "talk", "s2", 1))[0].GetAllocation()
	r2, err := a.one(placeRoom("talk", "s2", a2.Id, 1))
	if err != nil {
		t.Fatal(err)
	}
	if room := r2.GetRoom(); room.Server != "s2" || !room.Moved || room.VacatedReason != "" {
		t.Fatalf("placed again: %+v", room)
	}
	// A release without a reason forgets the room as before.
	if _, err := a.one(releaseRoom("talk")); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.f.Room("talk"); ok {
		t.Fatal("a released room is still known")
	}
}
