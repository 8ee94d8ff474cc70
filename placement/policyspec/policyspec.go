// Package policyspec defines what a placement policy may say: the strategy
// names, the limits and weights, the environment a scoring expression sees,
// and Validate, which both the proposer (CLI/API, leader) and the FSM's
// Apply call. It imports neither fsm nor placement, so both can use it.
//
// Everything here is deterministic: Validate and CompileExpr read nothing but
// their arguments, so running them inside Apply keeps every replica equal.
package policyspec

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"

	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// Strategy names. They are a contract (CLI flags, JSON, the log). Every
// strategy first applies the hard limits, prefers servers within the soft
// limits, and lets a scoring expression (when set) choose before its own
// order; ties always break on server id.
const (
	// LeastLoaded spreads: the lowest weighted load after placing the
	// request (units used/capacity × weights.units + cpu × weights.cpu +
	// egress/reference × weights.egress; all weights zero means units only).
	// Reservations in flight count as used, so a burst does not herd.
	LeastLoaded = "least-loaded"
	// BinPack fills the fullest server (by units after placement) that still
	// fits, so idle servers can be retired.
	BinPack = "bin-pack"
	// RoomAffinity prefers servers that already host the request's room
	// (committed allocations of the room, or the room in the server's load
	// report), the one holding most of it first (fewest cascade hops), then
	// the least loaded.
	RoomAffinity = "room-affinity"
	// Region prefers the requester's zone, then its region, then other
	// regions by the configured distance table (unknown distances last),
	// then the least loaded. The requester's region/zone come from the
	// request or from the requester's registry entry.
	Region = "region"
	// TwoChoice draws two servers with a generator seeded by the request id
	// (every replica and every retry draws the same two) and takes the less
	// loaded: near-even spread at O(1) comparisons.
	TwoChoice = "two-choice"
)

// Strategies lists every strategy, in documentation order.
func Strategies() []string { return []string{LeastLoaded, BinPack, RoomAffinity, Region, TwoChoice} }

// Provisioning defaults for zero fields of fsmpb.Provisioning.
const (
	DefaultServerCapacity = int64(100)
	DefaultTimeoutMs      = int64(60_000)
	// MaxTimeoutMs bounds how long any request may wait for provisioning.
	MaxTimeoutMs = int64(10 * 60_000)
	// MaxExprLen bounds the scoring expression's source.
	MaxExprLen = 4096
)

// ErrBadPolicy is wrapped by every validation error.
var ErrBadPolicy = errors.New("invalid policy")

// Server is what a scoring expression sees as `server`. Fields without a
// reported load (has_load false) are zero.
type Server struct {
	ID       string            `expr:"id"`
	Region   string            `expr:"region"`
	Zone     string            `expr:"zone"`
	Labels   map[string]string `expr:"labels"`
	Capacity int64             `expr:"capacity"`
	// Used counts committed units plus in-flight reservations.
	Used int64 `expr:"used"`
	Free int64 `expr:"free"`
	// Utilization is used/capacity before placing the request, 0..1.
	Utilization float64 `expr:"utilization"`
	HasLoad     bool    `expr:"has_load"`
	CPU         float64 `expr:"cpu"`
	EgressBps   int64   `expr:"egress_bps"`
	IngressBps  int64   `expr:"ingress_bps"`
	Peers       int64   `expr:"peers"`
	Tracks      int64   `expr:"tracks"`
	// RoomUnits is the units of the request's room already on the server
	// (committed allocations); HostsRoom is true when it hosts the room
	// (by allocations or by its load report).
	RoomUnits int64 `expr:"room_units"`
	HostsRoom bool  `expr:"hosts_room"`
	// SameRegion/SameZone compare with the requester's; Distance is the
	// configured distance between the regions (0 when equal, -1 unknown).
	SameRegion bool  `expr:"same_region"`
	SameZone   bool  `expr:"same_zone"`
	Distance   int64 `expr:"distance"`
}

// Request is what a scoring expression sees as `request`.
type Request struct {
	ID        string `expr:"id"`
	Room      string `expr:"room"`
	Units     int64  `expr:"units"`
	Requester string `expr:"requester"`
	Region    string `expr:"region"`
	Zone      string `expr:"zone"`
}

// Env is the whole expression environment.
type Env struct {
	Server  Server  `expr:"server"`
	Request Request `expr:"request"`
}

// CompileExpr parses and type-checks a scoring expression against Env. It
// refuses expressions that do not return a number, with the parser's or
// checker's message.
func CompileExpr(src string) (*vm.Program, error) {
	if len(src) > MaxExprLen {
		return nil, fmt.Errorf("%w: expression is %d bytes, at most %d", ErrBadPolicy, len(src), MaxExprLen)
	}
	prog, err := expr.Compile(src, expr.Env(Env{}))
	if err != nil {
		return nil, fmt.Errorf("%w: expression does not compile: %v", ErrBadPolicy, err)
	}
	switch k := prog.Node().Type(); {
	case k == nil:
		return nil, fmt.Errorf("%w: expression must return a number, its type is unknown", ErrBadPolicy)
	case isNumber(k.Kind()):
	default:
		return nil, fmt.Errorf("%w: expression must return a number (int or float), it returns %s", ErrBadPolicy, k)
	}
	return prog, nil
}

func isNumber(k reflect.Kind) bool {
	switch k {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

// RunExpr evaluates a compiled expression and returns its score.
func RunExpr(prog *vm.Program, env Env) (float64, error) {
	var v vm.VM
	return RunExprVM(&v, prog, &env)
}

// RunExprVM is RunExpr on a VM the caller reuses across evaluations (a
// VM is not safe for concurrent use), with the environment passed by
// pointer: scoring many servers this way allocates far less.
func RunExprVM(v *vm.VM, prog *vm.Program, env *Env) (float64, error) {
	out, err := v.Run(prog, env)
	if err != nil {
		return 0, fmt.Errorf("scoring expression: %w", err)
	}
	f, ok := toFloat(out)
	if !ok {
		return 0, fmt.Errorf("scoring expression returned %T, not a number", out)
	}
	if math.IsNaN(f) {
		return 0, errors.New("scoring expression returned NaN")
	}
	return f, nil
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case int:
		return float64(x), true
	case int8:
		return float64(x), true
	case int16:
		return float64(x), true
	case int32:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint:
		return float64(x), true
	case uint8:
		return float64(x), true
	case uint16:
		return float64(x), true
	case uint32:
		return float64(x), true
	case uint64:
		return float64(x), true
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

// Validate reports the first problem with p, wrapping ErrBadPolicy, or nil.
// It is deterministic and cheap enough to run inside Apply.
func Validate(p *fsmpb.Policy) error {
	if p == nil {
		return fmt.Errorf("%w: policy is empty", ErrBadPolicy)
	}
	if !Known(p.GetStrategy()) {
		return fmt.Errorf("%w: unknown strategy %q (want one of %s)", ErrBadPolicy, p.GetStrategy(), strings.Join(Strategies(), ", "))
	}
	if p.GetTombstoneRetentionMs() < 0 {
		return fmt.Errorf("%w: tombstone retention must not be negative, got %d ms", ErrBadPolicy, p.GetTombstoneRetentionMs())
	}
	if err := checkLimits("hard", p.GetHard()); err != nil {
		return err
	}
	if err := checkLimits("soft", p.GetSoft()); err != nil {
		return err
	}
	w := p.GetWeights()
	for _, f := range []struct {
		name string
		v    float64
	}{{"units", w.GetUnits()}, {"cpu", w.GetCpu()}, {"egress", w.GetEgress()}} {
		if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return fmt.Errorf("%w: weight %s must be a finite number >= 0, got %v", ErrBadPolicy, f.name, f.v)
		}
	}
	for _, d := range p.GetDistances() {
		if d.GetFrom() == "" || d.GetTo() == "" {
			return fmt.Errorf("%w: distance entries need both regions, got %q -> %q", ErrBadPolicy, d.GetFrom(), d.GetTo())
		}
		if d.GetDistance() < 0 {
			return fmt.Errorf("%w: distance %s -> %s must not be negative, got %d", ErrBadPolicy, d.GetFrom(), d.GetTo(), d.GetDistance())
		}
	}
	pv := p.GetProvisioning()
	switch {
	case pv.GetServerCapacity() < 0:
		return fmt.Errorf("%w: provisioning server capacity must not be negative, got %d", ErrBadPolicy, pv.GetServerCapacity())
	case pv.GetTimeoutMs() < 0 || pv.GetTimeoutMs() > MaxTimeoutMs:
		return fmt.Errorf("%w: provisioning timeout must be between 0 and %d ms, got %d", ErrBadPolicy, MaxTimeoutMs, pv.GetTimeoutMs())
	case pv.GetMinPool() < 0:
		return fmt.Errorf("%w: provisioning min pool must not be negative, got %d", ErrBadPolicy, pv.GetMinPool())
	case pv.GetIdleRetireMs() < 0:
		return fmt.Errorf("%w: idle retire time must not be negative, got %d ms", ErrBadPolicy, pv.GetIdleRetireMs())
	}
	if p.GetExpr() != "" {
		if _, err := CompileExpr(p.GetExpr()); err != nil {
			return err
		}
	}
	return nil
}

func checkLimits(which string, l *fsmpb.Limits) error {
	if u := l.GetUnits(); u < 0 || u > 1 || math.IsNaN(u) {
		return fmt.Errorf("%w: %s units limit is a fraction of capacity in (0, 1] (0: none), got %v", ErrBadPolicy, which, u)
	}
	if c := l.GetCpu(); c < 0 || c > 1 || math.IsNaN(c) {
		return fmt.Errorf("%w: %s cpu limit is a utilisation in (0, 1] (0: none), got %v", ErrBadPolicy, which, c)
	}
	if e := l.GetEgressBps(); e < 0 {
		return fmt.Errorf("%w: %s egress limit must not be negative, got %d bps", ErrBadPolicy, which, e)
	}
	return nil
}

// Known reports whether name is a strategy.
func Known(name string) bool {
	for _, s := range Strategies() {
		if s == name {
			return true
		}
	}
	return false
}

// UnitLimit is the most units a server of capacity c may hold under hard
// limit fraction f (0: no limit beyond capacity). Deterministic integer
// result, used by both placement and Apply.
func UnitLimit(c int64, f float64) int64 {
	if f <= 0 || f >= 1 {
		return c
	}
	return int64(math.Floor(float64(c) * f))
}

// ServerCapacity is the effective expected capacity of a new server.
func ServerCapacity(p *fsmpb.Provisioning) int64 {
	if v := p.GetServerCapacity(); v > 0 {
		return v
	}
	return DefaultServerCapacity
}

// TimeoutMs is the effective provisioning timeout.
func TimeoutMs(p *fsmpb.Provisioning) int64 {
	if v := p.GetTimeoutMs(); v > 0 {
		return v
	}
	return DefaultTimeoutMs
}
