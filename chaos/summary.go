package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"
)

// OpCounts counts operations by outcome.
type OpCounts struct {
	Invoked      int `json:"invoked"`
	Acknowledged int `json:"acknowledged"`
	Refused      int `json:"refused"`
	Unknown      int `json:"unknown"`
}

// Unavailability summarizes the time from each leader kill (or freeze) to
// the first acknowledged allocation invoked after it.
type Unavailability struct {
	// Kills counts the faults measured (leader kills, or leader freezes in
	// the freeze summary).
	Kills int     `json:"kills"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
	// NoAck counts kills after which no allocation was acknowledged before
	// the next leader kill (not in the percentiles).
	NoAck     int       `json:"no_ack"`
	SamplesMs []float64 `json:"samples_ms"`
}

// Elections counts raft terms seen by the monitor.
type Elections struct {
	FirstTerm uint64 `json:"first_term"`
	LastTerm  uint64 `json:"last_term"`
	// Steady is the fault-free phase at full load and SteadyElections the
	// term changes seen during it (spurious elections; the target is 0).
	SteadySeconds   float64 `json:"steady_seconds"`
	SteadyElections uint64  `json:"steady_elections"`
	SteadyOps       int     `json:"steady_acknowledged"`
}

// Summary is what a run prints and writes as JSON.
type Summary struct {
	Name    string  `json:"name"`
	Cluster string  `json:"cluster"`
	Nodes   int     `json:"nodes"`
	Seconds float64 `json:"seconds"`
	// Settings records how the run was configured (clients, retry policy,
	// agent flags, seed).
	Settings map[string]string `json:"settings"`

	Ops      OpCounts          `json:"operations"`
	OpsByKnd map[Kind]OpCounts `json:"operations_by_kind"`
	Faults   map[string]int    `json:"faults"`
	Failover Unavailability    `json:"unavailability_per_leader_kill"`
	// Freeze is the same measure for every leader freeze (SIGSTOP of the
	// leader: "pause-leader"), where nothing refuses connections and the
	// cluster relies on raft's timers and on forwarding failover.
	Freeze Unavailability `json:"unavailability_per_leader_freeze"`
	// Blackhole is the same measure for every blackholed leader (all its
	// packets dropped: "blackhole-leader"), where clients' attempts to it
	// end only by their deadlines.
	Blackhole Unavailability        `json:"unavailability_per_leader_blackhole"`
	Elect     Elections             `json:"elections"`
	Lin       LinearizabilityResult `json:"linearizability"`

	// Violations counts violations by invariant (every invariant is
	// listed, 0 when it held); Details lists up to 100 of them.
	Violations map[string]int `json:"violations"`
	Details    []Violation    `json:"violation_details,omitempty"`
	// Errors are failures of the run itself (a nemesis that could not act,
	// a cluster that did not recover after healing): not invariant
	// violations, but the run proves less.
	Errors []string `json:"errors,omitempty"`
	// Notes are remarks on how faults were injected.
	Notes []string `json:"notes,omitempty"`

	FinalNodes []NodeState `json:"final_nodes"`
	Files      []string    `json:"files,omitempty"`
}

// TotalViolations adds up every invariant's violations.
func (s *Summary) TotalViolations() int {
	n := 0
	for _, v := range s.Violations {
		n += v
	}
	return n
}

// AddViolations records vs.
func (s *Summary) AddViolations(vs []Violation) {
	for _, v := range vs {
		s.Violations[v.Invariant]++
		if len(s.Details) < 100 {
			s.Details = append(s.Details, v)
		}
	}
}

func countOps(ops []Op) (OpCounts, map[Kind]OpCounts) {
	var all OpCounts
	by := map[Kind]OpCounts{}
	for _, op := range ops {
		c := by[op.Kind]
		for _, x := range []*OpCounts{&all, &c} {
			x.Invoked++
			switch op.Result {
			case OK:
				x.Acknowledged++
			case Fail:
				x.Refused++
			default:
				x.Unknown++
			}
		}
		by[op.Kind] = c
	}
	return all, by
}

// percentile returns the p-quantile (nearest rank) of sorted xs.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(xs)))) - 1
	return xs[max(0, min(i, len(xs)-1))]
}

// LeaderKillUnavailability measures, for every "kill-leader" fault, the
// time from the kill to the return of the first acknowledged allocation
// invoked at or after it (as BenchmarkFailoverSIGKILL does), whatever
// other faults were injected meanwhile. A kill with no such allocation
// before the next leader kill counts as NoAck.
func LeaderKillUnavailability(ops []Op, faults []Fault) Unavailability {
	return faultUnavailability(ops, faults, "kill-leader")
}

// LeaderFreezeUnavailability is LeaderKillUnavailability for leader
// freezes ("pause-leader" faults; each measured until the next one).
func LeaderFreezeUnavailability(ops []Op, faults []Fault) Unavailability {
	return faultUnavailability(ops, faults, "pause-leader")
}

// LeaderBlackholeUnavailability is LeaderKillUnavailability for
// blackholed leaders ("blackhole-leader" faults).
func LeaderBlackholeUnavailability(ops []Op, faults []Fault) Unavailability {
	return faultUnavailability(ops, faults, "blackhole-leader")
}

// faultUnavailability measures every fault of the given kind (see
// LeaderKillUnavailability).
func faultUnavailability(ops []Op, faults []Fault, kind string) Unavailability {
	var u Unavailability
	var acks []Op
	for _, op := range ops {
		if op.Kind == KindAllocate && op.Result == OK {
			acks = append(acks, op)
		}
	}
	sort.Slice(acks, func(i, j int) bool { return acks[i].Call < acks[j].Call })
	for i, f := range faults {
		if f.Kind != kind {
			continue
		}
		u.Kills++
		until := int64(math.MaxInt64)
		for _, g := range faults[i+1:] {
			if g.Kind == kind {
				until = g.At
				break
			}
		}
		best := int64(-1)
		j := sort.Search(len(acks), func(j int) bool { return acks[j].Call >= f.At })
		for ; j < len(acks) && acks[j].Call < until; j++ {
			if best < 0 || acks[j].Return < best {
				best = acks[j].Return
			}
		}
		if best < 0 {
			u.NoAck++
			continue
		}
		u.SamplesMs = append(u.SamplesMs, float64(best-f.At)/float64(time.Millisecond))
	}
	s := slices.Clone(u.SamplesMs)
	slices.Sort(s)
	u.P50Ms, u.P99Ms = percentile(s, 0.5), percentile(s, 0.99)
	if len(s) > 0 {
		u.MaxMs = s[len(s)-1]
	}
	return u
}

// Print writes the human-readable summary.
func (s *Summary) Print(w io.Writer) {
	fmt.Fprintf(w, "== chaos %s: %d %s nodes, %.0fs\n", s.Name, s.Nodes, s.Cluster, s.Seconds)
	fmt.Fprintf(w, "operations: %d invoked, %d acknowledged, %d refused, %d unknown\n", s.Ops.Invoked, s.Ops.Acknowledged, s.Ops.Refused, s.Ops.Unknown)
	var kinds []string
	for k := range s.Faults {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	fmt.Fprint(w, "faults:")
	for _, k := range kinds {
		fmt.Fprintf(w, " %s=%d", k, s.Faults[k])
	}
	fmt.Fprintln(w)
	f := s.Failover
	fmt.Fprintf(w, "unavailability per leader kill: kills=%d p50=%.0fms p99=%.0fms max=%.0fms no-ack=%d\n", f.Kills, f.P50Ms, f.P99Ms, f.MaxMs, f.NoAck)
	if z := s.Freeze; z.Kills > 0 {
		fmt.Fprintf(w, "unavailability per leader freeze: freezes=%d p50=%.0fms p99=%.0fms max=%.0fms no-ack=%d\n", z.Kills, z.P50Ms, z.P99Ms, z.MaxMs, z.NoAck)
	}
	if z := s.Blackhole; z.Kills > 0 {
		fmt.Fprintf(w, "unavailability per blackholed leader: blackholes=%d p50=%.0fms p99=%.0fms max=%.0fms no-ack=%d\n", z.Kills, z.P50Ms, z.P99Ms, z.MaxMs, z.NoAck)
	}
	fmt.Fprintf(w, "elections: term %d -> %d; steady %.0fs: %d elections, %d acknowledged\n", s.Elect.FirstTerm, s.Elect.LastTerm, s.Elect.SteadySeconds, s.Elect.SteadyElections, s.Elect.SteadyOps)
	fmt.Fprintf(w, "linearizability: %s over %d ops / %d request ids", s.Lin.Result, s.Lin.Operations, s.Lin.Keys)
	if s.Lin.Visualization != "" {
		fmt.Fprintf(w, " (see %s)", s.Lin.Visualization)
	}
	fmt.Fprintln(w)
	fmt.Fprint(w, "violations:")
	for _, inv := range Invariants() {
		fmt.Fprintf(w, " %s=%d", inv, s.Violations[inv])
	}
	fmt.Fprintln(w)
	for _, d := range s.Details {
		fmt.Fprintf(w, "  VIOLATION %s\n", d)
	}
	for _, n := range s.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	for _, e := range s.Errors {
		fmt.Fprintf(w, "  ERROR %s\n", e)
	}
}

// writeJSON writes v to path, indented.
func writeJSON(path string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
