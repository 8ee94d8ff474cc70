package fsm

import (
	"hash/maphash"
	"iter"

	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// recordTable is a hash set of allocation records keyed by one of their
// own string fields (the id, or the request id). It holds what a
// map[string]*fsmpb.Allocation would in about a third of the memory
// (a Go map's key and value slots cost ~50 B per record at a million;
// these ~19 B): a slot is one pointer plus a control byte, the key is read
// from the record instead of being stored beside it, and the table is
// split into shards that each grow on their own, so that a growth step
// rehashes 1/tableShards of the records. The control byte holds seven
// bits of the key's hash, so a probe reads a record (a cache miss) only
// when those match.
//
// The hash is seeded at random (request ids are chosen by clients, so
// the layout must not be predictable); it decides only where records sit
// and the order All yields them, never what the state holds, so Apply
// stays deterministic. Not safe for concurrent use; the zero value is
// not ready: use newRecordTable.
type recordTable struct {
	byRequest bool // keyed by RequestId, else by Id
	seed      maphash.Seed
	n         int
	shards    [tableShards]tableShard
}

// tableShards is the number of shards. The top tableShardBits of a key's
// hash pick its shard, the low bits its slot, the seven bits below the
// shard's its control byte.
const (
	tableShardBits = 6
	tableShards    = 1 << tableShardBits
)

// Control bytes: a slot is empty, a tombstone (its record was removed; a
// probe goes on past it), or full (ctrlFull | seven bits of the hash).
const (
	ctrlEmpty = 0
	ctrlTomb  = 1
	ctrlFull  = 0x80
)

// tableShard is one open-addressing table with linear probing: slots
// and ctrl are nil or a power of two long, used counts full slots and
// tombstones.
type tableShard struct {
	slots []*fsmpb.Allocation
	ctrl  []uint8
	used  int
}

func newRecordTable(byRequest bool) *recordTable {
	return &recordTable{byRequest: byRequest, seed: maphash.MakeSeed()}
}

func (t *recordTable) key(a *fsmpb.Allocation) string {
	if t.byRequest {
		return a.RequestId
	}
	return a.Id
}

// locate returns k's shard, the slot k's probe starts at (before masking)
// and k's control byte.
func (t *recordTable) locate(k string) (*tableShard, uint64, uint8) {
	h := maphash.String(t.seed, k)
	return &t.shards[h>>(64-tableShardBits)], h, tagOf(h)
}

func tagOf(h uint64) uint8 { return ctrlFull | uint8(h>>(64-tableShardBits-7))&0x7f }

// Len returns the number of records.
func (t *recordTable) Len() int { return t.n }

// Get returns the record keyed k, or nil.
func (t *recordTable) Get(k string) *fsmpb.Allocation {
	sh, h, tag := t.locate(k)
	if sh.slots == nil {
		return nil
	}
	mask := uint64(len(sh.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		switch c := sh.ctrl[i]; {
		case c == ctrlEmpty:
			return nil
		case c == tag && t.key(sh.slots[i]) == k:
			return sh.slots[i]
		}
	}
}

// Put stores a, replacing the record with the same key if there is one.
// A replacement takes the record's slot and never moves other records;
// only a new key may make the shard grow (and rehash).
func (t *recordTable) Put(a *fsmpb.Allocation) {
	k := t.key(a)
	sh, h, tag := t.locate(k)
	free := -1
	if sh.slots != nil {
		mask := uint64(len(sh.slots) - 1)
		for i := h & mask; ; i = (i + 1) & mask {
			c := sh.ctrl[i]
			if c == ctrlEmpty {
				break
			}
			if c == ctrlTomb && free < 0 {
				free = int(i)
			}
			if c == tag && t.key(sh.slots[i]) == k {
				sh.slots[i] = a
				return
			}
		}
	}
	t.n++
	if free >= 0 {
		// A tombstone on k's probe path: no growth, used stays.
		sh.slots[free], sh.ctrl[free] = a, tag
		return
	}
	if (sh.used+1)*4 > len(sh.slots)*3 {
		// Half full after the rehash: room to grow before the next one.
		t.rehash(sh, 2*(sh.live()+1))
	}
	mask := uint64(len(sh.slots) - 1)
	i := h & mask
	for sh.ctrl[i] != ctrlEmpty {
		i = (i + 1) & mask
	}
	sh.slots[i], sh.ctrl[i] = a, tag
	sh.used++
}

// Remove removes the record keyed k, if any.
func (t *recordTable) Remove(k string) {
	sh, h, tag := t.locate(k)
	if sh.slots == nil {
		return
	}
	mask := uint64(len(sh.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		switch c := sh.ctrl[i]; {
		case c == ctrlEmpty:
			return
		case c == tag && t.key(sh.slots[i]) == k:
			sh.slots[i] = nil
			// A slot followed by an empty one ends every probe that
			// reaches it, so it can be emptied instead of marked.
			if sh.ctrl[(i+1)&mask] == ctrlEmpty {
				sh.ctrl[i] = ctrlEmpty
				sh.used--
			} else {
				sh.ctrl[i] = ctrlTomb
			}
			t.n--
			return
		}
	}
}

// All yields every record once, in no particular order. The loop may
// Remove the record it was given, or Put a record with the key of one
// that is present (it takes that record's slot and is not yielded), but
// must not add keys, a key it removed included: an insertion may rehash
// the shard or fill a slot the loop has yet to reach.
func (t *recordTable) All() iter.Seq[*fsmpb.Allocation] {
	return func(yield func(*fsmpb.Allocation) bool) {
		for s := range t.shards {
			sh := &t.shards[s]
			for i := 0; i < len(sh.slots); i++ {
				if sh.ctrl[i]&ctrlFull != 0 && !yield(sh.slots[i]) {
					return
				}
			}
		}
	}
}

// Reserve sizes the table for n records, so that adding them rarely
// rehashes (a shard that gets more than its share plus an eighth still
// grows).
func (t *recordTable) Reserve(n int) {
	for s := range t.shards {
		sh := &t.shards[s]
		// An eighth more than an even share, for the uneven spread,
		// at a load of at most three quarters.
		want := n/tableShards + n/(tableShards*8) + 1
		if size := (want*4 + 2) / 3; size > len(sh.slots) {
			t.rehash(sh, size)
		}
	}
}

// live counts a shard's records.
func (sh *tableShard) live() int {
	n := 0
	for _, c := range sh.ctrl {
		if c&ctrlFull != 0 {
			n++
		}
	}
	return n
}

// rehash moves a shard's records into a table of at least min slots (a
// power of two, at least 8), dropping tombstones. min must exceed the
// shard's records.
func (t *recordTable) rehash(sh *tableShard, min int) {
	size := 8
	for size < min {
		size *= 2
	}
	old, oldCtrl := sh.slots, sh.ctrl
	sh.slots, sh.ctrl = make([]*fsmpb.Allocation, size), make([]uint8, size)
	sh.used = 0
	mask := uint64(size - 1)
	for j, a := range old {
		if oldCtrl[j]&ctrlFull == 0 {
			continue
		}
		h := maphash.String(t.seed, t.key(a))
		i := h & mask
		for sh.ctrl[i] != ctrlEmpty {
			i = (i + 1) & mask
		}
		sh.slots[i], sh.ctrl[i] = a, tagOf(h)
		sh.used++
	}
}
