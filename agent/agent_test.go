package agent_test

import (
	"context"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/testcluster"
)

func TestThreeNodeBootstrapAndAllocate(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f := c.Followers()[0]
	cl := api.NewClient(f.Cfg.HTTPAddr).WithToken(c.Token)
	if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 10}); err != nil {
		t.Fatal(err)
	}
	a, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: "r1", Room: "room", Units: 3})
	if err != nil {
		t.Fatal(err)
	}
	if a.Server != "m1" || a.Units != 3 {
		t.Fatalf("allocation %+v", a)
	}
	c.WaitConverged(5 * time.Second)
}
