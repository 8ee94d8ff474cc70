package media

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/transport"
)

// QUICCluster implements Cluster over the allocator's QUIC protocol
// (transport.Client, mutual TLS): Register, Allocate, Release and Drain
// travel on QUIC streams and load reports as QUIC datagrams. What the QUIC
// protocol does not carry goes over the HTTP admin API: Deregister, State,
// and resolving an allocation's server to its registered addresses. Without
// HTTP addresses those fail with ErrNoHTTP, except Deregister, which is
// skipped (the cluster marks the server down once its reports stop).
type QUICCluster struct {
	q           *transport.Client
	h           *api.Client // nil without HTTP addresses
	id          string
	incarnation uint64
	log         *slog.Logger
}

// ErrNoHTTP is returned by a QUICCluster given no HTTP API address for
// what only the HTTP API answers (State, and the addresses of an
// allocation's server).
var ErrNoHTTP = errors.New("no agent HTTP API address given (only the HTTP API answers this)")

// NewQUICCluster connects node id to the agents' QUIC addresses with
// tlsConf (a client certificate of the cluster CA, e.g.
// pki.Identity.ClientConfig(transport.ALPN)); httpAddrs are the same
// agents' HTTP API addresses, possibly none (see QUICCluster). Close it
// when done.
func NewQUICCluster(id string, quicAddrs, httpAddrs []string, tlsConf *tls.Config, log *slog.Logger) (*QUICCluster, error) {
	if log == nil {
		log = slog.Default()
	}
	q, err := transport.NewClient(transport.ClientConfig{Addrs: quicAddrs, TLS: tlsConf, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("quic cluster client: %w", err)
	}
	c := &QUICCluster{q: q, id: id, incarnation: uint64(time.Now().UnixNano()), log: log}
	if len(httpAddrs) > 0 {
		// Over HTTPS it presents the node's certificate (as over QUIC).
		c.h = api.NewClient(httpAddrs...).PresentCertificate(tlsConf)
	}
	return c, nil
}

// Close closes the QUIC connection (reports stop).
func (c *QUICCluster) Close() error { return c.q.Close() }

// Register implements Cluster. The incarnation is this process's start
// time, so the failure detector tells a restart from a silent server.
func (c *QUICCluster) Register(ctx context.Context, s ServerInfo) error {
	if _, err := c.q.Register(ctx, transport.ServerInfo{ID: s.ID, Addresses: s.Addresses, Region: s.Region, Capacity: s.Capacity, Incarnation: c.incarnation}); err != nil {
		return fmt.Errorf("register %s over QUIC: %w", s.ID, err)
	}
	return nil
}

// Allocate implements Cluster.
func (c *QUICCluster) Allocate(ctx context.Context, r AllocRequest) (Allocation, error) {
	a, _, err := c.q.Allocate(ctx, transport.AllocateRequest{RequestID: r.RequestID, Room: r.Room, Units: r.Units, Requester: r.Requester, Region: r.Region})
	if err != nil {
		return Allocation{}, fmt.Errorf("allocate for room %s over QUIC: %w", r.Room, err)
	}
	out := Allocation{ID: a.GetId(), Server: a.GetServer(), Units: a.GetUnits()}
	if c.h == nil {
		// Unusable without the target's address: give the units back.
		if _, rerr := c.q.Release(ctx, out.ID); rerr != nil {
			c.log.Warn("release of an unusable allocation failed", "allocation", out.ID, "err", rerr)
		}
		return Allocation{}, fmt.Errorf("look up server %s of allocation %s: %w", out.Server, out.ID, ErrNoHTTP)
	}
	servers, err := c.h.Servers(ctx, true)
	if err != nil {
		return out, fmt.Errorf("look up server %s of allocation %s: %w", out.Server, out.ID, err)
	}
	for _, s := range servers {
		if s.ID == out.Server {
			out.Addresses = s.Addresses
		}
	}
	return out, nil
}

// Release implements Cluster.
func (c *QUICCluster) Release(ctx context.Context, id string) error {
	if _, err := c.q.Release(ctx, id); err != nil {
		return fmt.Errorf("release %s over QUIC: %w", id, err)
	}
	return nil
}

// Drain implements Cluster.
func (c *QUICCluster) Drain(ctx context.Context) error {
	if _, err := c.q.Drain(ctx); err != nil {
		return fmt.Errorf("drain %s over QUIC: %w", c.id, err)
	}
	return nil
}

// Deregister implements Cluster (HTTP API: the QUIC protocol has no
// deregistration).
func (c *QUICCluster) Deregister(ctx context.Context) error {
	if c.h == nil {
		c.log.Warn("not deregistered: no agent HTTP API address given; the cluster marks the server down once its reports stop", "server", c.id)
		return nil
	}
	if err := c.h.DeregisterServer(ctx, c.id); err != nil {
		return fmt.Errorf("deregister %s: %w", c.id, err)
	}
	return nil
}

// State implements Cluster (HTTP API, stale read).
func (c *QUICCluster) State(ctx context.Context) (string, error) {
	if c.h == nil {
		return "", ErrNoHTTP
	}
	return (&HTTPCluster{c: c.h, id: c.id}).State(ctx)
}

// Report implements Cluster: one datagram, never blocking. CPU is sent as
// a fraction of all cores, as the protocol defines it.
func (c *QUICCluster) Report(l Load) {
	cpu := l.CPU
	if l.Cores > 0 {
		cpu /= float64(l.Cores)
	}
	err := c.q.Report(transport.Load{
		CPU: cpu, IngressBps: l.IngressBps, EgressBps: l.EgressBps, Peers: l.Peers, Tracks: l.Tracks,
		SubscribedTracks: l.Subscribed, Rooms: l.Rooms, AllocationIDs: l.Allocs, FreeUnits: l.Capacity - l.UsedUnits,
	})
	if err != nil {
		c.log.Debug("load report not sent", "err", err)
	}
}
