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

// commits reports whether the refusal err of request r is committed. A
// not_found is committed only for a request pinned to a server that is
// not registered (registered(id) false): a pick among the servers of one
// SFU kind answers not_found for a registered server of another kind
// too, and that refusal is not the server's absence.
func (rc refusalCommits) commits(r *AllocateRequest, err error, registered func(id string) bool) bool {
	code := errcode.Code(err)
	return rc.momentary && errcode.Momentary(code) ||
		rc.unregistered && r.Server != "" && errors.Is(err, fsm.ErrNotFound) && !registered(r.Server)
}

// registered reports whether the state machine holds server id.
func (n *Node) registered(id string) bool {
	_, ok := n.fsm.Server(id)
	return ok
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
