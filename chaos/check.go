package chaos

import (
	"fmt"
	"sort"
	"time"

	"github.com/switchyard/switchyard/api"
)

// Invariant names, as they appear in the summary's violation counts.
const (
	InvLinearizable = "linearizable"    // allocate/release/read per request id
	InvLostAck      = "no_lost_ack"     // an acknowledged allocation survives
	InvDoubleGrant  = "no_double_grant" // one allocation id per request id
	InvCapacity     = "capacity"        // used ≤ capacity, and used = Σ active units
	InvStateHash    = "state_hash"      // every FSM has the same hash after healing
	InvFalseDown    = "no_false_down"   // no server marked down while it reported
)

// Invariants lists every invariant the suite checks, so a summary shows a
// zero for each one that held.
func Invariants() []string {
	return []string{InvLinearizable, InvLostAck, InvDoubleGrant, InvCapacity, InvStateHash, InvFalseDown}
}

// Violation is one broken invariant.
type Violation struct {
	Invariant string `json:"invariant"`
	Key       string `json:"key,omitempty"`
	Detail    string `json:"detail"`
}

func (v Violation) String() string {
	if v.Key == "" {
		return v.Invariant + ": " + v.Detail
	}
	return fmt.Sprintf("%s [%s]: %s", v.Invariant, v.Key, v.Detail)
}

// Final is the cluster state read (linearizably, from the leader) after
// healing.
type Final struct {
	Allocations []api.Allocation `json:"allocations"`
	Servers     []api.Server     `json:"servers"`
}

func (f Final) byRequest() map[string][]api.Allocation {
	m := map[string][]api.Allocation{}
	for _, a := range f.Allocations {
		m[a.RequestID] = append(m[a.RequestID], a)
	}
	return m
}

// ReadOps turns the final state into one read operation per request id of
// ops (absent when the final state has none), called at call and returning
// at ret, by client id client, for the linearizability check.
func ReadOps(ops []Op, f Final, client int, call, ret int64) []Op {
	byReq := f.byRequest()
	seen := map[string]bool{}
	var out []Op
	for _, op := range ops {
		if seen[op.Key] || op.Kind == KindRead {
			continue
		}
		seen[op.Key] = true
		r := Op{Client: client, Kind: KindRead, Key: op.Key, Call: call, Return: ret, Result: OK, State: StateAbsent}
		if as := byReq[op.Key]; len(as) > 0 {
			r.AllocID, r.State, r.Server = as[0].ID, as[0].State, as[0].Server
		}
		out = append(out, r)
	}
	return out
}

// CheckLostAcks reports acknowledged writes the final state does not
// reflect: an acknowledged allocation that is missing (or belongs to another
// request id), or that ended although no release of its request id was ever
// sent; and an acknowledged release whose allocation is still active.
func CheckLostAcks(ops []Op, f Final) []Violation {
	byID := map[string]api.Allocation{}
	for _, a := range f.Allocations {
		byID[a.ID] = a
	}
	releaseSent := map[string]bool{}
	for _, op := range ops {
		if op.Kind == KindRelease {
			releaseSent[op.Key] = true
		}
	}
	var out []Violation
	for _, op := range ops {
		if op.Result != OK {
			continue
		}
		switch op.Kind {
		case KindAllocate:
			a, ok := byID[op.AllocID]
			switch {
			case !ok:
				out = append(out, Violation{InvLostAck, op.Key, fmt.Sprintf("allocation %s acknowledged at %v (op %d) is not in the final state", op.AllocID, time.Duration(op.Return), op.Index)})
			case a.RequestID != op.Key:
				out = append(out, Violation{InvLostAck, op.Key, fmt.Sprintf("allocation %s acknowledged for this request id belongs to request id %q in the final state", op.AllocID, a.RequestID)})
			case a.State != StateActive && !releaseSent[op.Key]:
				out = append(out, Violation{InvLostAck, op.Key, fmt.Sprintf("allocation %s is %s in the final state but no release was ever sent", op.AllocID, a.State)})
			}
		case KindRelease:
			if a, ok := byID[op.AllocID]; ok && a.State == StateActive {
				out = append(out, Violation{InvLostAck, op.Key, fmt.Sprintf("release of %s acknowledged (op %d) but it is active in the final state", op.AllocID, op.Index)})
			}
		}
	}
	return out
}

// CheckDoubleGrants reports request ids for which more than one allocation
// id was ever seen: in acknowledged answers, or in the final state.
func CheckDoubleGrants(ops []Op, f Final) []Violation {
	ids := map[string]map[string]bool{}
	add := func(key, id string) {
		if id == "" {
			return
		}
		if ids[key] == nil {
			ids[key] = map[string]bool{}
		}
		ids[key][id] = true
	}
	for _, op := range ops {
		if op.Result == OK && op.Kind != KindRead {
			add(op.Key, op.AllocID)
		}
	}
	for _, a := range f.Allocations {
		add(a.RequestID, a.ID)
	}
	var out []Violation
	for key, set := range ids {
		if len(set) > 1 {
			var l []string
			for id := range set {
				l = append(l, id)
			}
			sort.Strings(l)
			out = append(out, Violation{InvDoubleGrant, key, fmt.Sprintf("granted %d allocations: %v", len(l), l)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// CheckCapacity reports servers whose used units exceed their capacity,
// whose active allocations add up to more than their capacity, or whose
// used units differ from the sum of their active allocations (the FSM's
// accounting drifted).
func CheckCapacity(f Final) []Violation {
	active := map[string]int64{}
	for _, a := range f.Allocations {
		if a.State == StateActive {
			active[a.Server] += a.Units
		}
	}
	var out []Violation
	known := map[string]bool{}
	for _, s := range f.Servers {
		known[s.ID] = true
		if s.Used > s.Capacity {
			out = append(out, Violation{InvCapacity, s.ID, fmt.Sprintf("used %d > capacity %d", s.Used, s.Capacity)})
		}
		if active[s.ID] > s.Capacity {
			out = append(out, Violation{InvCapacity, s.ID, fmt.Sprintf("active allocations hold %d units > capacity %d", active[s.ID], s.Capacity)})
		}
		if active[s.ID] != s.Used {
			out = append(out, Violation{InvCapacity, s.ID, fmt.Sprintf("used %d but active allocations hold %d units", s.Used, active[s.ID])})
		}
	}
	for srv, units := range active {
		if !known[srv] && units > 0 {
			out = append(out, Violation{InvCapacity, srv, fmt.Sprintf("active allocations (%d units) on an unregistered server", units)})
		}
	}
	return out
}

// CheckServerSamples checks servers read during the run (any node, stale
// reads allowed): a committed state may never show a server over capacity.
func CheckServerSamples(samples []api.Server) []Violation {
	var out []Violation
	for _, s := range samples {
		if s.Used > s.Capacity {
			out = append(out, Violation{InvCapacity, s.ID, fmt.Sprintf("sampled during the run: used %d > capacity %d", s.Used, s.Capacity)})
		}
	}
	return out
}

// NodeState is one node's answer to GET /v1/status after healing.
type NodeState struct {
	ID           string `json:"id"`
	AppliedIndex uint64 `json:"applied_index"`
	StateHash    string `json:"state_hash"`
	Term         uint64 `json:"term"`
	Err          string `json:"error,omitempty"`
}

// Converged reports whether every node answered with the same applied
// index (only then are their hashes comparable).
func Converged(ns []NodeState) bool {
	if len(ns) == 0 {
		return false
	}
	for _, n := range ns {
		if n.Err != "" || n.AppliedIndex != ns[0].AppliedIndex {
			return false
		}
	}
	return true
}

// CheckStateHashes reports nodes whose state hash differs from the others'
// at the same applied index, or, when the nodes never reached one applied
// index (converged false), that they did not converge.
func CheckStateHashes(ns []NodeState, converged bool) []Violation {
	if !converged {
		return []Violation{{Invariant: InvStateHash, Detail: fmt.Sprintf("nodes did not reach one applied index after healing: %+v", ns)}}
	}
	var out []Violation
	for _, n := range ns[1:] {
		if n.StateHash != ns[0].StateHash {
			out = append(out, Violation{InvStateHash, n.ID, fmt.Sprintf("hash %s at index %d, but %s has %s", n.StateHash, n.AppliedIndex, ns[0].ID, ns[0].StateHash)})
		}
	}
	return out
}

// Reporting is what a load generator observed of one media server: the
// times (history clock) at which it sent a load report that was accepted.
type Reporting struct {
	Server  string  `json:"server"`
	Reports []int64 `json:"reports_ns"`
}

// DownEvent is a server marked down; At is when the mark was committed
// (the server's state_changed_at, the leader's clock, converted to the
// history clock), not when it was seen.
type DownEvent struct {
	Server string `json:"server"`
	At     int64  `json:"at_ns"`
}

// CheckFalseDown reports servers marked down although they had a report
// accepted within window before the mark was committed: a server must have
// been silent for a whole failure-detection window to be marked down
// legitimately. slack (≥ 0) narrows the window at both ends for delivery
// delay and clock skew between the load generator and the leader.
func CheckFalseDown(reports []Reporting, downs []DownEvent, window, slack time.Duration) []Violation {
	byServer := map[string][]int64{}
	for _, r := range reports {
		byServer[r.Server] = append(byServer[r.Server], r.Reports...)
	}
	var out []Violation
	for _, d := range downs {
		rs := byServer[d.Server]
		sort.Slice(rs, func(i, j int) bool { return rs[i] < rs[j] })
		// Was there a gap of at least window before d.At? A report in
		// (d.At-window, d.At] means no.
		lo, hi := d.At-int64(window)+int64(slack), d.At-int64(slack)
		i := sort.Search(len(rs), func(i int) bool { return rs[i] > lo })
		if i < len(rs) && rs[i] <= hi {
			out = append(out, Violation{InvFalseDown, d.Server, fmt.Sprintf("marked down at %v but reported at %v (window %v)", time.Duration(d.At), time.Duration(rs[i]), window)})
		}
	}
	return out
}
