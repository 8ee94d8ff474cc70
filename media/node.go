package media

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/switchyard/switchyard/internal/connlimit"
)

// Node is one media node: its rooms, sessions, cascades and the HTTP
// server that fronts them. Create with New, then Start; Close ends it.
// All methods are safe for concurrent use.
type Node struct {
	cfg   Config
	log   *slog.Logger
	cl    Cluster
	api   *webrtc.API
	meter *meter
	hc    *http.Client // for cascades (WHIP to targets, polls)

	ctx    context.Context // ends on Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // background goroutines
	srv    *http.Server
	base   string // public base URL
	load   loadSampler

	mu         sync.Mutex
	rooms      map[string]*room
	sessions   map[string]*session
	cascades   map[string][]*cascade // by room, on the origin
	cascading  map[string]*sync.Mutex
	lost       map[string]time.Time // cascade targets lost, by server id
	used       int64                // units
	draining   bool
	drained    chan struct{} // closed when a drain completed
	closed     bool
	sessChange chan struct{} // closed and replaced whenever a session ends
}

// New validates cfg and builds a node that talks to the cluster through cl.
func New(cfg Config, cl Cluster) (*Node, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	n := &Node{
		cfg: cfg, log: cfg.Logger.With("media", cfg.ID), cl: cl, meter: &meter{},
		rooms: map[string]*room{}, sessions: map[string]*session{}, cascades: map[string][]*cascade{},
		cascading: map[string]*sync.Mutex{}, lost: map[string]time.Time{}, drained: make(chan struct{}), sessChange: make(chan struct{}),
	}
	api, err := NewWebRTCAPI(APIOptions{IPs: cfg.ICEIPs, Disconnected: cfg.ICEDisconnected, Failed: cfg.ICEFailed, Extra: n.meter})
	if err != nil {
		return nil, err
	}
	n.api = api
	n.hc = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second}}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	return n, nil
}

// ID is the node's id.
func (n *Node) ID() string { return n.cfg.ID }

// BaseURL is the node's public base URL (valid after Start).
func (n *Node) BaseURL() string { return n.base }

// The WHIP/WHEP server's connection caps: in all, and per source address
// (an IPv4 address or an IPv6 /64). WHIP and WHEP exchanges are one short
// request each, so even a large audience behind one NAT holds few.
const (
	maxConns          = 4096
	maxConnsPerSource = 1024
)

// Start serves HTTP on ln, registers the node with the cluster (with its
// base URL as address) and starts the load reporter and state watcher. It
// returns once registered; ctx bounds only the registration.
func (n *Node) Start(ctx context.Context, ln net.Listener) error {
	n.base = n.cfg.PublicURL
	if n.base == "" {
		n.base = "http://" + ln.Addr().String()
	}
	// Anyone may reach this server: bound what one client can hold. Offers
	// are at most 64 KiB (maxOfferBytes), so a request read takes well
	// under ReadTimeout on any link; a client trickling bytes is cut off.
	ln = connlimit.New(ln, maxConns, maxConnsPerSource, "switchyard_media_http_connections_refused_total")
	n.srv = &http.Server{Handler: n.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("http server stopped", "err", err)
		}
	}()
	if err := n.cl.Register(ctx, ServerInfo{ID: n.cfg.ID, Addresses: []string{n.base}, Region: n.cfg.Region, Capacity: n.cfg.Capacity}); err != nil {
		return fmt.Errorf("media node %s: %w", n.cfg.ID, err)
	}
	n.goBackground(n.reportLoop)
	if n.cfg.StatePoll > 0 {
		n.goBackground(n.watchState)
	}
	n.log.Info("media node started", "url", n.base, "capacity", n.cfg.Capacity)
	return nil
}

// goBackground runs fn in a goroutine that Close waits for.
func (n *Node) goBackground(fn func()) {
	n.wg.Add(1)
	go func() { defer n.wg.Done(); fn() }()
}

// Close ends every session and cascade (releasing cascade allocations,
// bounded by ctx), stops the HTTP server and the background loops. It
// does not deregister (see Drain).
func (n *Node) Close(ctx context.Context) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	var cs []*cascade
	for _, l := range n.cascades {
		cs = append(cs, l...)
	}
	var ss []*session
	for _, s := range n.sessions {
		ss = append(ss, s)
	}
	n.mu.Unlock()
	for _, c := range cs {
		n.closeCascade(ctx, c, "node closing")
	}
	for _, s := range ss {
		n.closeSession(s, "node closing")
	}
	var err error
	if n.srv != nil {
		err = n.srv.Shutdown(ctx)
	}
	n.cancel()
	n.wg.Wait()
	n.hc.CloseIdleConnections()
	return err
}

func newID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Stats is a snapshot of a node's bookkeeping (for tests and operators).
type Stats struct {
	Rooms, Sessions, Viewers, Cascades int
	UsedUnits                          int64
	Draining                           bool
}

// Stats returns the node's current counts.
func (n *Node) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := Stats{Rooms: len(n.rooms), Sessions: len(n.sessions), UsedUnits: n.used, Draining: n.draining}
	for _, r := range n.rooms {
		st.Viewers += len(r.viewers)
	}
	for _, l := range n.cascades {
		st.Cascades += len(l)
	}
	return st
}
