// Package agent assembles one allocator process: the raft node (cluster),
// the HTTP admin API (api) and, from issue #3 on, the QUIC listener for media
// nodes. `switchyard agent`, `switchyard dev` and the multi-node tests all
// start agents through Start, so they exercise the same wiring.
package agent

import (
	"context"
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
)

// Config is an agent's configuration: the node's plus what the agent adds.
type Config struct {
	cluster.Config
}

// Agent is a running allocator process.
type Agent struct {
	Node *cluster.Node
	API  *api.Handler
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
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on http address %s: %w", cfg.HTTPAddr, err)
	}
	if cfg.Peers == nil {
		pc := api.NewClient()
		pc.Retry = false
		cfg.Peers = pc
	}
	a := &Agent{log: log, ln: ln, done: make(chan error, 1)}
	// The handler is swapped in once the node exists; until then probes get
	// 503 so bootstrapping peers simply retry.
	var handler http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	}
	go func() {
		err := a.http.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		a.done <- err
	}()

	a.Node, err = cluster.Open(ctx, cfg.Config)
	if err != nil {
		_ = a.http.Close()
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.API = api.NewHandler(a.Node, log.With("node", cfg.ID), reg)
	close(ready)
	return a, nil
}

// HTTPAddr is the address the admin API listens on.
func (a *Agent) HTTPAddr() string { return a.ln.Addr().String() }

// Shutdown transfers leadership if this agent leads, then stops raft and
// the HTTP server. Bounded by ctx.
func (a *Agent) Shutdown(ctx context.Context) error {
	err := a.Node.Shutdown(ctx)
	hctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if herr := a.http.Shutdown(hctx); herr != nil {
		_ = a.http.Close()
	}
	return err
}
