package cluster_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// Writes submitted with cluster.WithACLToken carry the token into the log,
// and Apply refuses them on every replica once the token is gone: a request
// the API authorized just before a revocation cannot commit after it.
func TestWritesCarryTheirACLToken(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{NoQUIC: true})
	ctx := testcluster.Context(t, 60*time.Second)
	c.WaitFeature(cluster.FeatureACLInApply, 30*time.Second)
	leader := c.WaitLeader(30 * time.Second)
	n := leader.Agent.Node
	if _, err := n.RegisterServer(ctx, &fsmpb.Server{Id: "m1", CapacityUnits: 100}); err != nil {
		t.Fatal(err)
	}
	if err := n.CreateACLToken(ctx, &fsmpb.AclToken{Id: "tok", SecretHash: strings.Repeat("a", 64), Role: fsm.RoleAllocator}, false); err != nil {
		t.Fatal(err)
	}
	as := cluster.WithACLToken(ctx, "tok")
	if _, _, err := n.Allocate(as, cluster.AllocateRequest{RequestID: "before", Room: "r", Units: 1}); err != nil {
		t.Fatalf("allocation with a live token: %v", err)
	}
	index, err := n.RevokeACLToken(ctx, "tok")
	if err != nil || index == 0 {
		t.Fatalf("revoke: index %d, %v", index, err)
	}
	writes := []struct {
		name string
		do   func(context.Context) error
	}{
		{"allocate", func(ctx context.Context) error {
			_, _, err := n.Allocate(ctx, cluster.AllocateRequest{RequestID: "after", Room: "r", Units: 1})
			return err
		}},
		{"release", func(ctx context.Context) error { _, err := n.Release(ctx, "before"); return err }},
		{"register", func(ctx context.Context) error {
			_, err := n.RegisterServer(ctx, &fsmpb.Server{Id: "m2", CapacityUnits: 1})
			return err
		}},
		{"drain", func(ctx context.Context) error {
			_, err := n.SetServerState(ctx, "m1", fsmpb.ServerState_SERVER_STATE_DRAINING, 0)
			return err
		}},
	}
	for _, w := range writes {
		if err := w.do(as); !errors.Is(err, fsm.ErrUnauthenticated) {
			t.Fatalf("%s with the revoked token: %v, want unauthenticated", w.name, err)
		}
	}
	// Nothing of it applied, on any replica.
	for _, nd := range c.Running() {
		testcluster.Eventually(t, 10*time.Second, func() error {
			f := nd.Agent.Node.FSM()
			if f.AppliedIndex() < index {
				return errors.New("revocation not applied yet")
			}
			if a, rf := f.Outcome("after"); a != nil || rf != nil {
				t.Fatalf("%s: the refused allocation left %v / %v", nd.ID, a, rf)
			}
			if a, ok := f.AllocationByRequest("before"); !ok || a.GetState() != fsmpb.AllocationState_ALLOCATION_STATE_ACTIVE {
				t.Fatalf("%s: the refused release ended the allocation: %v", nd.ID, a)
			}
			if _, ok := f.Server("m2"); ok {
				t.Fatalf("%s: the refused registration applied", nd.ID)
			}
			if s, _ := f.Server("m1"); s.GetState() != fsmpb.ServerState_SERVER_STATE_ACTIVE {
				t.Fatalf("%s: the refused drain applied: %v", nd.ID, s.GetState())
			}
			return nil
		})
	}
	// The same writes without a token (internal callers) still apply.
	if _, _, err := n.Allocate(ctx, cluster.AllocateRequest{RequestID: "after", Room: "r", Units: 1}); err != nil {
		t.Fatalf("allocation without a token: %v", err)
	}
}
