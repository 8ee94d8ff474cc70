package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// Watch kinds accepted by ?kinds= (comma-separated; default all).
var watchKinds = map[string]string{"servers": api.WatchServer, "allocations": api.WatchAllocation, "policy": api.WatchPolicy, "intents": api.WatchIntent, "rooms": api.WatchRoom}

const (
	watchPoll          = 50 * time.Millisecond
	watchRetainEvents  = 100_000
	watchSubscriberBuf = 1024 // ticks queued for one watcher before it is cut off
	watchHeartbeat     = 5 * time.Second
	watchWriteTimeout  = 10 * time.Second
	watchHubIdle       = 5 * time.Minute
)

// errCompacted is the 410 answer's cause.
var errCompacted = errors.New("compacted")

// watchTick is the events of one observed index.
type watchTick struct {
	index  uint64
	events []api.WatchEvent
}

type watchSub struct {
	ch      chan *watchTick
	dropped bool // set (under hub.mu) when cut off for reading too slowly
}

// watchSource is what the hub reads: a copy of the state, what changed
// since a position of the state's change log, and the index applied up
// to. *fsm.FSM implements it.
type watchSource interface {
	ExportAt() (*fsmpb.State, fsm.ChangeCursor)
	DeltaSince(cur fsm.ChangeCursor) (fsm.Delta, fsm.ChangeCursor, bool)
	ChangedSince(index uint64) (fsm.Changed, uint64, bool)
	AppliedIndex() uint64
}

// watchHub turns the state's changes into events for the watchers of one
// handler. It follows the state's change log, so each step costs what
// changed, not the size of the state; only its first copy, and a start
// over after a snapshot restore or a change log it fell too far behind
// of, copy and diff the whole state.
type watchHub struct {
	f watchSource
	// done ends the hub (the agent is shutting down).
	done <-chan struct{}
	// retain and subBuf default to watchRetainEvents and
	// watchSubscriberBuf (tests shrink them).
	retain, subBuf int

	mu      sync.Mutex
	running bool
	subs    map[*watchSub]struct{}
	idleAt  time.Time
	base    uint64           // the index the oldest retained tick diffs from
	last    uint64           // index of the current copy
	cur     fsm.ChangeCursor // where the copy is in the state's change log
	ticks   []*watchTick
	nEvents int
	servers map[string]*fsmpb.Server
	allocs  map[string]*fsmpb.Allocation
	intents map[string]*fsmpb.ProvisionIntent
	rooms   map[string]*fsmpb.Room
	policy  *fsmpb.Policy
}

// subscribe registers a watcher. With since, it returns the retained ticks
// after since (errCompacted when the hub does not reach back that far);
// without, a full copy as one tick.
func (h *watchHub) subscribe(since *uint64) (*watchSub, []*watchTick, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.running {
		h.start()
	}
	var backlog []*watchTick
	switch {
	case since == nil:
		backlog = []*watchTick{h.copyTick()}
	case *since < h.base:
		// Before this agent's watch history (a watcher that comes from
		// another agent, or a hub started after it left): the state's own
		// change log names what changed since, sent as of the copy.
		tk, ok := h.catchUpTick(*since)
		if !ok {
			return nil, nil, fmt.Errorf("%w: this agent's watch history starts at index %d and its change log does not reach back to %d", errCompacted, h.base, *since)
		}
		backlog = []*watchTick{tk}
	default:
		for _, t := range h.ticks {
			if t.index > *since {
				backlog = append(backlog, t)
			}
		}
	}
	buf := h.subBuf
	if buf <= 0 {
		buf = watchSubscriberBuf
	}
	s := &watchSub{ch: make(chan *watchTick, buf)}
	h.subs[s] = struct{}{}
	return s, backlog, nil
}

func (h *watchHub) unsubscribe(s *watchSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, s)
	if len(h.subs) == 0 {
		h.idleAt = time.Now()
	}
}

// start takes the first copy and starts polling. Called with h.mu held.
func (h *watchHub) start() {
	st, cur := h.f.ExportAt()
	h.load(st)
	h.cur = cur
	h.subs = map[*watchSub]struct{}{}
	h.running = true
	h.idleAt = time.Now()
	go h.run()
}

// load makes st the current copy, with no history. Called with h.mu held.
func (h *watchHub) load(st *fsmpb.State) {
	h.servers, h.allocs, h.intents = map[string]*fsmpb.Server{}, map[string]*fsmpb.Allocation{}, map[string]*fsmpb.ProvisionIntent{}
	for _, v := range st.GetServers() {
		h.servers[v.GetId()] = v
	}
	for _, v := range st.GetAllocations() {
		h.allocs[v.GetId()] = v
	}
	for _, v := range st.GetIntents() {
		h.intents[v.GetId()] = v
	}
	h.rooms = map[string]*fsmpb.Room{}
	for _, v := range st.GetRooms() {
		h.rooms[v.GetName()] = v
	}
	h.policy = st.GetPolicy()
	h.base, h.last, h.ticks, h.nEvents = st.GetAppliedIndex(), st.GetAppliedIndex(), nil, 0
}

// copyTick is the whole current copy as events (reset, objects, synced).
// Called with h.mu held.
func (h *watchHub) copyTick() *watchTick {
	t := &watchTick{index: h.last}
	t.events = append(t.events, api.WatchEvent{Index: h.last, Kind: api.WatchReset})
	for _, id := range sortedKeys(h.servers) {
		t.events = append(t.events, serverEvent(h.last, "upsert", h.servers[id]))
	}
	for _, id := range sortedKeys(h.allocs) {
		t.events = append(t.events, allocEvent(h.last, "upsert", h.allocs[id]))
	}
	for _, id := range sortedKeys(h.intents) {
		t.events = append(t.events, intentEvent(h.last, "upsert", h.intents[id]))
	}
	for _, id := range sortedKeys(h.rooms) {
		t.events = append(t.events, roomEvent(h.last, "upsert", h.rooms[id], h.servers))
	}
	if h.policy != nil {
		p := api.PolicyFromPB(h.policy)
		t.events = append(t.events, api.WatchEvent{Index: h.last, Kind: api.WatchPolicy, Op: "upsert", Policy: &p})
	}
	t.events = append(t.events, api.WatchEvent{Index: h.last, Kind: api.WatchSynced})
	return t
}

// catchUpTick brings a watcher synced at index since (before the hub's
// history) up to the hub's copy: one event per object the state's change
// log says changed after since, with its state in the copy (a delete,
// carrying only the key, when the copy lacks it), every intent that
// changed, the policy, and the synced mark at the copy's index. Objects
// changed after the copy come again with the ticks that follow: whole
// states, so a repeat is harmless and nothing is missed. ok is false when
// the change log does not reach back to since. Called with h.mu held.
func (h *watchHub) catchUpTick(since uint64) (*watchTick, bool) {
	c, _, ok := h.f.ChangedSince(since)
	if !ok {
		return nil, false
	}
	idx := h.last
	t := &watchTick{index: idx}
	t.events = catchUp(t.events, c.Servers, h.servers, func(id string) *fsmpb.Server { return &fsmpb.Server{Id: id} },
		func(op string, v *fsmpb.Server) api.WatchEvent { return serverEvent(idx, op, v) })
	t.events = catchUp(t.events, c.Allocations, h.allocs, func(id string) *fsmpb.Allocation { return &fsmpb.Allocation{Id: id} },
		func(op string, v *fsmpb.Allocation) api.WatchEvent { return allocEvent(idx, op, v) })
	t.events = catchUp(t.events, c.Intents, h.intents, func(id string) *fsmpb.ProvisionIntent { return &fsmpb.ProvisionIntent{Id: id} },
		func(op string, v *fsmpb.ProvisionIntent) api.WatchEvent { return intentEvent(idx, op, v) })
	// After the servers: a room's event names its server's current record.
	t.events = catchUp(t.events, c.Rooms, h.rooms, func(name string) *fsmpb.Room { return &fsmpb.Room{Name: name} },
		func(op string, v *fsmpb.Room) api.WatchEvent { return roomEvent(idx, op, v, h.servers) })
	if h.policy != nil {
		p := api.PolicyFromPB(h.policy)
		t.events = append(t.events, api.WatchEvent{Index: idx, Kind: api.WatchPolicy, Op: "upsert", Policy: &p})
	}
	t.events = append(t.events, api.WatchEvent{Index: idx, Kind: api.WatchSynced})
	return t, true
}

// catchUp appends, for each of keys (sorted), an upsert of the copy's
// object, or, when the copy lacks it, a delete of a stand-in (stub)
// carrying only the key, and returns events.
func catchUp[V any](events []api.WatchEvent, keys []string, have map[string]V, stub func(string) V, event func(op string, v V) api.WatchEvent) []api.WatchEvent {
	for _, k := range slices.Sorted(slices.Values(keys)) { // each once (ChangedSince)
		if v, ok := have[k]; ok {
			events = append(events, event("upsert", v))
		} else {
			events = append(events, event("delete", stub(k)))
		}
	}
	return events
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func serverEvent(idx uint64, op string, v *fsmpb.Server) api.WatchEvent {
	s := ServerFromPB(v)
	return api.WatchEvent{Index: idx, Kind: api.WatchServer, Op: op, ID: v.GetId(), Server: &s}
}

func allocEvent(idx uint64, op string, v *fsmpb.Allocation) api.WatchEvent {
	a := AllocationFromPB(v)
	return api.WatchEvent{Index: idx, Kind: api.WatchAllocation, Op: op, ID: v.GetId(), Allocation: &a}
}

func roomEvent(idx uint64, op string, v *fsmpb.Room, servers map[string]*fsmpb.Server) api.WatchEvent {
	r := RoomFromPB(v, servers[v.GetServer()])
	return api.WatchEvent{Index: idx, Kind: api.WatchRoom, Op: op, ID: v.GetName(), Room: &r}
}

func intentEvent(idx uint64, op string, v *fsmpb.ProvisionIntent) api.WatchEvent {
	it := IntentFromPB(v)
	return api.WatchEvent{Index: idx, Kind: api.WatchIntent, Op: op, ID: v.GetId(), Intent: &it}
}

// run polls the applied index until the hub has been idle (no watcher)
// for watchHubIdle.
func (h *watchHub) run() {
	t := time.NewTicker(watchPoll)
	defer t.Stop()
	for {
		stop := false
		select {
		case <-h.done:
			stop = true
		case <-t.C:
		}
		h.mu.Lock()
		if stop || (len(h.subs) == 0 && time.Since(h.idleAt) > watchHubIdle) {
			h.running = false
			h.ticks, h.servers, h.allocs, h.intents, h.rooms, h.policy = nil, nil, nil, nil, nil, nil
			h.mu.Unlock()
			return
		}
		last := h.last
		h.mu.Unlock()
		if h.f.AppliedIndex() != last {
			h.step()
		}
	}
}

// step brings the copy up to the state: by the state's change log, or from
// a new copy when the log cannot answer from the hub's position. The state
// is read without h.mu, so watchers keep subscribing meanwhile; only the
// hub's goroutine calls step.
func (h *watchHub) step() {
	h.mu.Lock()
	cur := h.cur
	h.mu.Unlock()
	if d, next, ok := h.f.DeltaSince(cur); ok {
		h.mu.Lock()
		h.advanceDelta(d)
		h.cur = next
		h.mu.Unlock()
		return
	}
	st, next := h.f.ExportAt()
	h.mu.Lock()
	h.advance(st)
	h.cur = next
	h.mu.Unlock()
}

// diffInto brings have (the hub's copy of one collection, by key) up to
// cur (the same collection in a new state): it appends an upsert event for
// every new or changed item and a delete event for every item gone (in key
// order), and returns events.
func diffInto[V proto.Message](events []api.WatchEvent, have map[string]V, cur []V, key func(V) string, event func(op string, v V) api.WatchEvent) []api.WatchEvent {
	seen := make(map[string]bool, len(cur))
	for _, v := range cur {
		k := key(v)
		seen[k] = true
		if old, ok := have[k]; !ok || !proto.Equal(old, v) {
			events = append(events, event("upsert", v))
			have[k] = v
		}
	}
	for _, k := range sortedKeys(have) {
		if !seen[k] {
			events = append(events, event("delete", have[k]))
			delete(have, k)
		}
	}
	return events
}

// applyChanges brings have (the hub's copy of one collection, by key) up
// to date with changed (copies of the changed items, nil for an item that
// is gone): it appends an upsert event for every new or changed item and a
// delete event for every item gone (in key order), and returns events.
func applyChanges[V proto.Message](events []api.WatchEvent, have, changed map[string]V, event func(op string, v V) api.WatchEvent) []api.WatchEvent {
	for _, k := range sortedKeys(changed) {
		v := changed[k]
		old, had := have[k]
		switch {
		case !v.ProtoReflect().IsValid(): // gone
			if had {
				events = append(events, event("delete", old))
				delete(have, k)
			}
		case !had || !proto.Equal(old, v):
			events = append(events, event("upsert", v))
			have[k] = v
		}
	}
	return events
}

// advanceDelta applies the changes d to the current copy, records the tick
// and hands it to every watcher. Called with h.mu held.
func (h *watchHub) advanceDelta(d fsm.Delta) {
	idx := d.Applied
	if idx <= h.last {
		return
	}
	tk := &watchTick{index: idx}
	tk.events = applyChanges(tk.events, h.servers, d.Servers,
		func(op string, v *fsmpb.Server) api.WatchEvent { return serverEvent(idx, op, v) })
	tk.events = applyChanges(tk.events, h.allocs, d.Allocations,
		func(op string, v *fsmpb.Allocation) api.WatchEvent { return allocEvent(idx, op, v) })
	tk.events = diffInto(tk.events, h.intents, d.Intents, (*fsmpb.ProvisionIntent).GetId,
		func(op string, v *fsmpb.ProvisionIntent) api.WatchEvent { return intentEvent(idx, op, v) })
	// After the servers: a room's event names its server's current record.
	tk.events = applyChanges(tk.events, h.rooms, d.Rooms,
		func(op string, v *fsmpb.Room) api.WatchEvent { return roomEvent(idx, op, v, h.servers) })
	h.publish(tk, d.Policy)
}

// advance diffs st against the current copy, records the tick and hands
// it to every watcher. Called with h.mu held.
func (h *watchHub) advance(st *fsmpb.State) {
	idx := st.GetAppliedIndex()
	if idx <= h.last {
		return
	}
	tk := &watchTick{index: idx}
	tk.events = diffInto(tk.events, h.servers, st.GetServers(), (*fsmpb.Server).GetId,
		func(op string, v *fsmpb.Server) api.WatchEvent { return serverEvent(idx, op, v) })
	tk.events = diffInto(tk.events, h.allocs, st.GetAllocations(), (*fsmpb.Allocation).GetId,
		func(op string, v *fsmpb.Allocation) api.WatchEvent { return allocEvent(idx, op, v) })
	tk.events = diffInto(tk.events, h.intents, st.GetIntents(), (*fsmpb.ProvisionIntent).GetId,
		func(op string, v *fsmpb.ProvisionIntent) api.WatchEvent { return intentEvent(idx, op, v) })
	// After the servers: a room's event names its server's current record.
	tk.events = diffInto(tk.events, h.rooms, st.GetRooms(), (*fsmpb.Room).GetName,
		func(op string, v *fsmpb.Room) api.WatchEvent { return roomEvent(idx, op, v, h.servers) })
	h.publish(tk, st.GetPolicy())
}

// publish completes tk with the policy's event (when policy changed) and
// the synced mark, records it and hands it to every watcher. Called with
// h.mu held.
func (h *watchHub) publish(tk *watchTick, policy *fsmpb.Policy) {
	idx := tk.index
	if !proto.Equal(h.policy, policy) {
		h.policy = policy
		p := api.PolicyFromPB(h.policy)
		tk.events = append(tk.events, api.WatchEvent{Index: idx, Kind: api.WatchPolicy, Op: "upsert", Policy: &p})
	}
	tk.events = append(tk.events, api.WatchEvent{Index: idx, Kind: api.WatchSynced})
	h.last = idx
	h.ticks = append(h.ticks, tk)
	h.nEvents += len(tk.events)
	retain := h.retain
	if retain <= 0 {
		retain = watchRetainEvents
	}
	for h.nEvents > retain && len(h.ticks) > 1 {
		h.nEvents -= len(h.ticks[0].events)
		h.base = h.ticks[0].index
		h.ticks = h.ticks[1:]
	}
	for s := range h.subs {
		select {
		case s.ch <- tk:
		default:
			// Too slow: cut it off rather than wait or grow without bound.
			s.dropped = true
			delete(h.subs, s)
			close(s.ch)
		}
	}
	if len(h.subs) == 0 {
		h.idleAt = time.Now()
	}
}

// watch serves GET /v1/watch.
func (s *Handler) watch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var since *uint64
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			s.fail(w, fmt.Errorf("%w: since must be a log index, got %q", fsm.ErrInvalid, v))
			return
		}
		since = &n
	}
	sse := strings.Contains(r.Header.Get("Accept"), "text/event-stream")
	if v := r.Header.Get("Last-Event-ID"); sse && v != "" && since == nil {
		if n, err := strconv.ParseUint(v, 10, 64); err == nil {
			since = &n
		}
	}
	kinds := map[string]bool{}
	if v := q.Get("kinds"); v != "" {
		for _, k := range strings.Split(v, ",") {
			kind, ok := watchKinds[strings.TrimSpace(k)]
			if !ok {
				s.fail(w, fmt.Errorf("%w: unknown kind %q in kinds (want servers, allocations, policy, intents, rooms)", fsm.ErrInvalid, k))
				return
			}
			kinds[kind] = true
		}
	}
	sub, backlog, err := s.watchHub().subscribe(since)
	if errors.Is(err, errCompacted) {
		writeError(w, http.StatusGone, &api.Error{Error: err.Error() + "; reconnect without since to receive the current state, then resume from its synced index", Code: "compacted"})
		return
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	defer s.watchHub().unsubscribe(sub)

	rc := http.NewResponseController(w)
	if sse {
		w.Header().Set("Content-Type", "text/event-stream")
	} else {
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	var last uint64
	if since != nil {
		last = *since
	}
	send := func(evs []api.WatchEvent) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(watchWriteTimeout))
		for _, ev := range evs {
			if len(kinds) > 0 && !kinds[ev.Kind] && ev.Kind != api.WatchReset && ev.Kind != api.WatchSynced && ev.Kind != api.WatchHeartbeat && ev.Kind != api.WatchError {
				continue
			}
			b, _ := json.Marshal(ev)
			var err error
			if sse {
				if ev.Kind == api.WatchSynced || ev.Kind == api.WatchHeartbeat {
					_, err = fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", ev.Index, ev.Kind, b)
				} else {
					_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.Kind, b)
				}
			} else {
				b = append(b, '\n')
				_, err = w.Write(b)
			}
			if err != nil {
				return false
			}
			if ev.Kind == api.WatchSynced {
				last = ev.Index
			}
		}
		return rc.Flush() == nil
	}
	for _, t := range backlog {
		if !send(t.events) {
			return
		}
	}
	if !send(nil) {
		return
	}
	hb := time.NewTicker(watchHeartbeat)
	defer hb.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.health.shutdown:
			send([]api.WatchEvent{{Index: last, Kind: api.WatchError, Code: "shutdown", Error: "agent shutting down; resume elsewhere from the last synced index"}})
			return
		case <-hb.C:
			if !send([]api.WatchEvent{{Index: last, Kind: api.WatchHeartbeat}}) {
				return
			}
		case t, ok := <-sub.ch:
			if !ok {
				send([]api.WatchEvent{{Index: last, Kind: api.WatchError, Code: "slow_consumer", Error: "cut off for reading too slowly; resume from the last synced index"}})
				return
			}
			if t.index <= last {
				continue // already sent in the backlog
			}
			if !send(t.events) {
				return
			}
		}
	}
}

// watchHub returns the handler's hub, creating it on first use.
func (s *Handler) watchHub() *watchHub {
	s.health.hubOnce.Do(func() { s.health.hub = &watchHub{f: s.st, done: s.health.shutdown} })
	return s.health.hub
}

// streamRecorder records the status code of a streamed answer and lets
// http.ResponseController reach the connection underneath (flushes, write
// deadlines).
type streamRecorder struct {
	http.ResponseWriter
	code int
}

func (r *streamRecorder) WriteHeader(c int) { r.code = c; r.ResponseWriter.WriteHeader(c) }

// Unwrap is for http.ResponseController.
func (r *streamRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
