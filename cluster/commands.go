package cluster

import (
	"context"
	"fmt"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// The requests a node serves on the leader: Allocate and Release, which
// the decision loop places (decide.go), and the typed writes. Each write
// builds one log command, commits it through the leader's batching loop
// (Submit) and returns what the state machine applied; nothing outside
// this package builds a command. All must run on the leader (else
// ErrNotLeader). Refusals wrap the errcode sentinels; ErrLeadershipLost and
// ErrUnknownOutcome mean "maybe committed". Every write but CreateACLToken
// is idempotent: sending it again after such an error is safe.

// RegisterServer registers s, or updates its record when the id is known
// (a new incarnation revives a server marked down). It returns the record
// as applied. The caller checks the input caps (fsm.CheckServerInput).
func (n *Node) RegisterServer(ctx context.Context, s *fsmpb.Server) (*fsmpb.Server, error) {
	if _, err := n.Submit(ctx, &fsmpb.Command{Cmd: &fsmpb.Command_RegisterServer{RegisterServer: &fsmpb.RegisterServer{Server: s}}}); err != nil {
		return nil, err
	}
	return n.committedServer(s.GetId())
}

// SetServerState moves server id to state (draining, down, active). With
// ifIncarnation > 0 the change applies only while the server is on that
// incarnation (the failure detector's guard against marking a restarted
// server down). It returns the record as applied.
func (n *Node) SetServerState(ctx context.Context, id string, state fsmpb.ServerState, ifIncarnation uint64) (*fsmpb.Server, error) {
	cmd := &fsmpb.Command{Cmd: &fsmpb.Command_SetServerState{SetServerState: &fsmpb.SetServerState{Id: id, State: state, IfIncarnation: ifIncarnation}}}
	if _, err := n.Submit(ctx, cmd); err != nil {
		return nil, err
	}
	return n.committedServer(id)
}

// DeregisterServer removes server id (refused while it hosts active
// allocations).
func (n *Node) DeregisterServer(ctx context.Context, id string) error {
	_, err := n.Submit(ctx, &fsmpb.Command{Cmd: &fsmpb.Command_DeregisterServer{DeregisterServer: &fsmpb.DeregisterServer{Id: id}}})
	return err
}

// SetPolicy replaces the placement policy (conditional on p.IfVersion when
// set) and returns the policy in force after the commit.
func (n *Node) SetPolicy(ctx context.Context, p *fsmpb.Policy) (*fsmpb.Policy, error) {
	if _, err := n.Submit(ctx, &fsmpb.Command{Cmd: &fsmpb.Command_SetPolicy{SetPolicy: p}}); err != nil {
		return nil, err
	}
	return n.fsm.Policy(), nil
}

// PlaceRoom records a room's placement (conditional on p.IfGeneration) and
// returns the room record as applied.
func (n *Node) PlaceRoom(ctx context.Context, p *fsmpb.PlaceRoom) (*fsmpb.Room, error) {
	res, err := n.Submit(ctx, &fsmpb.Command{Cmd: &fsmpb.Command_PlaceRoom{PlaceRoom: p}})
	if err != nil {
		return nil, err
	}
	return res.GetRoom(), nil
}

// ReleaseRoom ends a room's placement and its allocation. It returns the
// record released, or nil when the room held no placement.
func (n *Node) ReleaseRoom(ctx context.Context, name string) (*fsmpb.Room, error) {
	res, err := n.Submit(ctx, &fsmpb.Command{Cmd: &fsmpb.Command_ReleaseRoom{ReleaseRoom: &fsmpb.ReleaseRoom{Room: name}}})
	if err != nil {
		return nil, err
	}
	return res.GetRoom(), nil
}

// VacateRoom gives up a room's placement on server (ending its
// allocation) but keeps the record, vacated, with reason: what a sidecar
// does when its SFU refuses to create the room, so the application learns
// why. It applies only while the room is on server and, when
// allocationID is given, still placed as that allocation (else
// ErrVersionMismatch). Until every voter lists FeatureRoomVacate it
// releases the room instead (an older release would forget the record).
// It returns the record as applied, or nil when the room held no
// placement.
func (n *Node) VacateRoom(ctx context.Context, name, server, allocationID, reason string) (*fsmpb.Room, error) {
	rr := &fsmpb.ReleaseRoom{Room: name}
	if n.featureOn(FeatureRoomVacate) {
		rr.VacateReason, rr.IfServer, rr.IfAllocation = reason, server, allocationID
	} else if rm, ok := n.fsm.Room(name); !ok || rm.GetServer() != server || allocationID != "" && rm.GetAllocationId() != allocationID {
		return nil, fmt.Errorf("%w: room %s is not placed on %s as %q", fsm.ErrVersionMismatch, name, server, allocationID)
	}
	res, err := n.Submit(ctx, &fsmpb.Command{Cmd: &fsmpb.Command_ReleaseRoom{ReleaseRoom: rr}})
	if err != nil {
		return nil, err
	}
	return res.GetRoom(), nil
}

// AddMediaKey adds a WHIP/WHEP token signing key (the newest signs; older
// ones still verify until evicted).
func (n *Node) AddMediaKey(ctx context.Context, k *fsmpb.MediaKey) error {
	_, err := n.Submit(ctx, &fsmpb.Command{Cmd: &fsmpb.Command_AddMediaKey{AddMediaKey: k}})
	return err
}

// CreateACLToken stores t (its secret already hashed). With bootstrap it
// is the cluster's first operator token, refused (ErrACLBootstrapped)
// when ACLs were bootstrapped before. Not idempotent: never resend one
// whose outcome is unknown (a bootstrap would be refused and its secret
// lost; a create would mint a second token).
func (n *Node) CreateACLToken(ctx context.Context, t *fsmpb.AclToken, bootstrap bool) error {
	cmd := &fsmpb.Command{Cmd: &fsmpb.Command_AclCreateToken{AclCreateToken: t}}
	if bootstrap {
		cmd = &fsmpb.Command{Cmd: &fsmpb.Command_AclBootstrap{AclBootstrap: &fsmpb.AclBootstrap{Token: t}}}
	}
	_, err := n.Submit(ctx, cmd)
	return err
}

// RevokeACLToken deletes the token with this id and returns the log index
// of the revocation: no command carrying that token commits after it
// (Apply re-checks every command's token, once FeatureACLInApply is on).
func (n *Node) RevokeACLToken(ctx context.Context, id string) (uint64, error) {
	_, index, err := n.enqueue(ctx, &op{cmd: &fsmpb.Command{Cmd: &fsmpb.Command_AclRevokeToken{AclRevokeToken: id}}, done: make(chan opResult, 1)})
	return index, err
}

// committedServer reads server id after a commit of this leader (the FSM
// then holds it: Submit returns once the entry is applied here).
func (n *Node) committedServer(id string) (*fsmpb.Server, error) {
	s, ok := n.fsm.Server(id)
	if !ok {
		return nil, fmt.Errorf("%w: server %q is not registered", fsm.ErrNotFound, id)
	}
	return s, nil
}

// Submit commits one command through the leader's batching loop and
// returns its result. Must run on the leader (else ErrNotLeader). Errors
// from the FSM come back wrapping fsm sentinels; ErrLeadershipLost and
// ErrUnknownOutcome mean "maybe committed".
func (n *Node) Submit(ctx context.Context, cmd *fsmpb.Command) (*fsmpb.Result, error) {
	res, _, err := n.enqueue(ctx, &op{cmd: cmd, done: make(chan opResult, 1)})
	return res, err
}

// Allocate places and commits an allocation. Must run on the leader. A
// request id seen before returns the allocation it already got (Result
// duplicate=true); concurrent duplicates share one decision.
func (n *Node) Allocate(ctx context.Context, req AllocateRequest) (*fsmpb.Allocation, bool, error) {
	if req.RequestID == "" {
		return nil, false, fmt.Errorf("%w: request id is required", fsm.ErrInvalid)
	}
	if err := fsm.ValidateRequest(req.Room, req.Units); err != nil {
		return nil, false, err
	}
	res, _, err := n.enqueue(ctx, &op{alloc: &req, done: make(chan opResult, 1)})
	if err != nil {
		return nil, false, err
	}
	return res.GetAllocation(), res.GetDuplicate(), nil
}

// Release ends an allocation (by allocation id or request id). Must run on
// the leader. Releasing an ended allocation succeeds and changes nothing.
func (n *Node) Release(ctx context.Context, id string) (*fsmpb.Allocation, error) {
	if id == "" {
		return nil, fmt.Errorf("%w: allocation id is required", fsm.ErrInvalid)
	}
	res, err := n.Submit(ctx, &fsmpb.Command{Cmd: &fsmpb.Command_Release{Release: &fsmpb.Release{Id: id}}})
	if err != nil {
		return nil, err
	}
	return res.GetAllocation(), nil
}

// tokenKey is the context key of the ACL token id a request carries.
type tokenKey struct{}

// WithACLToken returns ctx carrying the id of the ACL token that
// authorized the request (never its secret). Every command submitted with
// it carries the id, and Apply refuses the command when the token was
// revoked (or expired) before the command's entry: a revocation is in
// force from its own log index on, even for requests checked just before.
func WithACLToken(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, tokenKey{}, id)
}

// aclTokenOf returns the ACL token id WithACLToken put in ctx, or "".
func aclTokenOf(ctx context.Context) string {
	id, _ := ctx.Value(tokenKey{}).(string)
	return id
}

// enqueue hands o to the decision loop and waits for its outcome: the
// result as applied and the log index of its entry (0 when the answer
// came without a commit).
func (n *Node) enqueue(ctx context.Context, o *op) (*fsmpb.Result, uint64, error) {
	o.token = aclTokenOf(ctx)
	ls := n.leader.Load()
	if ls == nil {
		if _, _, ok := n.Leader(); !ok {
			return nil, 0, ErrNoLeader
		}
		return nil, 0, ErrNotLeader
	}
	select {
	case ls.queue <- o:
	case <-ls.ctx.Done():
		return nil, 0, ErrNotLeader // not proposed: safe to retry elsewhere
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	select {
	case r := <-o.done:
		if r.err != nil {
			return nil, 0, r.err
		}
		return r.res, r.index, fsm.ResultError(r.res)
	case <-ls.ctx.Done():
		select {
		case r := <-o.done:
			if r.err == nil {
				return r.res, r.index, fsm.ResultError(r.res)
			}
			return nil, 0, r.err
		default:
			return nil, 0, ErrLeadershipLost
		}
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("%w: %w", ErrUnknownOutcome, ctx.Err())
	}
}
