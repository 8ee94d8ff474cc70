package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// A member removed, wiped and started again at once can be sent, by the
// removal's last replication, a snapshot whose configuration and member
// table still name it. It must still ask to be let in, and be, also when
// it is restarted before it first asked (it then starts with state): here
// the stale snapshot is sent to the wiped node as soon as it starts, by a
// raft transport of the test's speaking as the leader of before.
func TestWipedMemberRejoinsDespiteAStaleSnapshot(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprintf("restarted=%v", restart), func(t *testing.T) { wipedMemberRejoins(t, restart) })
	}
}

func wipedMemberRejoins(t *testing.T, restart bool) {
	c := testcluster.New(t, 3)
	leader := c.WaitLeader(30 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := c.Client().RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 10}); err != nil {
		t.Fatal(err)
	}
	c.WaitConverged(30 * time.Second)

	// What the leader would have sent before the removal: its state and a
	// configuration that lists every node.
	var state bytes.Buffer
	if err := fsm.WriteState(&state, leader.Agent.Node.FSM().Export()); err != nil {
		t.Fatal(err)
	}
	st := leader.Agent.Node.Status()
	var servers []raft.Server
	for _, nd := range c.Nodes {
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(nd.ID), Address: raft.ServerAddress(nd.Cfg.RaftAddr)})
	}

	gone := c.Followers()[0]
	if err := leader.Agent.Node.RemovePeer(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	c.Stop(gone)
	if err := os.RemoveAll(gone.Cfg.DataDir); err != nil {
		t.Fatal(err)
	}
	c.Start(gone)

	trans, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 10*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer trans.Close()
	req := &raft.InstallSnapshotRequest{
		RPCHeader:          raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(leader.ID), Addr: []byte(trans.LocalAddr())},
		SnapshotVersion:    raft.SnapshotVersionMax,
		Term:               st.Term,
		LastLogIndex:       st.AppliedIndex,
		LastLogTerm:        st.Term,
		Configuration:      raft.EncodeConfiguration(raft.Configuration{Servers: servers}),
		ConfigurationIndex: 1,
		Size:               int64(state.Len()),
	}
	var resp raft.InstallSnapshotResponse
	if err := trans.InstallSnapshot(raft.ServerID(gone.ID), raft.ServerAddress(gone.Cfg.RaftAddr), req, &resp, bytes.NewReader(state.Bytes())); err != nil || !resp.Success {
		t.Fatalf("install the stale snapshot on %s: %v (success %v)", gone.ID, err, resp.Success)
	}
	if _, ok := gone.Agent.Node.FSM().Member(gone.ID); !ok {
		t.Fatalf("%s does not hold its old member entry after the stale snapshot", gone.ID)
	}
	for _, m := range leader.Agent.Node.Status().Members {
		if m.ID == gone.ID {
			// It asked before the snapshot arrived (its first ask is 0.5 s
			// after its start): this run shows the end state only.
			t.Logf("%s was let in before the stale snapshot arrived", gone.ID)
		}
	}
	if restart {
		c.Kill(gone)
		c.Start(gone)
	}

	// It is let in again as a voter (in the configuration the old leader,
	// a voter throughout, holds) and catches up.
	testcluster.Eventually(t, 60*time.Second, func() error {
		var ids []string
		for _, m := range leader.Agent.Node.Status().Members {
			ids = append(ids, m.ID+"/"+m.Suffrage)
		}
		if !slices.Contains(ids, gone.ID+"/Voter") {
			return fmt.Errorf("members %v", ids)
		}
		return nil
	})
	c.WaitConverged(60 * time.Second)
}
