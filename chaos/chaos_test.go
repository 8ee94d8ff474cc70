package chaos

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/proccluster"
)

// campaign is how much chaos a run does, from SWITCHYARD_CHAOS.
type campaign struct {
	mode     string        // "short" or "full"
	duration time.Duration // nemesis phase per scenario
	steady   time.Duration // fault-free phase of the failover scenario
	kills    int           // leader kills of the failover scenario
	out      string
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

func campaignFromEnv(t *testing.T) campaign {
	mode := os.Getenv("SWITCHYARD_CHAOS")
	if mode == "" {
		t.Skip("chaos runs are real clusters: run with SWITCHYARD_CHAOS=short (make chaos-short) or =full (make chaos)")
	}
	c := campaign{mode: mode, out: os.Getenv("CHAOS_OUT")}
	if c.out == "" {
		c.out = filepath.Join(os.TempDir(), "switchyard-chaos")
	}
	switch mode {
	case "short":
		c.duration = envDuration(t, "CHAOS_DURATION", 30*time.Second)
		c.steady = envDuration(t, "CHAOS_STEADY", 8*time.Second)
		c.kills = 0
	case "full":
		c.duration = envDuration(t, "CHAOS_DURATION", 60*time.Second)
		c.steady = envDuration(t, "CHAOS_STEADY", 60*time.Second)
		c.kills = 50
		if v := os.Getenv("CHAOS_KILLS"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("CHAOS_KILLS=%q: %v", v, err)
			}
			c.kills = n
		}
	default:
		t.Fatalf("SWITCHYARD_CHAOS=%q: want short or full", mode)
	}
	return c
}

// agentArgs are the raft timings the suite runs with (the agent's
// defaults, spelled out so the summary's figures name them).
var agentArgs = []string{"--raft-heartbeat-timeout", "150ms", "--raft-election-timeout", "150ms",
	"--raft-lease-timeout", "100ms", "--raft-commit-timeout", "10ms", "--log-level", "info"}

// check fails t on any violation or run error, after printing the summary.
func check(t *testing.T, sum *Summary, err error, target Target) {
	t.Helper()
	if sum != nil {
		var b strings.Builder
		sum.Print(&b)
		t.Log("\n" + b.String())
		t.Logf("files: %v", sum.Files)
	}
	if err != nil {
		t.Fatal(err)
	}
	if sum.TotalViolations() > 0 {
		t.Errorf("%d invariant violations (see %v)", sum.TotalViolations(), sum.Files)
	}
	if len(sum.Errors) > 0 {
		t.Errorf("run errors: %v\n%s", sum.Errors, target.Logs())
	}
	if sum.Ops.Acknowledged == 0 {
		t.Errorf("no operation was acknowledged: the run proves nothing")
	}
}

func logger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestChaosProcesses runs agents as plain OS processes on loopback:
// SIGKILL of the leader and of random nodes, SIGSTOP of the leader past
// the election timeout, rolling restarts, and (5 nodes) combinations.
func TestChaosProcesses(t *testing.T) {
	c := campaignFromEnv(t)
	bin := proccluster.BuildBinary(t)
	scenarios := []struct {
		name    string
		nodes   int
		nemeses []Nemesis
		full    bool // only in the full campaign
	}{
		{"proc3", 3, []Nemesis{Kill{Leader: true}, Pause{Leader: true}, Kill{}, RollingRestart{}, Kill{Leader: true}, Pause{}}, false},
		{"proc5", 5, []Nemesis{Combo{Kill{Leader: true}, Pause{}}, Kill{Leader: true}, Combo{Pause{Leader: true}, Kill{}}, RollingRestart{}}, true},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			if sc.full && c.mode != "full" {
				t.Skip("full campaign only")
			}
			pc := proccluster.NewWithOptions(t, bin, sc.nodes, proccluster.Options{Args: agentArgs})
			target := &ProcTarget{C: pc}
			sum, err := Run(context.Background(), Config{
				Name: sc.name, Target: target, Clients: 8, Steady: c.steady / 2, Duration: c.duration,
				Nemeses: sc.nemeses, Hold: 1500 * time.Millisecond, Quiet: 500 * time.Millisecond,
				OutDir: c.out, Log: logger(t),
			})
			check(t, sum, err, target)
		})
	}
}

// TestChaosFailover kills the leader again and again (CHAOS_KILLS, 50 in
// the full campaign) after a fault-free phase at full load (CHAOS_STEADY),
// and reports the unavailability per kill and the spurious elections.
// The figures are reported, not asserted (the machine is shared).
func TestChaosFailover(t *testing.T) {
	c := campaignFromEnv(t)
	if c.kills == 0 {
		t.Skip("full campaign only (CHAOS_KILLS)")
	}
	bin := proccluster.BuildBinary(t)
	pc := proccluster.NewWithOptions(t, bin, 3, proccluster.Options{Args: agentArgs})
	target := &ProcTarget{C: pc}
	sum, err := Run(context.Background(), Config{
		Name: "failover", Target: target, Clients: 8, Steady: c.steady, Rounds: c.kills,
		Nemeses: []Nemesis{Kill{Leader: true}}, Hold: time.Second, Quiet: 300 * time.Millisecond,
		OutDir: c.out, Log: logger(t),
	})
	check(t, sum, err, target)
	if sum != nil {
		t.Logf("FIGURES failover kills=%d p50=%.0fms p99=%.0fms max=%.0fms (target p50<=300 p99<=500); steady %.0fs: %d spurious elections, %d acks",
			sum.Failover.Kills, sum.Failover.P50Ms, sum.Failover.P99Ms, sum.Failover.MaxMs, sum.Elect.SteadySeconds, sum.Elect.SteadyElections, sum.Elect.SteadyOps)
	}
}
