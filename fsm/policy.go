package fsm

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/placement/policyspec"
)

// This file holds the replicated side of placement policy and provisioning: the policy
// (validated here, in Apply, as well as before it is proposed, so a bad
// policy can never be applied on any replica) and provisioning intents.
// Everything is deterministic: time is the envelope's, ids derive from the
// log position.

// ValidatePolicy checks p as Apply would, wrapping ErrInvalid. Proposers
// call it first so that a bad policy is refused without touching the log.
func ValidatePolicy(p *fsmpb.Policy) error {
	if err := policyspec.Validate(p); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// setPolicy installs p from log index on. A zero tombstone retention keeps
// the current one. When p.if_version is set the change applies only if the
// current version equals it.
func (s *state) setPolicy(index uint64, now int64, p *fsmpb.Policy) error {
	if err := ValidatePolicy(p); err != nil {
		return err
	}
	if iv := p.GetIfVersion(); iv != 0 && iv != s.policy.GetVersion() {
		return errorf(ErrVersionMismatch, "policy is at version %d, not %d; read it again and retry", s.policy.GetVersion(), iv)
	}
	np := proto.Clone(p).(*fsmpb.Policy)
	np.IfVersion = 0
	if np.TombstoneRetentionMs == 0 {
		np.TombstoneRetentionMs = s.policy.GetTombstoneRetentionMs()
	}
	np.Version = s.policy.GetVersion() + 1
	np.AppliedAtIndex = index
	np.AppliedAtUnixMs = now
	s.policy = np
	return nil
}

// unitLimit is the most units srv may hold under the policy's hard units
// limit (its capacity when there is none).
func (s *state) unitLimit(srv *fsmpb.Server) int64 {
	return policyspec.UnitLimit(srv.GetCapacityUnits(), s.policy.GetHard().GetUnits())
}

// applyExt runs the commands this file adds; it is state.apply's default
// branch, so an unknown command still fails with ErrInvalid.
func (s *state) applyExt(index uint64, pos int, now int64, c *fsmpb.Command, res *fsmpb.Result) error {
	var err error
	switch v := c.GetCmd().(type) {
	case *fsmpb.Command_CreateIntent:
		res.Intent, err = s.createIntent(index, pos, now, v.CreateIntent)
	case *fsmpb.Command_UpdateIntent:
		res.Intent, err = s.updateIntent(now, v.UpdateIntent)
	default:
		err = errorf(ErrInvalid, "empty or unknown command")
	}
	return err
}

func intentOpen(in *fsmpb.ProvisionIntent) bool {
	return in.GetState() == fsmpb.IntentState_INTENT_STATE_PENDING || in.GetState() == fsmpb.IntentState_INTENT_STATE_STARTED
}

// createIntent commits a new intent in state PENDING. A provision intent
// gets id p-<index>-<pos> and the server id prov-<index>-<pos> the provider
// must register; a deprovision intent names a registered server. Final
// intents older than the tombstone retention are forgotten here.
func (s *state) createIntent(index uint64, pos int, now int64, in *fsmpb.ProvisionIntent) (*fsmpb.ProvisionIntent, error) {
	if s.intents == nil {
		s.intents = map[string]*fsmpb.ProvisionIntent{}
	}
	it := &fsmpb.ProvisionIntent{
		Id: fmt.Sprintf("p-%d-%d", index, pos), Kind: in.GetKind(), State: fsmpb.IntentState_INTENT_STATE_PENDING,
		Region: in.GetRegion(), Zone: in.GetZone(), Units: in.GetUnits(),
		RequestIds: slices.Clone(in.GetRequestIds()), Rooms: slices.Clone(in.GetRooms()),
		CreatedAtUnixMs: now, UpdatedAtUnixMs: now,
		DeadlineUnixMs: now + policyspec.TimeoutMs(s.policy.GetProvisioning()),
	}
	switch in.GetKind() {
	case fsmpb.IntentKind_INTENT_KIND_PROVISION:
		if in.GetUnits() <= 0 {
			return nil, errorf(ErrInvalid, "provisioning intent needs positive units, got %d", in.GetUnits())
		}
		for _, o := range s.intents {
			if !intentOpen(o) {
				continue
			}
			for _, r := range in.GetRequestIds() {
				if slices.Contains(o.RequestIds, r) {
					return nil, errorf(ErrInvalid, "request %q already waits on intent %s", r, o.Id)
				}
			}
		}
		it.ServerId = fmt.Sprintf("prov-%d-%d", index, pos)
	case fsmpb.IntentKind_INTENT_KIND_DEPROVISION:
		if _, ok := s.servers[in.GetServerId()]; !ok {
			return nil, errorf(ErrNotFound, "server %q is not registered", in.GetServerId())
		}
		for _, o := range s.intents {
			if intentOpen(o) && o.Kind == fsmpb.IntentKind_INTENT_KIND_DEPROVISION && o.ServerId == in.GetServerId() {
				return nil, errorf(ErrInvalid, "server %s already has deprovisioning intent %s", o.ServerId, o.Id)
			}
		}
		it.ServerId = in.GetServerId()
	default:
		return nil, errorf(ErrInvalid, "intent kind must be provision or deprovision, got %v", in.GetKind())
	}
	if ret := s.policy.GetTombstoneRetentionMs(); ret > 0 {
		for id, o := range s.intents {
			if !intentOpen(o) && o.UpdatedAtUnixMs+ret <= now {
				delete(s.intents, id)
				s.changed(ChangeIntent, id) // changes.go
			}
		}
	}
	s.intents[it.Id] = it
	s.changed(ChangeIntent, it.Id)
	return proto.Clone(it).(*fsmpb.ProvisionIntent), nil
}

// updateIntent moves an intent on (PENDING -> STARTED -> DONE | FAILED) or
// attaches more waiting requests to an open one. A final intent never
// changes again; if_state makes the move conditional, which is how the
// leader claims an intent exactly once.
func (s *state) updateIntent(now int64, u *fsmpb.UpdateIntent) (*fsmpb.ProvisionIntent, error) {
	it, ok := s.intents[u.GetId()]
	if !ok {
		return nil, errorf(ErrNotFound, "provisioning intent %q does not exist", u.GetId())
	}
	if u.GetIfState() != fsmpb.IntentState_INTENT_STATE_UNSPECIFIED && u.GetIfState() != it.State {
		return proto.Clone(it).(*fsmpb.ProvisionIntent), errorf(ErrVersionMismatch, "intent %s is %s, not %s", it.Id, IntentStateName(it.State), IntentStateName(u.GetIfState()))
	}
	if !intentOpen(it) {
		return proto.Clone(it).(*fsmpb.ProvisionIntent), errorf(ErrVersionMismatch, "intent %s is already %s", it.Id, IntentStateName(it.State))
	}
	switch st := u.GetState(); st {
	case fsmpb.IntentState_INTENT_STATE_UNSPECIFIED:
	case fsmpb.IntentState_INTENT_STATE_STARTED:
		if it.State != fsmpb.IntentState_INTENT_STATE_PENDING {
			return proto.Clone(it).(*fsmpb.ProvisionIntent), errorf(ErrVersionMismatch, "intent %s is %s; only a pending intent can start", it.Id, IntentStateName(it.State))
		}
		it.State, it.Owner = st, u.GetOwner()
	case fsmpb.IntentState_INTENT_STATE_DONE, fsmpb.IntentState_INTENT_STATE_FAILED:
		it.State = st
		it.Error = u.GetError()
	default:
		return nil, errorf(ErrInvalid, "unknown intent state %v", st)
	}
	for i, r := range u.GetAddRequestIds() {
		if !slices.Contains(it.RequestIds, r) {
			it.RequestIds = append(it.RequestIds, r)
			if i == 0 {
				it.Units += u.GetAddUnits()
			}
		}
	}
	for _, r := range u.GetAddRooms() {
		if !slices.Contains(it.Rooms, r) {
			it.Rooms = append(it.Rooms, r)
		}
	}
	it.UpdatedAtUnixMs = now
	s.changed(ChangeIntent, it.Id)
	return proto.Clone(it).(*fsmpb.ProvisionIntent), nil
}

// serverRegistered completes the open provision intent that started srv.
func (s *state) serverRegistered(now int64, srv *fsmpb.Server) {
	for _, it := range s.intents {
		if intentOpen(it) && it.Kind == fsmpb.IntentKind_INTENT_KIND_PROVISION && it.ServerId == srv.Id {
			it.State = fsmpb.IntentState_INTENT_STATE_DONE
			it.UpdatedAtUnixMs = now
			s.changed(ChangeIntent, it.Id)
		}
	}
}

// exportExt adds this file's collections to a canonical state.
func (s *state) exportExt(st *fsmpb.State) {
	for _, v := range s.intents {
		st.Intents = append(st.Intents, proto.Clone(v).(*fsmpb.ProvisionIntent))
	}
	slices.SortFunc(st.Intents, func(a, b *fsmpb.ProvisionIntent) int { return strings.Compare(a.Id, b.Id) })
}

// importExt restores this file's collections.
func (s *state) importExt(st *fsmpb.State) {
	for _, v := range st.GetIntents() {
		if s.intents == nil {
			s.intents = map[string]*fsmpb.ProvisionIntent{}
		}
		s.intents[v.Id] = proto.Clone(v).(*fsmpb.ProvisionIntent)
	}
}

// IntentStateName is the lower-case name of an intent state.
func IntentStateName(s fsmpb.IntentState) string {
	switch s {
	case fsmpb.IntentState_INTENT_STATE_PENDING:
		return "pending"
	case fsmpb.IntentState_INTENT_STATE_STARTED:
		return "started"
	case fsmpb.IntentState_INTENT_STATE_DONE:
		return "done"
	case fsmpb.IntentState_INTENT_STATE_FAILED:
		return "failed"
	}
	return "unknown"
}

// IntentKindName is the lower-case name of an intent kind.
func IntentKindName(k fsmpb.IntentKind) string {
	switch k {
	case fsmpb.IntentKind_INTENT_KIND_PROVISION:
		return "provision"
	case fsmpb.IntentKind_INTENT_KIND_DEPROVISION:
		return "deprovision"
	}
	return "unknown"
}

// ---- reads ----

// Intents returns copies of every provisioning intent, sorted by id.
func (f *FSM) Intents() []*fsmpb.ProvisionIntent {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*fsmpb.ProvisionIntent, 0, len(f.s.intents))
	for _, v := range f.s.intents {
		out = append(out, proto.Clone(v).(*fsmpb.ProvisionIntent))
	}
	slices.SortFunc(out, func(a, b *fsmpb.ProvisionIntent) int { return strings.Compare(a.Id, b.Id) })
	return out
}

// Intent returns a copy of one intent.
func (f *FSM) Intent(id string) (*fsmpb.ProvisionIntent, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v, ok := f.s.intents[id]
	if !ok {
		return nil, false
	}
	return proto.Clone(v).(*fsmpb.ProvisionIntent), true
}

// RoomHosting returns, for every room with active allocations, the units it
// holds per server: room -> server -> units. One pass over allocations, for
// the leader to read once per batch.
func (f *FSM) RoomHosting() map[string]map[string]int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := map[string]map[string]int64{}
	for a := range f.s.allocations.All() {
		if a.State != fsmpb.AllocationState_ALLOCATION_STATE_ACTIVE {
			continue
		}
		m := out[a.Room]
		if m == nil {
			m = map[string]int64{}
			out[a.Room] = m
		}
		m[a.Server] += a.Units
	}
	return out
}

// ServerDetails returns region, zone and labels of a registered server.
func (f *FSM) ServerDetails(id string) (region, zone string, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v, ok := f.s.servers[id]
	if !ok {
		return "", "", false
	}
	return v.Region, v.Zone, true
}
