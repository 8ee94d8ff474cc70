package cluster

import (
	"errors"
	"slices"
	"time"

	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// refusalsRecheck is how often the decision loop re-reads whether every
// voter understands committed refusals.
const refusalsRecheck = time.Second

// refusalCommits says which refusals this leader commits under their
// request id (every voter understands them).
type refusalCommits struct {
	momentary    bool // FeatureCommittedRefusals: errcode.Momentary codes
	unregistered bool // FeatureCommittedUnregistered: a pinned server not registered
}

// commits reports whether the refusal err of request r is committed (a
// not_found of a pinned request means its server is not registered: see
// pick).
func (rc refusalCommits) commits(r *AllocateRequest, err error) bool {
	return rc.momentary && errcode.Momentary(errcode.Code(err)) ||
		rc.unregistered && r.Server != "" && errors.Is(err, fsm.ErrNotFound)
}

// commitRefusals reports which refusals this leader commits. Owned by the
// decision loop.
func (ls *leaderState) commitRefusals() refusalCommits {
	if now := time.Now(); now.Sub(ls.refusalsAt) >= refusalsRecheck {
		on := ls.n.featureOn(FeatureCommittedRefusals)
		ls.refusals = refusalCommits{momentary: on, unregistered: on && ls.n.featureOn(FeatureCommittedUnregistered)}
		ls.refusalsAt = now
	}
	return ls.refusals
}

// sameMember reports whether two member entries record the same
// addresses and features.
func sameMember(a, b *fsmpb.Member) bool {
	return a.GetRaftAddr() == b.GetRaftAddr() && a.GetHttpAddr() == b.GetHttpAddr() &&
		a.GetQuicAddr() == b.GetQuicAddr() && slices.Equal(a.GetFeatures(), b.GetFeatures())
}
