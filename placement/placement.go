// Package placement scores candidate media servers for an allocation
// request. It is pure: the leader's decision loop hands it a view of the
// fleet (committed units plus reservations still in flight, and the soft
// load view when known) and the policy committed in the FSM, and gets back a
// server id or an error saying which capacity was missing.
//
// Every choice is a deterministic function of (policy, candidates, request):
// ties break on server id and two-choice draws from a generator seeded by
// the request id, so every replica (and the simulator) agrees.
//
// Order of preference, for every strategy:
//
//  1. Hard limits filter: inactive servers, servers without the free units,
//     servers whose committed units would pass hard.units × capacity, and
//     servers whose reported cpu / egress is at or past hard.cpu /
//     hard.egress_bps are never picked (unknown load passes cpu/egress).
//  2. Servers that stay below every soft limit are preferred to those that
//     do not.
//  3. A request naming a region prefers servers in it (all strategies).
//  4. The scoring expression, when set: the highest score wins.
//  5. The strategy's own order (see Strategy docs in policyspec), then id.
package placement

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"

	"github.com/expr-lang/expr/vm"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/placement/policyspec"
)

// Candidate is one server as the decision loop sees it.
type Candidate struct {
	ID       string
	Region   string
	Zone     string
	Labels   map[string]string
	Capacity int64
	// Used counts committed units plus units reserved by decisions that are
	// in flight (proposed but not yet applied).
	Used int64
	// InFlight is the part of Used reserved by decisions not yet applied
	// (the decision loop sets it). With Load.Unmaterialized it tells how
	// many units the last report cannot reflect yet.
	InFlight int64
	Active   bool
	// State is the server state's name, for error messages.
	State string
	// Load is the server's last reported load (soft state); nil
	// when the leader has no report for it yet (e.g. just after an
	// election), in which case only registry data is used.
	Load *Load
}

// Load is a media server's reported load as the leader's view holds it.
type Load struct {
	CPU        float64 // 0..1 of the server's cores
	IngressBps int64
	EgressBps  int64
	Peers      int64
	Tracks     int64
	Rooms      []string
	AgeMs      int64
	// Unmaterialized is the units of allocations committed on this server
	// that its last report did not yet list: reservations the reported
	// figures do not reflect yet.
	Unmaterialized int64
}

// Free is the number of units still available on c.
func (c Candidate) Free() int64 { return c.Capacity - c.Used }

// Request is what a caller asks for.
type Request struct {
	// ID is the request id; it seeds two-choice. Empty uses room+units.
	ID    string
	Room  string
	Units int64
	// Region (and Zone) of the requester: given by the caller, or derived
	// by the leader from the requester's registry entry.
	Region string
	Zone   string
	// Requester names who asks (usually the origin media server). Unless
	// the request pins Server, the requester itself is never picked: a room
	// that outgrows its server must spill onto another one.
	Requester string
	// Server pins the allocation to one server; empty lets the policy pick.
	Server string
	// Hosting is the units of Room already on each server (committed and
	// in-flight allocations); room-affinity and expressions read it. Nil
	// means unknown (only Load.Rooms is used).
	Hosting map[string]int64
}

// Policy is a compiled fsmpb.Policy, ready to pick. It is immutable and
// safe for concurrent use.
type Policy struct {
	spec      *fsmpb.Policy
	prog      *vm.Program
	dist      map[[2]string]int64
	wu        float64
	wc        float64
	we        float64
	egressRef float64
}

// Compile validates p (as Apply does) and prepares it for Pick.
func Compile(p *fsmpb.Policy) (*Policy, error) {
	if err := fsm.ValidatePolicy(p); err != nil {
		return nil, err
	}
	cp := &Policy{spec: p, dist: map[[2]string]int64{}}
	if p.GetExpr() != "" {
		prog, err := policyspec.CompileExpr(p.GetExpr())
		if err != nil {
			return nil, fmt.Errorf("%w: %w", fsm.ErrInvalid, err)
		}
		cp.prog = prog
	}
	for _, d := range p.GetDistances() {
		cp.dist[[2]string{d.GetFrom(), d.GetTo()}] = d.GetDistance()
		if _, ok := cp.dist[[2]string{d.GetTo(), d.GetFrom()}]; !ok {
			cp.dist[[2]string{d.GetTo(), d.GetFrom()}] = d.GetDistance()
		}
	}
	w := p.GetWeights()
	cp.wu, cp.wc, cp.we = w.GetUnits(), w.GetCpu(), w.GetEgress()
	if cp.wu == 0 && cp.wc == 0 && cp.we == 0 {
		cp.wu = 1
	}
	cp.egressRef = 1e9 // 1 Gbps when no limit gives a scale
	if v := p.GetSoft().GetEgressBps(); v > 0 {
		cp.egressRef = float64(v)
	} else if v := p.GetHard().GetEgressBps(); v > 0 {
		cp.egressRef = float64(v)
	}
	return cp, nil
}

// MustCompile is Compile for policies known to be valid (tests, defaults).
// It panics on an invalid policy.
func MustCompile(p *fsmpb.Policy) *Policy {
	cp, err := Compile(p)
	if err != nil {
		panic(err)
	}
	return cp
}

// Spec returns the policy this was compiled from (do not modify).
func (p *Policy) Spec() *fsmpb.Policy { return p.spec }

// Pick chooses with a policy of just the named strategy (no limits, no
// expression). It is kept for callers that only know a strategy name.
func Pick(strategy string, cands []Candidate, req Request) (string, error) {
	p, err := Compile(&fsmpb.Policy{Strategy: strategy})
	if err != nil {
		return "", err
	}
	return p.Pick(cands, req)
}

// Pick returns the id of the server the policy prefers for req among cands,
// or an error wrapping fsm.ErrCapacity, fsm.ErrNotFound or
// fsm.ErrServerNotActive that says what was missing. It never returns a
// server that is inactive, lacks req.Units free units, or is past a hard
// limit.
func (p *Policy) Pick(cands []Candidate, req Request) (string, error) {
	if err := fsm.ValidateRequest(req.Room, req.Units); err != nil {
		return "", err
	}
	if req.Server != "" {
		for i := range cands {
			c := &cands[i]
			if c.ID != req.Server {
				continue
			}
			if !c.Active {
				return "", fmt.Errorf("%w: server %s is %s", fsm.ErrServerNotActive, c.ID, c.State)
			}
			if why := p.hardViolation(c, req); why != "" {
				return "", fmt.Errorf("%w: server %s: %s", fsm.ErrCapacity, c.ID, why)
			}
			return c.ID, nil
		}
		return "", fmt.Errorf("%w: server %q is not registered", fsm.ErrNotFound, req.Server)
	}
	if req.Requester != "" {
		cands = withoutServer(cands, req.Requester)
	}
	var ok, soft []*Candidate
	for i := range cands {
		c := &cands[i]
		if !c.Active || p.hardViolation(c, req) != "" {
			continue
		}
		ok = append(ok, c)
		if p.softOK(c, req) {
			soft = append(soft, c)
		}
	}
	if len(ok) == 0 {
		return "", p.noFit(cands, req)
	}
	pool := ok
	if len(soft) > 0 {
		pool = soft
	}
	if req.Region != "" {
		var in []*Candidate
		for _, c := range pool {
			if c.Region == req.Region {
				in = append(in, c)
			}
		}
		if len(in) > 0 {
			pool = in
		}
	}
	if p.prog != nil {
		var err error
		if pool, err = p.bestByExpr(pool, req); err != nil {
			return "", err
		}
	}
	return p.choose(pool, req).ID, nil
}

// choose applies the strategy's own order to a non-empty pool.
func (p *Policy) choose(pool []*Candidate, req Request) *Candidate {
	if p.spec.GetStrategy() == policyspec.TwoChoice {
		return p.twoChoice(pool, req)
	}
	best := pool[0]
	for _, c := range pool[1:] {
		if p.less(c, best, req) {
			best = c
		}
	}
	return best
}

// hardViolation says why c cannot take req under the hard limits ("" when
// it can).
func (p *Policy) hardViolation(c *Candidate, req Request) string {
	hard := p.spec.GetHard()
	limit := policyspec.UnitLimit(c.Capacity, hard.GetUnits())
	if c.Used+req.Units > limit {
		if limit < c.Capacity {
			return fmt.Sprintf("has %d of %d units free under the hard limit of %d, request needs %d", max(limit-c.Used, 0), c.Capacity, limit, req.Units)
		}
		return fmt.Sprintf("has %d of %d units free, request needs %d", c.Free(), c.Capacity, req.Units)
	}
	if c.Load != nil {
		cpu, egress := p.projected(c, 0)
		if h := hard.GetCpu(); h > 0 && cpu >= h {
			return fmt.Sprintf("cpu %.2f (reported %.2f plus reservations not yet reported) is at or past the hard limit %.2f", cpu, c.Load.CPU, h)
		}
		if h := hard.GetEgressBps(); h > 0 && egress >= float64(h) {
			return fmt.Sprintf("egress %.0f bps (reported %d plus reservations not yet reported) is at or past the hard limit %d bps", egress, c.Load.EgressBps, h)
		}
	}
	return ""
}

// projected returns c's reported cpu and egress projected onto the units
// its report does not reflect yet — committed allocations it did not list
// (Load.Unmaterialized), reservations in flight (InFlight) — plus extra
// more. The cost of a unit is the report's own average over the units it
// does reflect or, when it reflects none, a full server's worth (cpu 1,
// the egress reference) spread over its capacity. This is what keeps a
// burst from herding onto the server whose last report looked emptiest.
// c.Load must not be nil.
func (p *Policy) projected(c *Candidate, extra int64) (cpu, egress float64) {
	l := c.Load
	pending := max(l.Unmaterialized+c.InFlight, 0) + extra
	cpuPer, egPer := p.perUnit(c)
	return l.CPU + float64(pending)*cpuPer, float64(l.EgressBps) + float64(pending)*egPer
}

// perUnit is the cpu and egress one unit on c is projected to cost (see
// projected). c.Load must not be nil.
func (p *Policy) perUnit(c *Candidate) (cpu, egress float64) {
	l := c.Load
	reflected := c.Used - c.InFlight - l.Unmaterialized
	if reflected > 0 {
		return l.CPU / float64(reflected), float64(l.EgressBps) / float64(reflected)
	}
	return 1 / float64(max(c.Capacity, 1)), p.egressRef / float64(max(c.Capacity, 1))
}

// softOK reports whether c stays within every soft limit after taking req.
func (p *Policy) softOK(c *Candidate, req Request) bool { return p.softOKUnits(c, req.Units) }

// softOKUnits reports whether c stays within every soft limit after taking
// units more.
func (p *Policy) softOKUnits(c *Candidate, units int64) bool {
	soft := p.spec.GetSoft()
	if u := soft.GetUnits(); u > 0 && c.Used+units > policyspec.UnitLimit(c.Capacity, u) {
		return false
	}
	if c.Load != nil {
		cpu, egress := p.projected(c, units)
		if s := soft.GetCpu(); s > 0 && cpu > s {
			return false
		}
		if s := soft.GetEgressBps(); s > 0 && egress > float64(s) {
			return false
		}
	}
	return true
}

// loadScore is the weighted load of c after placing req: lower is emptier.
func (p *Policy) loadScore(c *Candidate, req Request) float64 {
	a, b := p.scoreAB(c)
	return score(a, b, req.Units)
}

// scoreAB splits c's weighted load into the part that does not depend on
// the request (a: the load as it stands, reservations included) and the
// cost of one more unit (b), so that the load after placing u units is
// score(a, b, u). The weighted load is linear in u (projected spreads each
// unit evenly), and computing it this way in both the scan and the index
// keeps their floating-point results bit-identical.
func (p *Policy) scoreAB(c *Candidate) (a, b float64) {
	capf := float64(max(c.Capacity, 1))
	a, b = p.wu*float64(c.Used)/capf, p.wu/capf
	if c.Load != nil {
		cpu0, eg0 := p.projected(c, 0)
		cpuPer, egPer := p.perUnit(c)
		a += p.wc*cpu0 + p.we*eg0/p.egressRef
		b += p.wc*cpuPer + p.we*egPer/p.egressRef
	}
	return a, b
}

// score is a + b·u, rounded step by step (never fused), so that it is
// monotone in a and b for the index's bounds.
func score(a, b float64, u int64) float64 { return a + float64(b*float64(u)) }

// roomUnits is the units of req.Room on c, and whether c hosts the room.
func roomUnits(c *Candidate, req Request) (int64, bool) {
	u := req.Hosting[c.ID]
	if u > 0 {
		return u, true
	}
	if c.Load != nil && slices.Contains(c.Load.Rooms, req.Room) {
		return 0, true
	}
	return 0, false
}

// regionRank orders c for the requester: 0 same zone, 1 same region,
// 2+distance by the table, and a large rank for unknown distances.
func (p *Policy) regionRank(c *Candidate, req Request) int64 {
	const unknown = int64(1) << 40
	switch {
	case req.Region == "":
		return 0
	case c.Region == req.Region && req.Zone != "" && c.Zone == req.Zone:
		return 0
	case c.Region == req.Region:
		return 1
	}
	if d, ok := p.dist[[2]string{req.Region, c.Region}]; ok {
		return 2 + d
	}
	return unknown
}

// distance is the configured distance between the requester's region and
// c's (0 when equal, -1 when unknown).
func (p *Policy) distance(c *Candidate, req Request) int64 {
	if req.Region == "" || c.Region == req.Region {
		return 0
	}
	if d, ok := p.dist[[2]string{req.Region, c.Region}]; ok {
		return d
	}
	return -1
}

// less reports whether a beats b under the strategy. Ties break on id.
func (p *Policy) less(a, b *Candidate, req Request) bool {
	cmpF := func(x, y float64) int {
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	}
	var c int
	switch p.spec.GetStrategy() {
	case policyspec.BinPack:
		// Fullest first, by units after placement (cross-multiplied to stay
		// exact), then by the weighted load.
		au, bu := (a.Used+req.Units)*b.Capacity, (b.Used+req.Units)*a.Capacity
		switch {
		case au > bu:
			c = -1
		case au < bu:
			c = 1
		default:
			c = -cmpF(p.loadScore(a, req), p.loadScore(b, req))
		}
	case policyspec.RoomAffinity:
		ra, ha := roomUnits(a, req)
		rb, hb := roomUnits(b, req)
		switch {
		case ha != hb:
			if ha {
				c = -1
			} else {
				c = 1
			}
		case ra != rb:
			if ra > rb {
				c = -1
			} else {
				c = 1
			}
		default:
			c = cmpF(p.loadScore(a, req), p.loadScore(b, req))
		}
	case policyspec.Region:
		ra, rb := p.regionRank(a, req), p.regionRank(b, req)
		switch {
		case ra < rb:
			c = -1
		case ra > rb:
			c = 1
		default:
			c = cmpF(p.loadScore(a, req), p.loadScore(b, req))
		}
	default: // least-loaded (and two-choice's pairwise comparison)
		c = cmpF(p.loadScore(a, req), p.loadScore(b, req))
	}
	if c != 0 {
		return c < 0
	}
	return a.ID < b.ID
}

// twoChoice draws two distinct candidates (ordered by id) from a generator
// seeded by the request, and returns the less loaded one.
func (p *Policy) twoChoice(pool []*Candidate, req Request) *Candidate {
	if len(pool) == 1 {
		return pool[0]
	}
	sorted := slices.Clone(pool)
	slices.SortFunc(sorted, func(a, b *Candidate) int { return strings.Compare(a.ID, b.ID) })
	i, j := twoChoiceDraw(req, len(sorted))
	return p.lessLoaded(sorted[i], sorted[j], req)
}

// twoChoiceDraw draws two distinct positions below n (n >= 2) from a
// generator seeded by the request.
func twoChoiceDraw(req Request, n int) (i, j int) {
	h := fnv.New64a()
	if req.ID != "" {
		h.Write([]byte(req.ID))
	} else {
		fmt.Fprintf(h, "%s/%d", req.Room, req.Units)
	}
	seed := h.Sum64()
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	i = r.IntN(n)
	j = r.IntN(n - 1)
	if j >= i {
		j++
	}
	return i, j
}

// lessLoaded returns the less loaded of a and b (two-choice's comparison;
// ties on id).
func (p *Policy) lessLoaded(a, b *Candidate, req Request) *Candidate {
	if p.loadScore(b, req) < p.loadScore(a, req) || p.loadScore(b, req) == p.loadScore(a, req) && b.ID < a.ID {
		return b
	}
	return a
}

// Env builds the expression environment for c and req.
func (p *Policy) Env(c *Candidate, req Request) policyspec.Env {
	ru, hosts := roomUnits(c, req)
	s := policyspec.Server{
		ID: c.ID, Region: c.Region, Zone: c.Zone, Labels: c.Labels, Capacity: c.Capacity, Used: c.Used, Free: c.Free(),
		Utilization: float64(c.Used) / float64(max(c.Capacity, 1)),
		RoomUnits:   ru, HostsRoom: hosts,
		SameRegion: req.Region != "" && c.Region == req.Region,
		SameZone:   req.Zone != "" && c.Region == req.Region && c.Zone == req.Zone,
		Distance:   p.distance(c, req),
	}
	if c.Load != nil {
		s.HasLoad, s.CPU, s.EgressBps, s.IngressBps, s.Peers, s.Tracks = true, c.Load.CPU, c.Load.EgressBps, c.Load.IngressBps, c.Load.Peers, c.Load.Tracks
	}
	return policyspec.Env{Server: s, Request: policyspec.Request{
		ID: req.ID, Room: req.Room, Units: req.Units, Requester: req.Requester, Region: req.Region, Zone: req.Zone,
	}}
}

// bestByExpr keeps the candidates with the highest expression score. A
// server for which the expression fails at run time (it type-checked, so
// this is rare: e.g. an integer division by zero) scores lowest rather than
// failing the request.
func (p *Policy) bestByExpr(pool []*Candidate, req Request) ([]*Candidate, error) {
	var best []*Candidate
	var top float64
	var v vm.VM
	var env policyspec.Env
	for _, c := range pool {
		env = p.Env(c, req)
		s, err := policyspec.RunExprVM(&v, p.prog, &env)
		if err != nil {
			s = math.Inf(-1)
		}
		switch {
		case best == nil || s > top:
			best, top = []*Candidate{c}, s
		case s == top:
			best = append(best, c)
		}
	}
	return best, nil
}

// noFit explains why no candidate could take req.
func (p *Policy) noFit(cands []Candidate, req Request) error {
	if len(cands) == 0 {
		return fmt.Errorf("%w: no media servers are registered", fsm.ErrCapacity)
	}
	var active, inactive int
	var maxFree int64 = -1
	var maxID string
	var limited []string
	for i := range cands {
		c := &cands[i]
		if !c.Active {
			inactive++
			continue
		}
		active++
		if c.Free() > maxFree {
			maxFree, maxID = c.Free(), c.ID
		}
		if c.Free() >= req.Units && len(limited) < 5 {
			limited = append(limited, c.ID+" ("+p.hardViolation(c, req)+")")
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "no server has %d free units", req.Units)
	if len(limited) > 0 {
		b.Reset()
		sort.Strings(limited)
		fmt.Fprintf(&b, "no server can take %d units within the hard limits: %s", req.Units, strings.Join(limited, "; "))
	} else if active > 0 {
		fmt.Fprintf(&b, " (most free: %s with %d", maxID, maxFree)
		if active > 1 {
			fmt.Fprintf(&b, "; %d active servers", active)
		}
		b.WriteString(")")
	}
	if inactive > 0 {
		names := make([]string, 0, inactive)
		for _, c := range cands {
			if !c.Active {
				names = append(names, c.ID+" "+c.State)
			}
		}
		sort.Strings(names)
		fmt.Fprintf(&b, "; not active: %s", strings.Join(names, ", "))
	}
	return fmt.Errorf("%w: %s", fsm.ErrCapacity, b.String())
}

// withoutServer returns cands without the server id (a copy only when it is
// present).
func withoutServer(cands []Candidate, id string) []Candidate {
	for i := range cands {
		if cands[i].ID == id {
			out := make([]Candidate, 0, len(cands)-1)
			out = append(out, cands[:i]...)
			return append(out, cands[i+1:]...)
		}
	}
	return cands
}
