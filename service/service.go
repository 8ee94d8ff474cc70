// Package service holds the rules of the requests both front ends serve —
// the HTTP API (package httpapi) and the media nodes' QUIC listener
// (package quicapi): register, drain and deregister a server, allocate and
// release. Each rule is written here once: the input caps checked before
// anything is proposed, the idempotency of request ids, the answer a
// repeated request gets. The front ends decode their wire format into
// these calls and encode what comes back; the error codes they answer
// with are errcode's one table.
//
// A Service runs on the leader: the front ends forward a request that
// reaches a follower (cluster.Node.Forward bounds each attempt and fails
// it over to a new leader) before calling it.
//
// Imports: cluster (the request types and sentinels), fsm (the input caps),
// fsmpb. Imported by httpapi and quicapi; never by clients.
package service

import (
	"context"
	"fmt"
	"time"

	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// Node is what the service needs of the local raft node. *cluster.Node
// implements it.
type Node interface {
	Allocate(ctx context.Context, req cluster.AllocateRequest) (*fsmpb.Allocation, bool, error)
	Release(ctx context.Context, id string) (*fsmpb.Allocation, error)
	RegisterServer(ctx context.Context, s *fsmpb.Server) (*fsmpb.Server, error)
	SetServerState(ctx context.Context, id string, state fsmpb.ServerState, ifIncarnation uint64) (*fsmpb.Server, error)
	DeregisterServer(ctx context.Context, id string) error
}

// Service serves the shared requests against one node. The zero value is
// not usable; New builds one. Safe for concurrent use.
type Service struct {
	n Node
}

// New returns the service of node n.
func New(n Node) *Service { return &Service{n: n} }

// AllocateInput is one allocation request as either front end decodes it.
type AllocateInput struct {
	// RequestID makes the request idempotent: the same id answers the
	// allocation it got the first time (Duplicate), whoever sends it.
	RequestID string
	Room      string
	Units     int64
	Requester string
	// Region and Server narrow the placement (both optional).
	Region string
	Server string
	// TTLMs, when positive, ends the allocation that long after it was
	// granted unless released first (0: no expiry).
	TTLMs int64
}

// Allocate validates in and places it. dup is true when the request id
// had been answered before (the same allocation comes back). Refusals
// wrap errcode sentinels: ErrInvalid for input over a cap (checked before
// anything is proposed), ErrCapacity when nothing fits, ErrRequestIDReused
// for an id sent again with other parameters.
func (s *Service) Allocate(ctx context.Context, in AllocateInput) (a *fsmpb.Allocation, dup bool, err error) {
	if err := fsm.CheckAllocateInput(in.RequestID, in.Room, in.Requester, in.Region, in.Server, in.TTLMs); err != nil {
		return nil, false, err
	}
	return s.n.Allocate(ctx, cluster.AllocateRequest{
		RequestID: in.RequestID, Room: in.Room, Units: in.Units, Requester: in.Requester,
		Region: in.Region, Server: in.Server, TTL: time.Duration(in.TTLMs) * time.Millisecond,
	})
}

// Release ends the allocation id (an allocation id or the request id it
// was granted under). Releasing an ended allocation succeeds and changes
// nothing.
func (s *Service) Release(ctx context.Context, id string) (*fsmpb.Allocation, error) {
	if err := checkID("allocation id", id); err != nil {
		return nil, err
	}
	return s.n.Release(ctx, id)
}

// RegisterServer validates srv and registers it (or updates the record
// of a known id; a new incarnation revives a server marked down). It
// returns the record as applied.
func (s *Service) RegisterServer(ctx context.Context, srv *fsmpb.Server) (*fsmpb.Server, error) {
	if srv == nil {
		return nil, fmt.Errorf("%w: register needs a server", fsm.ErrInvalid)
	}
	in := &fsmpb.Server{Id: srv.GetId(), Addresses: srv.GetAddresses(), Region: srv.GetRegion(), Zone: srv.GetZone(),
		Labels: srv.GetLabels(), CapacityUnits: srv.GetCapacityUnits(), Incarnation: srv.GetIncarnation()}
	if err := fsm.CheckServerInput(in); err != nil {
		return nil, err
	}
	return s.n.RegisterServer(ctx, in)
}

// DrainServer stops new placements on server id; what it hosts stays. It
// returns the record as applied.
func (s *Service) DrainServer(ctx context.Context, id string) (*fsmpb.Server, error) {
	if err := checkID("server id", id); err != nil {
		return nil, err
	}
	return s.n.SetServerState(ctx, id, fsmpb.ServerState_SERVER_STATE_DRAINING, 0)
}

// DeregisterServer removes server id (refused with ErrServerBusy while it
// hosts active allocations).
func (s *Service) DeregisterServer(ctx context.Context, id string) error {
	if err := checkID("server id", id); err != nil {
		return err
	}
	return s.n.DeregisterServer(ctx, id)
}

// checkID applies the id cap (fsm.MaxIDLen) and refuses an empty id.
func checkID(what, id string) error {
	if id == "" {
		return fmt.Errorf("%w: %s is required", fsm.ErrInvalid, what)
	}
	return fsm.CheckText(what, id, fsm.MaxIDLen)
}
