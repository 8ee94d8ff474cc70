// Package chaos is Switchyard's Jepsen-style chaos suite: it runs
// real allocator agents (OS processes, optionally each in its own network
// namespace), drives allocation clients with idempotent request ids against
// every node, injects faults on a schedule (SIGKILL, SIGSTOP, partitions,
// netem, rolling restarts), records every operation in a History and, once
// the cluster is healed, checks the invariants of /work/shared/design.md:
// linearizability of allocate/release per request id (porcupine), no
// acknowledged allocation lost, no request id granted twice, no server over
// capacity, identical state hashes on every node.
//
// The checkers are pure functions of a History and the final state, with
// unit tests on hand-made bad histories, so a violation found in a run can
// be replayed from the JSON the run writes.
package chaos

import (
	"math"
	"sync"
	"time"
)

// Kind is the kind of a recorded operation.
type Kind string

// Operation kinds.
const (
	// KindAllocate is POST /v1/allocations with a request id.
	KindAllocate Kind = "allocate"
	// KindRelease is DELETE /v1/allocations/{request id}.
	KindRelease Kind = "release"
	// KindRead is a linearizable read of one request id's allocation (the
	// final read after healing records one per request id).
	KindRead Kind = "read"
)

// Outcome is how an operation ended, as far as its client knows.
type Outcome string

// Outcomes.
const (
	// OK means acknowledged: the cluster answered with a result.
	OK Outcome = "ok"
	// Fail means definitely not applied (the state machine refused it, or
	// for a read, the read itself failed and is ignored).
	Fail Outcome = "fail"
	// Unknown means maybe applied (timeout, connection lost, leadership
	// lost, or the run ended first).
	Unknown Outcome = "unknown"
)

// Allocation states as recorded in operations.
const (
	StateAbsent   = "absent"
	StateActive   = "active"
	StateReleased = "released"
	StateExpired  = "expired"
)

// Op is one operation of a history. Times are nanoseconds since the start
// of the history; Return is math.MaxInt64 while unfinished and for unknown
// outcomes (the operation may take effect at any time after Call).
type Op struct {
	Index  int     `json:"index"`
	Client int     `json:"client"`
	Kind   Kind    `json:"kind"`
	Key    string  `json:"key"` // the request id
	Node   string  `json:"node,omitempty"`
	Call   int64   `json:"call_ns"`
	Return int64   `json:"return_ns"`
	Result Outcome `json:"outcome"`
	// AllocID is the allocation id an acknowledged allocate or release
	// returned, or a read found ("" when absent).
	AllocID string `json:"alloc_id,omitempty"`
	// Server is the server an acknowledged allocation landed on.
	Server string `json:"server,omitempty"`
	// Units is the size of the allocation asked for.
	Units int64 `json:"units,omitempty"`
	// State is the allocation's state in an acknowledged answer or read.
	State string `json:"state,omitempty"`
	Err   string `json:"error,omitempty"`
}

// Done reports whether op has a known return time.
func (op Op) Done() bool { return op.Return != math.MaxInt64 }

// Fault is one injected fault (or its healing).
type Fault struct {
	Kind  string   `json:"kind"`
	Nodes []string `json:"nodes,omitempty"`
	// At is nanoseconds since the start of the history.
	At int64 `json:"at_ns"`
	// Leader is set when the fault targeted the node that was leader.
	Leader bool   `json:"leader,omitempty"`
	Note   string `json:"note,omitempty"`
}

// History records operations and faults from many goroutines. The zero
// value is not usable: use NewHistory.
type History struct {
	mu     sync.Mutex
	start  time.Time
	ops    []Op
	faults []Fault
}

// NewHistory starts an empty history whose clock starts now.
func NewHistory() *History { return &History{start: time.Now()} }

// Now is the history's clock (monotonic nanoseconds since its start).
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// Start is the wall time the history's clock counts from.
func (h *History) Start() time.Time { return h.start }

// Invoke records the call of op (its Call time is set to now) and returns
// its index for Complete. The operation stays unknown until completed.
func (h *History) Invoke(op Op) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	op.Index = len(h.ops)
	op.Call = h.Now()
	op.Return = math.MaxInt64
	op.Result = Unknown
	h.ops = append(h.ops, op)
	return op.Index
}

// Complete records how operation i ended. For Unknown the return time
// stays infinite; update fills AllocID, Server, State and Err.
func (h *History) Complete(i int, result Outcome, update func(*Op)) {
	now := h.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	op := &h.ops[i]
	op.Result = result
	if result != Unknown {
		op.Return = now
	}
	if update != nil {
		update(op)
	}
}

// AddFault records a fault at the current time.
func (h *History) AddFault(f Fault) {
	f.At = h.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.faults = append(h.faults, f)
}

// Ops returns a copy of every operation recorded so far.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Op(nil), h.ops...)
}

// Faults returns a copy of every fault recorded so far.
func (h *History) Faults() []Fault {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Fault(nil), h.faults...)
}
