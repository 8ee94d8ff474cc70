package cluster

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestWeighSilence checks the rule that lets a follower start an election
// before raft's timers when a majority of voters has not heard from the
// leader for a heartbeat timeout (failover.go).
func TestWeighSilence(t *testing.T) {
	const ht = 150 * time.Millisecond
	self := PeerInfo{ID: "n2", State: "Follower", Term: 5, LeaderID: "n1", LeaderSilentMs: 151, LastIndex: 100, LastLogTerm: 3}
	follower := func(id, leader string, silent int64, idx uint64) PeerInfo {
		return PeerInfo{ID: id, State: "Follower", Term: 5, LeaderID: leader, LeaderSilentMs: silent, LastIndex: idx, LastLogTerm: 3}
	}
	candidate := func(id string, silent int64, idx uint64) PeerInfo {
		return PeerInfo{ID: id, State: "Candidate", Term: 5, LeaderSilentMs: silent, LastIndex: idx, LastLogTerm: 3}
	}
	for _, tc := range []struct {
		name     string
		others   []PeerInfo
		voters   int
		majority bool
		best     string
		recheck  time.Duration
		selfTerm uint64 // this node's current term (the silent leader's is 5)
	}{
		{"both silent, equal logs: the lower id starts", []PeerInfo{follower("n3", "n1", 160, 100)}, 3, true, "n2", ht, 5},
		{"the other has the newer log", []PeerInfo{follower("n3", "n1", 160, 101)}, 3, true, "n3", ht, 5},
		{"the other is close to a timeout: ask again when it gets there", []PeerInfo{follower("n3", "n1", 100, 100)}, 3, false, "", 52 * time.Millisecond, 5},
		{"the leader still talks to the other", []PeerInfo{follower("n3", "n1", 10, 100)}, 3, false, "", ht, 5},
		{"the other follows a newer leader", []PeerInfo{{ID: "n3", State: "Follower", Term: 6, LeaderID: "n4", LeaderSilentMs: 3, LastIndex: 100, LastLogTerm: 3}}, 3, false, "", ht, 5},
		{"an answer without a silence (earlier release)", []PeerInfo{follower("n3", "n1", 0, 100)}, 3, false, "", ht, 5},
		{"nobody answered", nil, 3, false, "", ht, 5},
		{"a silent candidate with an equal log: this follower starts", []PeerInfo{candidate("n3", 200, 100)}, 3, true, "n2", ht, 5},
		{"a silent candidate with a newer log: left to raft", []PeerInfo{candidate("n3", 200, 101)}, 3, true, "", ht, 5},
		{"a candidate with a log of a newer term: left to raft", []PeerInfo{{ID: "n3", State: "Candidate", Term: 5, LeaderSilentMs: 200, LastIndex: 90, LastLogTerm: 4}}, 3, true, "", ht, 5},
		{"a candidate of a newer term (another survivor's early election): not contested", []PeerInfo{{ID: "n3", State: "Candidate", Term: 6, LeaderSilentMs: 200, LastIndex: 100, LastLogTerm: 3}}, 3, true, "", ht, 5},
		{"a candidate that started the early election, its term not yet raised: not contested", []PeerInfo{{ID: "n3", State: "Candidate", Term: 5, EarlyElectionTerm: 5, LeaderSilentMs: 200, LastIndex: 100, LastLogTerm: 3}}, 3, true, "", ht, 5},
		{"an early election against an older leader does not count", []PeerInfo{{ID: "n3", State: "Follower", Term: 5, EarlyElectionTerm: 4, LeaderID: "n1", LeaderSilentMs: 200, LastIndex: 100, LastLogTerm: 3}}, 3, true, "n2", ht, 5},
		{"a follower in a newer term (a vote it refused): not contested", []PeerInfo{{ID: "n3", State: "Follower", Term: 6, LeaderSilentMs: 200, LastIndex: 100, LastLogTerm: 3}}, 3, true, "", ht, 5},
		{"this node is in a newer term itself", []PeerInfo{follower("n3", "n1", 160, 100)}, 3, true, "", ht, 6},
		{"five voters, two silent: no majority", []PeerInfo{follower("n3", "n1", 160, 100), follower("n4", "n1", 5, 100)}, 5, false, "", ht, 5},
		{"five voters, three silent", []PeerInfo{follower("n3", "n1", 160, 100), follower("n4", "n1", 170, 100), follower("n5", "n1", 5, 100)}, 5, true, "n2", ht, 5},
		{"the leader's own answer does not count as a silence", []PeerInfo{{ID: "n1", State: "Follower", Term: 5, LeaderSilentMs: 5, LastIndex: 100, LastLogTerm: 3}}, 3, false, "", ht, 5},
		{"the silent leader answered: it runs, nobody starts", []PeerInfo{follower("n3", "n1", 160, 100), {ID: "n1", State: "Leader", Term: 5, LeaderID: "n1", LastIndex: 100, LastLogTerm: 3}}, 3, true, "", ht, 5},
		{"a voter that just voted in a newer term (its silence reset)", []PeerInfo{follower("n3", "n1", 160, 100), follower("n4", "n1", 170, 100), {ID: "n5", State: "Follower", Term: 6, LeaderSilentMs: 2, LastIndex: 100, LastLogTerm: 3}}, 5, true, "", ht, 5},
		{"a voter that follows another leader", []PeerInfo{follower("n3", "n1", 160, 100), follower("n4", "n1", 170, 100), {ID: "n5", State: "Follower", Term: 6, LeaderID: "n4", LeaderSilentMs: 3, LastIndex: 100, LastLogTerm: 3}}, 5, true, "", ht, 5},
		{"a voter that follows another leader, no majority yet", []PeerInfo{{ID: "n3", State: "Follower", Term: 6, LeaderID: "n4", LeaderSilentMs: 3, LastIndex: 100, LastLogTerm: 3}}, 5, false, "", ht, 5},
		{"ask again no sooner than the poll interval", []PeerInfo{follower("n3", "n1", 148, 100)}, 3, false, "", fastFailoverPoll, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			me := self
			me.Term = tc.selfTerm
			v := weighSilence(me, tc.others, tc.voters, "n1", 5, ht)
			if v.majority != tc.majority || v.recheck != tc.recheck || (tc.majority && v.best != tc.best) {
				t.Fatalf("got majority %v best %q recheck %v, want %v %q %v (%s)", v.majority, v.best, v.recheck, tc.majority, tc.best, tc.recheck, v.why)
			}
		})
	}
}

// A leadership transfer that raft reports as not completed (plain errors)
// is a retryable leadership_lost; the errors already mapped pass unchanged.
func TestTransferErr(t *testing.T) {
	for _, tc := range []struct {
		in   error
		want error
	}{
		{nil, nil},
		{errors.New("leadership transfer timeout"), ErrLeadershipLost},
		{errors.New("failed to make TimeoutNow RPC"), ErrLeadershipLost},
		{ErrNotLeader, ErrNotLeader},
		{ErrShutdown, ErrShutdown},
		{fmt.Errorf("%w: ctx", ErrUnknownOutcome), ErrUnknownOutcome},
	} {
		got := transferErr(tc.in)
		if (tc.want == nil) != (got == nil) || (tc.want != nil && !errors.Is(got, tc.want)) {
			t.Errorf("transferErr(%v) = %v, want %v", tc.in, got, tc.want)
		}
		if tc.in != nil && errors.Is(tc.want, ErrLeadershipLost) && !errors.Is(got, ErrLeadershipLost) {
			t.Errorf("%v not retryable", tc.in)
		}
	}
}
