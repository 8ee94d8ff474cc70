package api_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// silentAgent accepts connections and never answers, as a frozen agent
// (or one whose packets are dropped) does: an attempt sent to it may be
// acted on later.
func silentAgent(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	return ln.Addr().String()
}

// closedPort is an address that refuses connections.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// TestMomentaryRefusalAfterUnansweredAttempt: a refusal for want of
// capacity settles a request only when no earlier attempt of it may still
// be acted on. After an attempt that went unanswered (an agent that took
// the request and said nothing), the SDK reports the outcome unknown
// (retryable: ask again with the same request id); after a connection
// that was refused, or with no earlier attempt, the refusal stands.
// The cluster here announces no features, as a release before committed
// refusals did (see TestCommittedRefusalAfterUnansweredAttempt).
func TestMomentaryRefusalAfterUnansweredAttempt(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{NoQUIC: true, Mutate: func(_ int, c *agent.Config) { c.Features = []string{} }})
	addr := c.Nodes[0].Cfg.HTTPAddr
	ctx := testcluster.Context(t, time.Minute)
	if _, err := c.Client().RegisterServer(ctx, api.RegisterServerRequest{ID: "s1", Capacity: 1}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		addrs    []string
		settled  bool
		attempts int64
	}{
		{"no earlier attempt", []string{addr}, true, 1},
		{"after a refused connection", []string{closedPort(t), addr}, true, 2},
		{"after an unanswered attempt", []string{silentAgent(t), addr}, false, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := api.NewClient(tc.addrs...).WithToken(c.Token)
			cl.AttemptTimeout = 300 * time.Millisecond
			_, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: "r-" + tc.name, Room: "room", Units: 2})
			if n := cl.Attempts.Load(); n < tc.attempts {
				t.Fatalf("%d attempts, want at least %d", n, tc.attempts)
			}
			var ae *api.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("got %v, want an agent's answer", err)
			}
			if tc.settled {
				if ae.Body.Code != "insufficient_capacity" || api.IsRetryable(err) {
					t.Fatalf("got %q (retryable %v): %v, want the refusal", ae.Body.Code, api.IsRetryable(err), err)
				}
				return
			}
			if ae.Body.Code != "unknown_outcome" || !api.IsRetryable(err) || !errors.Is(err, errcode.ErrUnknownOutcome) ||
				!strings.Contains(ae.Body.Error, "insufficient capacity") {
				t.Fatalf("got %q (retryable %v): %v, want an unknown outcome naming the refusal", ae.Body.Code, api.IsRetryable(err), err)
			}
		})
	}
}

// TestCommittedRefusalAfterUnansweredAttempt: a refusal the leader
// committed under the request id is what every copy of the request gets,
// so it settles the request even after an unanswered attempt, and says so.
func TestCommittedRefusalAfterUnansweredAttempt(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{NoQUIC: true})
	c.WaitFeature(cluster.FeatureCommittedRefusals, 30*time.Second)
	ctx := testcluster.Context(t, time.Minute)
	if _, err := c.Client().RegisterServer(ctx, api.RegisterServerRequest{ID: "s1", Capacity: 1}); err != nil {
		t.Fatal(err)
	}
	cl := api.NewClient(silentAgent(t), c.Nodes[0].Cfg.HTTPAddr).WithToken(c.Token)
	cl.AttemptTimeout = 300 * time.Millisecond
	_, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: "r1", Room: "room", Units: 2})
	var ae *api.APIError
	if n := cl.Attempts.Load(); n < 2 || !errors.As(err, &ae) {
		t.Fatalf("%d attempts, %v; want an agent's answer after an unanswered attempt", n, err)
	}
	if ae.Body.Code != "insufficient_capacity" || !ae.Body.Committed || api.IsRetryable(err) {
		t.Fatalf("got %q (committed %v, retryable %v): %v, want the committed refusal", ae.Body.Code, ae.Body.Committed, api.IsRetryable(err), err)
	}
}

// TestAllocationHedgedPastASilentAgent: an allocation whose first agent
// never answers is sent to the next agent after a quarter of the attempt
// deadline, without waiting for that deadline: it is granted well before
// the first attempt would have given up (the call's own deadline is
// shorter than one attempt's), and once.
func TestAllocationHedgedPastASilentAgent(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{NoQUIC: true})
	ctx := testcluster.Context(t, time.Minute)
	if _, err := c.Client().RegisterServer(ctx, api.RegisterServerRequest{ID: "s1", Capacity: 10}); err != nil {
		t.Fatal(err)
	}
	cl := api.NewClient(silentAgent(t), c.Nodes[0].Cfg.HTTPAddr).WithToken(c.Token)
	// Hedged after 3 s; the call gives up before the first attempt would
	// (and before the HTTP client's own 15 s timeout).
	cl.AttemptTimeout = 12 * time.Second
	callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	a, err := cl.Allocate(callCtx, api.AllocateRequest{RequestID: "h1", Room: "room", Units: 2})
	if err != nil {
		t.Fatalf("allocation with a silent first agent, within less than one attempt deadline: %v", err)
	}
	if n := cl.Attempts.Load(); n != 2 {
		t.Fatalf("%d attempts, want 2 (the silent one and its hedge)", n)
	}
	// The hedge's agent answered: the client sticks to it.
	again, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: "h1", Room: "room", Units: 2})
	if err != nil || !again.Duplicate || again.ID != a.ID || cl.Attempts.Load() != 3 {
		t.Fatalf("repeat: %+v %v after %d attempts, want the same grant from the answering agent", again, err, cl.Attempts.Load())
	}
	s, err := c.Client().Servers(ctx, true)
	if err != nil || len(s) != 1 || s[0].Used != 2 {
		t.Fatalf("servers %+v %v: want 2 units used once", s, err)
	}
}
