package placement

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// randomFleet builds n servers with few distinct capacities, regions,
// zones and load levels, so that ties and every limit come up.
func randomFleet(r *rand.Rand, n int) []Candidate {
	regions := []string{"", "eu", "us", "ap"}
	zones := []string{"", "a", "b"}
	caps := []int64{10, 20, 50, 100}
	out := make([]Candidate, 0, n)
	for i := range n {
		c := Candidate{ID: fmt.Sprintf("s%04d", r.IntN(10*n+10)*1000+i), Capacity: caps[r.IntN(len(caps))], Active: true, State: "active"}
		c.Used = r.Int64N(c.Capacity + 1)
		if r.IntN(4) == 0 {
			c.Used = 0
		}
		if r.IntN(3) > 0 {
			c.InFlight = r.Int64N(c.Used + 1)
		}
		c.Region, c.Zone = regions[r.IntN(len(regions))], zones[r.IntN(len(zones))]
		if r.IntN(10) == 0 {
			c.Active, c.State = false, []string{"draining", "down"}[r.IntN(2)]
		}
		if r.IntN(3) > 0 {
			l := &Load{CPU: float64(r.IntN(21)) / 20, EgressBps: int64(r.IntN(5)) * 250e6, Peers: r.Int64N(10)}
			l.Unmaterialized = r.Int64N(4)
			for range r.IntN(3) {
				l.Rooms = append(l.Rooms, fmt.Sprintf("room-%d", r.IntN(6)))
			}
			c.Load = l
		}
		out = append(out, c)
	}
	return out
}

func randomPolicy(r *rand.Rand, strategy string, expr bool) *fsmpb.Policy {
	p := &fsmpb.Policy{Strategy: strategy}
	switch r.IntN(6) {
	case 1:
		p.Hard = &fsmpb.Limits{Units: 0.8}
	case 2:
		p.Hard = &fsmpb.Limits{Cpu: 0.9, EgressBps: 900e6}
	case 3:
		p.Soft = &fsmpb.Limits{Units: 0.6}
	case 4:
		p.Soft = &fsmpb.Limits{Cpu: 0.7, EgressBps: 600e6}
		p.Hard = &fsmpb.Limits{Units: 0.9}
	case 5:
		p.Soft = &fsmpb.Limits{Units: 0.5, Cpu: 0.5}
	}
	switch r.IntN(3) {
	case 1:
		p.Weights = &fsmpb.Weights{Units: 1, Cpu: 1, Egress: 1}
	case 2:
		p.Weights = &fsmpb.Weights{Cpu: 2, Egress: 0.5}
	}
	if r.IntN(2) == 0 {
		p.Distances = []*fsmpb.RegionDistance{{From: "eu", To: "us", Distance: 80}, {From: "us", To: "ap", Distance: 120}}
	}
	if expr && r.IntN(6) == 0 {
		p.Expr = []string{
			"server.free - 50 * server.cpu + (server.hosts_room ? 100 : 0)",
			"server.same_region ? 1 : 0",
			"-server.utilization",
		}[r.IntN(3)]
	}
	return p
}

func randomRequest(r *rand.Rand, fleet []Candidate, i int) Request {
	req := Request{ID: fmt.Sprintf("req-%d", i), Room: fmt.Sprintf("room-%d", r.IntN(6)), Units: 1 + r.Int64N(6)}
	if r.IntN(3) == 0 {
		req.Units = 1
	}
	if r.IntN(2) == 0 {
		req.Region = []string{"eu", "us", "ap", "mars"}[r.IntN(4)]
		req.Zone = []string{"", "a", "b"}[r.IntN(3)]
	}
	if len(fleet) > 0 && r.IntN(3) == 0 {
		req.Requester = fleet[r.IntN(len(fleet))].ID
	}
	if len(fleet) > 0 && r.IntN(15) == 0 {
		req.Server = fleet[r.IntN(len(fleet))].ID
	}
	if len(fleet) > 0 && r.IntN(2) == 0 {
		req.Hosting = map[string]int64{}
		for range 1 + r.IntN(3) {
			req.Hosting[fleet[r.IntN(len(fleet))].ID] = r.Int64N(4)
		}
	}
	return req
}

func sameOutcome(t *testing.T, what string, gotID string, gotErr error, wantID string, wantErr error) {
	t.Helper()
	if (gotErr == nil) != (wantErr == nil) || gotID != wantID {
		t.Fatalf("%s: index picked %q (%v), scan picked %q (%v)", what, gotID, gotErr, wantID, wantErr)
	}
	if wantErr == nil {
		return
	}
	for _, s := range []error{fsm.ErrCapacity, fsm.ErrNotFound, fsm.ErrServerNotActive, fsm.ErrInvalid} {
		if errors.Is(gotErr, s) != errors.Is(wantErr, s) {
			t.Fatalf("%s: index error %v, scan error %v", what, gotErr, wantErr)
		}
	}
	if gotErr.Error() != wantErr.Error() {
		t.Fatalf("%s: index error %q, scan error %q", what, gotErr, wantErr)
	}
}

// TestIndexMatchesScan: on random fleets, for every strategy with random
// limits, weights and expressions, the index picks exactly what the scan
// (Policy.Pick over every candidate) picks, through a sequence of
// decisions (each reserving its units, as the leader does), load and
// registry updates and removals.
func TestIndexMatchesScan(t *testing.T) {
	strategies := []string{"least-loaded", "bin-pack", "room-affinity", "region", "two-choice"}
	for _, strategy := range strategies {
		t.Run(strategy, func(t *testing.T) {
			for seed := range uint64(16) {
				r := rand.New(rand.NewPCG(seed, 42))
				n := 1 + r.IntN(40)
				if seed%8 == 0 {
					n = 200
				}
				// Beyond ExprCandidates eligible servers an expression
				// sees only the first ones by design.
				exprOK := n <= ExprCandidates
				spec := randomPolicy(r, strategy, exprOK)
				pol := MustCompile(spec)
				ix := NewIndex(pol)
				fleet := randomFleet(r, n)
				if seed%2 == 0 {
					ix.UpsertAll(fleet) // bulk build
				} else {
					for _, c := range fleet {
						ix.Upsert(c)
					}
				}
				for i := range 150 {
					cands := ix.Candidates()
					req := randomRequest(r, cands, i)
					what := fmt.Sprintf("seed %d step %d policy %v request %+v", seed, i, spec, req)
					want, werr := pol.Pick(cands, req)
					got, gerr := ix.Pick(req)
					sameOutcome(t, what, got, gerr, want, werr)
					switch {
					case gerr == nil && req.Server == "":
						ix.Reserve(got, req.Units)
					case r.IntN(4) == 0 && len(cands) > 0:
						c := cands[r.IntN(len(cands))]
						nc := randomFleet(r, 1)[0]
						nc.ID = c.ID
						ix.Upsert(nc)
					case r.IntN(10) == 0 && len(cands) > 0:
						ix.Remove(cands[r.IntN(len(cands))].ID)
					}
					if i == 75 && r.IntN(2) == 0 {
						// A policy change re-keys the index.
						spec = randomPolicy(r, strategies[r.IntN(len(strategies))], exprOK)
						pol = MustCompile(spec)
						ix.SetPolicy(pol)
					}
				}
			}
		})
	}
}

// TestIndexTies: a fleet of identical servers (every key equal) picks the
// lowest id under every strategy but two-choice, and still matches the
// scan.
func TestIndexTies(t *testing.T) {
	for _, s := range []string{"least-loaded", "bin-pack", "room-affinity", "region", "two-choice"} {
		pol := MustCompile(&fsmpb.Policy{Strategy: s})
		ix := NewIndex(pol)
		var fleet []Candidate
		for i := range 300 {
			c := srv(fmt.Sprintf("s%04d", i), 100, 0)
			fleet = append(fleet, c)
			ix.Upsert(c)
		}
		for i := range 100 {
			req := Request{ID: fmt.Sprint(i), Room: "r", Units: 1 + int64(i%3)}
			want, werr := pol.Pick(ix.Candidates(), req)
			got, gerr := ix.Pick(req)
			sameOutcome(t, s, got, gerr, want, werr)
			ix.Reserve(got, req.Units)
		}
	}
}

// scaleFleet is n servers in three regions and two zones each, capacity
// 100, with load reports (rooms included) on every server and some units
// already used: the shape the leader's index holds at fleet scale.
func scaleFleet(n int) []Candidate {
	fleet := make([]Candidate, 0, n)
	for i := range n {
		c := srv(fmt.Sprintf("s%06d", i), 100, int64(i%41))
		c.Region, c.Zone = []string{"eu", "us", "ap"}[i%3], []string{"a", "b"}[(i/3)%2]
		c.Load = &Load{CPU: float64(i%10) / 20, EgressBps: int64(i%7) * 50e6, Rooms: []string{fmt.Sprintf("room-%d", i%5000)}}
		fleet = append(fleet, c)
	}
	return fleet
}

// benchPolicies are the built-in strategies (with limits and weights that
// exercise the load projection) and one expression.
func benchPolicies() []*fsmpb.Policy {
	return []*fsmpb.Policy{
		{Strategy: "least-loaded", Weights: &fsmpb.Weights{Units: 1, Cpu: 1}, Hard: &fsmpb.Limits{Units: 0.9}},
		{Strategy: "bin-pack", Hard: &fsmpb.Limits{Units: 0.9}},
		{Strategy: "room-affinity", Hard: &fsmpb.Limits{Units: 0.9}},
		{Strategy: "region", Distances: []*fsmpb.RegionDistance{{From: "eu", To: "us", Distance: 80}}, Hard: &fsmpb.Limits{Units: 0.9}},
		{Strategy: "two-choice", Hard: &fsmpb.Limits{Units: 0.9}},
		{Strategy: "least-loaded", Expr: "server.free - 50 * server.cpu + (server.hosts_room ? 100 : 0)", Hard: &fsmpb.Limits{Units: 0.9}},
	}
}

func policyName(p *fsmpb.Policy) string {
	if p.Expr != "" {
		return p.Strategy + "+expr"
	}
	return p.Strategy
}

// BenchmarkIndexPick measures one decision through the index (pick plus
// the reservation the leader makes) at 20 and 100,000 servers, per
// strategy, and reports the p50/p99 decision time.
func BenchmarkIndexPick(b *testing.B) {
	for _, n := range []int{20, 100_000} {
		fleet := scaleFleet(n)
		for _, p := range benchPolicies() {
			b.Run(fmt.Sprintf("servers=%d/%s", n, policyName(p)), func(b *testing.B) {
				ix := NewIndex(MustCompile(p))
				for _, c := range fleet {
					ix.Upsert(c)
				}
				lat := make([]time.Duration, 0, 4096)
				i := 0
				for b.Loop() {
					req := Request{ID: strconv.Itoa(i), Room: fmt.Sprintf("room-%d", i%5000), Units: 1, Region: []string{"eu", "us", "ap"}[i%3], Zone: "a"}
					t0 := time.Now()
					id, err := ix.Pick(req)
					if err != nil {
						b.Fatal(err)
					}
					ix.Reserve(id, 1)
					lat = append(lat, time.Since(t0))
					i++
					if i%1000 == 0 { // release, so the fleet never fills up
						for _, c := range fleet[:min(len(fleet), 50)] {
							ix.Upsert(c)
						}
					}
				}
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-µs")
			})
		}
	}
}

// BenchmarkIndexRebuild reports what a new leader pays once to index
// 100,000 servers, and what a policy switch (re-keying every server) costs
// the decision loop.
func BenchmarkIndexRebuild(b *testing.B) {
	fleet := scaleFleet(100_000)
	pols := benchPolicies()
	for b.Loop() {
		t0 := time.Now()
		ix := NewIndex(MustCompile(pols[0]))
		ix.UpsertAll(fleet)
		build := time.Since(t0)
		t0 = time.Now()
		ix.SetPolicy(MustCompile(pols[1]))
		b.ReportMetric(float64(build.Milliseconds()), "build-ms")
		b.ReportMetric(float64(time.Since(t0).Milliseconds()), "policy-switch-ms")
	}
}
