package sim_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/placement"
	"github.com/switchyard/switchyard/placement/policyspec"
	"github.com/switchyard/switchyard/placement/sim"
)

func load(t *testing.T, name string) []sim.Event {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "testdata", "traces", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	evs, err := sim.Read(f)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestBundledTraces replays every bundled trace under every strategy and
// checks what each promises: bin-pack uses close to the lower bound of
// servers and never more than the spreading strategies; room-affinity
// cascades rooms least; replays are deterministic. The ratios are logged
// (and quoted in testdata/traces/README.md).
func TestBundledTraces(t *testing.T) {
	for _, name := range []string{"steady-rooms.jsonl", "webinar-burst.jsonl", "multi-region.jsonl"} {
		t.Run(name, func(t *testing.T) {
			evs := load(t, name)
			allocs := 0
			for _, e := range evs {
				if e.Op == "alloc" {
					allocs++
				}
			}
			res := map[string]sim.Result{}
			var line []string
			for _, s := range policyspec.Strategies() {
				pol := placement.MustCompile(&fsmpb.Policy{Strategy: s})
				r, err := sim.Run(s, pol, evs, sim.Options{})
				if err != nil {
					t.Fatal(err)
				}
				again, _ := sim.Run(s, pol, evs, sim.Options{})
				if again != r {
					t.Fatalf("%s: replay not deterministic: %+v vs %+v", s, r, again)
				}
				if r.Placed+r.Refused != allocs || r.LowerBound == 0 || r.Ratio < 1 {
					t.Fatalf("%s: %+v for %d allocs", s, r, allocs)
				}
				res[s] = r
				line = append(line, fmt.Sprintf("%s=%.2f", s, r.Ratio))
			}
			bp := res[policyspec.BinPack]
			if bp.Ratio > 1.25 {
				t.Errorf("bin-pack uses %d servers at peak against a bound of %d (ratio %.2f)", bp.PeakServers, bp.LowerBound, bp.Ratio)
			}
			for _, s := range []string{policyspec.LeastLoaded, policyspec.TwoChoice} {
				if bp.PeakServers > res[s].PeakServers {
					t.Errorf("bin-pack peak %d servers > %s %d", bp.PeakServers, s, res[s].PeakServers)
				}
				if res[policyspec.RoomAffinity].Cascades > res[s].Cascades {
					t.Errorf("room-affinity cascades %d > %s %d", res[policyspec.RoomAffinity].Cascades, s, res[s].Cascades)
				}
			}
			t.Logf("bin-pack quality (peak servers / bound %d): %s", bp.LowerBound, strings.Join(line, " "))
		})
	}
}

func TestReadRefusesBadTraces(t *testing.T) {
	tests := []struct {
		name, trace, msg string
	}{
		{"empty", "# nothing\n\n", "no events"},
		{"not json", "{nope\n", "line 1"},
		{"unknown field", `{"t_ms":0,"op":"server","id":"a","capacity":1,"colour":"red"}`, "unknown field"},
		{"unknown op", `{"t_ms":0,"op":"explode"}`, "unknown op"},
		{"bad server", `{"t_ms":0,"op":"server","id":"a"}`, "positive capacity"},
		{"bad alloc", `{"t_ms":0,"op":"alloc","request_id":"r","room":"x","units":0}`, "positive units"},
		{"time backwards", "{\"t_ms\":5,\"op\":\"drain\",\"id\":\"a\"}\n{\"t_ms\":4,\"op\":\"drain\",\"id\":\"a\"}", "line 2: time 4 ms goes backwards"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sim.Read(strings.NewReader(tc.trace))
			if !errors.Is(err, sim.ErrTrace) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want ErrTrace containing %q", err, tc.msg)
			}
		})
	}
}

// fleetTrace is a synthetic trace: n servers in three regions with load
// reports, then allocs requests (rooms of up to 40 units) and a release
// for every other one.
func fleetTrace(n, allocs int) []sim.Event {
	var evs []sim.Event
	regions := []string{"eu", "us", "ap"}
	for i := range n {
		id := fmt.Sprintf("s%06d", i)
		evs = append(evs, sim.Event{Op: "server", ID: id, Capacity: 100, Region: regions[i%3], Zone: "a"},
			sim.Event{Op: "load", ID: id, CPU: float64(i%10) / 20, EgressBps: int64(i%7) * 1e7})
	}
	for i := range allocs {
		evs = append(evs, sim.Event{TMs: int64(i), Op: "alloc", RequestID: fmt.Sprintf("r%d", i), Room: fmt.Sprintf("room-%d", i/40),
			Units: 1, Region: regions[i%3]})
		if i%2 == 1 {
			evs = append(evs, sim.Event{TMs: int64(i), Op: "release", RequestID: fmt.Sprintf("r%d", i-1)})
		}
	}
	return evs
}

// BenchmarkSimulate100k replays 20,000 requests on 100,000 servers per
// strategy (what `policy simulate` does with such a trace) and reports the
// replay time per request.
func BenchmarkSimulate100k(b *testing.B) {
	evs := fleetTrace(100_000, 20_000)
	for _, s := range policyspec.Strategies() {
		b.Run(s, func(b *testing.B) {
			pol := placement.MustCompile(&fsmpb.Policy{Strategy: s})
			for b.Loop() {
				r, err := sim.Run(s, pol, evs, sim.Options{})
				if err != nil || r.Placed != 20_000 {
					b.Fatalf("%+v %v", r, err)
				}
			}
		})
	}
}
