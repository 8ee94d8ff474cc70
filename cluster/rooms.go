package cluster

import (
	"fmt"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/placement"
)

// pick places r: through the placement index, or, when the request names
// an SFU kind, with the policy over the servers of that kind (read from
// the index; this costs a pass over the fleet, so room placements that name
// a kind do not yet scale like the other requests). Either way a not_found
// means that the server r pins is not registered: a registered server of
// another kind is refused as invalid.
func (ls *leaderState) pick(pol *placement.Policy, r *AllocateRequest) (string, error) {
	if r.SFU == "" {
		return ls.pix.ix.Pick(ls.placementRequest(r))
	}
	kinds := ls.n.fsm.ServerSFUs()
	if k, ok := kinds[r.Server]; ok && r.Server != "" && k != r.SFU {
		return "", fmt.Errorf("%w: server %q is a %s server, the request asks for %s", fsm.ErrInvalid, r.Server, k, r.SFU)
	}
	all := ls.pix.ix.Candidates()
	out := make([]placement.Candidate, 0, len(all))
	for _, c := range all {
		if kinds[c.ID] == r.SFU {
			out = append(out, c)
		}
	}
	return pol.Pick(out, ls.placementRequest(r))
}
