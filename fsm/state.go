package fsm

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// DefaultStrategy is the placement strategy of a fresh cluster.
const DefaultStrategy = "least-loaded"

// DefaultTombstoneRetentionMs is how long ended allocations are remembered
// (and their request ids answered idempotently) when the policy says nothing.
const DefaultTombstoneRetentionMs = int64(60 * 60 * 1000)

// state is the replicated registry. It is only ever mutated by apply*
// methods, which are called from FSM.Apply with the FSM lock held, and must
// stay deterministic: they read nothing but their arguments and the state.
type state struct {
	clusterID   string
	servers     map[string]*fsmpb.Server
	allocations *recordTable // by id (records.go)
	byRequest   *recordTable // the same records by request id
	members     map[string]*fsmpb.Member
	policy      *fsmpb.Policy
	intents     map[string]*fsmpb.ProvisionIntent // see policy.go
	rooms       map[string]*fsmpb.Room            // rooms.go; nil until the first room
	roomNums    map[uint64]bool                   // numbers the rooms hold
	acl         aclState                          // acl.go
	refused     refusals                          // refusals.go
	applied     uint64
	lastTime    int64
	// Origin and sequence of the last applied entry (see Envelope.origin).
	lastOrigin string
	lastSeq    uint64
	// Derived, not replicated (scale.go): the change feed and the
	// active-allocation indexes.
	feed      *changeFeed
	activeOn  map[string]*allocSet
	roomUnits map[string]*roomUse
	names     names // servers' region and zone names, shared
}

func newState() *state {
	return &state{
		servers:     map[string]*fsmpb.Server{},
		allocations: newRecordTable(false),
		byRequest:   newRecordTable(true),
		members:     map[string]*fsmpb.Member{},
		policy:      defaultPolicy(),
		names:       names{},
	}
}

// names interns the servers' region and zone names: a fleet has a few of
// each, and every server record would otherwise hold its own copy of the
// bytes decoded from its registration. Derived, not replicated: a name
// is dropped when the last server naming it changes or leaves.
type names map[string]*nameRef

type nameRef struct {
	s string
	n int
}

// take returns the shared copy of s and counts one more user.
func (ns names) take(s string) string {
	if s == "" {
		return ""
	}
	r := ns[s]
	if r == nil {
		r = &nameRef{s: s}
		ns[s] = r
	}
	r.n++
	return r.s
}

// drop counts one user of s less.
func (ns names) drop(s string) {
	if r := ns[s]; r != nil {
		if r.n--; r.n <= 0 {
			delete(ns, s)
		}
	}
}

func defaultPolicy() *fsmpb.Policy {
	return &fsmpb.Policy{Strategy: DefaultStrategy, TombstoneRetentionMs: DefaultTombstoneRetentionMs}
}

// apply runs one command at log position (index, pos) with leader time now.
func (s *state) apply(index uint64, pos int, now int64, c *fsmpb.Command) *fsmpb.Result {
	var err error
	res := &fsmpb.Result{}
	if err := s.checkCommandToken(now, c.GetAclTokenId()); err != nil { // acl.go
		res.ErrorCode = errcode.Code(err)
		res.ErrorMessage = err.Error()
		return res
	}
	switch v := c.GetCmd().(type) {
	case *fsmpb.Command_RegisterServer:
		err = s.registerServer(now, v.RegisterServer.GetServer())
	case *fsmpb.Command_DeregisterServer:
		err = s.deregisterServer(v.DeregisterServer)
	case *fsmpb.Command_SetServerState:
		err = s.setServerState(now, v.SetServerState)
	case *fsmpb.Command_Allocate:
		res.Allocation, res.Duplicate, err = s.allocate(index, pos, now, v.Allocate)
		res.RefusalCommitted = err != nil && s.refused.has(v.Allocate.GetRequestId())
	case *fsmpb.Command_Release:
		res.Allocation, err = s.release(now, v.Release.GetId())
	case *fsmpb.Command_SetPolicy:
		err = s.setPolicy(index, now, v.SetPolicy) // policy.go
	case *fsmpb.Command_SetMember:
		err = s.setMember(v.SetMember)
	case *fsmpb.Command_RemoveMember:
		delete(s.members, v.RemoveMember)
	case *fsmpb.Command_Expire:
		s.expire(now)
	case *fsmpb.Command_InitCluster:
		if s.clusterID == "" {
			s.clusterID = v.InitCluster
		}
	case *fsmpb.Command_PlaceRoom:
		res.Room, err = s.placeRoom(now, v.PlaceRoom) // rooms.go
	case *fsmpb.Command_ReleaseRoom:
		res.Room, err = s.releaseRoom(now, v.ReleaseRoom)
	case *fsmpb.Command_RefuseAllocation:
		res.Allocation, res.Duplicate, err = s.refuse(now, v.RefuseAllocation) // refusals.go
		res.RefusalCommitted = err != nil && s.refused.has(v.RefuseAllocation.GetRequestId())
	case *fsmpb.Command_AclBootstrap, *fsmpb.Command_AclCreateToken, *fsmpb.Command_AclRevokeToken, *fsmpb.Command_AddMediaKey:
		_, err = s.applyACL(now, c) // acl.go
	default:
		err = s.applyExt(index, pos, now, c, res) // policy.go: intents; unknown commands fail there
	}
	if err != nil {
		res.ErrorCode = errcode.Code(err)
		res.ErrorMessage = err.Error()
	}
	return res
}

func (s *state) registerServer(now int64, in *fsmpb.Server) error {
	if in == nil || in.GetId() == "" {
		return errorf(ErrInvalid, "server id is required")
	}
	if in.GetCapacityUnits() <= 0 {
		return errorf(ErrInvalid, "server %s: capacity must be positive, got %d", in.GetId(), in.GetCapacityUnits())
	}
	cur, ok := s.servers[in.GetId()]
	if ok && in.GetCapacityUnits() < cur.UsedUnits {
		return errorf(ErrServerBusy, "server %s: capacity %d is below the %d units its active allocations hold", cur.Id, in.GetCapacityUnits(), cur.UsedUnits)
	}
	if !ok {
		cur = &fsmpb.Server{Id: in.GetId(), RegisteredAtUnixMs: now}
		s.servers[cur.Id] = cur
	}
	cur.Addresses = slices.Clone(in.GetAddresses())
	s.names.drop(cur.Region)
	s.names.drop(cur.Zone)
	cur.Region = s.names.take(in.GetRegion())
	cur.Zone = s.names.take(in.GetZone())
	cur.Labels = cloneLabels(in.GetLabels())
	cur.CapacityUnits = in.GetCapacityUnits()
	if in.GetIncarnation() > cur.Incarnation {
		cur.Incarnation = in.GetIncarnation()
	}
	if cur.State != fsmpb.ServerState_SERVER_STATE_ACTIVE {
		cur.State = fsmpb.ServerState_SERVER_STATE_ACTIVE
		cur.StateChangedAtUnixMs = now
	}
	s.serverRegistered(now, cur) // policy.go: completes its provisioning intent
	s.touch(cur.Id)              // scale.go
	return nil
}

func (s *state) deregisterServer(d *fsmpb.DeregisterServer) error {
	srv, ok := s.servers[d.GetId()]
	if !ok {
		return errorf(ErrNotFound, "server %q is not registered", d.GetId())
	}
	if srv.UsedUnits > 0 {
		return errorf(ErrServerBusy, "server %s still holds %d units of active allocations; drain it and release them first", srv.Id, srv.UsedUnits)
	}
	s.vacateRooms(0, srv.Id) // rooms.go
	delete(s.servers, srv.Id)
	s.names.drop(srv.Region)
	s.names.drop(srv.Zone)
	s.touch(srv.Id) // scale.go
	return nil
}

func (s *state) setServerState(now int64, c *fsmpb.SetServerState) error {
	srv, ok := s.servers[c.GetId()]
	if !ok {
		return errorf(ErrNotFound, "server %q is not registered", c.GetId())
	}
	switch c.GetState() {
	case fsmpb.ServerState_SERVER_STATE_ACTIVE, fsmpb.ServerState_SERVER_STATE_DRAINING, fsmpb.ServerState_SERVER_STATE_DOWN:
	default:
		return errorf(ErrInvalid, "unknown server state %v", c.GetState())
	}
	if c.GetIfIncarnation() != 0 && c.GetIfIncarnation() != srv.Incarnation {
		return errorf(ErrInvalid, "server %s: incarnation is %d, not %d", srv.Id, srv.Incarnation, c.GetIfIncarnation())
	}
	if srv.State != c.GetState() {
		srv.State = c.GetState()
		srv.StateChangedAtUnixMs = now
		s.touch(srv.Id) // scale.go
	}
	if srv.State == fsmpb.ServerState_SERVER_STATE_DOWN {
		s.vacateRooms(now, srv.Id) // rooms.go
	}
	return nil
}

func (s *state) allocate(index uint64, pos int, now int64, d *fsmpb.AllocateDecision) (*fsmpb.Allocation, bool, error) {
	if d.GetRequestId() == "" {
		return nil, false, errorf(ErrInvalid, "request id is required")
	}
	if a := s.byRequest.Get(d.GetRequestId()); a != nil {
		if a.Room != d.GetRoom() || a.Units != d.GetUnits() {
			return proto.Clone(a).(*fsmpb.Allocation), true, errorf(ErrRequestIDReused,
				"request id %q already allocated %s (room %q, %d units)", d.GetRequestId(), a.Id, a.Room, a.Units)
		}
		return proto.Clone(a).(*fsmpb.Allocation), true, nil
	}
	if old, ok := s.refused.get(d.GetRequestId()); ok { // refusals.go
		return nil, true, refusalErr(old)
	}
	if err := ValidateRequest(d.GetRoom(), d.GetUnits()); err != nil {
		return nil, false, err
	}
	srv, ok := s.servers[d.GetServer()]
	var refusal error
	switch {
	case !ok && d.GetRecordRefusal():
		// The leader chose a server (it was registered then) that was
		// deregistered before this decision applied: a momentary refusal
		// like a server that stopped being active, committed as one.
		refusal = errorf(ErrServerNotActive, "server %s is no longer registered", d.GetServer())
	case !ok:
		return nil, false, errorf(ErrNotFound, "server %q is not registered", d.GetServer())
	case srv.State != fsmpb.ServerState_SERVER_STATE_ACTIVE:
		refusal = errorf(ErrServerNotActive, "server %s is %s", srv.Id, StateName(srv.State))
	case s.unitLimit(srv)-srv.UsedUnits < d.GetUnits():
		// unitLimit (policy.go) is the capacity, lowered by a hard units limit.
		free := s.unitLimit(srv) - srv.UsedUnits
		refusal = errorf(ErrCapacity, "server %s has %d of %d units free (hard limit %d), request needs %d", srv.Id, free, srv.CapacityUnits, s.unitLimit(srv), d.GetUnits())
	}
	if refusal != nil {
		if d.GetRecordRefusal() {
			return nil, false, refusalErr(s.recordRefusal(now, d.GetRequestId(), errcode.Code(refusal), refusal.Error())) // refusals.go
		}
		return nil, false, refusal
	}
	a := &fsmpb.Allocation{
		Id:              fmt.Sprintf("a-%d-%d", index, pos),
		RequestId:       d.GetRequestId(),
		Room:            d.GetRoom(),
		Requester:       s.intern(d.GetRequester()),
		Server:          srv.Id,
		Units:           d.GetUnits(),
		CreatedAtUnixMs: now,
		State:           fsmpb.AllocationState_ALLOCATION_STATE_ACTIVE,
	}
	if d.GetTtlMs() > 0 {
		a.ExpiresAtUnixMs = now + d.GetTtlMs()
	}
	srv.UsedUnits += a.Units
	s.allocations.Put(a)
	s.byRequest.Put(a)
	s.indexAlloc(a, true) // scale.go: also shares a.Room with the room index
	s.touch(srv.Id)
	return proto.Clone(a).(*fsmpb.Allocation), false, nil
}

// ValidateRequest checks the request fields every transport must refuse
// before a decision is even attempted.
func ValidateRequest(room string, units int64) error {
	if room == "" {
		return errorf(ErrInvalid, "room is required")
	}
	if units <= 0 {
		return errorf(ErrInvalid, "units must be positive, got %d", units)
	}
	return nil
}

func (s *state) lookup(id string) *fsmpb.Allocation {
	if a := s.allocations.Get(id); a != nil {
		return a
	}
	return s.byRequest.Get(id)
}

func (s *state) release(now int64, id string) (*fsmpb.Allocation, error) {
	a := s.lookup(id)
	if a == nil {
		return nil, errorf(ErrNotFound, "allocation %q does not exist", id)
	}
	a = s.end(a, now, fsmpb.AllocationState_ALLOCATION_STATE_RELEASED)
	return proto.Clone(a).(*fsmpb.Allocation), nil
}

// end moves an active allocation to a final state and frees its units,
// and returns the allocation as it now is. Ending an allocation that has
// already ended changes nothing.
//
// Allocation records are never changed once stored: the ended one is a
// new record in place of a. Snapshots and hashes share the stored records
// instead of copying them (see exportShared), and read them after the
// lock is released.
func (s *state) end(a *fsmpb.Allocation, now int64, final fsmpb.AllocationState) *fsmpb.Allocation {
	if a.State != fsmpb.AllocationState_ALLOCATION_STATE_ACTIVE {
		return a
	}
	s.indexAlloc(a, false) // scale.go
	e := proto.Clone(a).(*fsmpb.Allocation)
	e.State = final
	e.EndedAtUnixMs = now
	s.allocations.Put(e)
	s.byRequest.Put(e)
	if srv, ok := s.servers[a.Server]; ok {
		srv.UsedUnits -= a.Units
		s.touch(srv.Id)
	}
	return e
}

func (s *state) expire(now int64) {
	s.refused.expire(now) // refusals.go
	ret := s.policy.GetTombstoneRetentionMs()
	for a := range s.allocations.All() {
		if a.State == fsmpb.AllocationState_ALLOCATION_STATE_ACTIVE && a.ExpiresAtUnixMs > 0 && a.ExpiresAtUnixMs <= now {
			a = s.end(a, now, fsmpb.AllocationState_ALLOCATION_STATE_EXPIRED)
		}
		if a.State != fsmpb.AllocationState_ALLOCATION_STATE_ACTIVE && ret > 0 && a.EndedAtUnixMs+ret <= now {
			s.allocations.Remove(a.Id)
			s.byRequest.Remove(a.RequestId)
			s.changed(ChangeAllocation, a.Id) // changes.go
		}
	}
}

func (s *state) setMember(m *fsmpb.Member) error {
	if m.GetId() == "" {
		return errorf(ErrInvalid, "member id is required")
	}
	s.members[m.Id] = proto.Clone(m).(*fsmpb.Member)
	return nil
}

// export copies the state into its canonical, sorted protobuf form.
func (s *state) export() *fsmpb.State {
	st := s.exportShared()
	for i, a := range st.Allocations {
		st.Allocations[i] = proto.Clone(a).(*fsmpb.Allocation)
	}
	for i, v := range st.Refusals {
		st.Refusals[i] = proto.Clone(v).(*fsmpb.Refusal)
	}
	sortAllocations(st)
	return st
}

// sortAllocations puts an exported state's allocations in canonical
// order (by id). It sorts (id, record) pairs, so comparing two does not
// reach into the records (about twice as fast at a million).
func sortAllocations(st *fsmpb.State) {
	type ref struct {
		id string
		a  *fsmpb.Allocation
	}
	refs := make([]ref, len(st.Allocations))
	for i, a := range st.Allocations {
		refs[i] = ref{a.Id, a}
	}
	slices.SortFunc(refs, func(x, y ref) int { return strings.Compare(x.id, y.id) })
	for i, r := range refs {
		st.Allocations[i] = r.a
	}
}

// exportShared is export with the allocation and refusal records shared
// with the state and the allocations left unsorted: the lock is held only to copy pointers, which
// at a million allocations is tens of milliseconds instead of seconds of
// copying. Stored allocation records are never changed (end replaces
// them), so the result may be read after the lock is released, but never
// changed; sortAllocations makes it canonical.
func (s *state) exportShared() *fsmpb.State {
	st := &fsmpb.State{
		Version:        StateVersion,
		ClusterId:      s.clusterID,
		Policy:         proto.Clone(s.policy).(*fsmpb.Policy),
		AppliedIndex:   s.applied,
		LastTimeUnixMs: s.lastTime,
	}
	for _, v := range s.servers {
		st.Servers = append(st.Servers, proto.Clone(v).(*fsmpb.Server))
	}
	st.Allocations = make([]*fsmpb.Allocation, 0, s.allocations.Len())
	for v := range s.allocations.All() {
		st.Allocations = append(st.Allocations, v)
	}
	for _, v := range s.members {
		st.Members = append(st.Members, proto.Clone(v).(*fsmpb.Member))
	}
	slices.SortFunc(st.Servers, func(a, b *fsmpb.Server) int { return strings.Compare(a.Id, b.Id) })
	slices.SortFunc(st.Members, func(a, b *fsmpb.Member) int { return strings.Compare(a.Id, b.Id) })
	s.exportExt(st)      // policy.go
	s.exportRooms(st)    // rooms.go
	s.exportACL(st)      // acl.go
	s.exportRefusals(st) // refusals.go
	return st
}

// importer builds a state from a snapshot while its records are still
// being decoded: the derived indexes of active allocations (scale.go), by
// server and by room, on a goroutine each as the parts arrive, and the
// registry with the allocations by id, and the allocations by request id,
// on two more once all have arrived (sized then, so that they rarely
// grow). Each goroutine writes its own fields of the state and reads
// the records, writing only fields no other goroutine reads (the room
// index's sets each allocation's room name to the shared copy, the
// registry's each server's region and zone). The state takes the server,
// allocation and refusal records over: what was decoded for it must not
// be used after.
type importer struct {
	s     *state
	parts []chan *fsmpb.State
	done  sync.WaitGroup
}

func newImporter() *importer {
	s := newState()
	s.activeOn = map[string]*allocSet{}
	s.roomUnits = map[string]*roomUse{}
	im := &importer{s: s}
	run := func(fn func(<-chan *fsmpb.State)) {
		ch := make(chan *fsmpb.State, 16)
		im.parts = append(im.parts, ch)
		im.done.Go(func() { fn(ch) })
	}
	// all collects the parts; the tables are filled once every part has
	// arrived, sized then (so that they rarely grow), one per goroutine.
	all := func(parts <-chan *fsmpb.State) (all []*fsmpb.State, servers, allocs int) {
		for part := range parts {
			all = append(all, part)
			servers += len(part.Servers)
			allocs += len(part.Allocations)
		}
		return all, servers, allocs
	}
	run(func(parts <-chan *fsmpb.State) {
		all, servers, allocs := all(parts)
		s.servers = make(map[string]*fsmpb.Server, servers)
		s.allocations.Reserve(allocs)
		for _, part := range all {
			for _, v := range part.Servers {
				s.servers[v.Id] = v
				v.Region, v.Zone = s.names.take(v.Region), s.names.take(v.Zone)
			}
			for _, a := range part.Allocations {
				s.allocations.Put(a)
			}
		}
	})
	run(func(parts <-chan *fsmpb.State) {
		all, _, allocs := all(parts)
		s.byRequest.Reserve(allocs)
		for _, part := range all {
			for _, a := range part.Allocations {
				s.byRequest.Put(a)
			}
		}
	})
	// The index by server is not sized from a server's used units: they
	// count units, not allocations (a few large allocations would size a
	// map for a thousand, and maps never shrink).
	run(func(parts <-chan *fsmpb.State) {
		for part := range parts {
			for _, a := range part.Allocations {
				if a.State == fsmpb.AllocationState_ALLOCATION_STATE_ACTIVE {
					s.indexActive(a)
				}
			}
		}
	})
	run(func(parts <-chan *fsmpb.State) {
		for part := range parts {
			for _, a := range part.Allocations {
				if a.State == fsmpb.AllocationState_ALLOCATION_STATE_ACTIVE {
					s.indexRoom(a)
				}
			}
		}
	})
	return im
}

// add hands the importer a part of the records, in snapshot order.
func (im *importer) add(part *fsmpb.State) {
	for _, ch := range im.parts {
		ch <- part
	}
}

// finish waits for the records and sets every other field from st (whose
// servers and allocations are ignored: they came through add). st's
// version was checked by the decoder.
func (im *importer) finish(st *fsmpb.State) *state {
	im.stop()
	s := im.s
	s.clusterID = st.GetClusterId()
	if st.GetPolicy() != nil {
		s.policy = proto.Clone(st.GetPolicy()).(*fsmpb.Policy)
	}
	s.applied = st.GetAppliedIndex()
	s.lastTime = st.GetLastTimeUnixMs()
	for _, v := range st.GetMembers() {
		s.members[v.Id] = proto.Clone(v).(*fsmpb.Member)
	}
	s.importExt(st)      // policy.go
	s.importRooms(st)    // rooms.go
	s.importACL(st)      // acl.go
	s.importRefusals(st) // refusals.go
	return s
}

// stop ends the importer's goroutines; finish calls it, and a caller that
// gives up before finish must.
func (im *importer) stop() {
	for _, ch := range im.parts {
		close(ch)
	}
	im.parts = nil
	im.done.Wait()
}

// hashState returns the hex SHA-256 of the canonical encoding of st,
// ignoring the bookkeeping fields (applied index, last time) that differ
// between a replica and one restored from a snapshot of it.
// Servers and allocations are sorted first: a snapshot holds its
// allocations in no particular order.
func hashState(st *fsmpb.State) string {
	c := proto.Clone(st).(*fsmpb.State)
	slices.SortStableFunc(c.Servers, func(a, b *fsmpb.Server) int { return strings.Compare(a.Id, b.Id) })
	sortAllocations(c)
	return hashOwned(c)
}

// hashOwned is hashState for a state the caller owns: it clears the
// bookkeeping fields in place instead of copying the state first.
func hashOwned(c *fsmpb.State) string {
	c.AppliedIndex = 0
	c.LastTimeUnixMs = 0
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		// Marshalling a well-formed message we built cannot fail.
		panic(fmt.Sprintf("fsm: marshal state for hash: %v", err))
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func cloneLabels(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// StateName is the lower-case name of a server state ("active", ...).
func StateName(s fsmpb.ServerState) string {
	switch s {
	case fsmpb.ServerState_SERVER_STATE_ACTIVE:
		return "active"
	case fsmpb.ServerState_SERVER_STATE_DRAINING:
		return "draining"
	case fsmpb.ServerState_SERVER_STATE_DOWN:
		return "down"
	}
	return "unknown"
}

// AllocationStateName is the lower-case name of an allocation state.
func AllocationStateName(s fsmpb.AllocationState) string {
	switch s {
	case fsmpb.AllocationState_ALLOCATION_STATE_ACTIVE:
		return "active"
	case fsmpb.AllocationState_ALLOCATION_STATE_RELEASED:
		return "released"
	case fsmpb.AllocationState_ALLOCATION_STATE_EXPIRED:
		return "expired"
	}
	return "unknown"
}
