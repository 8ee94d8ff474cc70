package cluster

import (
	"context"
	"fmt"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// The typed writes. Each builds one log command, commits it through the
// leader's batching loop (Submit) and returns what the state machine
// applied; nothing outside this package builds a command. All must run on
// the leader (else ErrNotLeader). Refusals wrap the errcode sentinels;
// ErrLeadershipLost and ErrUnknownOutcome mean "maybe committed" (every
// write here is idempotent: sending it again is safe).

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
