package fsm

import (
	"hash/fnv"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// Room placement: which server an application room lives on. The leader
// picks the server with the live policy and commits an allocation for the
// room first (the ordinary decision path, so every hard limit holds); a
// PlaceRoom command then points the room's record at that allocation. Apply
// checks the allocation is active and belongs to the room and server, makes
// the change conditional on the room's generation (so two concurrent
// placements of one room cannot both win), and ends the allocation of the
// placement it replaces. When a server is marked down or deregistered, its
// rooms are vacated (server cleared, allocation ended): no record keeps
// pointing at a dead server, and the next placement moves the room.

// SFU kinds a server can be (its SFULabel label; no label means
// SFUSwitchyard, Switchyard's own media node).
const (
	SFUSwitchyard = "switchyard"
	SFULiveKit    = "livekit"
	SFUJanus      = "janus"
)

// SFULabel is the server label that names the server's SFU kind.
const SFULabel = "sfu"

// SFUKinds lists the known SFU kinds.
func SFUKinds() []string { return []string{SFUSwitchyard, SFULiveKit, SFUJanus} }

// ValidSFU reports whether kind is a known SFU kind.
func ValidSFU(kind string) bool { return slices.Contains(SFUKinds(), kind) }

// ServerSFU is the SFU kind of a server: its SFULabel label, or
// SFUSwitchyard without one.
func ServerSFU(s *fsmpb.Server) string {
	if k := s.GetLabels()[SFULabel]; k != "" {
		return k
	}
	return SFUSwitchyard
}

// roomNumberMask keeps room numbers within JSON's exact integers (2^53).
const roomNumberMask = 1<<53 - 1

func (s *state) roomMap() map[string]*fsmpb.Room {
	if s.rooms == nil {
		s.rooms, s.roomNums = map[string]*fsmpb.Room{}, map[uint64]bool{}
	}
	return s.rooms
}

// roomNumber derives a number for a new room from its name (FNV-1a),
// probing past numbers other rooms hold. Deterministic: it reads only the
// name and the state.
func (s *state) roomNumber(name string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	n := h.Sum64() & roomNumberMask
	for n == 0 || s.roomNums[n] {
		n = (n + 1) & roomNumberMask
	}
	return n
}

func (s *state) placeRoom(now int64, c *fsmpb.PlaceRoom) (*fsmpb.Room, error) {
	if c.GetRoom() == "" {
		return nil, errorf(ErrInvalid, "room is required")
	}
	a := s.lookup(c.GetAllocationId())
	if a == nil {
		return nil, errorf(ErrNotFound, "allocation %q does not exist", c.GetAllocationId())
	}
	if a.State != fsmpb.AllocationState_ALLOCATION_STATE_ACTIVE || a.Room != c.GetRoom() || a.Server != c.GetServer() {
		return nil, errorf(ErrInvalid, "allocation %s is %s for room %q on %s, not an active allocation for room %q on %s",
			a.Id, AllocationStateName(a.State), a.Room, a.Server, c.GetRoom(), c.GetServer())
	}
	rooms := s.roomMap()
	cur := rooms[c.GetRoom()]
	if gen := cur.GetGeneration(); c.GetIfGeneration() != gen {
		var out *fsmpb.Room
		if cur != nil {
			out = proto.Clone(cur).(*fsmpb.Room)
		}
		return out, errorf(ErrVersionMismatch, "room %s is at placement %d, not %d", c.GetRoom(), gen, c.GetIfGeneration())
	}
	if cur == nil {
		cur = &fsmpb.Room{Name: c.GetRoom(), Number: s.roomNumber(c.GetRoom())}
		rooms[cur.Name] = cur
		s.roomNums[cur.Number] = true
	}
	prev := cur.Server
	if prev == "" {
		prev = cur.LastServer
	}
	if cur.AllocationId != "" && cur.AllocationId != a.Id {
		if old := s.lookup(cur.AllocationId); old != nil {
			s.end(old, now, fsmpb.AllocationState_ALLOCATION_STATE_RELEASED)
		}
	}
	cur.Server, cur.LastServer = a.Server, ""
	cur.Sfu = c.GetSfu()
	cur.AllocationId, cur.Units = a.Id, a.Units
	cur.Moved = prev != "" && prev != a.Server
	cur.PlacedAtUnixMs = now
	cur.Region = c.GetRegion()
	cur.VacatedReason = ""
	cur.Generation++
	s.changed(ChangeRoom, cur.Name) // changes.go
	return proto.Clone(cur).(*fsmpb.Room), nil
}

// releaseRoom ends a room's placement and forgets the room, or, with a
// vacate reason, keeps its record vacated with that reason. Releasing a
// room that is not placed succeeds and changes nothing (result: no room).
func (s *state) releaseRoom(now int64, c *fsmpb.ReleaseRoom) (*fsmpb.Room, error) {
	if c.GetRoom() == "" {
		return nil, errorf(ErrInvalid, "room is required")
	}
	cur, ok := s.rooms[c.GetRoom()]
	if !ok {
		return nil, nil
	}
	if srv := c.GetIfServer(); srv != "" && cur.Server != srv {
		return proto.Clone(cur).(*fsmpb.Room), errorf(ErrVersionMismatch, "room %s is not on %s (it is on %q)", cur.Name, srv, cur.Server)
	}
	if id := c.GetIfAllocation(); id != "" && cur.AllocationId != id {
		return proto.Clone(cur).(*fsmpb.Room), errorf(ErrVersionMismatch, "room %s is placed as %s now, not %s", cur.Name, cur.AllocationId, id)
	}
	if a := s.lookup(cur.AllocationId); a != nil {
		s.end(a, now, fsmpb.AllocationState_ALLOCATION_STATE_RELEASED)
	}
	if why := c.GetVacateReason(); why != "" {
		// Its server gave the room up: keep the record, vacated, saying why.
		if cur.Server != "" {
			cur.LastServer = cur.Server
		}
		cur.Server, cur.VacatedReason = "", why
		s.changed(ChangeRoom, cur.Name) // changes.go
		return proto.Clone(cur).(*fsmpb.Room), nil
	}
	delete(s.rooms, cur.Name)
	delete(s.roomNums, cur.Number)
	s.changed(ChangeRoom, cur.Name) // changes.go
	return cur, nil
}

// vacateRooms clears the server of every room on server id (marked down or
// deregistered) and ends those rooms' allocations.
func (s *state) vacateRooms(now int64, id string) {
	for _, r := range s.rooms {
		if r.Server != id {
			continue
		}
		if a := s.lookup(r.AllocationId); a != nil {
			s.end(a, now, fsmpb.AllocationState_ALLOCATION_STATE_RELEASED)
		}
		r.Server, r.LastServer = "", id
		s.changed(ChangeRoom, r.Name) // changes.go
	}
}

func (s *state) exportRooms(st *fsmpb.State) {
	for _, v := range s.rooms {
		st.Rooms = append(st.Rooms, proto.Clone(v).(*fsmpb.Room))
	}
	slices.SortFunc(st.Rooms, func(a, b *fsmpb.Room) int { return strings.Compare(a.Name, b.Name) })
}

func (s *state) importRooms(st *fsmpb.State) {
	for _, v := range st.GetRooms() {
		s.roomMap()[v.Name] = proto.Clone(v).(*fsmpb.Room)
		s.roomNums[v.Number] = true
	}
}

func validateRooms(st *fsmpb.State) error {
	seen, nums := map[string]bool{}, map[uint64]bool{}
	for _, r := range st.GetRooms() {
		if r.GetName() == "" || seen[r.GetName()] {
			return errorf(ErrInvalid, "snapshot: empty or repeated room name %q", r.GetName())
		}
		if r.GetNumber() == 0 || nums[r.GetNumber()] {
			return errorf(ErrInvalid, "snapshot: room %s has a zero or repeated number %d", r.GetName(), r.GetNumber())
		}
		seen[r.GetName()], nums[r.GetNumber()] = true, true
	}
	return nil
}

// ---- reads ----

// Room returns a copy of one room record.
func (f *FSM) Room(name string) (*fsmpb.Room, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v, ok := f.s.rooms[name]
	if !ok {
		return nil, false
	}
	return proto.Clone(v).(*fsmpb.Room), true
}

// Rooms returns copies of the room records, sorted by name; with server
// set, only the rooms on that server.
func (f *FSM) Rooms(server string) []*fsmpb.Room {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*fsmpb.Room, 0, len(f.s.rooms))
	for _, v := range f.s.rooms {
		if server == "" || v.Server == server {
			out = append(out, proto.Clone(v).(*fsmpb.Room))
		}
	}
	slices.SortFunc(out, func(a, b *fsmpb.Room) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// ServerSFUs returns the SFU kind of every registered server, by id.
func (f *FSM) ServerSFUs() map[string]string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]string, len(f.s.servers))
	for id, v := range f.s.servers {
		out[id] = ServerSFU(v)
	}
	return out
}
