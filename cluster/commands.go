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

// RevokeACLToken deletes token id.
func (n *Node) RevokeACLToken(ctx context.Context, id string) error {
	_, err := n.Submit(ctx, &fsmpb.Command{Cmd: &fsmpb.Command_AclRevokeToken{AclRevokeToken: id}})
	return err
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
	return n.enqueue(ctx, &op{cmd: cmd, done: make(chan opResult, 1)})
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
	res, err := n.enqueue(ctx, &op{alloc: &req, done: make(chan opResult, 1)})
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

func (n *Node) enqueue(ctx context.Context, o *op) (*fsmpb.Result, error) {
	ls := n.leader.Load()
	if ls == nil {
		if _, _, ok := n.Leader(); !ok {
			return nil, ErrNoLeader
		}
		return nil, ErrNotLeader
	}
	select {
	case ls.queue <- o:
	case <-ls.ctx.Done():
		return nil, ErrNotLeader // not proposed: safe to retry elsewhere
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case r := <-o.done:
		if r.err != nil {
			return nil, r.err
		}
		if err := fsm.ResultError(r.res); err != nil {
			return r.res, err
		}
		return r.res, nil
	case <-ls.ctx.Done():
		select {
		case r := <-o.done:
			if r.err == nil {
				return r.res, fsm.ResultError(r.res)
			}
			return nil, r.err
		default:
			return nil, ErrLeadershipLost
		}
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrUnknownOutcome, ctx.Err())
	}
}
