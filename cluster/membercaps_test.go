package cluster_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// A join names a member with the same caps as every other input: a
// member id or address that is too long, not printable or not host:port
// is refused before raft's configuration or the member table changes.
func TestAddVoterChecksItsInput(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{NoQUIC: true})
	ctx := testcluster.Context(t, 60*time.Second)
	c.WaitMembers(30 * time.Second)
	leader := c.WaitLeader(30 * time.Second)
	tests := []struct {
		name string
		m    *fsmpb.Member
	}{
		{"id too long", &fsmpb.Member{Id: strings.Repeat("n", 5008), RaftAddr: "127.0.0.1:1"}},
		{"escape in the id", &fsmpb.Member{Id: "n9\x1b[2J", RaftAddr: "127.0.0.1:1"}},
		{"escape in the HTTP address", &fsmpb.Member{Id: "n9", RaftAddr: "127.0.0.1:1", HttpAddr: "\x1b]0;x\a"}},
		{"escape in the HTTP address's host", &fsmpb.Member{Id: "n9", RaftAddr: "127.0.0.1:1", HttpAddr: "\x1b[2J:80"}},
		{"HTTP address without a port", &fsmpb.Member{Id: "n9", RaftAddr: "127.0.0.1:1", HttpAddr: "10.0.0.9"}},
		{"QUIC address too long", &fsmpb.Member{Id: "n9", RaftAddr: "127.0.0.1:1", QuicAddr: strings.Repeat("q", 600) + ":7601"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := leader.Agent.Node.AddVoter(ctx, tc.m)
			if !errors.Is(err, fsm.ErrInvalid) {
				t.Fatalf("join: %v, want invalid_argument", err)
			}
			if ms := leader.Agent.Node.Members(); len(ms) != 3 {
				t.Fatalf("members after a refused join: %+v", ms)
			}
			if _, ok := leader.Agent.Node.FSM().Member(tc.m.GetId()); ok {
				t.Fatal("the refused member entered the member table")
			}
		})
	}
}
