package media

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/switchyard/switchyard/api"
)

// HTTPCluster implements Cluster over the allocator's HTTP admin API
// (api.Client, which retries across agents and forwards to the leader).
// Report is a no-op: the HTTP API has no load intake; load travels over
// QUIC datagrams once the transport client replaces this adapter.
type HTTPCluster struct {
	c  *api.Client
	id string
}

// NewHTTPCluster returns an adapter for node id over the given agents'
// HTTP addresses (host:port).
func NewHTTPCluster(id string, addrs ...string) *HTTPCluster {
	return &HTTPCluster{c: api.NewClient(addrs...), id: id}
}

// Register implements Cluster.
func (h *HTTPCluster) Register(ctx context.Context, s ServerInfo) error {
	_, err := h.c.RegisterServer(ctx, api.RegisterServerRequest{ID: s.ID, Addresses: s.Addresses, Region: s.Region, Capacity: s.Capacity})
	if err != nil {
		return fmt.Errorf("register %s: %w", s.ID, err)
	}
	return nil
}

// Allocate implements Cluster; it resolves the target's addresses from the
// server registry.
func (h *HTTPCluster) Allocate(ctx context.Context, r AllocRequest) (Allocation, error) {
	a, err := h.c.Allocate(ctx, api.AllocateRequest{RequestID: r.RequestID, Room: r.Room, Units: r.Units, Requester: r.Requester, Region: r.Region})
	if err != nil {
		return Allocation{}, fmt.Errorf("allocate for room %s: %w", r.Room, err)
	}
	out := Allocation{ID: a.ID, Server: a.Server, Units: a.Units}
	servers, err := h.c.Servers(ctx, true)
	if err != nil {
		return out, fmt.Errorf("look up server %s of allocation %s: %w", a.Server, a.ID, err)
	}
	for _, s := range servers {
		if s.ID == a.Server {
			out.Addresses = s.Addresses
		}
	}
	return out, nil
}

// Release implements Cluster.
func (h *HTTPCluster) Release(ctx context.Context, id string) error {
	if _, err := h.c.Release(ctx, id); err != nil {
		var ae *api.APIError
		if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
			return nil
		}
		return fmt.Errorf("release %s: %w", id, err)
	}
	return nil
}

// Drain implements Cluster.
func (h *HTTPCluster) Drain(ctx context.Context) error {
	if _, err := h.c.DrainServer(ctx, h.id); err != nil {
		return fmt.Errorf("drain %s: %w", h.id, err)
	}
	return nil
}

// Deregister implements Cluster.
func (h *HTTPCluster) Deregister(ctx context.Context) error {
	if err := h.c.DeregisterServer(ctx, h.id); err != nil {
		return fmt.Errorf("deregister %s: %w", h.id, err)
	}
	return nil
}

// State implements Cluster (a stale read: any agent answers).
func (h *HTTPCluster) State(ctx context.Context) (string, error) {
	servers, err := h.c.Servers(ctx, true)
	if err != nil {
		return "", fmt.Errorf("server state of %s: %w", h.id, err)
	}
	for _, s := range servers {
		if s.ID == h.id {
			return s.State, nil
		}
	}
	return "unregistered", nil
}

// Report implements Cluster as a no-op (see HTTPCluster).
func (h *HTTPCluster) Report(Load) {}
