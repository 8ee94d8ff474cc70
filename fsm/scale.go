package fsm

import (
	"slices"

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
	// marks maps applied indexes to change log positions (changes.go):
	// markPos marks recorded so far, the ones from markFrom on belong to
	// the current epoch.
	marks             [markSize]indexMark
	markPos, markFrom uint64
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
// by-room indexes. Adding sets a.Room to the room index's copy of the
// name, so that a room's allocations share one string.
func (s *state) indexAlloc(a *fsmpb.Allocation, add bool) {
	s.changed(ChangeAllocation, a.Id) // changes.go
	if s.activeOn == nil {
		s.activeOn = map[string]*allocSet{}
		s.roomUnits = map[string]*roomUse{}
	}
	if add {
		s.indexActive(a)
		s.indexRoom(a)
		return
	}
	if on := s.activeOn[a.Server]; on != nil && on.remove(a) == 0 {
		delete(s.activeOn, a.Server)
	}
	if r := s.roomUnits[a.Room]; r != nil && !r.add(a.Server, -a.Units) {
		delete(s.roomUnits, a.Room)
	}
}

// roomUse is a room's entry in the by-room index: its name (the string
// its allocations share) and the units its active allocations hold per
// server. A room is on one or a few servers, so a slice is smaller and
// faster than a map.
type roomUse struct {
	name string
	on   []serverUnits
}

type serverUnits struct {
	server string
	units  int64
}

// add adds units (negative to take away) to server's share and reports
// whether the room still holds any units. A share that falls to zero or
// below is dropped.
func (r *roomUse) add(server string, units int64) bool {
	i := slices.IndexFunc(r.on, func(u serverUnits) bool { return u.server == server })
	if i < 0 {
		if units > 0 {
			r.on = append(r.on, serverUnits{server, units})
		}
		return len(r.on) > 0
	}
	if r.on[i].units += units; r.on[i].units <= 0 {
		r.on = slices.Delete(r.on, i, i+1)
	}
	return len(r.on) > 0
}

// indexActive adds an active allocation to the by-server index and
// indexRoom to the by-room index (both created); they touch separate maps
// and separate fields of a.
func (s *state) indexActive(a *fsmpb.Allocation) {
	on := s.activeOn[a.Server]
	if on == nil {
		on = &allocSet{}
		s.activeOn[a.Server] = on
	}
	on.add(a)
}

// allocSet is one server's active allocations: a slice, with an index of
// positions once it is longer than allocSetIndexAt (a server holds a few
// allocations, or many small ones; a map per server would cost twice the
// slice's memory). Records are compared by pointer.
type allocSet struct {
	list []*fsmpb.Allocation
	pos  map[*fsmpb.Allocation]int
}

const allocSetIndexAt = 64

// add adds a (which must not be in the set).
func (o *allocSet) add(a *fsmpb.Allocation) {
	o.list = append(o.list, a)
	switch {
	case o.pos != nil:
		o.pos[a] = len(o.list) - 1
	case len(o.list) > allocSetIndexAt:
		o.pos = make(map[*fsmpb.Allocation]int, len(o.list))
		for i, v := range o.list {
			o.pos[v] = i
		}
	}
}

// remove removes a if it is there and returns how many are left.
func (o *allocSet) remove(a *fsmpb.Allocation) int {
	i := -1
	if o.pos != nil {
		if p, ok := o.pos[a]; ok {
			i = p
			delete(o.pos, a)
		}
	} else {
		i = slices.Index(o.list, a)
	}
	if i < 0 {
		return len(o.list)
	}
	last := len(o.list) - 1
	if i != last {
		o.list[i] = o.list[last]
		if o.pos != nil {
			o.pos[o.list[i]] = i
		}
	}
	o.list[last] = nil
	o.list = o.list[:last]
	if o.pos != nil && len(o.list) <= allocSetIndexAt/2 {
		o.pos = nil
	}
	return len(o.list)
}

func (s *state) indexRoom(a *fsmpb.Allocation) {
	r := s.roomUnits[a.Room]
	if r == nil {
		r = &roomUse{name: a.Room}
		s.roomUnits[a.Room] = r
	}
	a.Room = r.name
	r.add(a.Server, a.Units)
}

// intern returns the registered server's copy of id when id names one
// (a requester is usually a media node), else id itself.
func (s *state) intern(id string) string {
	if v, ok := s.servers[id]; ok {
		return v.Id
	}
	return id
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
	r := f.s.roomUnits[room]
	if r == nil {
		return nil
	}
	out := make(map[string]int64, len(r.on))
	for _, u := range r.on {
		out[u.server] = u.units
	}
	return out
}

// ActiveAllocationsOn calls fn for every active allocation on server (do
// not modify it), under the FSM's read lock: fn must be quick and must
// not call back into the FSM. It costs O(allocations on the server).
func (f *FSM) ActiveAllocationsOn(server string, fn func(a *fsmpb.Allocation)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if on := f.s.activeOn[server]; on != nil {
		for _, a := range on.list {
			fn(a)
		}
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
