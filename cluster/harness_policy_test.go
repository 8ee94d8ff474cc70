package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/httpapi"
	"github.com/switchyard/switchyard/internal/ports"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// A minimal in-process cluster for the policy and provisioning tests: real
// raft over TCP loopback, real bolt files, the real HTTP API, and nothing
// else (no QUIC, no failure detector, so servers registered over HTTP stay
// active without load reports).

type pnode struct {
	id   string
	cfg  cluster.Config
	node *cluster.Node
	srv  *http.Server
}

type pcluster struct {
	t     testing.TB
	nodes []*pnode
}

func pfreeAddr(t testing.TB) string {
	t.Helper()
	return ports.Free(t, "tcp")
}

func plogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newPCluster starts n nodes that bootstrap together; mutate edits each
// node's config before it starts.
func newPCluster(t *testing.T, n int, mutate func(i int, c *cluster.Config)) *pcluster {
	return newPClusterTB(t, n, mutate)
}

// newPClusterTB is newPCluster for tests and benchmarks.
func newPClusterTB(t testing.TB, n int, mutate func(i int, c *cluster.Config)) *pcluster {
	t.Helper()
	pc := &pcluster{t: t}
	var joins []string
	for i := range n {
		id := fmt.Sprintf("n%d", i+1)
		cfg := cluster.Config{ID: id, DataDir: filepath.Join(t.TempDir(), id), RaftAddr: pfreeAddr(t), HTTPAddr: pfreeAddr(t),
			BootstrapExpect: n, Logger: plogger().With("node", id),
			// The relaxed timing of every test cluster (see testcluster.New).
			HeartbeatTimeout: testcluster.TestHeartbeat, ElectionTimeout: testcluster.TestElection, LeaderLeaseTimeout: testcluster.TestLease}
		joins = append(joins, cfg.HTTPAddr)
		pc.nodes = append(pc.nodes, &pnode{id: id, cfg: cfg})
	}
	for i, nd := range pc.nodes {
		nd.cfg.Join = joins
		pcl := api.NewClient()
		pcl.Retry = false
		nd.cfg.Peers = pcl
		if mutate != nil {
			mutate(i, &nd.cfg)
		}
	}
	for _, nd := range pc.nodes {
		pc.start(nd)
	}
	t.Cleanup(pc.close)
	pc.leader(15 * time.Second)
	return pc
}

func (pc *pcluster) start(nd *pnode) {
	pc.t.Helper()
	ln, err := net.Listen("tcp", nd.cfg.HTTPAddr)
	if err != nil {
		pc.t.Fatal(err)
	}
	// Until the node exists, answer "starting" so bootstrapping peers retry.
	var h atomic.Pointer[httpapi.Handler]
	nd.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := h.Load(); a != nil {
			a.ServeHTTP(w, r)
			return
		}
		http.Error(w, `{"error":"starting","code":"no_leader","retryable":true}`, http.StatusServiceUnavailable)
	})}
	go func() { _ = nd.srv.Serve(ln) }()
	nd.node, err = cluster.Open(context.Background(), nd.cfg)
	if err != nil {
		pc.t.Fatal(err)
	}
	h.Store(httpapi.NewHandler(nd.node, nd.node.FSM(), nd.cfg.Logger, nil))
}

func (pc *pcluster) stop(nd *pnode, kill bool) {
	if nd.node == nil {
		return
	}
	if kill {
		nd.node.Kill()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = nd.node.Shutdown(ctx)
	_ = nd.srv.Close()
	nd.node = nil
}

func (pc *pcluster) close() {
	for _, nd := range pc.nodes {
		pc.stop(nd, false)
	}
}

func (pc *pcluster) running() []*pnode {
	var out []*pnode
	for _, nd := range pc.nodes {
		if nd.node != nil {
			out = append(out, nd)
		}
	}
	return out
}

func (pc *pcluster) client() *api.Client {
	var addrs []string
	for _, nd := range pc.running() {
		addrs = append(addrs, nd.cfg.HTTPAddr)
	}
	cl := api.NewClient(addrs...)
	// Attempts get the deadline the test timing calls for, not the
	// production one: a loaded machine answers slowly without any fault.
	cl.AttemptTimeout = api.AttemptTimeoutFor(cluster.ForwardTimeout(testcluster.TestHeartbeat, testcluster.TestElection))
	return cl
}

// leader waits for a ready leader that every running node knows.
func (pc *pcluster) leader(timeout time.Duration) *pnode {
	pc.t.Helper()
	var leader *pnode
	peventually(pc.t, timeout, func() error {
		leader = nil
		for _, nd := range pc.running() {
			if nd.node.IsLeader() {
				leader = nd
			}
		}
		if leader == nil {
			return errors.New("no ready leader")
		}
		for _, nd := range pc.running() {
			if id, m, ok := nd.node.Leader(); !ok || id != leader.id || m == nil {
				return fmt.Errorf("%s does not know leader %s yet", nd.id, leader.id)
			}
		}
		if leader.node.FSM().ClusterID() == "" {
			return errors.New("cluster id not stamped yet")
		}
		return nil
	})
	return leader
}

// converged waits until every running node applied the same index and has
// the same state hash.
func (pc *pcluster) converged(timeout time.Duration) {
	pc.t.Helper()
	peventually(pc.t, timeout, func() error {
		var h string
		var idx uint64
		for i, nd := range pc.running() {
			f := nd.node.FSM()
			if i == 0 {
				h, idx = f.Hash(), f.AppliedIndex()
				continue
			}
			if f.Hash() != h || f.AppliedIndex() != idx {
				return fmt.Errorf("%s at %d, first node at %d", nd.id, f.AppliedIndex(), idx)
			}
		}
		return nil
	})
}

func peventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = fn(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("condition not met within %v: %v", timeout, err)
}

func pctx(t *testing.T, d time.Duration) context.Context { return pctxTB(t, d) }

func pctxTB(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
