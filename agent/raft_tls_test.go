package agent_test

import (
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// Raft over mutual TLS: a three-node cluster bootstraps, commits through a
// follower and survives a leader change.
func TestRaftOverMutualTLS(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{RaftTLS: true})
	f := c.Followers()[0]
	cl := api.NewClient(f.Cfg.HTTPAddr).WithToken(c.Token)
	mustRegister(t, cl, "m1", 4)
	if _, err := cl.Allocate(ctxT(t, 20*time.Second), api.AllocateRequest{RequestID: "r1", Room: "x", Units: 1}); err != nil {
		t.Fatal(err)
	}
	c.Kill(c.WaitLeader(20 * time.Second))
	c.WaitLeader(20 * time.Second)
	if _, err := c.Client().Allocate(ctxT(t, 20*time.Second), api.AllocateRequest{RequestID: "r2", Room: "x", Units: 1}); err != nil {
		t.Fatal(err)
	}
	c.WaitConverged(20 * time.Second)
}
