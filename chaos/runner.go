package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/switchyard/switchyard/api"
)

// Config is one chaos run.
type Config struct {
	// Name labels the run (files are written under OutDir/Name).
	Name   string
	Target Target
	// Net, when set, enables partition and netem nemeses.
	Net Network
	// Clients is the number of concurrent allocation clients; client i
	// sends to node i mod N first and fails over to the others.
	Clients int
	// ClientRate limits each client to this many operations per second
	// (0: as fast as the cluster answers).
	ClientRate float64
	// FastRetry makes clients retry retryable errors themselves, every
	// 2–20 ms across the nodes with a 1 s limit per attempt, instead of
	// the API client's 10–100 ms backoff (the request id stays the same,
	// so this is as safe). Measured on the shared 2-core machine it makes
	// failover slower, not faster: the retry storm starves the agents.
	FastRetry bool
	// OpTimeout bounds one operation, retries included (default 5 s).
	OpTimeout time.Duration
	// Servers media servers of Capacity units are registered first.
	Servers  int
	Capacity int64
	// Steady is a fault-free phase at full load before any nemesis; the
	// elections seen during it are spurious.
	Steady time.Duration
	// Duration is the nemesis phase: the schedule cycles through Nemeses
	// until it is over (at least one round when Rounds is 0).
	Duration time.Duration
	// Rounds, when > 0, runs exactly that many faults instead.
	Rounds  int
	Nemeses []Nemesis
	// Hold is how long a fault lasts before it is healed; Quiet the
	// fault-free time between two faults.
	Hold, Quiet time.Duration
	// HealTimeout bounds the recovery after healing (default 60 s).
	HealTimeout time.Duration
	// OutDir receives summary.json, and history.json and
	// linearizability.html when a check fails.
	OutDir string
	// Seed makes the schedule's random choices repeatable (0: random).
	Seed uint64
	Log  *slog.Logger
	// LoadGen, when set, runs media-server load (switchyard loadgen)
	// throughout, and the no-false-down invariant is checked.
	LoadGen *LoadGen
	// KeepHistory writes history.json even when every check passed.
	KeepHistory bool
	// Settings are copied into the summary (e.g. the agents' raft flags).
	Settings map[string]string
}

func (c *Config) defaults() error {
	if c.Target == nil {
		return errors.New("chaos: Config.Target is required")
	}
	if c.Clients <= 0 {
		c.Clients = 8
	}
	if c.OpTimeout <= 0 {
		c.OpTimeout = 5 * time.Second
	}
	if c.Servers <= 0 {
		c.Servers = 3
	}
	if c.Capacity <= 0 {
		c.Capacity = 100
	}
	if c.HealTimeout <= 0 {
		c.HealTimeout = 60 * time.Second
	}
	if c.Hold <= 0 {
		c.Hold = time.Second
	}
	if c.Seed == 0 {
		c.Seed = rand.Uint64()
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Name == "" {
		c.Name = c.Target.Name()
	}
	return nil
}

// Run executes one chaos run: register servers, start the clients, run the
// steady phase and the nemesis schedule, heal everything, read the final
// state and check every invariant. The returned summary has been written
// to OutDir/summary.json. Run returns an error only when the run itself
// could not be carried out (no final state could be read); violations are
// in the summary. It must be called from one goroutine (the Target's
// methods may fail the test on that goroutine).
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	log := cfg.Log.With("run", cfg.Name)
	t := cfg.Target
	h := NewHistory()
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	sum := &Summary{Name: cfg.Name, Cluster: t.Name(), Nodes: len(t.Nodes()), Faults: map[string]int{}, Violations: map[string]int{},
		Settings: map[string]string{"clients": fmt.Sprint(cfg.Clients), "fast_retry": fmt.Sprint(cfg.FastRetry), "seed": fmt.Sprint(cfg.Seed),
			"hold": cfg.Hold.String(), "op_timeout": cfg.OpTimeout.String()}}
	for k, v := range cfg.Settings {
		sum.Settings[k] = v
	}
	for _, inv := range Invariants() {
		sum.Violations[inv] = 0
	}
	var addrs []string
	for _, id := range t.Nodes() {
		addrs = append(addrs, t.HTTPAddr(id))
	}
	admin := api.NewClient(addrs...)
	for i := 0; i < cfg.Servers; i++ {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := admin.RegisterServer(rctx, api.RegisterServerRequest{ID: fmt.Sprintf("m%d", i+1), Capacity: cfg.Capacity})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("register server m%d: %w", i+1, err)
		}
	}

	if cfg.LoadGen != nil {
		total := cfg.Steady + cfg.Duration + time.Duration(cfg.Rounds)*(cfg.Hold+cfg.Quiet+5*time.Second) + 10*time.Minute
		if err := cfg.LoadGen.start(ctx, h, admin, total); err != nil {
			return nil, err
		}
		defer cfg.LoadGen.stop(h)
	}

	// Clients.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	pool := &keyPool{}
	for i := 0; i < cfg.Clients; i++ {
		first := i % len(addrs)
		rot := append(slices.Clone(addrs[first:]), addrs[:first]...)
		w := &workload{id: i, cl: api.NewClient(rot...), node: t.Nodes()[first], h: h, pool: pool, timeout: cfg.OpTimeout,
			rand: rand.New(rand.NewPCG(cfg.Seed+uint64(i)+1, 7)), rate: cfg.ClientRate}
		if cfg.FastRetry {
			for _, a := range rot {
				dc := api.NewClient(a)
				dc.Retry = false
				w.direct = append(w.direct, dc)
			}
		}
		wg.Add(1)
		go func() { defer wg.Done(); w.run(stop) }()
	}
	// Server sampler: committed state read from any node must never show a
	// server over capacity.
	var samplesMu sync.Mutex
	var samples []api.Server
	sampleStop := make(chan struct{})
	var swg sync.WaitGroup
	swg.Add(1)
	go func() {
		defer swg.Done()
		for i := 0; ; i++ {
			select {
			case <-sampleStop:
				return
			case <-time.After(250 * time.Millisecond):
			}
			cl := api.NewClient(addrs[i%len(addrs)])
			cl.Retry = false
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			ss, err := cl.Servers(sctx, true)
			cancel()
			if err == nil {
				samplesMu.Lock()
				samples = append(samples, ss...)
				samplesMu.Unlock()
			}
		}
	}()

	maxTerm := func() uint64 {
		var m uint64
		for _, ns := range Statuses(ctx, t) {
			m = max(m, ns.Term)
		}
		return m
	}
	sum.Elect.FirstTerm = maxTerm()

	// Steady phase.
	if cfg.Steady > 0 {
		log.Info("steady phase", "for", cfg.Steady)
		t0 := h.Now()
		term0 := maxTerm()
		select {
		case <-ctx.Done():
		case <-time.After(cfg.Steady):
		}
		sum.Elect.SteadyElections = maxTerm() - term0
		sum.Elect.SteadySeconds = cfg.Steady.Seconds()
		for _, op := range h.Ops() {
			if op.Result == OK && op.Call >= t0 {
				sum.Elect.SteadyOps++
			}
		}
	}

	// Nemesis schedule.
	env := &Env{Target: t, Net: cfg.Net, History: h, Rand: rng, Log: log, Notes: func(n string) {
		if !slices.Contains(sum.Notes, n) {
			sum.Notes = append(sum.Notes, n)
		}
	}}
	deadline := time.Now().Add(cfg.Duration)
	for round := 0; len(cfg.Nemeses) > 0 && ctx.Err() == nil; round++ {
		if cfg.Rounds > 0 && round >= cfg.Rounds || cfg.Rounds == 0 && round > 0 && time.Now().After(deadline) {
			break
		}
		n := cfg.Nemeses[round%len(cfg.Nemeses)]
		log.Info("nemesis", "round", round, "kind", n.Name())
		heal, err := n.Inject(ctx, env)
		if err != nil {
			sum.Errors = append(sum.Errors, fmt.Sprintf("round %d %s: %v", round, n.Name(), err))
			log.Warn("nemesis failed", "kind", n.Name(), "err", err)
		} else {
			sum.Faults[n.Name()]++
			select {
			case <-ctx.Done():
			case <-time.After(cfg.Hold):
			}
			if err := heal(ctx); err != nil {
				sum.Errors = append(sum.Errors, fmt.Sprintf("heal %s: %v", n.Name(), err))
			}
		}
		wctx, cancel := context.WithTimeout(ctx, cfg.HealTimeout)
		err = WaitHealthy(wctx, t)
		cancel()
		if err != nil {
			sum.Errors = append(sum.Errors, fmt.Sprintf("after %s: %v", n.Name(), err))
			healAll(ctx, t, cfg.Net)
		}
		if cfg.Quiet > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(cfg.Quiet):
			}
		}
	}

	// Stop the clients (each finishes its operation), heal, read.
	close(stop)
	wg.Wait()
	if lg := cfg.LoadGen; lg != nil {
		if lg.exited() {
			sum.Errors = append(sum.Errors, "loadgen exited during the run:\n"+lg.output())
		}
		// Samples taken before the stop cover the whole reporting period.
		lg.stop(h)
	}
	close(sampleStop)
	swg.Wait()
	healAll(ctx, t, cfg.Net)
	wctx, cancel := context.WithTimeout(ctx, cfg.HealTimeout)
	if err := WaitHealthy(wctx, t); err != nil {
		sum.Errors = append(sum.Errors, fmt.Sprintf("final recovery: %v", err))
	}
	cancel()
	sum.Elect.LastTerm = maxTerm()

	final, readCall, readRet, err := readFinal(ctx, admin, h)
	if err != nil {
		return sum, fmt.Errorf("read final state: %w\n%s", err, t.Logs())
	}
	ns, converged := waitConverged(ctx, t, cfg.HealTimeout)
	sum.FinalNodes = ns
	sum.Seconds = time.Duration(h.Now()).Seconds()

	// Check.
	ops := h.Ops()
	faults := h.Faults()
	sum.Ops, sum.OpsByKnd = countOps(ops)
	sum.Failover = LeaderKillUnavailability(ops, faults)
	sum.Freeze = LeaderFreezeUnavailability(ops, faults)
	sum.Blackhole = LeaderBlackholeUnavailability(ops, faults)
	dir := filepath.Join(cfg.OutDir, cfg.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return sum, fmt.Errorf("out dir: %w", err)
	}
	full := append(ops, ReadOps(ops, final, cfg.Clients, readCall, readRet)...)
	lin, err := CheckLinearizable(full, 2*time.Minute, dir)
	if err != nil {
		sum.Errors = append(sum.Errors, err.Error())
	}
	sum.Lin = lin
	if lin.Result == "illegal" {
		for _, k := range lin.IllegalKeys {
			sum.AddViolations([]Violation{{Invariant: InvLinearizable, Key: k, Detail: "no linearization of this request id's history (see " + lin.Visualization + ")"}})
		}
		if len(lin.IllegalKeys) == 0 {
			sum.AddViolations([]Violation{{Invariant: InvLinearizable, Detail: "history is not linearizable"}})
		}
	} else if lin.Result != "ok" {
		sum.Errors = append(sum.Errors, "linearizability check timed out")
	}
	sum.AddViolations(CheckLostAcks(ops, final))
	sum.AddViolations(CheckDoubleGrants(ops, final))
	sum.AddViolations(CheckCapacity(final))
	samplesMu.Lock()
	sum.AddViolations(CheckServerSamples(samples))
	samplesMu.Unlock()
	sum.AddViolations(CheckStateHashes(ns, converged))
	if lg := cfg.LoadGen; lg != nil {
		samplesMu.Lock()
		downs := lg.downEvents(h, samples)
		samplesMu.Unlock()
		// A quarter window of slack at each end: a report in flight when
		// an allocator dies is lost, and reports take a moment to arrive.
		sum.AddViolations(CheckFalseDown(lg.reporting(), downs, lg.Window, lg.Window/4))
		sum.Notes = append(sum.Notes, fmt.Sprintf("loadgen: %d servers, %d down marks seen; %s", lg.Servers, len(downs), strings.Join(strings.Fields(lg.output()), " ")))
	} else {
		sum.Notes = append(sum.Notes, "no_false_down not checked: no load generator in this run")
	}

	if sum.TotalViolations() > 0 || len(sum.Errors) > 0 || cfg.KeepHistory {
		p := filepath.Join(dir, "history.json")
		if err := writeJSON(p, struct {
			Ops    []Op    `json:"ops"`
			Faults []Fault `json:"faults"`
			Final  Final   `json:"final"`
		}{full, faults, final}); err != nil {
			return sum, err
		}
		sum.Files = append(sum.Files, p)
		if sl, ok := t.(interface{ SaveLogs(string) []string }); ok {
			sum.Files = append(sum.Files, sl.SaveLogs(dir)...)
		} else {
			lp := filepath.Join(dir, "agent-logs.txt")
			if err := os.WriteFile(lp, []byte(t.Logs()), 0o644); err == nil {
				sum.Files = append(sum.Files, lp)
			}
		}
	}
	if lin.Visualization != "" {
		sum.Files = append(sum.Files, lin.Visualization)
	}
	p := filepath.Join(dir, "summary.json")
	sum.Files = append(sum.Files, p)
	if err := writeJSON(p, sum); err != nil {
		return sum, err
	}
	return sum, nil
}

// healAll removes every network fault, thaws and starts every node.
func healAll(ctx context.Context, t Target, n Network) {
	if n != nil {
		_ = n.Heal(ctx)
	}
	for _, id := range t.Nodes() {
		_ = t.Resume(ctx, id)
		if !t.Running(id) {
			_ = t.Start(ctx, id)
		}
	}
}

// readFinal reads every allocation and server from the leader (a
// linearizable read) and returns it with the read's call and return times.
func readFinal(ctx context.Context, cl *api.Client, h *History) (Final, int64, int64, error) {
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	call := h.Now()
	as, err := cl.Allocations(rctx, api.AllocationListOptions{})
	if err != nil {
		return Final{}, 0, 0, fmt.Errorf("allocations: %w", err)
	}
	ss, err := cl.Servers(rctx, false)
	if err != nil {
		return Final{}, 0, 0, fmt.Errorf("servers: %w", err)
	}
	return Final{Allocations: as, Servers: ss}, call, h.Now(), nil
}

// waitConverged polls every node's status until they all report the same
// applied index, and returns the last answers and whether they converged.
func waitConverged(ctx context.Context, t Target, timeout time.Duration) ([]NodeState, bool) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ns := Statuses(ctx, t)
		if Converged(ns) {
			return ns, true
		}
		select {
		case <-ctx.Done():
			return ns, false
		case <-time.After(20 * time.Millisecond):
		}
	}
}
