package chaos

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
)

const inf = math.MaxInt64

// op is a compact constructor for hand-made histories.
func op(client int, kind Kind, key string, call, ret int64, res Outcome, id, state string) Op {
	return Op{Client: client, Kind: kind, Key: key, Call: call, Return: ret, Result: res, AllocID: id, State: state}
}

func alloc(id, req, srv, state string, units int64) api.Allocation {
	return api.Allocation{ID: id, RequestID: req, Server: srv, State: state, Units: units}
}

func TestLinearizability(t *testing.T) {
	tests := []struct {
		name  string
		ops   []Op
		legal bool
	}{
		{"grant then duplicate", []Op{
			op(0, KindAllocate, "r1", 0, 10, OK, "a-1-0", StateActive),
			op(1, KindAllocate, "r1", 20, 30, OK, "a-1-0", StateActive),
		}, true},
		{"two ids for one request id", []Op{
			op(0, KindAllocate, "r1", 0, 10, OK, "a-1-0", StateActive),
			op(1, KindAllocate, "r1", 20, 30, OK, "a-2-0", StateActive),
		}, false},
		{"concurrent retries, one grant", []Op{
			op(0, KindAllocate, "r1", 0, 50, OK, "a-1-0", StateActive),
			op(1, KindAllocate, "r1", 10, 40, OK, "a-1-0", StateActive),
		}, true},
		{"refused after an acknowledged grant", []Op{
			op(0, KindAllocate, "r1", 0, 10, OK, "a-1-0", StateActive),
			op(1, KindAllocate, "r1", 20, 30, Fail, "", ""),
		}, false},
		{"refusal concurrent with the grant", []Op{
			op(0, KindAllocate, "r1", 0, 30, OK, "a-1-0", StateActive),
			op(1, KindAllocate, "r1", 10, 20, Fail, "", ""),
		}, true},
		{"unknown outcome later seen granted", []Op{
			op(0, KindAllocate, "r1", 0, inf, Unknown, "", ""),
			op(1, KindRead, "r1", 100, 110, OK, "a-1-0", StateActive),
		}, true},
		{"unknown outcome never applied", []Op{
			op(0, KindAllocate, "r1", 0, inf, Unknown, "", ""),
			op(1, KindRead, "r1", 100, 110, OK, "", StateAbsent),
		}, true},
		{"acknowledged grant lost", []Op{
			op(0, KindAllocate, "r1", 0, 10, OK, "a-1-0", StateActive),
			op(1, KindRead, "r1", 100, 110, OK, "", StateAbsent),
		}, false},
		{"release then read released", []Op{
			op(0, KindAllocate, "r1", 0, 10, OK, "a-1-0", StateActive),
			op(0, KindRelease, "r1", 20, 30, OK, "a-1-0", StateReleased),
			op(1, KindRead, "r1", 100, 110, OK, "a-1-0", StateReleased),
		}, true},
		{"acknowledged release undone", []Op{
			op(0, KindAllocate, "r1", 0, 10, OK, "a-1-0", StateActive),
			op(0, KindRelease, "r1", 20, 30, OK, "a-1-0", StateReleased),
			op(1, KindRead, "r1", 100, 110, OK, "a-1-0", StateActive),
		}, false},
		{"stale read after release", []Op{
			op(0, KindAllocate, "r1", 0, 10, OK, "a-1-0", StateActive),
			op(0, KindRelease, "r1", 20, 30, OK, "a-1-0", StateReleased),
			op(1, KindAllocate, "r1", 40, 50, OK, "a-1-0", StateActive),
		}, false},
		{"release not found after grant", []Op{
			op(0, KindAllocate, "r1", 0, 10, OK, "a-1-0", StateActive),
			op(1, KindRelease, "r1", 20, 30, Fail, "", ""),
		}, false},
		{"release unknown may or may not apply", []Op{
			op(0, KindAllocate, "r1", 0, 10, OK, "a-1-0", StateActive),
			op(1, KindRelease, "r1", 20, inf, Unknown, "", ""),
			op(2, KindRead, "r1", 100, 110, OK, "a-1-0", StateActive),
		}, true},
		{"unknown grant then other id acknowledged", []Op{
			op(0, KindAllocate, "r1", 0, inf, Unknown, "", ""),
			op(1, KindAllocate, "r1", 10, 20, OK, "a-5-1", StateActive),
			op(2, KindRead, "r1", 100, 110, OK, "a-9-0", StateActive),
		}, false},
		{"independent keys", []Op{
			op(0, KindAllocate, "r1", 0, 10, OK, "a-1-0", StateActive),
			op(1, KindAllocate, "r2", 0, 10, OK, "a-1-1", StateActive),
			op(2, KindRead, "r1", 100, 110, OK, "a-1-0", StateActive),
			op(2, KindRead, "r2", 100, 110, OK, "a-1-1", StateActive),
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			res, err := CheckLinearizable(tc.ops, 10*time.Second, dir)
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Result == "ok"; got != tc.legal {
				t.Fatalf("linearizable = %v (%s), want %v", got, res.Result, tc.legal)
			}
			if !tc.legal {
				if len(res.IllegalKeys) == 0 || res.IllegalKeys[0] != "r1" {
					t.Errorf("illegal keys %v, want [r1]", res.IllegalKeys)
				}
				b, err := os.ReadFile(filepath.Join(dir, "linearizability.html"))
				if err != nil || !strings.Contains(string(b), "<html") {
					t.Errorf("visualization not written: %v", err)
				}
			}
		})
	}
}

func TestCheckLostAcks(t *testing.T) {
	granted := op(0, KindAllocate, "r1", 0, 10, OK, "a-1-0", StateActive)
	tests := []struct {
		name  string
		ops   []Op
		final []api.Allocation
		want  int
	}{
		{"kept", []Op{granted}, []api.Allocation{alloc("a-1-0", "r1", "m1", StateActive, 1)}, 0},
		{"missing", []Op{granted}, nil, 1},
		{"under another request id", []Op{granted}, []api.Allocation{alloc("a-1-0", "r9", "m1", StateActive, 1)}, 1},
		{"ended without a release", []Op{granted}, []api.Allocation{alloc("a-1-0", "r1", "m1", StateReleased, 1)}, 1},
		{"ended after an unknown release", []Op{granted, op(0, KindRelease, "r1", 20, inf, Unknown, "", "")},
			[]api.Allocation{alloc("a-1-0", "r1", "m1", StateReleased, 1)}, 0},
		{"acknowledged release undone", []Op{granted, op(0, KindRelease, "r1", 20, 30, OK, "a-1-0", StateReleased)},
			[]api.Allocation{alloc("a-1-0", "r1", "m1", StateActive, 1)}, 1},
		{"unknown grant absent is fine", []Op{op(0, KindAllocate, "r2", 0, inf, Unknown, "", "")}, nil, 0},
		{"refusal absent is fine", []Op{op(0, KindAllocate, "r2", 0, 5, Fail, "", "")}, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := CheckLostAcks(tc.ops, Final{Allocations: tc.final})
			if len(v) != tc.want {
				t.Fatalf("got %d violations %v, want %d", len(v), v, tc.want)
			}
			for _, x := range v {
				if x.Invariant != InvLostAck {
					t.Errorf("invariant %q", x.Invariant)
				}
			}
		})
	}
}

func TestCheckDoubleGrants(t *testing.T) {
	tests := []struct {
		name  string
		ops   []Op
		final []api.Allocation
		want  int
	}{
		{"one id", []Op{
			op(0, KindAllocate, "r1", 0, 10, OK, "a-1-0", StateActive),
			op(1, KindAllocate, "r1", 0, 10, OK, "a-1-0", StateActive),
		}, []api.Allocation{alloc("a-1-0", "r1", "m1", StateActive, 1)}, 0},
		{"two answers differ", []Op{
			op(0, KindAllocate, "r1", 0, 10, OK, "a-1-0", StateActive),
			op(1, KindAllocate, "r1", 0, 10, OK, "a-2-0", StateActive),
		}, nil, 1},
		{"final state holds two", []Op{
			op(0, KindAllocate, "r1", 0, inf, Unknown, "", ""),
		}, []api.Allocation{alloc("a-1-0", "r1", "m1", StateActive, 1), alloc("a-3-0", "r1", "m2", StateActive, 1)}, 1},
		{"answer differs from final", []Op{
			op(0, KindAllocate, "r1", 0, 10, OK, "a-1-0", StateActive),
		}, []api.Allocation{alloc("a-7-0", "r1", "m1", StateActive, 1)}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := CheckDoubleGrants(tc.ops, Final{Allocations: tc.final})
			if len(v) != tc.want {
				t.Fatalf("got %v, want %d violations", v, tc.want)
			}
		})
	}
}

func TestCheckCapacity(t *testing.T) {
	srv := func(id string, capacity, used int64) api.Server {
		return api.Server{ID: id, Capacity: capacity, Used: used}
	}
	tests := []struct {
		name string
		f    Final
		want int
	}{
		{"fits", Final{Servers: []api.Server{srv("m1", 10, 3)}, Allocations: []api.Allocation{
			alloc("a", "r1", "m1", StateActive, 2), alloc("b", "r2", "m1", StateActive, 1), alloc("c", "r3", "m1", StateReleased, 9)}}, 0},
		{"used over capacity", Final{Servers: []api.Server{srv("m1", 2, 3)}, Allocations: []api.Allocation{alloc("a", "r1", "m1", StateActive, 3)}}, 2},
		{"accounting drift", Final{Servers: []api.Server{srv("m1", 10, 1)}, Allocations: []api.Allocation{alloc("a", "r1", "m1", StateActive, 2)}}, 1},
		{"allocations over capacity, used hides it", Final{Servers: []api.Server{srv("m1", 2, 2)}, Allocations: []api.Allocation{
			alloc("a", "r1", "m1", StateActive, 2), alloc("b", "r2", "m1", StateActive, 2)}}, 2},
		{"unregistered server", Final{Allocations: []api.Allocation{alloc("a", "r1", "zz", StateActive, 1)}}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := CheckCapacity(tc.f)
			if len(v) != tc.want {
				t.Fatalf("got %v, want %d violations", v, tc.want)
			}
		})
	}
	if v := CheckServerSamples([]api.Server{srv("m1", 5, 5), srv("m1", 5, 6)}); len(v) != 1 {
		t.Fatalf("samples: got %v, want 1 violation", v)
	}
}

func TestCheckStateHashes(t *testing.T) {
	same := []NodeState{{ID: "n1", AppliedIndex: 7, StateHash: "h"}, {ID: "n2", AppliedIndex: 7, StateHash: "h"}, {ID: "n3", AppliedIndex: 7, StateHash: "h"}}
	diff := []NodeState{{ID: "n1", AppliedIndex: 7, StateHash: "h"}, {ID: "n2", AppliedIndex: 7, StateHash: "x"}}
	lagging := []NodeState{{ID: "n1", AppliedIndex: 7, StateHash: "h"}, {ID: "n2", AppliedIndex: 5, StateHash: "old"}}
	down := []NodeState{{ID: "n1", AppliedIndex: 7, StateHash: "h"}, {ID: "n2", Err: "connection refused"}}
	tests := []struct {
		name      string
		ns        []NodeState
		converged bool
		want      int
	}{
		{"identical", same, true, 0},
		{"different hash", diff, true, 1},
		{"never converged", lagging, false, 1},
		{"node unreachable", down, false, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Converged(tc.ns); got != tc.converged {
				t.Fatalf("Converged = %v, want %v", got, tc.converged)
			}
			if v := CheckStateHashes(tc.ns, tc.converged); len(v) != tc.want {
				t.Fatalf("got %v, want %d violations", v, tc.want)
			}
		})
	}
}

func TestCheckFalseDown(t *testing.T) {
	s := int64(time.Second)
	reports := []Reporting{{Server: "m1", Reports: []int64{0, s, 2 * s}}, {Server: "m2", Reports: []int64{0}}}
	tests := []struct {
		name  string
		downs []DownEvent
		want  int
	}{
		{"silent for a window", []DownEvent{{Server: "m2", At: 5 * s}}, 0},
		{"down while reporting", []DownEvent{{Server: "m1", At: 2*s + s/2}}, 1},
		{"down a window after the last report", []DownEvent{{Server: "m1", At: 6 * s}}, 0},
		{"never reported", []DownEvent{{Server: "m3", At: s}}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if v := CheckFalseDown(reports, tc.downs, 3*time.Second, 750*time.Millisecond); len(v) != tc.want {
				t.Fatalf("got %v, want %d violations", v, tc.want)
			}
		})
	}
}

func TestReadOps(t *testing.T) {
	ops := []Op{op(0, KindAllocate, "r1", 0, 10, OK, "a-1-0", StateActive), op(0, KindAllocate, "r2", 0, inf, Unknown, "", "")}
	reads := ReadOps(ops, Final{Allocations: []api.Allocation{alloc("a-1-0", "r1", "m1", StateActive, 1)}}, 9, 100, 110)
	if len(reads) != 2 || reads[0].State != StateActive || reads[1].State != StateAbsent {
		t.Fatalf("reads %+v", reads)
	}
}

func TestLeaderKillUnavailability(t *testing.T) {
	ms := int64(time.Millisecond)
	ops := []Op{
		op(0, KindAllocate, "a", 90*ms, 95*ms, OK, "x", StateActive),     // before the kill: not counted
		op(0, KindAllocate, "b", 100*ms, 400*ms, OK, "y", StateActive),   // first after kill 1: 300 ms
		op(1, KindAllocate, "c", 150*ms, 350*ms, Fail, "", ""),           // refused: not an ack
		op(0, KindAllocate, "d", 1000*ms, 1200*ms, OK, "z", StateActive), // after kill 2: 200 ms
	}
	faults := []Fault{
		{Kind: "kill-leader", At: 100 * ms}, {Kind: "pause-random", At: 101 * ms},
		{Kind: "kill-leader", At: 1000 * ms}, {Kind: "kill-leader", At: 5000 * ms},
	}
	u := LeaderKillUnavailability(ops, faults)
	if u.Kills != 3 || u.NoAck != 1 || len(u.SamplesMs) != 2 || u.SamplesMs[0] != 300 || u.SamplesMs[1] != 200 || u.MaxMs != 300 {
		t.Fatalf("got %+v", u)
	}
	// Freezes are measured the same way, each until the next freeze: no
	// allocation was invoked between the first freeze and the second.
	faults = []Fault{{Kind: "pause-leader", At: 150 * ms}, {Kind: "kill-leader", At: 160 * ms}, {Kind: "pause-leader", At: 900 * ms}}
	z := LeaderFreezeUnavailability(ops, faults)
	if z.Kills != 2 || z.NoAck != 1 || len(z.SamplesMs) != 1 || z.SamplesMs[0] != 300 {
		t.Fatalf("freezes: got %+v", z)
	}
}
