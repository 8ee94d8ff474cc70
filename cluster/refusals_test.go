package cluster_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// A request refused for want of capacity stays refused, with the same
// answer, when a copy of it comes back after the capacity was freed: the
// leader committed the refusal, every replica holds it, and a new request
// id is granted as usual.
func TestCommittedRefusalHoldsForLaterCopies(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{NoQUIC: true})
	cl := c.Client()
	ctx := testcluster.Context(t, 60*time.Second)
	c.WaitFeature(cluster.FeatureCommittedRefusals, 30*time.Second)
	// The members' list says so too.
	ms, err := cl.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if !slices.Contains(m.Features, cluster.FeatureCommittedRefusals) {
			t.Fatalf("member %s lists features %v", m.ID, m.Features)
		}
	}
	// A release without the feature cannot join as a new voter: it would
	// skip the refusals in the log and diverge.
	leader := c.WaitLeader(30 * time.Second)
	err = leader.Agent.Node.AddVoter(ctx, &fsmpb.Member{Id: "old-release", RaftAddr: "127.0.0.1:1"})
	if !errors.Is(err, fsm.ErrInvalid) || !strings.Contains(err.Error(), cluster.FeatureCommittedRefusals) {
		t.Fatalf("join of a release without %s: %v", cluster.FeatureCommittedRefusals, err)
	}
	if ms, err := cl.Members(ctx); err != nil || len(ms) != 3 {
		t.Fatalf("members after the refused join: %v, %v", ms, err)
	}
	if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: "fill", Room: "a", Units: 2}); err != nil {
		t.Fatal(err)
	}
	_, first := cl.Allocate(ctx, api.AllocateRequest{RequestID: "late", Room: "b", Units: 1})
	if !errors.Is(first, fsm.ErrCapacity) {
		t.Fatalf("allocation on a full fleet: %v, want insufficient capacity", first)
	}
	for _, nd := range c.Running() {
		testcluster.Eventually(t, 10*time.Second, func() error {
			if _, rf := nd.Agent.Node.FSM().Outcome("late"); rf == nil {
				return fmt.Errorf("%s holds no refusal of request late", nd.ID)
			}
			return nil
		})
	}
	if _, err := cl.Release(ctx, "fill"); err != nil {
		t.Fatal(err)
	}
	// The capacity is free: the same request id is refused as before, on
	// every agent (the SDK spreads its calls over them); a new id is granted.
	for _, addr := range c.Addrs() {
		one := api.NewClient(addr).WithToken(c.Token)
		_, err := one.Allocate(ctx, api.AllocateRequest{RequestID: "late", Room: "b", Units: 1})
		if !errors.Is(err, fsm.ErrCapacity) || err.Error() != first.Error() {
			t.Fatalf("copy of the refused request via %s: %v, want the first answer %v", addr, err, first)
		}
	}
	if _, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: "new", Room: "b", Units: 1}); err != nil {
		t.Fatalf("new request id: %v", err)
	}
	c.WaitConverged(30 * time.Second)
}

// A request pinned to a server that is not registered is refused with
// not_found, and the refusal is committed once every voter understands
// it: a copy that comes back after the server registered gets the same
// answer, not a grant. While a voter lacks the feature, the refusal is
// not committed and such a copy is granted (the behaviour of earlier
// releases).
func TestPinnedToUnregisteredServerRefusalHolds(t *testing.T) {
	for _, tc := range []struct {
		name      string
		features  []string // of the third node; nil: this release's
		committed bool
	}{
		{"every voter understands it", nil, true},
		{"a voter of an earlier release", []string{cluster.FeatureCommittedRefusals, cluster.FeatureForwardedPrincipal}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testcluster.New(t, 3, testcluster.Options{NoQUIC: true, Mutate: func(i int, cfg *agent.Config) {
				if i == 2 {
					cfg.Features = tc.features
				}
			}})
			cl := c.Client()
			ctx := testcluster.Context(t, 60*time.Second)
			c.WaitFeature(cluster.FeatureCommittedRefusals, 30*time.Second)
			if tc.committed {
				c.WaitFeature(cluster.FeatureCommittedUnregistered, 30*time.Second)
			}
			pinned := api.AllocateRequest{RequestID: "pin", Room: "r", Units: 1, Server: "m9"}
			_, first := cl.Allocate(ctx, pinned)
			var ae *api.APIError
			if !errors.Is(first, fsm.ErrNotFound) || !errors.As(first, &ae) || ae.Body.Committed != tc.committed {
				t.Fatalf("allocation pinned to an unregistered server: %v (%+v), want not_found, committed %v", first, ae, tc.committed)
			}
			if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: "m9", Capacity: 2}); err != nil {
				t.Fatal(err)
			}
			for _, addr := range c.Addrs() {
				a, err := api.NewClient(addr).WithToken(c.Token).Allocate(ctx, pinned)
				switch {
				case tc.committed && (!errors.Is(err, fsm.ErrNotFound) || err.Error() != first.Error()):
					t.Fatalf("copy via %s once m9 registered: %v %+v, want the first answer %v", addr, err, a, first)
				case !tc.committed && (err != nil || a.Server != "m9"):
					t.Fatalf("copy via %s once m9 registered, refusal not committed: %v %+v, want a grant on m9", addr, err, a)
				}
			}
			if _, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: "new", Room: "r", Units: 1, Server: "m9"}); err != nil {
				t.Fatalf("new request id: %v", err)
			}
			c.WaitConverged(30 * time.Second)
		})
	}
}
