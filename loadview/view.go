// Package loadview is an agent's soft view of media-server load: the latest
// load report per server, with the time it was received. Every agent keeps
// one, fed by the reports its own media nodes send and by those every other
// agent shares (package quicapi), so every view covers the whole fleet; the
// leader's is the one placement scores with (View implements
// cluster.LoadSource).
//
// The view is never replicated through raft and never persisted: an agent
// that starts has an empty view and fills within one report interval. A
// follower that becomes leader already holds the fleet's latest reports.
// The failure detector in this package reads it on the leader.
package loadview

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/placement"
	"github.com/switchyard/switchyard/transport/transportpb"
)

// Registry is the replicated state the view reads to compute unmaterialized
// reservations. *fsm.FSM implements it.
type Registry interface {
	// ActiveAllocationsOn calls fn for each active allocation on server
	// (O(allocations on it), under the registry's lock: fn only copies).
	ActiveAllocationsOn(server string, fn func(a *fsmpb.Allocation))
}

// TruncatedGrace is how old (by the leader's clock) an allocation must be
// before a truncated report that does not list it is assumed to host it
// anyway: truncation drops the oldest ids, so only recent ones count as
// unmaterialized when the list was cut.
const TruncatedGrace = 10 * time.Second

// Entry is the view's record of one server.
type Entry struct {
	Report *transportpb.LoadReport
	// Received is when the report reached the agent that first received it
	// (shared reports carry their age).
	Received time.Time
}

// View is the soft load view. All methods are safe for concurrent use and
// never block on I/O.
type View struct {
	now func() time.Time
	reg atomic.Pointer[registryBox]

	mu sync.RWMutex
	m  map[string]Entry
	// changes is a ring of the ids of servers whose entry changed (the
	// decision loop's LoadChanges feed); changed counts them all.
	changes [changeRing]string
	changed uint64
}

// changeRing is how many load changes LoadChanges remembers: a reader that
// falls further behind re-reads every server.
const changeRing = 1 << 16

type registryBox struct{ r Registry }

type allocRef struct {
	id      string
	units   int64
	created int64
}

// New returns an empty view. now may be nil (time.Now).
func New(now func() time.Time) *View {
	if now == nil {
		now = time.Now
	}
	return &View{now: now, m: map[string]Entry{}}
}

// Attach sets the registry used to compute Load.Unmaterialized. Before it
// is called Unmaterialized is always 0.
func (v *View) Attach(r Registry) { v.reg.Store(&registryBox{r: r}) }

// Offer records r as received at t if it is newer than what the view holds
// for r's server: a higher incarnation, or the same incarnation and a
// higher sequence number. It reports whether r was taken. The view keeps r
// (callers must not modify it afterwards).
func (v *View) Offer(r *transportpb.LoadReport, t time.Time) bool {
	id := r.GetServerId()
	if id == "" {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	cur, ok := v.m[id]
	if ok && !Newer(r, cur.Report) {
		return false
	}
	v.m[id] = Entry{Report: r, Received: t}
	v.noteLocked(id)
	return true
}

func (v *View) noteLocked(id string) {
	v.changes[v.changed%changeRing] = id
	v.changed++
}

// LoadChanges implements cluster.LoadFeed: the servers whose entry changed
// (a newer report, or forgotten) since cursor cur, the new cursor, and
// full when cur is too old to tell (every server must be re-read).
func (v *View) LoadChanges(cur uint64) (ids []string, next uint64, full bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if cur > v.changed || v.changed-cur > changeRing {
		return nil, v.changed, true
	}
	seen := make(map[string]struct{}, v.changed-cur)
	for p := cur; p < v.changed; p++ {
		id := v.changes[p%changeRing]
		if _, ok := seen[id]; !ok {
			seen[id] = struct{}{}
			ids = append(ids, id)
		}
	}
	return ids, v.changed, false
}

// Newer reports whether a supersedes b (b may be nil).
func Newer(a, b *transportpb.LoadReport) bool {
	if b == nil {
		return true
	}
	if a.GetIncarnation() != b.GetIncarnation() {
		return a.GetIncarnation() > b.GetIncarnation()
	}
	return a.GetSeq() > b.GetSeq()
}

// Get returns the entry for server id.
func (v *View) Get(id string) (Entry, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	e, ok := v.m[id]
	if !ok {
		return Entry{}, false
	}
	return e, true
}

// Len is the number of servers in the view.
func (v *View) Len() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.m)
}

// Forget drops server id from the view.
func (v *View) Forget(id string) {
	v.mu.Lock()
	delete(v.m, id)
	v.noteLocked(id)
	v.mu.Unlock()
}

// Prune drops entries received before cutoff and returns how many.
func (v *View) Prune(cutoff time.Time) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for id, e := range v.m {
		if e.Received.Before(cutoff) {
			delete(v.m, id)
			v.noteLocked(id)
			n++
		}
	}
	return n
}

// Load implements cluster.LoadSource: the latest reported load of server
// id with its age and the units of its active allocations that the report
// does not list yet.
func (v *View) Load(id string) (placement.Load, bool) {
	e, ok := v.Get(id)
	if !ok {
		return placement.Load{}, false
	}
	r := e.Report
	now := v.now()
	l := placement.Load{
		CPU: r.GetCpu(), IngressBps: r.GetIngressBps(), EgressBps: r.GetEgressBps(),
		Peers: r.GetPeers(), Tracks: r.GetTracks(), Rooms: r.GetRooms(),
		AgeMs: now.Sub(e.Received).Milliseconds(),
	}
	l.Unmaterialized = v.unmaterialized(id, r, e.Received)
	return l, true
}

func (v *View) unmaterialized(id string, r *transportpb.LoadReport, received time.Time) int64 {
	box := v.reg.Load()
	if box == nil {
		return 0
	}
	var refs []allocRef
	box.r.ActiveAllocationsOn(id, func(a *fsmpb.Allocation) {
		refs = append(refs, allocRef{id: a.Id, units: a.Units, created: a.CreatedAtUnixMs})
	})
	if len(refs) == 0 {
		return 0
	}
	ids := r.GetAllocationIds()
	var hosted map[string]struct{}
	if len(ids) > 16 {
		hosted = make(map[string]struct{}, len(ids))
		for _, a := range ids {
			hosted[a] = struct{}{}
		}
	}
	graceCut := received.Add(-TruncatedGrace).UnixMilli()
	var n int64
	for _, a := range refs {
		if hosted != nil {
			if _, ok := hosted[a.id]; ok {
				continue
			}
		} else if slices.Contains(ids, a.id) {
			continue
		}
		if r.GetTruncated() && a.created < graceCut {
			continue
		}
		n += a.units
	}
	return n
}

// JSON returns the JSON form of server id's latest load and its age in ms,
// or nils when the view has none.
func (v *View) JSON(id string) (*api.ServerLoad, *int64) {
	e, ok := v.Get(id)
	if !ok {
		return nil, nil
	}
	r := e.Report
	age := v.now().Sub(e.Received).Milliseconds()
	return &api.ServerLoad{
		Incarnation: r.GetIncarnation(), Seq: r.GetSeq(), CPU: r.GetCpu(),
		IngressBps: r.GetIngressBps(), EgressBps: r.GetEgressBps(), Peers: r.GetPeers(), Tracks: r.GetTracks(),
		SubscribedTracks: r.GetSubscribedTracks(), Rooms: r.GetRooms(), AllocationIDs: r.GetAllocationIds(), FreeUnits: r.GetFreeUnits(), Truncated: r.GetTruncated(),
		UnmaterializedUnits: v.unmaterialized(id, r, e.Received),
	}, &age
}

// Decorate implements httpapi.ServerListDecorator.
func (v *View) Decorate(s api.Server) any {
	l, age := v.JSON(s.ID)
	return api.ServerWithLoad{Server: s, Load: l, LoadAgeMs: age}
}
