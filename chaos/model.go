package chaos

import (
	"fmt"
	"path/filepath"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// regState is the model's state of one request id: the allocation it was
// granted (if any) and that allocation's state. ID "?" stands for "granted
// by an operation whose answer was lost": the first acknowledged answer
// naming an id binds it.
type regState struct {
	ID string
	St string
}

const unknownID = "?"

// bind checks that an answer naming id is compatible with s and returns s
// with its id bound.
func (s regState) bind(id string) (regState, bool) {
	switch {
	case s.St == StateAbsent:
		return s, false
	case s.ID == unknownID:
		s.ID = id
		return s, true
	default:
		return s, s.ID == id
	}
}

func ended(st string) bool { return st == StateReleased || st == StateExpired }

// step is the sequential specification of one request id's register,
// mirroring fsm/state.go: the first allocate grants (or is refused), every
// later allocate returns the same allocation, a release ends it (releasing
// an ended one changes nothing), a release of an unknown request id is
// "not found". It returns every state the operation may lead to (several
// when the outcome is unknown, none when the answer is impossible).
func step(s regState, in, out Op) []regState {
	switch in.Kind {
	case KindAllocate:
		granted := s
		if s.St == StateAbsent {
			granted = regState{ID: unknownID, St: StateActive}
		}
		switch out.Result {
		case Unknown:
			if granted == s {
				return []regState{s}
			}
			return []regState{s, granted}
		case Fail:
			if s.St == StateAbsent {
				return []regState{s}
			}
			return nil // refused although already granted: a lost grant
		}
		n, ok := granted.bind(out.AllocID)
		if !ok || (out.State != "" && out.State != n.St) {
			return nil
		}
		return []regState{n}
	case KindRelease:
		rel := s
		if s.St == StateActive {
			rel.St = StateReleased
		}
		switch out.Result {
		case Unknown:
			if rel == s {
				return []regState{s}
			}
			return []regState{s, rel}
		case Fail:
			if s.St == StateAbsent {
				return []regState{s}
			}
			return nil // "not found" although granted
		}
		n, ok := rel.bind(out.AllocID)
		if !ok || (out.State != "" && out.State != n.St) {
			return nil
		}
		return []regState{n}
	case KindRead:
		if out.Result != OK {
			return []regState{s}
		}
		if out.State == StateAbsent || out.State == "" {
			if s.St == StateAbsent {
				return []regState{s}
			}
			return nil
		}
		n, ok := s.bind(out.AllocID)
		if !ok || n.St != out.State {
			return nil
		}
		return []regState{n}
	}
	return nil
}

// Model is the porcupine model of allocations per request id: histories
// are partitioned by request id and each partition is a register that is
// granted at most once.
func Model() porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			byKey := map[string][]porcupine.Operation{}
			var keys []string
			for _, op := range history {
				k := op.Input.(Op).Key
				if _, ok := byKey[k]; !ok {
					keys = append(keys, k)
				}
				byKey[k] = append(byKey[k], op)
			}
			sort.Strings(keys)
			out := make([][]porcupine.Operation, 0, len(keys))
			for _, k := range keys {
				out = append(out, byKey[k])
			}
			return out
		},
		Init: func() []any { return []any{regState{St: StateAbsent}} },
		Step: func(state, input, output any) []any {
			var out []any
			for _, n := range step(state.(regState), input.(Op), output.(Op)) {
				out = append(out, n)
			}
			return out
		},
		Equal: func(a, b any) bool { return a.(regState) == b.(regState) },
		DescribeOperation: func(input, output any) string {
			in, out := input.(Op), output.(Op)
			res := string(out.Result)
			if out.Result == OK {
				res = fmt.Sprintf("%s %s", out.AllocID, out.State)
			}
			return fmt.Sprintf("%s(%s) -> %s", in.Kind, in.Key, res)
		},
		DescribeState: func(state any) string {
			s := state.(regState)
			if s.St == StateAbsent {
				return "absent"
			}
			return s.ID + " " + s.St
		},
	}
	return nm.ToModel()
}

// LinearizabilityResult is the outcome of CheckLinearizable.
type LinearizabilityResult struct {
	// Result is porcupine's verdict: "ok", "illegal" or "unknown" (the
	// check timed out).
	Result string `json:"result"`
	// Visualization is the HTML file written when the verdict is not ok.
	Visualization string `json:"visualization,omitempty"`
	Operations    int    `json:"operations"`
	Keys          int    `json:"keys"`
	// IllegalKeys lists (some of) the request ids whose history has no
	// linearization.
	IllegalKeys []string `json:"illegal_keys,omitempty"`
}

// CheckLinearizable checks ops with porcupine (unknown outcomes return at
// infinity, so they may take effect at any time after their call, or
// never). When the history is not linearizable and dir is not empty, it
// writes porcupine's visualization to dir/linearizability.html.
func CheckLinearizable(ops []Op, timeout time.Duration, dir string) (LinearizabilityResult, error) {
	m := Model()
	hist := make([]porcupine.Operation, 0, len(ops))
	keys := map[string]bool{}
	for _, op := range ops {
		keys[op.Key] = true
		hist = append(hist, porcupine.Operation{ClientId: op.Client, Input: op, Call: op.Call, Output: op, Return: op.Return})
	}
	res, info := porcupine.CheckOperationsVerbose(m, hist, timeout)
	out := LinearizabilityResult{Operations: len(ops), Keys: len(keys)}
	switch res {
	case porcupine.Ok:
		out.Result = "ok"
		return out, nil
	case porcupine.Illegal:
		out.Result = "illegal"
		out.IllegalKeys = illegalKeys(ops, 20)
	default:
		out.Result = "unknown"
	}
	if dir != "" {
		path := filepath.Join(dir, "linearizability.html")
		if err := porcupine.VisualizePath(m, info, path); err != nil {
			return out, fmt.Errorf("write visualization: %w", err)
		}
		out.Visualization = path
	}
	return out, nil
}

// illegalKeys checks each request id on its own and returns up to max of
// those without a linearization, to name them in the report.
func illegalKeys(ops []Op, max int) []string {
	byKey := map[string][]porcupine.Operation{}
	for _, op := range ops {
		byKey[op.Key] = append(byKey[op.Key], porcupine.Operation{ClientId: op.Client, Input: op, Call: op.Call, Output: op, Return: op.Return})
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	m := Model()
	var out []string
	for _, k := range keys {
		if porcupine.CheckOperationsTimeout(m, byKey[k], time.Second) == porcupine.Illegal {
			out = append(out, k)
			if len(out) >= max {
				break
			}
		}
	}
	return out
}
