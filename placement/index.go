package placement

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/placement/policyspec"
)

// ExprCandidates bounds how many servers a scoring expression is run on
// per decision when an Index places: the first ExprCandidates servers that
// pass the hard limits (and the soft limits and region preference, when any
// does) in the strategy's index order — least loaded first for
// least-loaded, room-affinity and region, fullest first for bin-pack, by id
// for two-choice — plus every eligible server hosting the request's room.
// With at most this many eligible servers the Index picks exactly what
// Policy.Pick picks.
const ExprCandidates = 128

// NoFitDetail is the fleet size up to which an Index explains a refusal
// exactly as Policy.Pick does (naming servers); larger fleets get a
// summary, so a refusal stays cheap.
const NoFitDetail = 2000

// twoChoiceUnits is the largest request (in units) for which two-choice
// draws from the index's order statistics in O(log N); larger requests
// collect the eligible servers first (O(N)).
const twoChoiceUnits = 2

// Index is the leader's placement index for one compiled policy: it holds
// the candidates and picks exactly what Policy.Pick would pick from them
// (same server, same sentinel error), without scoring every server.
//
// Every active server sits in balanced search trees (treaps) ordered by the
// strategy's request-independent key — the weighted load as it stands for
// least-loaded, room-affinity and region, (capacity, fullest) for bin-pack,
// the id for two-choice — one tree for the fleet, one per region and, for
// the region strategy, one per (region, zone). Each subtree records the most
// units any of its servers can take under the hard limits and under the
// soft limits, and the smallest key parts, so a search skips subtrees that
// cannot fit the request or cannot beat the best server found so far
// (branch and bound; the weighted load after placing u units is a + b·u, see
// Policy.scoreAB). Two-choice draws its pair by rank through per-subtree
// counts. Room-affinity looks up the servers hosting the room (request
// hosting plus rooms in load reports) directly.
//
// Costs: an update (Upsert, Reserve, Remove) is O(log N); a pick is
// O(log N) for typical fleets (bin-pack O(C log N) for C distinct
// capacities, region O(R log N) for R regions when the requester's region
// is full). Degenerate inputs cost more but never change the answer. A
// scoring expression runs on at most ExprCandidates servers.
//
// An Index is soft state: the leader rebuilds it from the FSM when it takes
// over and never lets it near Apply, which re-checks every hard limit. It is
// not safe for concurrent use.
type Index struct {
	p       *Policy
	m       map[string]*entry
	global  tree
	regions map[string]*tree
	zones   map[[2]string]*tree
	byRoom  map[string][]*entry // room -> servers whose report lists it
	// Scratch space for expression picks.
	buf  []*entry
	pool []*Candidate
	mark uint32
}

// entry is one server and its derived, request-independent figures.
type entry struct {
	c    Candidate
	g, k int64   // key: group (bin-pack: capacity) and order within it
	a, b float64 // key: score(a, b, u) orders the group (lower first)
	hard int64   // most units c can take within the hard limits (< 1: none)
	soft int64   // ... within the hard and soft limits
	prio uint32
	mark uint32   // scratch: seen in the current expression pick (beside prio: 8 bytes less per server)
	n    [2]tnode // global and region trees
	zn   *tnode   // zone tree (region strategy only)
}

type tnode struct {
	e           *entry
	left, right *tnode
	// Subtree aggregates.
	maxHard, maxSoft int32 // clamped to int32
	minK             int64
	minA, minB       float64
	minID            string
	cntHard, cntSoft [twoChoiceUnits]int32 // servers that can take 1..twoChoiceUnits units
}

type tree struct {
	root *tnode
	caps map[int64]int // capacity -> servers (bin-pack groups)
}

// NewIndex returns an empty index for p.
func NewIndex(p *Policy) *Index {
	return &Index{p: p, m: map[string]*entry{}, global: tree{caps: map[int64]int{}},
		regions: map[string]*tree{}, zones: map[[2]string]*tree{}, byRoom: map[string][]*entry{}}
}

// Policy is the policy the index places with.
func (ix *Index) Policy() *Policy { return ix.p }

// Len is the number of servers held (active or not).
func (ix *Index) Len() int { return len(ix.m) }

// SetPolicy re-keys every server for p (O(N log N), a bulk rebuild).
func (ix *Index) SetPolicy(p *Policy) {
	if p == ix.p {
		return
	}
	ix.p = p
	for _, e := range ix.m {
		ix.derive(e)
	}
	ix.rebuild()
}

// UpsertAll is Upsert for many servers at once: the trees are rebuilt in
// bulk (a sort, then linear), several times faster than one Upsert per
// server when indexing a whole fleet.
func (ix *Index) UpsertAll(cs []Candidate) {
	for _, c := range cs {
		e := ix.m[c.ID]
		if e == nil {
			e = &entry{prio: hash32(c.ID)}
			e.n[0].e, e.n[1].e = e, e
			ix.m[c.ID] = e
		}
		e.c = c
		ix.derive(e)
	}
	ix.rebuild()
}

// rebuild links every entry into fresh trees in bulk.
func (ix *Index) rebuild() {
	ix.global = tree{caps: map[int64]int{}}
	ix.regions, ix.zones, ix.byRoom = map[string]*tree{}, map[[2]string]*tree{}, map[string][]*entry{}
	all := make([]*entry, 0, len(ix.m))
	for _, e := range ix.m {
		if l := e.c.Load; l != nil && ix.roomsIndexed() {
			for _, r := range l.Rooms {
				if !slices.Contains(ix.byRoom[r], e) {
					ix.byRoom[r] = append(ix.byRoom[r], e)
				}
			}
		}
		if e.c.Active {
			all = append(all, e)
		}
	}
	// One sort; the region and zone lists keep its order.
	slices.SortFunc(all, cmpKey)
	byRegion := map[string][]*entry{}
	byZone := map[[2]string][]*entry{}
	zones := ix.p.spec.GetStrategy() == policyspec.Region
	for _, e := range all {
		byRegion[e.c.Region] = append(byRegion[e.c.Region], e)
		if zones {
			z := [2]string{e.c.Region, e.c.Zone}
			byZone[z] = append(byZone[z], e)
			if e.zn == nil {
				e.zn = &tnode{e: e}
			}
		}
	}
	ix.global.build(all, func(e *entry) *tnode { return &e.n[0] })
	for r, es := range byRegion {
		t := &tree{caps: map[int64]int{}}
		t.build(es, func(e *entry) *tnode { return &e.n[1] })
		ix.regions[r] = t
	}
	for z, es := range byZone {
		t := &tree{caps: map[int64]int{}}
		t.build(es, func(e *entry) *tnode { return e.zn })
		ix.zones[z] = t
	}
}

// Upsert adds server c or replaces what the index holds for it.
func (ix *Index) Upsert(c Candidate) {
	e := ix.m[c.ID]
	if e == nil {
		e = &entry{prio: hash32(c.ID)}
		e.n[0].e, e.n[1].e = e, e
		ix.m[c.ID] = e
		e.c = c
		ix.derive(e)
		ix.link(e)
		return
	}
	tmp := entry{c: c}
	ix.derive(&tmp)
	old := &e.c
	if old.Active == c.Active && old.Region == c.Region && old.Zone == c.Zone && old.Capacity == c.Capacity &&
		e.g == tmp.g && e.k == tmp.k && e.a == tmp.a && e.b == tmp.b {
		// Same place in every tree (two-choice's reservations, a report
		// that changes only the room): refresh the aggregates in place.
		ix.unlinkRooms(e)
		e.c, e.hard, e.soft = c, tmp.hard, tmp.soft
		ix.linkRooms(e)
		if c.Active {
			ix.global.fix(&e.n[0])
			ix.regions[c.Region].fix(&e.n[1])
			if t := ix.zones[[2]string{c.Region, c.Zone}]; t != nil && e.zn != nil {
				t.fix(e.zn)
			}
		}
		return
	}
	ix.unlink(e)
	e.c = c
	e.g, e.k, e.a, e.b, e.hard, e.soft = tmp.g, tmp.k, tmp.a, tmp.b, tmp.hard, tmp.soft
	ix.link(e)
}

// Remove drops server id.
func (ix *Index) Remove(id string) {
	if e := ix.m[id]; e != nil {
		ix.unlink(e)
		delete(ix.m, id)
	}
}

// Get returns what the index holds for server id.
func (ix *Index) Get(id string) (Candidate, bool) {
	e := ix.m[id]
	if e == nil {
		return Candidate{}, false
	}
	return e.c, true
}

// Reserve counts units more on server id as used and in flight (a decision
// proposed but not yet applied).
func (ix *Index) Reserve(id string, units int64) {
	e := ix.m[id]
	if e == nil {
		return
	}
	c := e.c
	c.Used += units
	c.InFlight += units
	ix.Upsert(c)
}

// Candidates returns every server held, sorted by id.
func (ix *Index) Candidates() []Candidate {
	out := make([]Candidate, 0, len(ix.m))
	for _, e := range ix.m {
		out = append(out, e.c)
	}
	slices.SortFunc(out, func(a, b Candidate) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func hash32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	// Finalize (murmur3 fmix32) so similar ids get unrelated priorities.
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// derive computes e's key and room from e.c under the index's policy.
func (ix *Index) derive(e *entry) {
	p, c := ix.p, &e.c
	e.g, e.k, e.a, e.b = 0, 0, 0, 0
	switch p.spec.GetStrategy() {
	case policyspec.TwoChoice:
		// id order: rank-based draws.
	case policyspec.BinPack:
		a, b := p.scoreAB(c)
		e.g, e.k, e.a, e.b = c.Capacity, -c.Used, -a, -b
	default:
		e.a, e.b = p.scoreAB(c)
	}
	e.hard = p.hardRoom(c)
	e.soft = e.hard
	if e.hard >= 1 && !p.softOKUnits(c, e.hard) {
		// softOKUnits is monotone in the units: find the most that fit.
		lo, hi := int64(0), e.hard // lo fits (or is 0), hi does not
		for hi-lo > 1 {
			mid := lo + (hi-lo)/2
			if p.softOKUnits(c, mid) {
				lo = mid
			} else {
				hi = mid
			}
		}
		e.soft = lo
	}
}

// hardRoom is the most units c can take within the hard limits (< 1 when
// none): hardViolation(c, u) == "" exactly when 1 <= u <= hardRoom(c).
func (p *Policy) hardRoom(c *Candidate) int64 {
	if !c.Active {
		return -1
	}
	if c.Load != nil {
		hard := p.spec.GetHard()
		cpu, egress := p.projected(c, 0)
		if h := hard.GetCpu(); h > 0 && cpu >= h {
			return -1
		}
		if h := hard.GetEgressBps(); h > 0 && egress >= float64(h) {
			return -1
		}
	}
	return policyspec.UnitLimit(c.Capacity, p.spec.GetHard().GetUnits()) - c.Used
}

func (ix *Index) regionTree(region string, create bool) *tree {
	t := ix.regions[region]
	if t == nil && create {
		t = &tree{caps: map[int64]int{}}
		ix.regions[region] = t
	}
	return t
}

// roomsIndexed reports whether the policy reads which servers host a room
// (room-affinity, or an expression that may read server.hosts_room).
func (ix *Index) roomsIndexed() bool {
	return ix.p.spec.GetStrategy() == policyspec.RoomAffinity || ix.p.prog != nil
}

func (ix *Index) linkRooms(e *entry) {
	if l := e.c.Load; l != nil && ix.roomsIndexed() {
		for _, r := range l.Rooms {
			if !slices.Contains(ix.byRoom[r], e) {
				ix.byRoom[r] = append(ix.byRoom[r], e)
			}
		}
	}
}

func (ix *Index) unlinkRooms(e *entry) {
	if l := e.c.Load; l != nil && ix.roomsIndexed() {
		for _, r := range l.Rooms {
			hs := ix.byRoom[r]
			if i := slices.Index(hs, e); i >= 0 {
				hs[i] = hs[len(hs)-1]
				hs[len(hs)-1] = nil
				if hs = hs[:len(hs)-1]; len(hs) == 0 {
					delete(ix.byRoom, r)
				} else {
					ix.byRoom[r] = hs
				}
			}
		}
	}
}

func (ix *Index) link(e *entry) {
	ix.linkRooms(e)
	if !e.c.Active {
		return
	}
	ix.global.insert(&e.n[0])
	ix.regionTree(e.c.Region, true).insert(&e.n[1])
	if ix.p.spec.GetStrategy() == policyspec.Region {
		z := [2]string{e.c.Region, e.c.Zone}
		t := ix.zones[z]
		if t == nil {
			t = &tree{caps: map[int64]int{}}
			ix.zones[z] = t
		}
		if e.zn == nil {
			e.zn = &tnode{e: e}
		}
		t.insert(e.zn)
	}
}

func (ix *Index) unlink(e *entry) {
	ix.unlinkRooms(e)
	if !e.c.Active {
		return
	}
	ix.global.remove(&e.n[0])
	if t := ix.regions[e.c.Region]; t != nil {
		t.remove(&e.n[1])
		if t.root == nil {
			delete(ix.regions, e.c.Region)
		}
	}
	z := [2]string{e.c.Region, e.c.Zone}
	if t := ix.zones[z]; t != nil && e.zn != nil && e.zn.inTree(t) {
		t.remove(e.zn)
		if t.root == nil {
			delete(ix.zones, z)
		}
	}
}

// ---- treap ----

// cmpKey is keyLess as a three-way comparison.
func cmpKey(x, y *entry) int {
	switch {
	case x.g != y.g:
		return cmp.Compare(x.g, y.g)
	case x.k != y.k:
		return cmp.Compare(x.k, y.k)
	case x.a != y.a:
		return cmp.Compare(x.a, y.a)
	case x.b != y.b:
		return cmp.Compare(x.b, y.b)
	}
	return strings.Compare(x.c.ID, y.c.ID)
}

func keyLess(x, y *entry) bool {
	switch {
	case x.g != y.g:
		return x.g < y.g
	case x.k != y.k:
		return x.k < y.k
	case x.a != y.a:
		return x.a < y.a
	case x.b != y.b:
		return x.b < y.b
	}
	return x.c.ID < y.c.ID
}

// build makes t the treap of es, which must be sorted by key (cmpKey): a
// Cartesian tree by priority laid out with a stack, in linear time.
func (t *tree) build(es []*entry, node func(*entry) *tnode) {
	stack := make([]*tnode, 0, 64)
	for _, e := range es {
		n := node(e)
		n.left, n.right = nil, nil
		var last *tnode
		for len(stack) > 0 && stack[len(stack)-1].e.prio < e.prio {
			last = stack[len(stack)-1]
			stack = stack[:len(stack)-1]
		}
		n.left = last
		if len(stack) > 0 {
			stack[len(stack)-1].right = n
		}
		stack = append(stack, n)
		t.caps[e.c.Capacity]++
	}
	t.root = nil
	if len(stack) > 0 {
		t.root = stack[0]
		pullAll(t.root)
	}
}

// pullAll recomputes the aggregates of a whole subtree, children first.
func pullAll(n *tnode) {
	if n == nil {
		return
	}
	pullAll(n.left)
	pullAll(n.right)
	pull(n)
}

func (t *tree) insert(n *tnode) {
	n.left, n.right = nil, nil
	t.root = ins(t.root, n)
	t.caps[n.e.c.Capacity]++
}

func (t *tree) remove(n *tnode) {
	t.root = del(t.root, n)
	n.left, n.right = nil, nil
	if t.caps[n.e.c.Capacity]--; t.caps[n.e.c.Capacity] <= 0 {
		delete(t.caps, n.e.c.Capacity)
	}
}

// fix recomputes the aggregates on the path from t's root to n after n's
// entry changed without changing its key. It reports whether n was found.
func (t *tree) fix(n *tnode) bool {
	var path [128]*tnode
	depth := 0
	c := t.root
	for c != nil && c != n {
		if depth == len(path) {
			return t.refixSlow(n)
		}
		path[depth] = c
		depth++
		if keyLess(n.e, c.e) {
			c = c.left
		} else {
			c = c.right
		}
	}
	if c == nil {
		return false
	}
	pull(n)
	for i := depth - 1; i >= 0; i-- {
		pull(path[i])
	}
	return true
}

// refixSlow re-links n (a path deeper than fix's buffer: never in a
// balanced treap, but safe).
func (t *tree) refixSlow(n *tnode) bool {
	t.remove(n)
	t.insert(n)
	return true
}

// inTree reports whether n is linked into t (searching by its key).
func (n *tnode) inTree(t *tree) bool {
	for c := t.root; c != nil; {
		if c == n {
			return true
		}
		if keyLess(n.e, c.e) {
			c = c.left
		} else {
			c = c.right
		}
	}
	return false
}

func ins(root, n *tnode) *tnode {
	if root == nil {
		pull(n)
		return n
	}
	if n.e.prio > root.e.prio {
		n.left, n.right = split(root, n.e)
		pull(n)
		return n
	}
	if keyLess(n.e, root.e) {
		root.left = ins(root.left, n)
	} else {
		root.right = ins(root.right, n)
	}
	pull(root)
	return root
}

// split parts t into keys below e and keys at or above e.
func split(t *tnode, e *entry) (l, r *tnode) {
	if t == nil {
		return nil, nil
	}
	if keyLess(t.e, e) {
		t.right, r = split(t.right, e)
		pull(t)
		return t, r
	}
	l, t.left = split(t.left, e)
	pull(t)
	return l, t
}

func merge(l, r *tnode) *tnode {
	switch {
	case l == nil:
		return r
	case r == nil:
		return l
	case l.e.prio > r.e.prio:
		l.right = merge(l.right, r)
		pull(l)
		return l
	default:
		r.left = merge(l, r.left)
		pull(r)
		return r
	}
}

func del(root, n *tnode) *tnode {
	if root == nil {
		return nil
	}
	if root == n {
		return merge(n.left, n.right)
	}
	if keyLess(n.e, root.e) {
		root.left = del(root.left, n)
	} else {
		root.right = del(root.right, n)
	}
	pull(root)
	return root
}

// pull recomputes n's aggregates from its entry and children.
func pull(n *tnode) {
	e := n.e
	n.maxHard, n.maxSoft, n.minK, n.minA, n.minB, n.minID = clamp32(e.hard), clamp32(e.soft), e.k, e.a, e.b, e.c.ID
	for t := range twoChoiceUnits {
		n.cntHard[t], n.cntSoft[t] = 0, 0
		if e.hard >= int64(t+1) {
			n.cntHard[t] = 1
		}
		if e.soft >= int64(t+1) {
			n.cntSoft[t] = 1
		}
	}
	for _, ch := range [2]*tnode{n.left, n.right} {
		if ch == nil {
			continue
		}
		n.maxHard, n.maxSoft = max(n.maxHard, ch.maxHard), max(n.maxSoft, ch.maxSoft)
		n.minK, n.minA, n.minB = min(n.minK, ch.minK), min(n.minA, ch.minA), min(n.minB, ch.minB)
		if ch.minID < n.minID {
			n.minID = ch.minID
		}
		for t := range twoChoiceUnits {
			n.cntHard[t] += ch.cntHard[t]
			n.cntSoft[t] += ch.cntSoft[t]
		}
	}
}

func clamp32(v int64) int32 {
	return int32(max(min(v, 1<<31-1), -1<<31))
}

// ---- picking ----

// finder searches one tree for the best server that can take u units.
type finder struct {
	u     int64
	soft  bool
	g     int64 // with useG: only servers of this group
	useG  bool
	best  *entry
	bestS float64
}

func (f *finder) room(e *entry) int64 {
	if f.soft {
		return e.soft
	}
	return e.hard
}

func (f *finder) nroom(n *tnode) int64 {
	if n == nil {
		return -1
	}
	r := n.maxHard
	if f.soft {
		r = n.maxSoft
	}
	if r == 1<<31-1 {
		return 1<<63 - 1 // clamped: at least this much
	}
	return int64(r)
}

func (f *finder) nroomSoft(n *tnode) int64 {
	g := *f
	g.soft = true
	return g.nroom(n)
}

func (f *finder) count(n *tnode) int32 {
	if n == nil {
		return 0
	}
	if f.soft {
		return n.cntSoft[f.u-1]
	}
	return n.cntHard[f.u-1]
}

// prune reports whether no server under n can fit or beat the best so far.
func (f *finder) prune(n *tnode) bool {
	if f.nroom(n) < f.u {
		return true
	}
	b := f.best
	if b == nil {
		return false
	}
	if n.minK != b.k {
		return n.minK > b.k
	}
	lb := score(n.minA, n.minB, f.u)
	return lb > f.bestS || lb == f.bestS && n.minID > b.c.ID
}

func (f *finder) search(n *tnode) {
	for n != nil && !f.prune(n) {
		if f.useG {
			if n.e.g < f.g {
				n = n.right
				continue
			}
			if n.e.g > f.g {
				n = n.left
				continue
			}
		}
		f.search(n.left)
		f.visit(n.e)
		n = n.right
	}
}

func (f *finder) visit(e *entry) {
	if f.room(e) < f.u || f.useG && e.g != f.g {
		return
	}
	s := score(e.a, e.b, f.u)
	b := f.best
	if b == nil || e.k < b.k || e.k == b.k && (s < f.bestS || s == f.bestS && e.c.ID < b.c.ID) {
		f.best, f.bestS = e, s
	}
}

// kth returns the k-th (from 0) server of n's subtree, in key order, that
// can take f.u units. Needs f.u <= twoChoiceUnits.
func (f *finder) kth(n *tnode, k int32) *entry {
	for n != nil {
		l := f.count(n.left)
		if k < l {
			n = n.left
			continue
		}
		k -= l
		if f.room(n.e) >= f.u {
			if k == 0 {
				return n.e
			}
			k--
		}
		n = n.right
	}
	return nil
}

// collect appends, in key order, up to limit servers of n's subtree that
// can take f.u units (limit < 0: all).
func (f *finder) collect(n *tnode, out []*entry, limit int) []*entry {
	for n != nil && f.nroom(n) >= f.u && (limit < 0 || len(out) < limit) {
		out = f.collect(n.left, out, limit)
		if f.room(n.e) >= f.u && (limit < 0 || len(out) < limit) {
			out = append(out, n.e)
		}
		n = n.right
	}
	return out
}

// Pick returns what Policy.Pick returns for the held candidates and req.
func (ix *Index) Pick(req Request) (string, error) {
	p := ix.p
	if err := fsm.ValidateRequest(req.Room, req.Units); err != nil {
		return "", err
	}
	if req.Server != "" {
		e := ix.m[req.Server]
		if e == nil {
			return "", fmt.Errorf("%w: server %q is not registered", fsm.ErrNotFound, req.Server)
		}
		c := &e.c
		if !c.Active {
			return "", fmt.Errorf("%w: server %s is %s", fsm.ErrServerNotActive, c.ID, c.State)
		}
		if why := p.hardViolation(c, req); why != "" {
			return "", fmt.Errorf("%w: server %s: %s", fsm.ErrCapacity, c.ID, why)
		}
		return c.ID, nil
	}
	// The requester is never a candidate: take it out for this pick.
	if e := ix.m[req.Requester]; e != nil && e.c.Active {
		ix.unlink(e)
		defer ix.link(e)
	}
	u := req.Units
	f := finder{u: u}
	if f.nroom(ix.global.root) < u {
		return "", ix.noFit(req)
	}
	f.soft = f.nroomSoft(ix.global.root) >= u
	scope, inRegion := &ix.global, false
	if req.Region != "" {
		if t := ix.regions[req.Region]; t != nil && f.nroom(t.root) >= u {
			scope, inRegion = t, true
		}
	}
	if p.prog != nil {
		return ix.pickExpr(req, f, scope, inRegion)
	}
	var best *entry
	switch p.spec.GetStrategy() {
	case policyspec.TwoChoice:
		best = ix.twoChoice(req, f, scope)
	case policyspec.BinPack:
		for g := range scope.caps {
			ff := f
			ff.g, ff.useG = g, true
			ff.search(scope.root)
			best = ix.better(best, ff.best, req)
		}
	case policyspec.RoomAffinity:
		for _, e := range ix.hosts(req, f, inRegion) {
			best = ix.better(best, e, req)
		}
		if best == nil {
			f.search(scope.root)
			best = f.best
		}
	case policyspec.Region:
		best = ix.regionBest(req, f, scope, inRegion)
	default:
		f.search(scope.root)
		best = f.best
	}
	if best == nil {
		// Unreachable while the aggregates are right; fail safe.
		return "", ix.noFit(req)
	}
	return best.c.ID, nil
}

// better returns the preferred of a and b under the strategy (nil loses).
func (ix *Index) better(a, b *entry, req Request) *entry {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case ix.p.less(&b.c, &a.c, req):
		return b
	}
	return a
}

// hosts returns the eligible servers in the pool that host req.Room.
func (ix *Index) hosts(req Request, f finder, inRegion bool) []*entry {
	var out []*entry
	add := func(id string) {
		e := ix.m[id]
		if e == nil || id == req.Requester || slices.Contains(out, e) || !e.c.Active || f.room(e) < f.u || inRegion && e.c.Region != req.Region {
			return
		}
		if _, ok := roomUnits(&e.c, req); !ok {
			return
		}
		out = append(out, e)
	}
	for id, units := range req.Hosting {
		if units > 0 {
			add(id)
		}
	}
	for _, e := range ix.byRoom[req.Room] {
		add(e.c.ID)
	}
	return out
}

// regionBest is the region strategy: the requester's zone, its region, then
// other regions by distance (unknown last), least loaded within each.
func (ix *Index) regionBest(req Request, f finder, scope *tree, inRegion bool) *entry {
	if req.Region == "" || inRegion {
		if inRegion && req.Zone != "" {
			if t := ix.zones[[2]string{req.Region, req.Zone}]; t != nil {
				ff := f
				ff.search(t.root)
				if ff.best != nil {
					return ff.best
				}
			}
		}
		f.search(scope.root)
		return f.best
	}
	// Nothing fits in the requester's region: rank the others.
	type group struct {
		rank  int64
		trees []*tree
	}
	byRank := map[int64]*group{}
	for r, t := range ix.regions {
		if r == req.Region {
			continue
		}
		rank := ix.p.regionRank(&Candidate{Region: r}, req)
		g := byRank[rank]
		if g == nil {
			g = &group{rank: rank}
			byRank[rank] = g
		}
		g.trees = append(g.trees, t)
	}
	groups := make([]*group, 0, len(byRank))
	for _, g := range byRank {
		groups = append(groups, g)
	}
	sort.Slice(groups, func(i, j int) bool { return groups[i].rank < groups[j].rank })
	for _, g := range groups {
		var best *entry
		for _, t := range g.trees {
			ff := f
			ff.search(t.root)
			best = ix.better(best, ff.best, req)
		}
		if best != nil {
			return best
		}
	}
	return nil
}

// twoChoice draws two eligible servers by rank in id order, as
// Policy.twoChoice does over the sorted pool.
func (ix *Index) twoChoice(req Request, f finder, scope *tree) *entry {
	var all []*entry
	var n int32
	if f.u <= twoChoiceUnits {
		n = f.count(scope.root)
	} else {
		all = f.collect(scope.root, nil, -1)
		n = int32(len(all))
	}
	at := func(k int) *entry {
		if all != nil {
			return all[k]
		}
		return f.kth(scope.root, int32(k))
	}
	if n == 1 {
		return at(0)
	}
	i, j := twoChoiceDraw(req, int(n))
	a, b := at(i), at(j)
	if ix.p.lessLoaded(&a.c, &b.c, req) == &b.c {
		return b
	}
	return a
}

// pickExpr scores at most ExprCandidates eligible servers (plus the room's
// hosts) with the expression, then applies the strategy to the best.
func (ix *Index) pickExpr(req Request, f finder, scope *tree, inRegion bool) (string, error) {
	es := f.collect(scope.root, ix.buf[:0], ExprCandidates)
	if ix.mark++; ix.mark == 0 {
		// Wrapped: clear every mark, or one set 2^32 picks ago would match.
		for _, e := range ix.m {
			e.mark = 0
		}
		ix.mark = 1
	}
	for _, e := range es {
		e.mark = ix.mark
	}
	for _, e := range ix.hosts(req, f, inRegion) {
		if e.mark != ix.mark {
			es = append(es, e)
		}
	}
	pool := ix.pool[:0]
	for _, e := range es {
		pool = append(pool, &e.c)
	}
	ix.buf, ix.pool = es[:0], pool[:0]
	top, err := ix.p.bestByExpr(pool, req)
	if err != nil {
		return "", err
	}
	return ix.p.choose(top, req).ID, nil
}

// noFit explains a refusal: exactly as Policy.Pick for fleets up to
// NoFitDetail servers, summarized beyond.
func (ix *Index) noFit(req Request) error {
	if len(ix.m) <= NoFitDetail {
		cands := ix.Candidates()
		if req.Requester != "" {
			cands = withoutServer(cands, req.Requester)
		}
		return ix.p.noFit(cands, req)
	}
	active := 0
	if ix.global.root != nil {
		// Every active server is in the global tree; count by walking caps.
		for _, n := range ix.global.caps {
			active += n
		}
	}
	return fmt.Errorf("%w: no server can take %d units within the hard limits (%d active of %d registered servers)",
		fsm.ErrCapacity, req.Units, active, len(ix.m))
}
