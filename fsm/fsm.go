// Package fsm is Switchyard's replicated state machine: the registry of media
// servers, their allocations, the placement policy and the allocator members.
//
// It is a thin, deterministic layer under hashicorp/raft: Apply decodes one
// protobuf Envelope per log entry and applies its commands in order, reading
// nothing but the entry (time comes from the leader inside it) and the
// current state. Apply re-checks hard limits itself, so a decision that no
// longer fits is refused in the log, never applied. See DESIGN.md.
package fsm

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// Encoding generations. Bump on an incompatible schema change and keep the
// old reader around for one release.
const (
	EnvelopeVersion = 1
	StateVersion    = 1
)

// FSM implements raft.FSM. All exported methods are safe for concurrent use;
// readers see the state as of the last applied entry.
type FSM struct {
	mu sync.RWMutex
	s  *state
	// gen counts state changes (guarded by mu); the hash cache is valid
	// while cachedGen == gen.
	gen        uint64
	hashMu     sync.Mutex
	cachedGen  uint64
	cachedHash string
	// onApply, if set, is called after each applied entry with its index
	// and the leader's time stamped into it (as written, before clamping),
	// outside the lock. The cluster's clock guard observes the stamps.
	onApply func(index uint64, stampMs int64)
	// feed lists changed servers for the leader (scale.go); guarded by mu.
	feed *changeFeed
	// acceptAny lifts Restore's refusal of older snapshots (AcceptRestore).
	acceptAny atomic.Bool
}

// New returns an empty FSM.
func New() *FSM {
	f := &FSM{s: newState(), feed: &changeFeed{}}
	f.s.feed = f.feed
	f.feed.mark(0)
	return f
}

// SetOnApply registers fn to run after every applied entry. It must be set
// before the FSM is handed to raft.
func (f *FSM) SetOnApply(fn func(index uint64, stampMs int64)) { f.onApply = fn }

// Encode builds the log entry bytes for cmds with leader time now.
func Encode(now int64, cmds ...*fsmpb.Command) ([]byte, error) {
	return EncodeFrom("", 0, now, cmds...)
}

// EncodeFrom is Encode for an entry that carries the leader's origin and
// sequence number, which View reports back once it is applied.
func EncodeFrom(origin string, seq uint64, now int64, cmds ...*fsmpb.Command) ([]byte, error) {
	return proto.Marshal(&fsmpb.Envelope{Version: EnvelopeVersion, NowUnixMs: now, Origin: origin, Seq: seq, Batch: &fsmpb.Batch{Commands: cmds}})
}

// Decode parses log entry bytes, refusing unknown versions.
func Decode(b []byte) (*fsmpb.Envelope, error) {
	env := &fsmpb.Envelope{}
	if err := proto.Unmarshal(b, env); err != nil {
		return nil, fmt.Errorf("%w: decode log entry: %v", ErrInvalid, err)
	}
	if env.GetVersion() != EnvelopeVersion {
		return nil, fmt.Errorf("%w: log entry version %d, this binary reads %d", ErrUnsupportedVersion, env.GetVersion(), EnvelopeVersion)
	}
	return env, nil
}

// Apply applies one log entry. It returns []*fsmpb.Result, one per command
// of the entry in order, or an error if the entry cannot be decoded (such an
// entry changes nothing).
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	env, err := Decode(l.Data)
	if err != nil {
		return err
	}
	return f.ApplyEnvelope(l.Index, env)
}

// ApplyEnvelope applies a decoded entry at log index. It is Apply without
// raft, for tests and tools that replay commands.
func (f *FSM) ApplyEnvelope(index uint64, env *fsmpb.Envelope) []*fsmpb.Result {
	cmds := env.GetBatch().GetCommands()
	out := make([]*fsmpb.Result, len(cmds))
	f.mu.Lock()
	now := env.GetNowUnixMs()
	// Leader clocks can step backwards across a leader change; time inside
	// the state never does.
	if now < f.s.lastTime {
		now = f.s.lastTime
	}
	for i, c := range cmds {
		out[i] = f.s.apply(index, i, now, c)
	}
	f.gen++
	f.s.lastTime = now
	f.s.lastOrigin, f.s.lastSeq = env.GetOrigin(), env.GetSeq()
	if index > f.s.applied {
		f.s.applied = index
	}
	f.feed.mark(f.s.applied) // changes.go
	f.mu.Unlock()
	if f.onApply != nil {
		f.onApply(index, env.GetNowUnixMs())
	}
	return out
}

// Snapshot captures the state for raft. Under the read lock it copies
// the registry and shares the allocation and refusal records (exportShared: never
// changed once stored), so Apply waits for pointer copies only; encoding
// happens in Persist, without blocking Apply.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	st := f.s.exportShared()
	f.mu.RUnlock()
	return &snapshot{st: st}, nil
}

// Restore replaces the whole state with a snapshot written by Persist.
// It refuses (ErrInvalid, state unchanged) a snapshot taken at a lower
// applied index than the state has reached: raft may send a follower
// that is ahead its leader's older snapshot (a stale replication
// position), and hashicorp/raft would then install it, move its applied
// index back and try to apply entries the follower's own snapshot has
// already compacted away (a panic: "log not found"). The follower stays
// where it is and the leader retries, with a newer snapshot once it took
// one. Node.Restore stamps a user restore past every applied index, and
// the leader's own state machine takes it regardless (AcceptRestore).
// The applied index compared is the last command's: raft's no-op,
// barrier and configuration entries do not move it, so a snapshot at most
// that many entries behind still passes (harmless unless they outnumber
// raft's trailing logs).
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	// The state is built while the stream is read and decoded.
	im := newImporter()
	st, err := decodeState(rc, im.add)
	if err != nil {
		im.stop()
		return err
	}
	f.mu.RLock()
	applied := f.s.applied
	f.mu.RUnlock()
	if st.GetAppliedIndex() < applied && !f.acceptAny.Load() {
		im.stop()
		return fmt.Errorf("%w: snapshot taken at index %d, older than this state (applied %d): not installed", ErrInvalid, st.GetAppliedIndex(), applied)
	}
	s := im.finish(st)
	f.mu.Lock()
	s.feed = f.feed
	f.feed.epoch++ // scale.go: readers start over
	f.feed.markFrom = f.feed.markPos
	f.s = s
	f.feed.mark(s.applied) // the change log reaches back to the snapshot
	f.gen++
	f.mu.Unlock()
	return nil
}

// AcceptRestore makes Restore take any snapshot, whatever its index,
// until the returned function is called: for a user restore on the
// leader, which raft cannot fail (it panics).
func (f *FSM) AcceptRestore() (done func()) {
	f.acceptAny.Store(true)
	return func() { f.acceptAny.Store(false) }
}

type snapshot struct{ st *fsmpb.State }

// Persist writes the snapshot. Its allocations are in no particular
// order (Restore does not need one, and sorting a million ids would take
// longer than encoding them); Export and the hash sort them.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := WriteState(sink, s.st); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *snapshot) Release() {}

// ---- reads ----

// Export returns a deep copy of the whole state in canonical form.
func (f *FSM) Export() *fsmpb.State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.s.export()
}

// Hash returns the hex SHA-256 of the canonical state, equal on every
// replica that applied the same entries and after snapshot/restore.
// The hash is cached until the next change, so polling it is cheap.
func (f *FSM) Hash() string {
	h, _ := f.HashAt()
	return h
}

// HashAt returns the state hash together with the index of the last entry
// applied to this replica, read atomically: two replicas that report the
// same index must report the same hash. (raft's own applied index runs
// ahead of the FSM: it advances when entries are handed to it.)
func (f *FSM) HashAt() (string, uint64) {
	f.mu.RLock()
	gen, index := f.gen, f.s.applied
	f.hashMu.Lock()
	if f.cachedHash != "" && f.cachedGen == gen {
		h := f.cachedHash
		f.hashMu.Unlock()
		f.mu.RUnlock()
		return h, index
	}
	f.hashMu.Unlock()
	st := f.s.exportShared()
	f.mu.RUnlock()
	sortAllocations(st)
	h := hashOwned(st)
	f.hashMu.Lock()
	f.cachedGen, f.cachedHash = gen, h
	f.hashMu.Unlock()
	return h, index
}

// HashState is Hash for an exported state.
func HashState(st *fsmpb.State) string { return hashState(st) }

// AppliedIndex is the index of the last entry applied.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.s.applied
}

// ClusterID is the id stamped by the first leader, or "" before that.
func (f *FSM) ClusterID() string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.s.clusterID
}

// Servers returns copies of every server, sorted by id.
func (f *FSM) Servers() []*fsmpb.Server {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*fsmpb.Server, 0, len(f.s.servers))
	for _, v := range f.s.servers {
		out = append(out, proto.Clone(v).(*fsmpb.Server))
	}
	slices.SortFunc(out, func(a, b *fsmpb.Server) int { return strings.Compare(a.Id, b.Id) })
	return out
}

// Server returns a copy of one server.
func (f *FSM) Server(id string) (*fsmpb.Server, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v, ok := f.s.servers[id]
	if !ok {
		return nil, false
	}
	return proto.Clone(v).(*fsmpb.Server), true
}

// AllocationFilter selects allocations in Allocations. Zero values match all.
type AllocationFilter struct {
	Room       string
	Server     string
	ActiveOnly bool
}

// Allocations returns copies of the matching allocations, sorted by id.
func (f *FSM) Allocations(flt AllocationFilter) []*fsmpb.Allocation {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*fsmpb.Allocation, 0)
	for a := range f.s.allocations.All() {
		if flt.Room != "" && a.Room != flt.Room || flt.Server != "" && a.Server != flt.Server {
			continue
		}
		if flt.ActiveOnly && a.State != fsmpb.AllocationState_ALLOCATION_STATE_ACTIVE {
			continue
		}
		out = append(out, proto.Clone(a).(*fsmpb.Allocation))
	}
	slices.SortFunc(out, func(a, b *fsmpb.Allocation) int { return strings.Compare(a.Id, b.Id) })
	return out
}

// Allocation returns a copy of the allocation with this id or request id.
func (f *FSM) Allocation(id string) (*fsmpb.Allocation, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	a := f.s.lookup(id)
	if a == nil {
		return nil, false
	}
	return proto.Clone(a).(*fsmpb.Allocation), true
}

// AllocationByRequest returns a copy of the allocation a request id got.
func (f *FSM) AllocationByRequest(requestID string) (*fsmpb.Allocation, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	a := f.s.byRequest.Get(requestID)
	if a == nil {
		return nil, false
	}
	return proto.Clone(a).(*fsmpb.Allocation), true
}

// Outcome returns what a request id has had, read in one go: its
// allocation (granted, possibly ended since), or its committed refusal, or
// neither (nil, nil). Never both.
func (f *FSM) Outcome(requestID string) (*fsmpb.Allocation, *fsmpb.Refusal) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if a := f.s.byRequest.Get(requestID); a != nil {
		return proto.Clone(a).(*fsmpb.Allocation), nil
	}
	if v, ok := f.s.refused.get(requestID); ok {
		return nil, proto.Clone(v).(*fsmpb.Refusal)
	}
	return nil, nil
}

// Members returns copies of the allocator members, sorted by id.
func (f *FSM) Members() []*fsmpb.Member {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*fsmpb.Member, 0, len(f.s.members))
	for _, v := range f.s.members {
		out = append(out, proto.Clone(v).(*fsmpb.Member))
	}
	slices.SortFunc(out, func(a, b *fsmpb.Member) int { return strings.Compare(a.Id, b.Id) })
	return out
}

// Member returns a copy of one allocator member.
func (f *FSM) Member(id string) (*fsmpb.Member, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v, ok := f.s.members[id]
	if !ok {
		return nil, false
	}
	return proto.Clone(v).(*fsmpb.Member), true
}

// MemberLists reports whether member id's entry lists feature (without
// copying the entry: asked on every request a member forwards).
func (f *FSM) MemberLists(id, feature string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v, ok := f.s.members[id]
	return ok && slices.Contains(v.GetFeatures(), feature)
}

// Policy returns a copy of the placement policy.
func (f *FSM) Policy() *fsmpb.Policy {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return proto.Clone(f.s.policy).(*fsmpb.Policy)
}

// ServerUse is a server as the leader's decision loop needs it.
type ServerUse struct {
	ID       string
	Region   string
	Zone     string
	Capacity int64
	Used     int64
	State    fsmpb.ServerState
	// Labels is shared with the state (do not modify); set by ServerChanges.
	Labels map[string]string
}

// View returns, atomically, every server's capacity and committed use and
// the highest sequence number applied from origin (0 when the last applied
// entry came from another origin, i.e. none of origin's entries is applied
// yet or another leader has written since).
func (f *FSM) View(origin string) ([]ServerUse, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]ServerUse, 0, len(f.s.servers))
	for _, v := range f.s.servers {
		out = append(out, ServerUse{ID: v.Id, Region: v.Region, Zone: v.Zone, Capacity: v.CapacityUnits, Used: v.UsedUnits, State: v.State})
	}
	slices.SortFunc(out, func(a, b ServerUse) int { return strings.Compare(a.ID, b.ID) })
	var seq uint64
	if origin != "" && f.s.lastOrigin == origin {
		seq = f.s.lastSeq
	}
	return out, seq
}

// ExpiryDue reports whether an Expire command at time now would change
// anything: an active allocation past its expiry or a tombstone past the
// retention.
func (f *FSM) ExpiryDue(now int64) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.s.refused.due(now) { // refusals.go
		return true
	}
	ret := f.s.policy.GetTombstoneRetentionMs()
	for a := range f.s.allocations.All() {
		if a.State == fsmpb.AllocationState_ALLOCATION_STATE_ACTIVE {
			if a.ExpiresAtUnixMs > 0 && a.ExpiresAtUnixMs <= now {
				return true
			}
		} else if ret > 0 && a.EndedAtUnixMs+ret <= now {
			return true
		}
	}
	return false
}

// ResultError turns a non-successful Result into an error wrapping the
// matching sentinel, or nil for success.
func ResultError(r *fsmpb.Result) error {
	if r.GetErrorCode() == "" && r.GetErrorMessage() == "" {
		return nil
	}
	err := errcode.FromCode(r.GetErrorCode(), r.GetErrorMessage())
	if r.GetRefusalCommitted() {
		return errcode.Committed(err)
	}
	return err
}

// ValidateState checks that a state offered for restore is self-consistent:
// servers have positive capacity and known states, every allocation names a
// request id that no other allocation has, every active allocation is on a
// registered server with positive units, and each server's used units equal
// the sum of its active allocations and do not exceed its capacity; the
// committed refusals are well-formed (see validateRefusals). A
// snapshot that breaks any of these would break the invariants on every
// replica, so restore refuses it (the error wraps ErrInvalid).
func ValidateState(st *fsmpb.State) error {
	if st.GetVersion() != StateVersion {
		return fmt.Errorf("%w: snapshot version %d, this binary reads %d", ErrUnsupportedVersion, st.GetVersion(), StateVersion)
	}
	used := map[string]int64{}
	servers := map[string]*fsmpb.Server{}
	for _, s := range st.GetServers() {
		if s.GetId() == "" || servers[s.GetId()] != nil {
			return errorf(ErrInvalid, "snapshot: empty or repeated server id %q", s.GetId())
		}
		if s.GetCapacityUnits() <= 0 {
			return errorf(ErrInvalid, "snapshot: server %s has capacity %d", s.GetId(), s.GetCapacityUnits())
		}
		if StateName(s.GetState()) == "unknown" {
			return errorf(ErrInvalid, "snapshot: server %s has state %v", s.GetId(), s.GetState())
		}
		servers[s.GetId()] = s
	}
	ids, reqs := map[string]bool{}, map[string]bool{}
	for _, a := range st.GetAllocations() {
		if a.GetId() == "" || ids[a.GetId()] {
			return errorf(ErrInvalid, "snapshot: empty or repeated allocation id %q", a.GetId())
		}
		if a.GetRequestId() == "" || reqs[a.GetRequestId()] {
			return errorf(ErrInvalid, "snapshot: allocation %s has an empty or repeated request id %q", a.GetId(), a.GetRequestId())
		}
		ids[a.GetId()], reqs[a.GetRequestId()] = true, true
		if AllocationStateName(a.GetState()) == "unknown" {
			return errorf(ErrInvalid, "snapshot: allocation %s has state %v", a.GetId(), a.GetState())
		}
		if a.GetState() != fsmpb.AllocationState_ALLOCATION_STATE_ACTIVE {
			continue
		}
		if a.GetUnits() <= 0 || servers[a.GetServer()] == nil {
			return errorf(ErrInvalid, "snapshot: active allocation %s has %d units on unknown or unregistered server %q", a.GetId(), a.GetUnits(), a.GetServer())
		}
		used[a.GetServer()] += a.GetUnits()
	}
	for id, s := range servers {
		if s.GetUsedUnits() != used[id] || used[id] > s.GetCapacityUnits() {
			return errorf(ErrInvalid, "snapshot: server %s records %d used units, its active allocations hold %d, capacity %d", id, s.GetUsedUnits(), used[id], s.GetCapacityUnits())
		}
	}
	if err := validateRefusals(st, reqs); err != nil { // refusals.go
		return err
	}
	return validateRooms(st) // rooms.go
}
