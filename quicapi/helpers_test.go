package quicapi_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/quicapi"
	"github.com/switchyard/switchyard/transport"
)

const pollTimeout = 20 * time.Second

// newCluster starts n agents with a failure window of window (0: default)
// and optional QUIC tweaks.
func newCluster(t testing.TB, n int, window time.Duration, q func(*quicapi.ServerConfig)) *testcluster.Cluster {
	t.Helper()
	return testcluster.New(t, n, testcluster.Options{Mutate: func(i int, c *agent.Config) {
		c.FailureWindow = window
		if q != nil {
			q(&c.QUIC)
		}
	}})
}

// newClient connects a media-node client with a fresh certificate of the
// cluster's CA to addrs.
func newClient(t testing.TB, c *testcluster.Cluster, name string, addrs ...string) *transport.Client {
	t.Helper()
	cl, err := transport.NewClient(transport.ClientConfig{Addrs: addrs, TLS: c.Identity(name).ClientConfig(transport.ALPN),
		Logger: testcluster.Logger(t), IdleTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

func register(t testing.TB, cl *transport.Client, id string, capacity int64, inc uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pollTimeout)
	defer cancel()
	s, err := cl.Register(ctx, transport.ServerInfo{ID: id, Capacity: capacity, Incarnation: inc, Region: "r1"})
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	if s.GetId() != id || s.GetState() != fsmpb.ServerState_SERVER_STATE_ACTIVE {
		t.Fatalf("registered %v", s)
	}
}

// reporter calls Report on cl every interval until stopped.
type reporter struct {
	stop chan struct{}
	wg   sync.WaitGroup
}

func startReporter(cl *transport.Client, interval time.Duration, load func() transport.Load) *reporter {
	r := &reporter{stop: make(chan struct{})}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			_ = cl.Report(load())
			select {
			case <-r.stop:
				return
			case <-t.C:
			}
		}
	}()
	return r
}

func (r *reporter) Stop() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	r.wg.Wait()
}

// leaderNode waits for the leader and returns it.
func leaderNode(t testing.TB, c *testcluster.Cluster) *testcluster.Node {
	t.Helper()
	return c.WaitLeader(pollTimeout)
}

// waitView polls until node's view holds a report of server id with seq at
// least minSeq.
func waitView(t testing.TB, nd *testcluster.Node, id string, minSeq uint64) {
	t.Helper()
	testcluster.Eventually(t, pollTimeout, func() error {
		e, ok := nd.Agent.Loads.Get(id)
		if !ok {
			return fmt.Errorf("%s has no report of %s", nd.ID, id)
		}
		if e.Seq < minSeq {
			return fmt.Errorf("%s has seq %d of %s, want ≥ %d", nd.ID, e.Seq, id, minSeq)
		}
		return nil
	})
}

func serverState(nd *testcluster.Node, id string) (fsmpb.ServerState, uint64) {
	s, ok := nd.Agent.Node.FSM().Server(id)
	if !ok {
		return fsmpb.ServerState_SERVER_STATE_UNSPECIFIED, 0
	}
	return s.GetState(), s.GetIncarnation()
}

func datagrams(nd *testcluster.Node, result string) float64 {
	return testutil.ToFloat64(nd.Agent.QUIC.Metrics().Datagrams.WithLabelValues(result))
}
