package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// A leader whose replication position for a follower is stale may send
// that follower, which is ahead, an older snapshot (seen in the chaos
// suite with frequent snapshots). hashicorp/raft installs any snapshot
// it is sent: the follower's applied index went back below the entries
// its own snapshot had compacted away, and its next commit panicked
// ("log not found"), killing the agent. The state machine refuses such a
// snapshot instead; the follower keeps its state and keeps up. Here the
// older snapshot is sent by a raft transport of the test's, speaking as
// the leader, to a follower that has snapshotted and compacted past it.
func TestFollowerAheadRefusesAnOlderSnapshot(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{NoQUIC: true, Mutate: func(_ int, cfg *agent.Config) {
		cfg.SnapshotThreshold = 16
		cfg.TrailingLogs = 8
		cfg.SnapshotInterval = 200 * time.Millisecond
	}})
	leader := c.WaitLeader(30 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := c.Client()
	if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 1000}); err != nil {
		t.Fatal(err)
	}
	allocate := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if _, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: fmt.Sprint("r", i), Room: "room", Units: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	allocate(0, 10)
	c.WaitConverged(30 * time.Second)
	var old bytes.Buffer
	if err := fsm.WriteState(&old, leader.Agent.Node.FSM().Export()); err != nil {
		t.Fatal(err)
	}
	oldIndex := leader.Agent.Node.Status().AppliedIndex

	// The follower moves well past it, snapshots and compacts.
	allocate(10, 80)
	c.WaitConverged(30 * time.Second)
	follower := c.Followers()[0]
	testcluster.Eventually(t, 30*time.Second, func() error {
		if last := testcluster.LastSnapshotIndex(t, follower.Cfg.DataDir); last < oldIndex+8+1 {
			return fmt.Errorf("%s's latest snapshot (index %d) does not compact past index %d yet", follower.ID, last, oldIndex)
		}
		return nil
	})

	st := leader.Agent.Node.Status()
	trans, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 10*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer trans.Close()
	var servers []raft.Server
	for _, nd := range c.Nodes {
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(nd.ID), Address: raft.ServerAddress(nd.Cfg.RaftAddr)})
	}
	req := &raft.InstallSnapshotRequest{
		RPCHeader:          raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(leader.ID), Addr: []byte(trans.LocalAddr())},
		SnapshotVersion:    raft.SnapshotVersionMax,
		Term:               st.Term,
		LastLogIndex:       oldIndex,
		LastLogTerm:        st.Term,
		Configuration:      raft.EncodeConfiguration(raft.Configuration{Servers: servers}),
		ConfigurationIndex: 1,
		Size:               int64(old.Len()),
	}
	var resp raft.InstallSnapshotResponse
	err = trans.InstallSnapshot(raft.ServerID(follower.ID), raft.ServerAddress(follower.Cfg.RaftAddr), req, &resp, bytes.NewReader(old.Bytes()))
	if err == nil && resp.Success {
		t.Fatalf("%s (applied %d) installed a snapshot of index %d", follower.ID, follower.Agent.Node.Status().AppliedIndex, oldIndex)
	}
	// It keeps its state and keeps up with new entries.
	allocate(80, 100)
	c.WaitConverged(60 * time.Second)
	if n := follower.Agent.Node.Status().AppliedIndex; n <= oldIndex {
		t.Fatalf("%s went back to index %d", follower.ID, n)
	}
}
