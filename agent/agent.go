// Package agent assembles one allocator process: the raft node (cluster),
// the HTTP admin API (api) and the QUIC listener for media
// nodes. `switchyard agent`, `switchyard dev` and the multi-node tests all
// start agents through Start, so they exercise the same wiring.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/httpapi"
	"github.com/switchyard/switchyard/internal/connlimit"
	"github.com/switchyard/switchyard/loadview"
	"github.com/switchyard/switchyard/pki"
	"github.com/switchyard/switchyard/quicapi"
)

// DefaultMaxConns caps the admin API's open connections per agent, and
// DefaultMaxConnsPerSource the share of them one source may hold (an IPv4
// address, or an IPv6 /64), so that one host cannot take every slot.
const (
	DefaultMaxConns          = 4096
	DefaultMaxConnsPerSource = 1024
)

// Config is an agent's configuration: the node's plus what the agent adds.
type Config struct {
	cluster.Config
	// TLS is the agent's certificate and the cluster CA. The QUIC listener
	// (QUICAddr) needs it; when set, raft traffic runs over mutual TLS too
	// (unless RaftLayer is set explicitly).
	TLS *pki.Identity
	// RaftPlainTCP keeps raft on plain TCP even when TLS is set.
	RaftPlainTCP bool
	// FailureWindow is how long the leader waits without a load report
	// before it marks a media server down. 0 means
	// loadview.DefaultWindow; negative disables failure detection.
	FailureWindow time.Duration
	// QUIC tunes the QUIC listener; Start fills Addr, Identity, Backend, State,
	// View, Registerer and Logger.
	QUIC quicapi.ServerConfig
	// ACL turns on authorization (default-deny): every API request needs a
	// token (or an agent/media certificate over HTTPS) whose role allows
	// it, from the first request on. See package acl.
	ACL bool
	// HTTPS serves the admin API over TLS with the TLS identity (client
	// certificates optional; agents present theirs when they call each
	// other). Needs TLS.
	HTTPS bool
	// Token is the ACL token this agent sends when it calls other agents
	// (joins) over plain HTTP; over HTTPS its certificate speaks for it.
	Token string
	// RateLimit is the request rate (per second) each token may send to
	// this agent while ACLs are on: 0 means httpapi.DefaultTokenRate, negative
	// no limit.
	RateLimit float64
	// AnonymousRateLimit is the request rate (per second) each anonymous
	// source (an IPv4 address or an IPv6 /64) may send while ACLs are on:
	// 0 means httpapi.DefaultAnonymousRate, negative no limit.
	AnonymousRateLimit float64
	// MaxConns caps the admin API's open connections (0: DefaultMaxConns),
	// and MaxConnsPerSource those of one source address (an IPv6 /64;
	// 0: DefaultMaxConnsPerSource, capped at MaxConns).
	MaxConns, MaxConnsPerSource int
}

// Agent is a running allocator process.
type Agent struct {
	Node *cluster.Node
	API  *httpapi.Handler
	// Loads is this agent's soft load view (the leader's is authoritative).
	Loads *loadview.View
	// QUIC is the media-node listener; nil when QUICAddr or TLS is unset.
	QUIC *quicapi.Server
	log  *slog.Logger
	http *http.Server
	ln   net.Listener
	done chan error
}

// Start opens the HTTP listener first (so peers can probe us while raft
// starts), then the raft node. It returns once both are running.
func Start(ctx context.Context, cfg Config) (*Agent, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
		cfg.Logger = log
	}
	if cfg.HTTPAddr == "" {
		return nil, fmt.Errorf("%w: http address is required (--http-addr)", cluster.ErrBadConfig)
	}
	if cfg.HTTPS && cfg.TLS == nil {
		return nil, fmt.Errorf("%w: an HTTPS admin API needs the TLS identity (--tls-ca/--tls-cert/--tls-key)", cluster.ErrBadConfig)
	}
	if cfg.HTTPS && cfg.ACL {
		// The leader trusts this agent's word on whom it forwards a
		// certificate's request for only when its certificate is an agent
		// certificate naming its id (httpapi: namesSender).
		if id := pki.PeerIdentity(cfg.TLS.Cert.Leaf); id.Role != pki.RoleAgent || id.Name != cfg.ID {
			log.Warn("this agent's certificate is not an agent certificate naming its --id: the leader will not take its word on whom it forwards media nodes' requests for, and, once every voter names them, refuses those requests (reissue it: switchyard tls cert create --role agent --name <id>)",
				"id", cfg.ID, "certificate_name", id.Name, "certificate_role", id.Role)
		}
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on http address %s: %w", cfg.HTTPAddr, err)
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConnsPerSource <= 0 {
		cfg.MaxConnsPerSource = DefaultMaxConnsPerSource
	}
	lim := connlimit.New(ln, cfg.MaxConns, cfg.MaxConnsPerSource, "switchyard_http_connections_refused_total")
	ln = lim
	if cfg.HTTPS {
		ln = tls.NewListener(ln, cfg.TLS.HTTPServerConfig())
	}
	if cfg.Peers == nil {
		pc := api.NewClient()
		pc.Retry = false
		if cfg.Token != "" {
			pc.WithToken(cfg.Token)
		}
		if cfg.HTTPS {
			pc.WithTLS(pki.RequireAgent(cfg.TLS.ClientConfig(), nil)) // peers are agents
		}
		cfg.Peers = pc
	}
	a := &Agent{log: log, ln: ln, done: make(chan error, 1)}
	// The handler is swapped in once the node exists; until then probes get
	// 503 so bootstrapping peers simply retry.
	live := httpapi.LiveHandler(cfg.ID) // the liveness probe answers from the start
	var handler http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/health/live" {
			live.ServeHTTP(w, r)
			return
		}
		http.Error(w, `{"error":"starting","code":"no_leader","retryable":true}`, http.StatusServiceUnavailable)
	})
	ready := make(chan struct{})
	a.http = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-ready:
				a.API.ServeHTTP(w, r)
			default:
				handler.ServeHTTP(w, r)
			}
		}),
		ReadHeaderTimeout: 10 * time.Second,
		// Bodies are capped at a few MiB; a minute is ample on any link and
		// stops clients that trickle bytes from holding connections.
		ReadTimeout:    time.Minute,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
	}
	go func() {
		err := a.http.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		a.done <- err
	}()

	a.Loads = loadview.New(nil)
	cfg.Loads = a.Loads
	if cfg.TLS != nil && cfg.RaftLayer == nil && !cfg.RaftPlainTCP {
		// Raft accepts agent certificates only (a media node's certificate
		// can never join or stand as a voter), in both directions.
		layer, lerr := cluster.NewTLSStreamLayer(cfg.RaftAddr,
			pki.RequireAgent(cfg.TLS.ServerConfig(nil, cluster.RaftALPN), nil), pki.RequireAgent(cfg.TLS.ClientConfig(cluster.RaftALPN), nil))
		if lerr != nil {
			_ = a.http.Close()
			return nil, lerr
		}
		cfg.RaftLayer = layer
	}
	a.Node, err = cluster.Open(ctx, cfg.Config)
	if err != nil {
		if cfg.RaftLayer != nil {
			_ = cfg.RaftLayer.Close()
		}
		_ = a.http.Close()
		return nil, err
	}
	a.Loads.Attach(a.Node.FSM())
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), lim.Refused)
	reg.MustRegister(a.Node.Collectors()...)
	if cfg.FailureWindow >= 0 {
		det := &loadview.Detector{View: a.Loads, Servers: a.Node.FSM(), Node: a.Node, Window: cfg.FailureWindow,
			Log: log.With("node", cfg.ID, "component", "failure-detector"),
			MarkedDown: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_failure_detector_marked_down_total",
				Help: "Media servers the failure detector marked down (on this node while it led)."}),
			Revived: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_failure_detector_revived_total",
				Help: "Down media servers brought back by a report with a newer incarnation."}),
		}
		reg.MustRegister(det.MarkedDown, det.Revived)
		a.Node.OnLeader(det.Run)
	}
	switch {
	case cfg.QUICAddr == "":
	case cfg.TLS == nil:
		log.Warn("QUIC listener not started: it needs TLS (--tls-ca/--tls-cert/--tls-key)", "quic_addr", cfg.QUICAddr)
	default:
		qc := cfg.QUIC
		qc.Addr, qc.Identity, qc.Backend, qc.State, qc.View, qc.Registerer = cfg.QUICAddr, cfg.TLS, a.Node, a.Node.FSM(), a.Loads, reg
		qc.Logger = log.With("node", cfg.ID)
		a.QUIC, err = quicapi.NewServer(qc)
		if err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = a.Node.Shutdown(sctx)
			_ = a.http.Close()
			return nil, err
		}
	}
	a.API = httpapi.NewHandler(a.Node, a.Node.FSM(), log.With("node", cfg.ID), reg)
	a.API.Decorate = a.Loads.Decorate
	if cfg.ACL {
		a.API.EnableACL()
		a.API.SetRateLimits(cfg.RateLimit, cfg.AnonymousRateLimit)
	}
	if cfg.HTTPS {
		// Forwards (with the client's credentials) go to agents only.
		a.API.SetForwardTLS(pki.RequireAgent(cfg.TLS.ClientConfig(), nil))
	}
	close(ready)
	return a, nil
}

// HTTPAddr is the address the admin API listens on.
func (a *Agent) HTTPAddr() string { return a.ln.Addr().String() }

// Shutdown transfers leadership if this agent leads, then stops raft and
// the HTTP server. Bounded by ctx.
func (a *Agent) Shutdown(ctx context.Context) error {
	a.API.SetShuttingDown() // readiness fails first, so balancers drain us
	if a.QUIC != nil {
		// First, so media nodes move to another agent at once.
		_ = a.QUIC.Close()
	}
	err := a.Node.Shutdown(ctx)
	hctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if herr := a.http.Shutdown(hctx); herr != nil {
		_ = a.http.Close()
	}
	return err
}
