// Package loadview is an agent's soft view of media-server load: the latest
// load report per server, with the time it was received. Every agent keeps
// one, fed by the reports its QUIC listener receives; the leader's is fed
// also by the reports followers forward, so it covers the whole fleet and is
// the one placement scores with (View implements cluster.LoadSource).
//
// The view is never replicated and never persisted: a new leader starts
// empty and refills within one report interval. The failure detector in
// this package reads it on the leader.
package loadview

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/placement"
	"github.com/switchyard/switchyard/transport/transportpb"
)

// Registry is the replicated state the view reads to compute unmaterialized
// reservations. *fsm.FSM implements it.
type Registry interface {
	Allocations(flt fsm.AllocationFilter) []*fsmpb.Allocation
	AppliedIndex() uint64
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
	// (forwarded reports carry their age).
	Received time.Time
}

// View is the soft load view. All methods are safe for concurrent use and
// never block on I/O.
type View struct {
	now func() time.Time
	reg atomic.Pointer[registryBox]

	mu sync.RWMutex
	m  map[string]*Entry

	// cache of active allocations per server, rebuilt when the registry's
	// applied index moves.
	cacheMu    sync.Mutex
	cacheIndex uint64
	cacheAt    time.Time
	cacheValid bool
	byServer   map[string][]allocRef
}

// CacheRefresh is the most often the per-server allocation index behind
// Load.Unmaterialized is rebuilt (one pass over the registry's active
// allocations). Allocations committed since the last rebuild are not yet
// counted as unmaterialized; the decision loop counts in-flight
// reservations itself, so this only delays the herding guard by as much.
const CacheRefresh = 50 * time.Millisecond

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
	return &View{now: now, m: map[string]*Entry{}}
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
	v.m[id] = &Entry{Report: r, Received: t}
	return true
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
	return *e, true
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
	refs := v.activeAllocs(box.r, id)
	if len(refs) == 0 {
		return 0
	}
	hosted := make(map[string]struct{}, len(r.GetAllocationIds()))
	for _, a := range r.GetAllocationIds() {
		hosted[a] = struct{}{}
	}
	graceCut := received.Add(-TruncatedGrace).UnixMilli()
	var n int64
	for _, a := range refs {
		if _, ok := hosted[a.id]; ok {
			continue
		}
		if r.GetTruncated() && a.created < graceCut {
			continue
		}
		n += a.units
	}
	return n
}

// activeAllocs returns the active allocations on server id, from a cache
// rebuilt once per applied index (one pass over the registry, not one per
// server).
func (v *View) activeAllocs(r Registry, id string) []allocRef {
	v.cacheMu.Lock()
	defer v.cacheMu.Unlock()
	idx := r.AppliedIndex()
	now := v.now()
	if !v.cacheValid || (idx != v.cacheIndex && now.Sub(v.cacheAt) >= CacheRefresh) {
		m := map[string][]allocRef{}
		for _, a := range r.Allocations(fsm.AllocationFilter{ActiveOnly: true}) {
			m[a.Server] = append(m[a.Server], allocRef{id: a.Id, units: a.Units, created: a.CreatedAtUnixMs})
		}
		v.byServer, v.cacheIndex, v.cacheAt, v.cacheValid = m, idx, now, true
	}
	return v.byServer[id]
}

// LoadJSON is the JSON form of a load report in `GET /v1/servers`.
type LoadJSON struct {
	Incarnation        uint64   `json:"incarnation"`
	Seq                uint64   `json:"seq"`
	CPU                float64  `json:"cpu"`
	IngressBps         int64    `json:"ingress_bps"`
	EgressBps          int64    `json:"egress_bps"`
	Peers              int64    `json:"peers"`
	Tracks             int64    `json:"tracks"`
	Rooms              []string `json:"rooms,omitempty"`
	AllocationIDs      []string `json:"allocation_ids,omitempty"`
	FreeUnits          int64    `json:"free_units"`
	Truncated          bool     `json:"truncated,omitempty"`
	UnmaterializedUnit int64    `json:"unmaterialized_units"`
}

// JSON returns the JSON form of server id's latest load and its age in ms,
// or nils when the view has none.
func (v *View) JSON(id string) (*LoadJSON, *int64) {
	e, ok := v.Get(id)
	if !ok {
		return nil, nil
	}
	r := e.Report
	age := v.now().Sub(e.Received).Milliseconds()
	return &LoadJSON{
		Incarnation: r.GetIncarnation(), Seq: r.GetSeq(), CPU: r.GetCpu(),
		IngressBps: r.GetIngressBps(), EgressBps: r.GetEgressBps(), Peers: r.GetPeers(), Tracks: r.GetTracks(),
		Rooms: r.GetRooms(), AllocationIDs: r.GetAllocationIds(), FreeUnits: r.GetFreeUnits(), Truncated: r.GetTruncated(),
		UnmaterializedUnit: v.unmaterialized(id, r, e.Received),
	}, &age
}

// Decorated is a `GET /v1/servers` entry with the view's soft state: the
// last load (null when none) and its age in ms (null when none).
type Decorated struct {
	api.Server
	Load      *LoadJSON `json:"load"`
	LoadAgeMs *int64    `json:"load_age_ms"`
}

// Decorate implements api.ServerListDecorator.
func (v *View) Decorate(s api.Server) any {
	l, age := v.JSON(s.ID)
	return Decorated{Server: s, Load: l, LoadAgeMs: age}
}
