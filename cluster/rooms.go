package cluster

import (
	"github.com/switchyard/switchyard/placement"
)

// sfuCandidates returns the candidates a request may be placed on: all of
// them, or (when the request names an SFU kind) a copy holding only the
// servers of that kind. Placement reads the copy; reservations still go to
// the full working view by id.
func (ls *leaderState) sfuCandidates(cands []placement.Candidate, r *AllocateRequest) []placement.Candidate {
	if r.SFU == "" {
		return cands
	}
	kinds := ls.n.fsm.ServerSFUs()
	out := make([]placement.Candidate, 0, len(cands))
	for _, c := range cands {
		if kinds[c.ID] == r.SFU {
			out = append(out, c)
		}
	}
	return out
}
