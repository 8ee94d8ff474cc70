package cluster

import (
	"slices"
	"time"

	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// Features a member's binary understands, recorded in its member entry
// (fsmpb.Member.features). A leader uses a feature only while every voter
// lists it, so in the middle of a rolling upgrade the cluster keeps to
// what its oldest member applies the same way.
const (
	// FeatureCommittedRefusals: the leader commits momentary refusals
	// (fsmpb.Refusal) so that every later copy of a refused request gets
	// the same answer.
	FeatureCommittedRefusals = "committed_refusals"
)

// Features lists the features this binary understands.
func Features() []string { return []string{FeatureCommittedRefusals} }

// MaxFeatures and MaxFeatureLen bound a member entry's feature list.
const (
	MaxFeatures   = 32
	MaxFeatureLen = 64
)

// featureOn reports whether every voter's member entry lists feature.
func (n *Node) featureOn(feature string) bool {
	vs := n.voters()
	if len(vs) == 0 {
		return false
	}
	for _, v := range vs {
		m, ok := n.fsm.Member(string(v.ID))
		if !ok || !slices.Contains(m.GetFeatures(), feature) {
			return false
		}
	}
	return true
}

// refusalsRecheck is how often the decision loop re-reads whether every
// voter understands committed refusals.
const refusalsRecheck = time.Second

// commitRefusals reports whether this leader commits momentary refusals:
// every voter understands them. Owned by the decision loop.
func (ls *leaderState) commitRefusals() bool {
	if now := time.Now(); now.Sub(ls.refusalsAt) >= refusalsRecheck {
		ls.refusalsOn, ls.refusalsAt = ls.n.featureOn(FeatureCommittedRefusals), now
	}
	return ls.refusalsOn
}

// sameMember reports whether two member entries record the same
// addresses and features.
func sameMember(a, b *fsmpb.Member) bool {
	return a.GetRaftAddr() == b.GetRaftAddr() && a.GetHttpAddr() == b.GetHttpAddr() &&
		a.GetQuicAddr() == b.GetQuicAddr() && slices.Equal(a.GetFeatures(), b.GetFeatures())
}
