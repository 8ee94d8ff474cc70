package fsm

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// This file holds the change log that lets a watcher (GET /v1/watch) follow
// the state without copying it whole on every change: a ring of the
// servers, allocations and rooms each applied entry touched. Like the feed
// in scale.go it is derived, outside snapshots and the state hash, and
// Apply never reads it. Every change to an allocation goes through
// state.indexAlloc (or the tombstone purge in expire), every change to a
// server through state.touch, and every change to a room calls
// state.changed; TestDeltaFollowsState checks a reader against the state.

// ChangeKind is the collection a change log entry names.
type ChangeKind uint8

// The collections the change log follows.
const (
	ChangeServer ChangeKind = iota + 1
	ChangeAllocation
	ChangeRoom
)

// changeRef names one changed object.
type changeRef struct {
	kind ChangeKind
	key  string
}

// changed records that the object key of kind changed.
func (s *state) changed(kind ChangeKind, key string) {
	if s.feed == nil {
		return
	}
	fd := s.feed
	fd.refs[fd.refPos%feedSize] = changeRef{kind: kind, key: key}
	fd.refPos++
}

// ChangeCursor is a reader's position in the change log. The zero cursor
// cannot be read from: start with ExportAt.
type ChangeCursor struct {
	epoch, pos uint64
	valid      bool
}

// Delta is what changed between two positions of the change log, as
// copies: an object of the map with a nil value is gone. Intents and the
// policy are few and small, and come whole every time.
type Delta struct {
	Applied     uint64 // the index of the last entry applied when read
	Servers     map[string]*fsmpb.Server
	Allocations map[string]*fsmpb.Allocation
	Rooms       map[string]*fsmpb.Room
	Intents     []*fsmpb.ProvisionIntent // all of them, sorted by id
	Policy      *fsmpb.Policy
}

// DeltaSince returns copies of the objects changed since cur and the
// cursor to read on from, read atomically. ok is false when the log cannot
// answer from cur (a zero cursor, a reader more than 65,536 changes behind,
// or a snapshot restore since): the reader must start over from ExportAt.
// It costs O(changes since cur), not O(state).
func (f *FSM) DeltaSince(cur ChangeCursor) (d Delta, next ChangeCursor, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fd := f.feed
	next = ChangeCursor{epoch: fd.epoch, pos: fd.refPos, valid: true}
	if !cur.valid || cur.epoch != fd.epoch || fd.refPos-cur.pos > feedSize {
		return Delta{}, next, false
	}
	d = Delta{Applied: f.s.applied, Servers: map[string]*fsmpb.Server{}, Allocations: map[string]*fsmpb.Allocation{}, Rooms: map[string]*fsmpb.Room{}}
	for p := cur.pos; p < fd.refPos; p++ {
		ref := fd.refs[p%feedSize]
		switch ref.kind {
		case ChangeServer:
			if _, done := d.Servers[ref.key]; !done {
				d.Servers[ref.key] = cloneOrNil(f.s.servers[ref.key])
			}
		case ChangeAllocation:
			if _, done := d.Allocations[ref.key]; !done {
				d.Allocations[ref.key] = cloneOrNil(f.s.allocations.Get(ref.key))
			}
		case ChangeRoom:
			if _, done := d.Rooms[ref.key]; !done {
				d.Rooms[ref.key] = cloneOrNil(f.s.rooms[ref.key])
			}
		}
	}
	for _, v := range f.s.intents {
		d.Intents = append(d.Intents, proto.Clone(v).(*fsmpb.ProvisionIntent))
	}
	slices.SortFunc(d.Intents, func(a, b *fsmpb.ProvisionIntent) int { return strings.Compare(a.Id, b.Id) })
	d.Policy = cloneOrNil(f.s.policy)
	return d, next, true
}

// ExportAt is Export together with the change log cursor that DeltaSince
// continues from, read atomically.
func (f *FSM) ExportAt() (*fsmpb.State, ChangeCursor) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.s.export(), ChangeCursor{epoch: f.feed.epoch, pos: f.feed.refPos, valid: true}
}

// cloneOrNil copies v, or returns nil (not a typed nil inside an
// interface) when v is nil.
func cloneOrNil[T proto.Message](v T) T {
	var zero T
	if any(v) == any(zero) {
		return zero
	}
	return proto.Clone(v).(T)
}
