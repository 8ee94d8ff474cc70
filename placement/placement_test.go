package placement

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

func srv(id string, capacity, used int64) Candidate {
	return Candidate{ID: id, Capacity: capacity, Used: used, Active: true, State: "active"}
}

func withRegion(c Candidate, region, zone string) Candidate {
	c.Region, c.Zone = region, zone
	return c
}
func withLoad(c Candidate, l Load) Candidate { c.Load = &l; return c }

func withInFlight(c Candidate, units int64) Candidate { c.InFlight = units; return c }

func TestStrategies(t *testing.T) {
	fleet := []Candidate{srv("a", 10, 2), srv("b", 10, 7), srv("c", 10, 5)}
	regional := []Candidate{
		withRegion(srv("eu1", 10, 8), "eu-west", "a"),
		withRegion(srv("eu2", 10, 1), "eu-west", "b"),
		withRegion(srv("ce1", 10, 0), "eu-central", "a"),
		withRegion(srv("us1", 10, 0), "us-east", "a"),
	}
	dist := []*fsmpb.RegionDistance{{From: "eu-west", To: "eu-central", Distance: 10}, {From: "eu-west", To: "us-east", Distance: 80}}
	full := func(c []Candidate) []Candidate { // eu-west full
		out := append([]Candidate(nil), c...)
		out[0].Used, out[1].Used = 10, 10
		return out
	}
	tests := []struct {
		name   string
		policy *fsmpb.Policy
		fleet  []Candidate
		req    Request
		want   string
	}{
		{"least-loaded picks the emptiest", &fsmpb.Policy{Strategy: "least-loaded"}, fleet, Request{Room: "r", Units: 1}, "a"},
		{"never the requester (a cascade leaves its origin)", &fsmpb.Policy{Strategy: "least-loaded"}, fleet, Request{Room: "r", Units: 1, Requester: "a"}, "c"},
		{"room-affinity never the requester", &fsmpb.Policy{Strategy: "room-affinity"}, fleet,
			Request{Room: "r", Units: 1, Requester: "b", Hosting: map[string]int64{"b": 3}}, "a"},
		{"pinned to the requester is honoured", &fsmpb.Policy{Strategy: "least-loaded"}, fleet, Request{Room: "r", Units: 1, Requester: "a", Server: "a"}, "a"},
		{"least-loaded uses utilisation, not free units", &fsmpb.Policy{Strategy: "least-loaded"},
			[]Candidate{srv("big", 100, 60), srv("small", 10, 5)}, Request{Room: "r", Units: 1}, "small"},
		{"bin-pack picks the fullest that fits", &fsmpb.Policy{Strategy: "bin-pack"}, fleet, Request{Room: "r", Units: 3}, "b"},
		{"bin-pack skips the fullest when it does not fit", &fsmpb.Policy{Strategy: "bin-pack"}, fleet, Request{Room: "r", Units: 4}, "c"},
		{"bin-pack respects hard units", &fsmpb.Policy{Strategy: "bin-pack", Hard: &fsmpb.Limits{Units: 0.8}}, fleet, Request{Room: "r", Units: 2}, "c"},
		{"soft units prefers below the limit", &fsmpb.Policy{Strategy: "bin-pack", Soft: &fsmpb.Limits{Units: 0.6}}, fleet, Request{Room: "r", Units: 1}, "c"},
		{"soft limit yields when nothing is below it", &fsmpb.Policy{Strategy: "bin-pack", Soft: &fsmpb.Limits{Units: 0.1}}, fleet, Request{Room: "r", Units: 1}, "b"},
		{"hard cpu excludes a hot server", &fsmpb.Policy{Strategy: "least-loaded", Hard: &fsmpb.Limits{Cpu: 0.9}},
			[]Candidate{withLoad(srv("hot", 10, 0), Load{CPU: 0.95}), srv("cool", 10, 5)}, Request{Room: "r", Units: 1}, "cool"},
		{"hard egress excludes a saturated server", &fsmpb.Policy{Strategy: "least-loaded", Hard: &fsmpb.Limits{EgressBps: 1e9}},
			[]Candidate{withLoad(srv("sat", 10, 0), Load{EgressBps: 1e9}), srv("ok", 10, 5)}, Request{Room: "r", Units: 1}, "ok"},
		{"unreported reservations count against a quiet report (no herding)", &fsmpb.Policy{Strategy: "least-loaded", Weights: &fsmpb.Weights{Cpu: 1}},
			[]Candidate{withLoad(srv("quiet", 100, 40), Load{CPU: 0.10, Unmaterialized: 30}), withLoad(srv("busy", 100, 20), Load{CPU: 0.25})},
			Request{Room: "r", Units: 1}, "busy"},
		{"in-flight reservations count against a quiet report", &fsmpb.Policy{Strategy: "least-loaded", Weights: &fsmpb.Weights{Cpu: 1}},
			[]Candidate{withInFlight(withLoad(srv("quiet", 100, 60), Load{CPU: 0.10}), 50), withLoad(srv("busy", 100, 20), Load{CPU: 0.25})},
			Request{Room: "r", Units: 1}, "busy"},
		{"an empty report projects a capacity share per unit", &fsmpb.Policy{Strategy: "least-loaded", Weights: &fsmpb.Weights{Cpu: 1}},
			[]Candidate{withInFlight(withLoad(srv("new", 10, 6), Load{}), 6), withLoad(srv("old", 10, 2), Load{CPU: 0.3})},
			Request{Room: "r", Units: 1}, "old"},
		{"hard cpu sees projected load", &fsmpb.Policy{Strategy: "least-loaded", Hard: &fsmpb.Limits{Cpu: 0.9}},
			[]Candidate{withInFlight(withLoad(srv("filling", 20, 10), Load{CPU: 0.5}), 5), srv("other", 20, 15)}, Request{Room: "r", Units: 1}, "other"},
		{"cpu weight moves least-loaded", &fsmpb.Policy{Strategy: "least-loaded", Weights: &fsmpb.Weights{Units: 1, Cpu: 2}},
			[]Candidate{withLoad(srv("a", 10, 1), Load{CPU: 0.8}), withLoad(srv("b", 10, 3), Load{CPU: 0.1})}, Request{Room: "r", Units: 1}, "b"},
		{"room-affinity prefers the server hosting the room", &fsmpb.Policy{Strategy: "room-affinity"}, fleet,
			Request{Room: "r", Units: 1, Hosting: map[string]int64{"b": 3}}, "b"},
		{"room-affinity prefers the server hosting most of it", &fsmpb.Policy{Strategy: "room-affinity"}, fleet,
			Request{Room: "r", Units: 1, Hosting: map[string]int64{"b": 1, "c": 4}}, "c"},
		{"room-affinity reads rooms from load reports", &fsmpb.Policy{Strategy: "room-affinity"},
			[]Candidate{srv("a", 10, 0), withLoad(srv("b", 10, 6), Load{Rooms: []string{"x", "r"}})}, Request{Room: "r", Units: 1}, "b"},
		{"room-affinity falls back to least-loaded when the host is full", &fsmpb.Policy{Strategy: "room-affinity"}, fleet,
			Request{Room: "r", Units: 4, Hosting: map[string]int64{"b": 3}}, "a"},
		{"region prefers the requester's zone", &fsmpb.Policy{Strategy: "region", Distances: dist}, regional,
			Request{Room: "r", Units: 1, Region: "eu-west", Zone: "a"}, "eu1"},
		{"region then the requester's region", &fsmpb.Policy{Strategy: "region", Distances: dist}, regional,
			Request{Room: "r", Units: 1, Region: "eu-west", Zone: "c"}, "eu2"},
		{"region then the nearest by distance", &fsmpb.Policy{Strategy: "region", Distances: dist}, full(regional),
			Request{Room: "r", Units: 1, Region: "eu-west", Zone: "a"}, "ce1"},
		{"region distance is symmetric", &fsmpb.Policy{Strategy: "region", Distances: []*fsmpb.RegionDistance{{From: "eu-central", To: "us-east", Distance: 5}, {From: "eu-central", To: "eu-west", Distance: 50}}},
			regional, Request{Room: "r", Units: 1, Region: "eu-central", Zone: "z"}, "ce1"},
		{"expression overrides the strategy", &fsmpb.Policy{Strategy: "least-loaded", Expr: `server.id == "b" ? 1 : 0`}, fleet, Request{Room: "r", Units: 1}, "b"},
		{"expression ties fall back to the strategy", &fsmpb.Policy{Strategy: "bin-pack", Expr: `server.free >= 5 ? 1 : 0`}, fleet, Request{Room: "r", Units: 1}, "c"},
		{"expression sees the request", &fsmpb.Policy{Strategy: "least-loaded", Expr: `request.units > 2 ? server.used : -server.used`}, fleet, Request{Room: "r", Units: 3}, "b"},
		{"expression never passes a hard limit", &fsmpb.Policy{Strategy: "least-loaded", Expr: `server.used`}, fleet, Request{Room: "r", Units: 4}, "c"},
		{"pinned server is honoured", &fsmpb.Policy{Strategy: "least-loaded"}, fleet, Request{Room: "r", Units: 1, Server: "b"}, "b"},
		{"inactive servers are skipped", &fsmpb.Policy{Strategy: "least-loaded"},
			[]Candidate{{ID: "a", Capacity: 10, State: "draining"}, srv("b", 10, 9)}, Request{Room: "r", Units: 1}, "b"},
		{"ties break on id", &fsmpb.Policy{Strategy: "least-loaded"}, []Candidate{srv("z", 10, 0), srv("y", 10, 0)}, Request{Room: "r", Units: 1}, "y"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Compile(tc.policy)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Pick(tc.fleet, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("picked %s, want %s", got, tc.want)
			}
		})
	}
}

func TestTwoChoiceDeterministicAndBalanced(t *testing.T) {
	p := MustCompile(&fsmpb.Policy{Strategy: "two-choice"})
	var fleet []Candidate
	for i := range 20 {
		fleet = append(fleet, srv(fmt.Sprintf("s%02d", i), 100, 0))
	}
	counts := map[string]int{}
	for i := range 1000 {
		req := Request{ID: fmt.Sprintf("req-%d", i), Room: "r", Units: 1}
		a, err := p.Pick(fleet, req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := p.Pick(fleet, req)
		if a != b {
			t.Fatalf("same request, same view, different picks: %s vs %s", a, b)
		}
		for j := range fleet {
			if fleet[j].ID == a {
				fleet[j].Used++
			}
		}
		counts[a]++
	}
	if len(counts) != 20 {
		t.Fatalf("two-choice used %d of 20 servers", len(counts))
	}
	for id, n := range counts {
		if n > 60 { // mean 50; two choices keep the max close to it
			t.Errorf("%s got %d of 1000", id, n)
		}
	}
}

func TestNoFitErrors(t *testing.T) {
	tests := []struct {
		name   string
		policy *fsmpb.Policy
		fleet  []Candidate
		req    Request
		want   error
		msg    string
	}{
		{"empty fleet", &fsmpb.Policy{Strategy: "bin-pack"}, nil, Request{Room: "r", Units: 1}, fsm.ErrCapacity, "no media servers"},
		{"all full", &fsmpb.Policy{Strategy: "bin-pack"}, []Candidate{srv("a", 2, 2)}, Request{Room: "r", Units: 1}, fsm.ErrCapacity, "most free: a with 0"},
		{"hard limit", &fsmpb.Policy{Strategy: "least-loaded", Hard: &fsmpb.Limits{Units: 0.5}}, []Candidate{srv("a", 10, 5)}, Request{Room: "r", Units: 1}, fsm.ErrCapacity, "hard limit of 5"},
		{"pinned past hard limit", &fsmpb.Policy{Strategy: "least-loaded", Hard: &fsmpb.Limits{Units: 0.5}}, []Candidate{srv("a", 10, 5)}, Request{Room: "r", Units: 1, Server: "a"}, fsm.ErrCapacity, "hard limit"},
		{"pinned unknown", &fsmpb.Policy{Strategy: "least-loaded"}, []Candidate{srv("a", 10, 5)}, Request{Room: "r", Units: 1, Server: "x"}, fsm.ErrNotFound, "not registered"},
		{"bad units", &fsmpb.Policy{Strategy: "least-loaded"}, []Candidate{srv("a", 10, 5)}, Request{Room: "r", Units: 0}, fsm.ErrInvalid, "units"},
		{"only the requester has room", &fsmpb.Policy{Strategy: "least-loaded"}, []Candidate{srv("a", 10, 0), srv("b", 10, 10)}, Request{Room: "r", Units: 1, Requester: "a"}, fsm.ErrCapacity, "most free: b with 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := MustCompile(tc.policy).Pick(tc.fleet, tc.req)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.want, tc.msg)
			}
		})
	}
}

func TestCompileRefusesBadPolicies(t *testing.T) {
	tests := []struct {
		name string
		p    *fsmpb.Policy
		msg  string
	}{
		{"unknown strategy", &fsmpb.Policy{Strategy: "random"}, `unknown strategy "random"`},
		{"empty strategy", &fsmpb.Policy{}, "unknown strategy"},
		{"expression syntax", &fsmpb.Policy{Strategy: "bin-pack", Expr: "server.free +"}, "does not compile"},
		{"unknown field", &fsmpb.Policy{Strategy: "bin-pack", Expr: "server.nope"}, "does not compile"},
		{"bool expression", &fsmpb.Policy{Strategy: "bin-pack", Expr: "server.free > 1"}, "must return a number"},
		{"string expression", &fsmpb.Policy{Strategy: "bin-pack", Expr: "server.id"}, "must return a number"},
		{"negative hard units", &fsmpb.Policy{Strategy: "bin-pack", Hard: &fsmpb.Limits{Units: -0.1}}, "hard units"},
		{"units above one", &fsmpb.Policy{Strategy: "bin-pack", Soft: &fsmpb.Limits{Units: 1.5}}, "soft units"},
		{"negative cpu", &fsmpb.Policy{Strategy: "bin-pack", Hard: &fsmpb.Limits{Cpu: -1}}, "hard cpu"},
		{"negative egress", &fsmpb.Policy{Strategy: "bin-pack", Soft: &fsmpb.Limits{EgressBps: -1}}, "soft egress"},
		{"negative weight", &fsmpb.Policy{Strategy: "bin-pack", Weights: &fsmpb.Weights{Cpu: -1}}, "weight cpu"},
		{"negative distance", &fsmpb.Policy{Strategy: "region", Distances: []*fsmpb.RegionDistance{{From: "a", To: "b", Distance: -1}}}, "distance"},
		{"negative retention", &fsmpb.Policy{Strategy: "bin-pack", TombstoneRetentionMs: -1}, "retention"},
		{"negative min pool", &fsmpb.Policy{Strategy: "bin-pack", Provisioning: &fsmpb.Provisioning{MinPool: -1}}, "min pool"},
		{"huge provisioning timeout", &fsmpb.Policy{Strategy: "bin-pack", Provisioning: &fsmpb.Provisioning{TimeoutMs: 1 << 40}}, "timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(tc.p)
			if !errors.Is(err, fsm.ErrInvalid) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want ErrInvalid containing %q", err, tc.msg)
			}
		})
	}
}

func TestExpressionRuntimeErrorScoresLowest(t *testing.T) {
	// int("x") type-checks but fails at run time, for server b only.
	p := MustCompile(&fsmpb.Policy{Strategy: "least-loaded", Expr: `server.id == "b" ? int("x") : 1`})
	got, err := p.Pick([]Candidate{srv("a", 10, 8), srv("b", 10, 0), srv("c", 10, 5)}, Request{Room: "r", Units: 1})
	if err != nil || got != "c" {
		t.Fatalf("got %s %v, want c (b fails to score, c is the least loaded of the rest)", got, err)
	}
}

// BenchmarkPick measures one decision on a 1,000-server fleet per strategy
// (and with an expression), the decision loop's per-request cost.
func BenchmarkPick(b *testing.B) {
	var fleet []Candidate
	for i := range 1000 {
		c := srv(fmt.Sprintf("s%04d", i), 100, int64(i%97))
		c.Region = []string{"eu", "us", "ap"}[i%3]
		c.Load = &Load{CPU: float64(i%10) / 10, EgressBps: int64(i) * 1e6, Rooms: []string{fmt.Sprintf("room-%d", i%50)}}
		fleet = append(fleet, c)
	}
	hosting := map[string]int64{"s0007": 3, "s0500": 1}
	for _, p := range []*fsmpb.Policy{
		{Strategy: "least-loaded", Weights: &fsmpb.Weights{Units: 1, Cpu: 1}},
		{Strategy: "bin-pack", Hard: &fsmpb.Limits{Units: 0.9}},
		{Strategy: "room-affinity"},
		{Strategy: "region", Distances: []*fsmpb.RegionDistance{{From: "eu", To: "us", Distance: 80}}},
		{Strategy: "two-choice"},
		{Strategy: "least-loaded", Expr: "server.free - 50 * server.cpu + (server.hosts_room ? 100 : 0)"},
	} {
		name := p.Strategy
		if p.Expr != "" {
			name += "+expr"
		}
		b.Run(name, func(b *testing.B) {
			pol := MustCompile(p)
			for i := 0; b.Loop(); i++ {
				if _, err := pol.Pick(fleet, Request{ID: strconv.Itoa(i), Room: "room-7", Units: 1, Region: "eu", Hosting: hosting}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
