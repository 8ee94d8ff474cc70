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

// Entry is what Get tells of a server's latest report.
type Entry struct {
	Incarnation, Seq uint64
	// Received is when the report reached the agent that first received it
	// (shared reports carry their age).
	Received time.Time
}

// record is the part of a load report the view keeps: the wire message's
// figures without its protobuf bookkeeping or the server id (the map key),
// and when it was received as a monotonic offset from View.base (a
// time.Time is three words; see receivedAt). About half the memory of
// keeping the message.
type record struct {
	incarnation, seq                             uint64
	cpu                                          float64
	ingressBps, egressBps, peers, tracks, subbed int64
	freeUnits                                    int64
	rooms, allocationIDs                         []string
	received                                     time.Duration // since View.base
	truncated                                    bool
}

// receivedAt is when r was received, as now minus its age: the age is
// monotonic, and the wall reading agrees with now's (base.Add(received)
// would carry the wall clock of the view's start plus the monotonic time
// since, off by any step of the wall clock since, which the failure
// detector compares with the registry's wall-clock stamps).
func (v *View) receivedAt(r *record, now time.Time) time.Time {
	return now.Add(r.received - now.Sub(v.base))
}

// View is the soft load view. All methods are safe for concurrent use and
// never block on I/O.
type View struct {
	now  func() time.Time
	base time.Time // records' receive times are offsets from it
	reg  atomic.Pointer[registryBox]

	mu sync.RWMutex
	m  map[string]*record
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
	return &View{now: now, base: now(), m: map[string]*record{}}
}

// Attach sets the registry used to compute Load.Unmaterialized. Before it
// is called Unmaterialized is always 0.
func (v *View) Attach(r Registry) { v.reg.Store(&registryBox{r: r}) }

// Offer records r as received at t if it is newer than what the view holds
// for r's server: a higher incarnation, or the same incarnation and a
// higher sequence number. It reports whether r was taken. The view keeps
// r's rooms and allocation ids (callers must not modify them afterwards).
func (v *View) Offer(r *transportpb.LoadReport, t time.Time) bool {
	id := r.GetServerId()
	if id == "" {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	cur, ok := v.m[id]
	if ok && !newer(r.GetIncarnation(), r.GetSeq(), cur.incarnation, cur.seq) {
		return false
	}
	v.m[id] = &record{
		incarnation: r.GetIncarnation(), seq: r.GetSeq(), cpu: r.GetCpu(),
		ingressBps: r.GetIngressBps(), egressBps: r.GetEgressBps(), peers: r.GetPeers(), tracks: r.GetTracks(),
		subbed: r.GetSubscribedTracks(), freeUnits: r.GetFreeUnits(), rooms: r.GetRooms(), allocationIDs: r.GetAllocationIds(),
		truncated: r.GetTruncated(), received: t.Sub(v.base),
	}
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
	return newer(a.GetIncarnation(), a.GetSeq(), b.GetIncarnation(), b.GetSeq())
}

// newer reports whether report (inc, seq) supersedes (curInc, curSeq).
func newer(inc, seq, curInc, curSeq uint64) bool {
	if inc != curInc {
		return inc > curInc
	}
	return seq > curSeq
}

// Get returns the entry for server id.
func (v *View) Get(id string) (Entry, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	r, ok := v.m[id]
	if !ok {
		return Entry{}, false
	}
	return Entry{Incarnation: r.incarnation, Seq: r.seq, Received: v.receivedAt(r, v.now())}, true
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
	now := v.now()
	for id, r := range v.m {
		if v.receivedAt(r, now).Before(cutoff) {
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
	v.mu.RLock()
	r, ok := v.m[id]
	v.mu.RUnlock()
	if !ok {
		return placement.Load{}, false
	}
	// A record is never changed once stored (Offer replaces it).
	now := v.now()
	received := v.receivedAt(r, now)
	l := placement.Load{
		CPU: r.cpu, IngressBps: r.ingressBps, EgressBps: r.egressBps,
		Peers: r.peers, Tracks: r.tracks, Rooms: r.rooms,
		AgeMs: now.Sub(received).Milliseconds(),
	}
	l.Unmaterialized = v.unmaterialized(id, r, received)
	return l, true
}

func (v *View) unmaterialized(id string, r *record, received time.Time) int64 {
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
	ids := r.allocationIDs
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
		if r.truncated && a.created < graceCut {
			continue
		}
		n += a.units
	}
	return n
}

// JSON returns the JSON form of server id's latest load and its age in ms,
// or nils when the view has none.
func (v *View) JSON(id string) (*api.ServerLoad, *int64) {
	v.mu.RLock()
	r, ok := v.m[id]
	v.mu.RUnlock()
	if !ok {
		return nil, nil
	}
	now := v.now()
	received := v.receivedAt(r, now)
	age := now.Sub(received).Milliseconds()
	return &api.ServerLoad{
		Incarnation: r.incarnation, Seq: r.seq, CPU: r.cpu,
		IngressBps: r.ingressBps, EgressBps: r.egressBps, Peers: r.peers, Tracks: r.tracks,
		SubscribedTracks: r.subbed, Rooms: r.rooms, AllocationIDs: r.allocationIDs, FreeUnits: r.freeUnits, Truncated: r.truncated,
		UnmaterializedUnits: v.unmaterialized(id, r, received),
	}, &age
}

// Decorate implements httpapi.ServerListDecorator.
func (v *View) Decorate(s api.Server) any {
	l, age := v.JSON(s.ID)
	return api.ServerWithLoad{Server: s, Load: l, LoadAgeMs: age}
}
