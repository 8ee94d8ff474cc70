package cluster

import (
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/placement"
	"github.com/switchyard/switchyard/placement/policyspec"
)

// LoadFeed is implemented by a LoadSource that can tell which servers'
// loads changed (loadview.View does). Without it the decision loop
// re-reads a server's load only when the registry changes it.
type LoadFeed interface {
	// LoadChanges returns the servers whose load changed since cursor cur
	// and the new cursor; full reports that the source cannot tell (first
	// call, or too far behind) and every server must be re-read.
	LoadChanges(cur uint64) (ids []string, next uint64, full bool)
}

// leaderIndex is the decision loop's placement index (placement.Index) and
// what keeps it current, so that a decision costs about O(log N) in the
// fleet size instead of a pass over every server. It is soft state of one
// leadership term, owned by the decision loop: built from the FSM on the
// first batch, then updated from the FSM's change feed (servers whose
// registry entry or used units changed), from the load source's change
// feed, and by the loop's own reservations. Apply never sees it and
// re-checks every hard limit, so a stale index can cost a refusal, never an
// over-commit.
type leaderIndex struct {
	ix       *placement.Index
	cur      fsm.FeedCursor
	loadCur  uint64
	reserved map[string]int64            // server -> units of our in-flight batches
	rooms    map[string]map[string]int64 // room -> server -> units of our in-flight batches
	// scratch, reused every batch
	changed []fsm.ServerUse
	removed []string
	dirty   map[string]struct{}
}

// sync brings the index up to date: it reads the servers the FSM changed
// together with the highest of our sequence numbers it has applied, drops
// the in-flight batches that are applied (their reservations are in the
// committed figures now, or were refused), and refreshes every server whose
// registry entry, reservations or load changed. It returns the applied
// sequence number.
func (ls *leaderState) sync() uint64 {
	n, p := ls.n, &ls.pix
	if p.ix == nil {
		p.ix = placement.NewIndex(ls.currentPolicy(0))
		p.reserved, p.rooms, p.dirty = map[string]int64{}, map[string]map[string]int64{}, map[string]struct{}{}
	}
	p.changed, p.removed = p.changed[:0], p.removed[:0]
	cur, applied, full := n.fsm.ServerChanges(ls.origin, p.cur, func(s fsm.ServerUse, present bool) {
		if present {
			p.changed = append(p.changed, s)
		} else {
			p.removed = append(p.removed, s.ID)
		}
	})
	p.cur = cur
	if full {
		p.ix = placement.NewIndex(p.ix.Policy())
	}
	// Drop in-flight batches the FSM has applied.
	k := 0
	for _, b := range ls.inflight {
		if b.seq > applied {
			ls.inflight[k] = b
			k++
			continue
		}
		for id, u := range b.reserved {
			if p.reserved[id] -= u; p.reserved[id] <= 0 {
				delete(p.reserved, id)
			}
			p.dirty[id] = struct{}{}
		}
		for room, m := range b.rooms {
			for id, u := range m {
				p.noteRoom(room, id, -u)
			}
		}
	}
	ls.inflight = ls.inflight[:k]
	if lf, ok := n.cfg.Loads.(LoadFeed); ok {
		ids, next, all := lf.LoadChanges(p.loadCur)
		p.loadCur = next
		if all && !full {
			// The load view cannot say what changed: re-read every load
			// and rebuild in bulk (below).
			full = true
			skip := make(map[string]bool, len(p.changed)+len(p.removed))
			for _, s := range p.changed {
				skip[s.ID] = true
			}
			for _, id := range p.removed {
				skip[id] = true
			}
			for _, c := range p.ix.Candidates() {
				if !skip[c.ID] {
					p.changed = append(p.changed, fsm.ServerUse{ID: c.ID, Region: c.Region, Zone: c.Zone, Labels: c.Labels,
						Capacity: c.Capacity, Used: c.Used - c.InFlight, State: stateOf(c)})
				}
			}
			p.ix = placement.NewIndex(p.ix.Policy())
		}
		for _, id := range ids {
			p.dirty[id] = struct{}{}
		}
	}
	for _, id := range p.removed {
		p.ix.Remove(id)
		delete(p.dirty, id)
	}
	var bulk []placement.Candidate
	if full {
		bulk = make([]placement.Candidate, 0, len(p.changed))
	}
	for _, s := range p.changed {
		c := placement.Candidate{ID: s.ID, Region: s.Region, Zone: s.Zone, Labels: s.Labels, Capacity: s.Capacity, Used: s.Used,
			Active: s.State == fsmpb.ServerState_SERVER_STATE_ACTIVE, State: fsm.StateName(s.State)}
		ls.fill(&c, s.Used)
		if full {
			bulk = append(bulk, c)
		} else {
			p.ix.Upsert(c)
		}
		delete(p.dirty, s.ID)
	}
	if full {
		p.ix.UpsertAll(bulk) // a new leader, or the feed overflowed: bulk build
	}
	for id := range p.dirty {
		if c, ok := p.ix.Get(id); ok {
			ls.fill(&c, c.Used-c.InFlight)
			p.ix.Upsert(c)
		}
		delete(p.dirty, id)
	}
	return applied
}

// stateOf is the registry state of an indexed candidate.
func stateOf(c placement.Candidate) fsmpb.ServerState {
	switch c.State {
	case "active":
		return fsmpb.ServerState_SERVER_STATE_ACTIVE
	case "draining":
		return fsmpb.ServerState_SERVER_STATE_DRAINING
	}
	return fsmpb.ServerState_SERVER_STATE_DOWN
}

// fill sets c's used units (committed plus our reservations) and its
// current load.
func (ls *leaderState) fill(c *placement.Candidate, committed int64) {
	c.InFlight = ls.pix.reserved[c.ID]
	c.Used = committed + c.InFlight
	c.Load = nil
	if ls.n.cfg.Loads != nil {
		if l, ok := ls.n.cfg.Loads.Load(c.ID); ok {
			c.Load = &l
		}
	}
}

// setPolicy re-keys the index when the policy in force changed.
func (p *leaderIndex) setPolicy(pol *placement.Policy) {
	if p.ix.Policy() != pol {
		p.ix.SetPolicy(pol)
	}
}

// reserve counts a decision of the current batch.
func (p *leaderIndex) reserve(id, room string, units int64) {
	p.ix.Reserve(id, units)
	p.reserved[id] += units
	p.noteRoom(room, id, units)
}

// unreserve takes back the decisions of a batch that was never proposed.
func (p *leaderIndex) unreserve(reserved map[string]int64, rooms map[string]map[string]int64) {
	for id, u := range reserved {
		if p.reserved[id] -= u; p.reserved[id] <= 0 {
			delete(p.reserved, id)
		}
		p.ix.Reserve(id, -u)
	}
	for room, m := range rooms {
		for id, u := range m {
			p.noteRoom(room, id, -u)
		}
	}
}

func (p *leaderIndex) noteRoom(room, id string, units int64) {
	m := p.rooms[room]
	if m == nil {
		if units <= 0 {
			return
		}
		m = map[string]int64{}
		p.rooms[room] = m
	}
	if m[id] += units; m[id] <= 0 {
		delete(m, id)
	}
	if len(m) == 0 {
		delete(p.rooms, room)
	}
}

// needsHosting reports whether the policy reads room hosting.
func (p *leaderIndex) needsHosting() bool {
	if p.ix == nil {
		return false
	}
	s := p.ix.Policy().Spec()
	return s.GetStrategy() == policyspec.RoomAffinity || s.GetExpr() != ""
}

// hosting is the units of room per server: committed allocations plus our
// decisions in flight.
func (ls *leaderState) hostingOf(room string) map[string]int64 {
	h := ls.n.fsm.RoomUnits(room)
	for id, u := range ls.pix.rooms[room] {
		if h == nil {
			h = map[string]int64{}
		}
		h[id] += u
	}
	return h
}
