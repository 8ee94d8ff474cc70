package cluster

import (
	"github.com/switchyard/switchyard/placement"
)

// pick places r: through the placement index, or, when the request names
// an SFU kind, with the policy over the servers of that kind (read from
// the index; this costs a pass over the fleet, so room placements that name
// a kind do not yet scale like the other requests).
func (ls *leaderState) pick(pol *placement.Policy, r *AllocateRequest) (string, error) {
	if r.SFU == "" {
		return ls.pix.ix.Pick(ls.placementRequest(r))
	}
	kinds := ls.n.fsm.ServerSFUs()
	all := ls.pix.ix.Candidates()
	out := make([]placement.Candidate, 0, len(all))
	for _, c := range all {
		if kinds[c.ID] == r.SFU {
			out = append(out, c)
		}
	}
	return pol.Pick(out, ls.placementRequest(r))
}
