package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/proccluster"
	"github.com/switchyard/switchyard/pki"
)

// campaign is how much chaos a run does, from SWITCHYARD_CHAOS.
type campaign struct {
	mode     string        // "short" or "full"
	duration time.Duration // nemesis phase per scenario
	steady   time.Duration // fault-free phase of the failover scenario
	kills    int           // leader kills of the failover scenario
	out      string
	fails    *failLog // why scenarios failed, repeated at the end of the run
}

// failLog collects, scenario by scenario, why the campaign failed, so the
// last lines of a long run say it (CI keeps only the tail of the output).
type failLog struct {
	mu    sync.Mutex
	lines []string
}

// add records one reason, cut to a few hundred bytes.
func (f *failLog) add(scenario, reason string) {
	if len(reason) > 600 {
		reason = reason[:600] + "…"
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lines = append(f.lines, scenario+": "+reason)
}

func (f *failLog) all() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.lines)
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
	c := campaign{mode: mode, out: os.Getenv("CHAOS_OUT"), fails: &failLog{}}
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

// agentArgs are the raft timings the suite runs with: the agent's
// defaults (150ms heartbeat and election, 100ms lease, 10ms commit),
// spelled out so the summary names them, or CHAOS_RAFT="HB,ELECTION,LEASE"
// (e.g. "100ms,100ms,80ms").
func agentArgs() []string { return agentArgsOr("150ms", "150ms", "100ms") }

// failoverArgs are the failover scenario's timings: the agent's defaults
// (150/150/100 ms). Fast failover (cluster/failover.go) meets p50 ≤ 300 ms
// and p99 ≤ 500 ms with them; before it, only 100/100/80 ms did. CHAOS_RAFT
// overrides them, CHAOS_AGENT_ARGS=--raft-fast-failover=false measures
// raft's timers alone.
func failoverArgs() []string { return agentArgs() }

func agentArgsOr(hb, el, lease string) []string {
	if v := strings.Split(os.Getenv("CHAOS_RAFT"), ","); len(v) == 3 {
		hb, el, lease = v[0], v[1], v[2]
	}
	args := []string{"--raft-heartbeat-timeout", hb, "--raft-election-timeout", el,
		"--raft-lease-timeout", lease, "--raft-commit-timeout", "10ms", "--log-level", "info"}
	return append(args, strings.Fields(os.Getenv("CHAOS_AGENT_ARGS"))...)
}

func settings() map[string]string {
	return map[string]string{"agent_args": strings.Join(agentArgs(), " ")}
}

// check fails t on any violation or run error, after printing the
// summary, and records why in the campaign's failLog.
func (c campaign) check(t *testing.T, sum *Summary, err error, target Target) {
	t.Helper()
	if sum != nil {
		var b strings.Builder
		sum.Print(&b)
		t.Log("\n" + b.String())
		t.Logf("files: %v", sum.Files)
	}
	if err != nil {
		c.fails.add(t.Name(), err.Error())
		t.Fatal(err)
	}
	if n := sum.TotalViolations(); n > 0 {
		c.fails.add(t.Name(), fmt.Sprintf("%d invariant violations (see %v)", n, sum.Files))
		t.Errorf("%d invariant violations (see %v)", n, sum.Files)
	}
	if len(sum.Errors) > 0 {
		for _, e := range sum.Errors {
			c.fails.add(t.Name(), "run error: "+e)
		}
		t.Errorf("run errors: %v\n%s", sum.Errors, target.Logs())
	}
	if sum.Ops.Acknowledged == 0 {
		c.fails.add(t.Name(), "no operation was acknowledged")
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

// TestChaos is the chaos campaign (SWITCHYARD_CHAOS=short or full): one
// static binary (CGO_ENABLED=0) for every scenario, run as processes, in
// network namespaces and in FROM-scratch containers. Any invariant
// violation or a cluster that does not recover after healing fails it;
// the timing figures are reported, not asserted.
func TestChaos(t *testing.T) {
	c := campaignFromEnv(t)
	bin := proccluster.BuildBinary(t)
	scenarios := []struct {
		name string
		run  func(*testing.T, campaign, string)
	}{
		{"failover", chaosFailover}, {"processes", chaosProcesses}, {"netns", chaosNetNS},
		{"docker", chaosDocker}, {"faults", chaosFaults}, {"loadgen", chaosLoadGen},
	}
	for _, sc := range scenarios {
		if !t.Run(sc.name, func(t *testing.T) { sc.run(t, c, bin) }) {
			c.fails.add(t.Name()+"/"+sc.name, "failed (the reasons recorded above, if any, and its output)")
		}
	}
	if lines := c.fails.all(); len(lines) > 0 {
		t.Errorf("chaos failed, scenario by scenario (details above):\n%s", strings.Join(lines, "\n"))
	}
}

// chaosLoadGen runs media-server load from `switchyard loadgen` (QUIC with
// mutual TLS) through leader kills and pauses, and checks that no server
// is marked down while the load generator kept reporting for it (a new
// leader must wait a full failure-detection window first).
func chaosLoadGen(t *testing.T, c campaign, bin string) {
	ctx := context.Background()
	pc := proccluster.NewWithOptions(t, bin, 3, proccluster.Options{Args: agentArgs(), QUIC: true, ACL: true})
	var quic []string
	for _, p := range pc.Nodes {
		quic = append(quic, p.QUICAddr)
	}
	target := &ProcTarget{C: pc}
	sum, err := Run(ctx, Config{
		Name: "loadgen", Target: target, Clients: 4, Duration: c.duration,
		Nemeses: []Nemesis{Kill{Leader: true}, Pause{Leader: true}, Kill{}, Kill{Leader: true}},
		Hold:    1500 * time.Millisecond, Quiet: 3 * time.Second,
		LoadGen: &LoadGen{Bin: bin, CertDir: pc.CertDir, QUICAddrs: quic, Servers: 20, Interval: 500 * time.Millisecond, Window: 2 * time.Second},
		OutDir:  c.out, Log: logger(t), Settings: settings(), KeepHistory: os.Getenv("CHAOS_KEEP_HISTORY") == "1",
	})
	c.check(t, sum, err, target)
}

// chaosFaults feeds agents bad input on their own disks and clocks under
// load: a foreign data dir, a corrupted raft.db, a full disk, a node whose
// monotonic clock is days ahead, and wall-clock jumps of ten days either
// way on a node that is then made the leader. Each must be detected and reported (the
// nemesis fails otherwise; what the agent said is in the summary notes),
// and every invariant must hold across them.
func chaosFaults(t *testing.T, c campaign, bin string) {
	ctx := context.Background()
	nemeses := []Nemesis{ForeignDataDir{}, CorruptBolt{}, WallClockJump{Offset: 240 * time.Hour, Lead: true}, WallClockJump{Offset: -240 * time.Hour, Lead: true}}
	// Full disk and the monotonic clock offset were full-campaign only
	// while a follower healed from a full disk could stay at applied index
	// 0; that was hashicorp/raft's pipeline deadlock (pipelining is off
	// now, cluster/node.go), so they run in chaos-short again.
	// Both need root (a tmpfs mount, a time namespace): elsewhere they are
	// left out with a note, under CI=true their absence fails the run.
	missing := func(what string, err error) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chaos needs %s under CI: %v", what, err)
		}
		t.Logf("%s left out: %v", what, err)
	}
	if os.Geteuid() != 0 {
		missing("disk-full (a tmpfs mount)", errors.New("not root"))
	} else {
		nemeses = append(nemeses, DiskFull{})
	}
	if err := ClockOffsetUsable(ctx); err != nil {
		missing("clock-offset", err)
	} else {
		nemeses = append(nemeses, ClockOffset{Offset: 240 * time.Hour})
	}
	pc := proccluster.NewWithOptions(t, bin, 3, proccluster.Options{Args: agentArgs(), NodeArgs: ClockFileArgs, ACL: true})
	target := &ProcTarget{C: pc}
	sum, err := Run(ctx, Config{
		Name: "faults", Target: target, Clients: 8, Rounds: len(nemeses), ClientRate: 0,
		Nemeses: nemeses, Hold: time.Second, Quiet: 500 * time.Millisecond,
		OutDir: c.out, Log: logger(t), Settings: settings(), KeepHistory: os.Getenv("CHAOS_KEEP_HISTORY") == "1",
	})
	c.check(t, sum, err, target)
	if sum != nil && len(sum.Notes) < min(3, len(nemeses)) {
		c.fails.add(t.Name(), fmt.Sprintf("expected a detection note per bad-input fault, got %v", sum.Notes))
		t.Errorf("expected a detection note per bad-input fault, got %v", sum.Notes)
	}
}

// chaosProcesses runs agents as plain OS processes on loopback:
// SIGKILL of the leader and of random nodes, SIGSTOP of the leader past
// the election timeout, rolling restarts, and (5 nodes) combinations.
func chaosProcesses(t *testing.T, c campaign, bin string) {
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
			pc := proccluster.NewWithOptions(t, bin, sc.nodes, proccluster.Options{Args: agentArgs(), ACL: true})
			target := &ProcTarget{C: pc}
			sum, err := Run(context.Background(), Config{
				Name: sc.name, Target: target, Clients: 8, Steady: c.steady / 2, Duration: c.duration,
				Nemeses: sc.nemeses, Hold: 1500 * time.Millisecond, Quiet: 500 * time.Millisecond,
				OutDir: c.out, Log: logger(t), Settings: settings(), KeepHistory: os.Getenv("CHAOS_KEEP_HISTORY") == "1",
			})
			c.check(t, sum, err, target)
		})
	}
}

// chaosFailover kills the leader again and again (CHAOS_KILLS, 50 in
// the full campaign) after a fault-free phase at full load (CHAOS_STEADY),
// and reports the unavailability per kill and the spurious elections.
// The figures are reported, not asserted (the machine is shared).
func chaosFailover(t *testing.T, c campaign, bin string) {
	if c.kills == 0 {
		t.Skip("full campaign only (CHAOS_KILLS)")
	}
	// ACLs on, as in production; CHAOS_FAILOVER_ACL=off measures the same
	// without them (the figures are within noise of each other).
	withACL := os.Getenv("CHAOS_FAILOVER_ACL") != "off"
	pc := proccluster.NewWithOptions(t, bin, 3, proccluster.Options{Args: failoverArgs(), ACL: withACL})
	target := &ProcTarget{C: pc}
	sum, err := Run(context.Background(), Config{
		Name: "failover", Target: target, Clients: 8, Steady: c.steady, Rounds: c.kills, FastRetry: os.Getenv("CHAOS_FAST_RETRY") == "1",
		Nemeses: []Nemesis{Kill{Leader: true}}, Hold: time.Second, Quiet: 300 * time.Millisecond,
		OutDir: c.out, Log: logger(t), Settings: map[string]string{"agent_args": strings.Join(failoverArgs(), " "), "acl": strconv.FormatBool(withACL)}, KeepHistory: os.Getenv("CHAOS_KEEP_HISTORY") == "1",
	})
	c.check(t, sum, err, target)
	if sum != nil {
		t.Logf("FIGURES failover kills=%d p50=%.0fms p99=%.0fms max=%.0fms (target p50<=300 p99<=500); steady %.0fs: %d spurious elections, %d acks",
			sum.Failover.Kills, sum.Failover.P50Ms, sum.Failover.P99Ms, sum.Failover.MaxMs, sum.Elect.SteadySeconds, sum.Elect.SteadyElections, sum.Elect.SteadyOps)
	}
}

// unusable skips the test naming why the environment cannot run it, or
// fails it under CI=true (CI must run every part of the suite).
func unusable(t *testing.T, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("chaos needs this under CI: %v", err)
	}
	t.Skipf("skipped: %v", err)
}

// chaosNetNS runs each agent in its own network namespace on a private
// bridge and cuts and degrades the links: the leader partitioned from the
// majority, majority/minority splits, a bridge node seeing both halves,
// packet loss, delay and duplication, plus kills under those.
func chaosNetNS(t *testing.T, c campaign, bin string) {
	ctx := context.Background()
	if err := NetNSUsable(ctx); err != nil {
		unusable(t, err)
	}
	if err := CleanStaleNetNS(ctx); err != nil {
		t.Logf("cleaning stale namespaces: %v", err)
	}
	scenarios := []struct {
		name    string
		nodes   int
		nemeses []Nemesis
		full    bool
	}{
		{"netns5", 5, []Nemesis{
			Partition{IsolateLeader}, Partition{MajorityMinority}, Partition{Bridge}, Blackhole{},
			Netem{"loss", "loss 10%"}, Netem{"delay", "delay 30ms 20ms"}, Netem{"dup", "duplicate 10%"},
			Combo{Netem{"delay-loss", "delay 20ms 10ms loss 5%"}, Kill{Leader: true}},
		}, false},
		{"netns3", 3, []Nemesis{Partition{IsolateLeader}, Partition{MajorityMinority}, Combo{Partition{MajorityMinority}, Pause{Leader: true}}, Netem{"loss-dup", "loss 5% duplicate 5%"}, Kill{Leader: true}}, true},
	}
	for i, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			if sc.full && c.mode != "full" {
				t.Skip("full campaign only")
			}
			nn, err := NewNetNS(ctx, sc.nodes, i+1)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := nn.Close(context.Background()); err != nil {
					t.Errorf("netns cleanup: %v", err)
				}
			})
			pc := proccluster.NewWithOptions(t, bin, sc.nodes, proccluster.Options{
				Args: agentArgs(), Host: nn.Host, ACL: true,
				Prefix: func(p *proccluster.Proc) []string {
					i, _ := nn.index(p.ID)
					return nn.Exec(i)
				},
			})
			target := &ProcTarget{C: pc, Kind: "netns"}
			sum, err := Run(ctx, Config{
				Name: sc.name, Target: target, Net: nn, Clients: 8, Duration: c.duration,
				Nemeses: sc.nemeses, Hold: 2 * time.Second, Quiet: 500 * time.Millisecond,
				OutDir: c.out, Log: logger(t), Settings: settings(), KeepHistory: os.Getenv("CHAOS_KEEP_HISTORY") == "1",
			})
			c.check(t, sum, err, target)
		})
	}
}

// chaosDocker runs the agents as Docker containers built FROM scratch
// from the static binary, on a Docker network of their own: SIGKILL and
// SIGSTOP of the leader, partitions and degraded links inside the
// containers' namespaces, rolling restarts.
func chaosDocker(t *testing.T, c campaign, bin string) {
	ctx := context.Background()
	if err := DockerUsable(ctx); err != nil {
		unusable(t, err)
	}
	if err := CleanStaleDocker(ctx); err != nil {
		t.Logf("cleaning stale containers: %v", err)
	}
	scenarios := []struct {
		name    string
		nodes   int
		nemeses []Nemesis
		full    bool
	}{
		{"docker3", 3, []Nemesis{Kill{Leader: true}, Partition{IsolateLeader}, Pause{Leader: true}, Blackhole{}, Netem{"loss", "loss 10%"}, Kill{}}, false},
		{"docker5", 5, []Nemesis{Partition{Bridge}, Combo{Kill{Leader: true}, Pause{}}, Partition{MajorityMinority}, RollingRestart{}, Netem{"dup-delay", "duplicate 10% delay 20ms"}}, true},
	}
	for i, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			if sc.full && c.mode != "full" {
				t.Skip("full campaign only")
			}
			// ACLs on: a CA the agents' certificates come from (their API
			// is then HTTPS); every api.Client of the run, the workload's
			// included, trusts it and sends the operator token.
			dir := t.TempDir()
			certs := filepath.Join(dir, "ca")
			ca, err := pki.NewCA("switchyard chaos CA")
			if err != nil {
				t.Fatal(err)
			}
			if err := ca.WriteCA(certs); err != nil {
				t.Fatal(err)
			}
			t.Setenv(api.CACertEnv, filepath.Join(certs, pki.CACertFile))
			d, err := NewDocker(ctx, bin, dir, sc.nodes, i+1, DockerOptions{Args: agentArgs(), CertDir: certs})
			if err != nil {
				t.Fatal(err)
			}
			t.Setenv(api.TokenEnv, d.Token)
			t.Cleanup(func() {
				if err := d.Close(context.Background()); err != nil {
					t.Errorf("docker cleanup: %v", err)
				}
			})
			sum, err := Run(ctx, Config{
				Name: sc.name, Target: d, Net: d, Clients: 6, Duration: c.duration * 2 / 3,
				Nemeses: sc.nemeses, Hold: 2 * time.Second, Quiet: 500 * time.Millisecond,
				OutDir: c.out, Log: logger(t), Settings: settings(), KeepHistory: os.Getenv("CHAOS_KEEP_HISTORY") == "1",
			})
			c.check(t, sum, err, d)
		})
	}
}
