package fsm

import (
	"maps"

	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// This file holds what lets the leader's soft state follow the registry
// without scanning it: a feed of the servers each applied entry changed,
// and indexes of the active allocations by server and by room. None of it
// is replicated state: it is derived from the state, is not part of
// snapshots or the state hash, and Apply never reads it to decide anything.
// Every change to a server (registration, state, used units, removal) must
// call state.touch; every allocation that becomes or stops being active
// must call state.indexAlloc.

// feedSize is how many server changes the feed remembers. A reader that
// falls further behind (or crosses a snapshot restore) reads everything.
const feedSize = 1 << 16

// changeFeed is a ring of the ids of changed servers. Guarded by FSM.mu.
type changeFeed struct {
	ring  [feedSize]string
	pos   uint64 // changes recorded so far
	epoch uint64 // bumped when the whole state is replaced
	// refs is the watchers' change log (changes.go): servers, allocations
	// and rooms, refPos entries recorded so far.
	refs   [feedSize]changeRef
	refPos uint64
}

// FeedCursor is a reader's position in the feed. The zero cursor reads
// everything.
type FeedCursor struct {
	epoch, pos uint64
	valid      bool
}

// touch records that server id changed.
func (s *state) touch(id string) {
	if s.feed == nil {
		return
	}
	s.feed.ring[s.feed.pos%feedSize] = id
	s.feed.pos++
	s.changed(ChangeServer, id) // changes.go
}

// indexAlloc adds (or removes) an active allocation to the by-server and
// by-room indexes.
func (s *state) indexAlloc(a *fsmpb.Allocation, add bool) {
	s.changed(ChangeAllocation, a.Id) // changes.go
	if s.activeOn == nil {
		s.activeOn = map[string]map[string]*fsmpb.Allocation{}
		s.roomUnits = map[string]map[string]int64{}
	}
	if add {
		s.indexActive(a)
		s.indexRoom(a)
		return
	}
	on := s.activeOn[a.Server]
	delete(on, a.Id)
	if len(on) == 0 {
		delete(s.activeOn, a.Server)
	}
	if room := s.roomUnits[a.Room]; room != nil {
		if room[a.Server] -= a.Units; room[a.Server] <= 0 {
			delete(room, a.Server)
		}
		if len(room) == 0 {
			delete(s.roomUnits, a.Room)
		}
	}
}

// indexActive adds an active allocation to the by-server index and
// indexRoom to the by-room index (both created); they touch separate maps.
func (s *state) indexActive(a *fsmpb.Allocation) {
	on := s.activeOn[a.Server]
	if on == nil {
		on = map[string]*fsmpb.Allocation{}
		s.activeOn[a.Server] = on
	}
	on[a.Id] = a
}

func (s *state) indexRoom(a *fsmpb.Allocation) {
	room := s.roomUnits[a.Room]
	if room == nil {
		room = map[string]int64{}
		s.roomUnits[a.Room] = room
	}
	room[a.Server] += a.Units
}

// ServerChanges calls fn for every server changed since cur (present false
// for a server that is gone) and returns the new cursor, together with the
// highest sequence number applied from origin (as View does), all read
// atomically. full reports that the feed could not answer from cur (first
// read, too far behind, or a restore since): fn was then called for every
// registered server and the reader must forget servers it was not told
// about.
func (f *FSM) ServerChanges(origin string, cur FeedCursor, fn func(s ServerUse, present bool)) (next FeedCursor, seq uint64, full bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fd := f.feed
	use := func(v *fsmpb.Server) ServerUse {
		return ServerUse{ID: v.Id, Region: v.Region, Zone: v.Zone, Capacity: v.CapacityUnits, Used: v.UsedUnits, State: v.State, Labels: v.Labels}
	}
	if !cur.valid || cur.epoch != fd.epoch || fd.pos-cur.pos > feedSize {
		full = true
		for _, v := range f.s.servers {
			fn(use(v), true)
		}
	} else {
		seen := make(map[string]struct{}, fd.pos-cur.pos)
		for p := cur.pos; p < fd.pos; p++ {
			id := fd.ring[p%feedSize]
			if _, ok := seen[id]; ok {
				continue
			}
			seen[id] = struct{}{}
			if v, ok := f.s.servers[id]; ok {
				fn(use(v), true)
			} else {
				fn(ServerUse{ID: id}, false)
			}
		}
	}
	if origin != "" && f.s.lastOrigin == origin {
		seq = f.s.lastSeq
	}
	return FeedCursor{epoch: fd.epoch, pos: fd.pos, valid: true}, seq, full
}

// RoomUnits returns the units of room's active allocations per server (a
// copy; nil when the room has none). It costs O(servers hosting the room).
func (f *FSM) RoomUnits(room string) map[string]int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return maps.Clone(f.s.roomUnits[room])
}

// ActiveAllocationsOn calls fn for every active allocation on server (do
// not modify it), under the FSM's read lock: fn must be quick and must
// not call back into the FSM. It costs O(allocations on the server).
func (f *FSM) ActiveAllocationsOn(server string, fn func(a *fsmpb.Allocation)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, a := range f.s.activeOn[server] {
		fn(a)
	}
}

// EachServer calls fn for every registered server (in no order, do not
// modify or retain it) under the FSM's read lock: fn must be quick and must
// not call back into the FSM. Unlike Servers it copies and sorts nothing,
// for periodic passes over a large fleet.
func (f *FSM) EachServer(fn func(s *fsmpb.Server)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, v := range f.s.servers {
		fn(v)
	}
}
