package fsm

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// This file holds the change log that lets a watcher (GET /v1/watch) follow
// the state without copying it whole on every change: a ring of the
// servers, allocations, rooms and intents each applied entry touched, with
// marks of the applied index it had reached. Like the feed
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
	ChangeIntent
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

// markSize is how many applied entries the index marks remember.
const markSize = 1 << 14

// indexMark records that after the entry at index was applied the change
// log held pos entries.
type indexMark struct{ index, pos uint64 }

// mark records where the change log stands after the entry at index.
// Called with FSM.mu held for writing.
func (fd *changeFeed) mark(index uint64) {
	if fd.markPos > fd.markFrom {
		last := &fd.marks[(fd.markPos-1)%markSize]
		if last.index >= index || last.pos == fd.refPos {
			return // nothing changed since: the last mark answers for index too
		}
	}
	fd.marks[fd.markPos%markSize] = indexMark{index: index, pos: fd.refPos}
	fd.markPos++
}

// Changed is what ChangedSince returns: the keys of the objects changed,
// per collection, each once.
type Changed struct {
	Servers, Allocations, Rooms, Intents []string
}

// ChangedSince returns the keys of the servers, allocations, rooms and
// intents changed by the entries applied after index, read atomically
// with the applied index it reaches (the log's entries are copied under
// the read lock; the rest runs outside it, so Apply waits for a copy of at
// most 65,536 references). ok is false when the change log no
// longer reaches back to index (more than 16,384 entries or 65,536 changes
// ago, or before the last snapshot restore, which includes the snapshot a
// restarted agent starts from) or index is ahead of the state; the caller
// must then copy the whole state. It costs O(changes since index).
func (f *FSM) ChangedSince(index uint64) (c Changed, applied uint64, ok bool) {
	refs, applied, ok := f.refsSince(index)
	if !ok {
		return Changed{}, applied, false
	}
	seen := make(map[changeRef]bool, len(refs))
	for _, ref := range refs {
		if seen[ref] {
			continue
		}
		seen[ref] = true
		switch ref.kind {
		case ChangeServer:
			c.Servers = append(c.Servers, ref.key)
		case ChangeAllocation:
			c.Allocations = append(c.Allocations, ref.key)
		case ChangeRoom:
			c.Rooms = append(c.Rooms, ref.key)
		case ChangeIntent:
			c.Intents = append(c.Intents, ref.key)
		}
	}
	return c, applied, true
}

// refsSince copies the change log's entries recorded after index was
// applied (see ChangedSince).
func (f *FSM) refsSince(index uint64) (refs []changeRef, applied uint64, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fd := f.feed
	applied = f.s.applied
	if index > applied {
		return nil, applied, false
	}
	lo := max(fd.markFrom, fd.markPos-min(fd.markPos, markSize))
	// The newest mark at or before index: the change log after its
	// position holds what every later entry changed.
	i, found := fd.markPos, false
	for a, b := lo, fd.markPos; a < b; {
		m := a + (b-a)/2
		if fd.marks[m%markSize].index <= index {
			i, found, a = m, true, m+1
		} else {
			b = m
		}
	}
	if !found {
		return nil, applied, false
	}
	pos := fd.marks[i%markSize].pos
	if fd.refPos-pos > feedSize {
		return nil, applied, false
	}
	refs = make([]changeRef, 0, fd.refPos-pos)
	for p := pos; p < fd.refPos; p++ {
		refs = append(refs, fd.refs[p%feedSize])
	}
	return refs, applied, true
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
