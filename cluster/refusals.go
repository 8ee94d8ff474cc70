package cluster

import (
	"slices"
	"time"

	"github.com/switchyard/switchyard/fsm/fsmpb"
)

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
