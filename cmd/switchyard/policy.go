package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/placement"
	"github.com/switchyard/switchyard/placement/policyspec"
	"github.com/switchyard/switchyard/placement/sim"
)

// policyFlags are the flags that edit a policy. Only flags given on the
// command line change anything: `policy set --hard-units 0.9` keeps the
// strategy, expression and every other field as committed.
type policyFlags struct {
	file                                string
	strategy, expr                      string
	hardUnits, hardCPU                  float64
	hardEgress                          int64
	softUnits, softCPU                  float64
	softEgress                          int64
	wUnits, wCPU, wEgress               float64
	distances                           []string
	provCapacity                        int64
	provTimeout, idleRetire, tombstones time.Duration
	minPool                             int32
	provDisabled                        bool
}

func (f *policyFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.file, "file", "", "start from this JSON policy (as 'policy get --json' prints) instead of the committed one")
	fl.StringVar(&f.strategy, "strategy", "", "placement strategy: "+strings.Join(policyspec.Strategies(), ", "))
	fl.StringVar(&f.expr, "expr", "", `scoring expression over server.* and request.* returning a number; highest wins ("" clears)`)
	f.registerLimits(cmd)
}

// registerLimits registers every policy flag but --file, --strategy and
// --expr.
func (f *policyFlags) registerLimits(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.Float64Var(&f.hardUnits, "hard-units", 0, "hard limit: fraction (0,1] of capacity units a server may hold (0: none)")
	fl.Float64Var(&f.hardCPU, "hard-cpu", 0, "hard limit: never pick a server reporting cpu at or above this (0..1, 0: none)")
	fl.Int64Var(&f.hardEgress, "hard-egress-bps", 0, "hard limit: never pick a server reporting egress at or above this (0: none)")
	fl.Float64Var(&f.softUnits, "soft-units", 0, "soft limit: prefer servers that stay below this fraction of capacity (0: none)")
	fl.Float64Var(&f.softCPU, "soft-cpu", 0, "soft limit: prefer servers reporting cpu at most this (0: none)")
	fl.Int64Var(&f.softEgress, "soft-egress-bps", 0, "soft limit: prefer servers reporting egress at most this (0: none)")
	fl.Float64Var(&f.wUnits, "weight-units", 0, "weight of committed units in the load score")
	fl.Float64Var(&f.wCPU, "weight-cpu", 0, "weight of reported cpu in the load score")
	fl.Float64Var(&f.wEgress, "weight-egress", 0, "weight of reported egress (relative to the egress limit, else 1 Gbps)")
	fl.StringSliceVar(&f.distances, "distance", nil, "region distance FROM:TO=N (repeatable; replaces the table; 'none' clears)")
	fl.Int64Var(&f.provCapacity, "provision-capacity", 0, "units a newly provisioned server is expected to have (0: 100)")
	fl.DurationVar(&f.provTimeout, "provision-timeout", 0, "how long a request waits for a provisioned server (0: 60s, max 10m)")
	fl.Int32Var(&f.minPool, "min-pool", 0, "never retire provisioned servers below this many")
	fl.DurationVar(&f.idleRetire, "idle-retire", 0, "retire provisioned servers idle this long (0: never)")
	fl.BoolVar(&f.provDisabled, "provisioning-disabled", false, "do not provision even where a provisioner is configured")
	fl.DurationVar(&f.tombstones, "tombstone-retention", 0, "how long ended allocations are remembered (0: keep current)")
}

// apply overlays the flags given on cmd's command line onto p.
func (f *policyFlags) apply(cmd *cobra.Command, p *api.Policy) error {
	ch := cmd.Flags().Changed
	if ch("strategy") {
		p.Strategy = f.strategy
	}
	if ch("expr") {
		p.Expr = f.expr
	}
	set := func(name string, dst *float64, v float64) {
		if ch(name) {
			*dst = v
		}
	}
	set("hard-units", &p.Hard.Units, f.hardUnits)
	set("hard-cpu", &p.Hard.CPU, f.hardCPU)
	set("soft-units", &p.Soft.Units, f.softUnits)
	set("soft-cpu", &p.Soft.CPU, f.softCPU)
	set("weight-units", &p.Weights.Units, f.wUnits)
	set("weight-cpu", &p.Weights.CPU, f.wCPU)
	set("weight-egress", &p.Weights.Egress, f.wEgress)
	if ch("hard-egress-bps") {
		p.Hard.EgressBps = f.hardEgress
	}
	if ch("soft-egress-bps") {
		p.Soft.EgressBps = f.softEgress
	}
	if ch("distance") {
		p.Distances = nil
		for _, d := range f.distances {
			if d == "none" {
				continue
			}
			rd, err := parseDistance(d)
			if err != nil {
				return usagef(cmd, "--distance %q: %v", d, err)
			}
			p.Distances = append(p.Distances, rd)
		}
	}
	if ch("provision-capacity") {
		p.Provisioning.ServerCapacity = f.provCapacity
	}
	if ch("provision-timeout") {
		p.Provisioning.TimeoutMs = f.provTimeout.Milliseconds()
	}
	if ch("min-pool") {
		p.Provisioning.MinPool = f.minPool
	}
	if ch("idle-retire") {
		p.Provisioning.IdleRetireMs = f.idleRetire.Milliseconds()
	}
	if ch("provisioning-disabled") {
		p.Provisioning.Disabled = f.provDisabled
	}
	if ch("tombstone-retention") {
		p.TombstoneRetentionMs = f.tombstones.Milliseconds()
	}
	return nil
}

// parseDistance reads FROM:TO=N.
func parseDistance(s string) (api.RegionDistance, error) {
	pair, n, ok := strings.Cut(s, "=")
	if !ok {
		return api.RegionDistance{}, errors.New("want FROM:TO=N")
	}
	from, to, ok := strings.Cut(pair, ":")
	if !ok || from == "" || to == "" {
		return api.RegionDistance{}, errors.New("want FROM:TO=N")
	}
	d, err := strconv.ParseInt(n, 10, 64)
	if err != nil {
		return api.RegionDistance{}, fmt.Errorf("distance %q is not an integer", n)
	}
	return api.RegionDistance{From: from, To: to, Distance: d}, nil
}

func readPolicyFile(path string) (api.Policy, error) {
	var p api.Policy
	b, err := os.ReadFile(path)
	if err != nil {
		return p, err
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, fmt.Errorf("policy file %s: %w", path, err)
	}
	return p, nil
}

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Show, change, validate and simulate the placement policy",
		Long: `The placement policy (strategy, hard and soft limits, weights, an optional
scoring expression, region distances, provisioning parameters) lives in the
Raft log: 'policy set' commits a change that every allocator applies from
the same log index on, with no restart and no request dropped.`,
	}

	gf := &clientFlags{}
	get := &cobra.Command{
		Use:   "get",
		Short: "Print the committed policy",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, cancel, err := gf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			p, err := c.Policy(ctx, false)
			if err != nil {
				return err
			}
			if gf.json {
				return printJSON(cmd.OutOrStdout(), p)
			}
			return printPolicy(cmd, p)
		},
	}
	gf.register(get, true)

	sf := &clientFlags{}
	pf := &policyFlags{}
	var ifVersion uint64
	set := &cobra.Command{
		Use:   "set",
		Short: "Change the policy (only the flags given change; validated before it is committed)",
		Long: `Change the placement policy. Only the flags given change; the rest stays as
committed (or as in --file). The result is validated here, again by the
leader, and again in every replica's Apply: a bad policy is refused with the
reason and the committed one stays. A change is in force for every decision
after it, on whichever node leads, without a restart.

Scoring expression (--expr, github.com/expr-lang/expr): must return a number;
among the servers that pass the hard limits (and, when any do, the soft
limits) the highest score wins, the strategy breaks ties. It sees
  server.id, region, zone, labels, capacity, used, free, utilization,
  has_load, cpu, egress_bps, ingress_bps, peers, tracks,
  room_units, hosts_room, same_region, same_zone, distance
  request.id, room, units, requester, region, zone`,
		Example: `  switchyard policy set --strategy bin-pack --hard-units 0.9 --soft-cpu 0.7
  switchyard policy set --strategy least-loaded --expr 'server.free - 10 * server.cpu'
  switchyard policy set --strategy region --distance eu-west:eu-central=10 --distance eu-west:us-east=80`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, cancel, err := sf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			var p api.Policy
			if pf.file != "" {
				if p, err = readPolicyFile(pf.file); err != nil {
					return err
				}
			} else if p, err = c.Policy(ctx, false); err != nil {
				return fmt.Errorf("read current policy: %w", err)
			}
			if err := pf.apply(cmd, &p); err != nil {
				return err
			}
			p.IfVersion = ifVersion
			if err := fsm.ValidatePolicy(p.ToPB()); err != nil {
				return fmt.Errorf("policy refused, the committed one stays: %w", err)
			}
			np, err := c.SetPolicy(ctx, p)
			if err != nil {
				return fmt.Errorf("policy refused, the committed one stays: %w", err)
			}
			if sf.json {
				return printJSON(cmd.OutOrStdout(), np)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "policy version %d committed (in force from log index %d)\n", np.Version, np.AppliedAtIndex)
			return printPolicy(cmd, np)
		},
	}
	sf.register(set, true)
	pf.register(set)
	set.Flags().Uint64Var(&ifVersion, "if-version", 0, "only change the policy if it is still at this version")

	vf := &clientFlags{}
	vpf := &policyFlags{}
	validate := &cobra.Command{
		Use:   "validate",
		Short: "Check a policy (the committed one, or --file, with the flags given) without committing it",
		Long: `Check a policy exactly as the cluster would before committing it: strategy
known, limits in range, expression compiles and returns a number. The base is
--file when given, else the committed policy. Exits 1 with the parser's
message when it is refused.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var p api.Policy
			var err error
			if vpf.file != "" {
				if p, err = readPolicyFile(vpf.file); err != nil {
					return err
				}
			} else {
				c, ctx, cancel, err := vf.client(cmd)
				if err != nil {
					return err
				}
				defer cancel()
				if p, err = c.Policy(ctx, true); err != nil {
					return fmt.Errorf("read current policy (or give --file): %w", err)
				}
			}
			if err := vpf.apply(cmd, &p); err != nil {
				return err
			}
			if err := fsm.ValidatePolicy(p.ToPB()); err != nil {
				return fmt.Errorf("policy is invalid: %w", err)
			}
			if vf.json {
				return printJSON(cmd.OutOrStdout(), api.ValidateResult{Valid: true, Strategy: p.Strategy})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "policy is valid (strategy %s)\n", p.Strategy)
			return nil
		},
	}
	vf.register(validate, true)
	vpf.register(validate)

	cmd.AddCommand(get, set, validate, newSimulateCmd(), newIntentsCmd())
	return cmd
}

func printPolicy(cmd *cobra.Command, p api.Policy) error {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	lim := func(l api.Limits) string {
		var parts []string
		if l.Units > 0 {
			parts = append(parts, fmt.Sprintf("units %.0f%%", 100*l.Units))
		}
		if l.CPU > 0 {
			parts = append(parts, fmt.Sprintf("cpu %.2f", l.CPU))
		}
		if l.EgressBps > 0 {
			parts = append(parts, fmt.Sprintf("egress %d bps", l.EgressBps))
		}
		if len(parts) == 0 {
			return "none"
		}
		return strings.Join(parts, ", ")
	}
	fmt.Fprintf(w, "strategy\t%s\n", p.Strategy)
	if p.Expr != "" {
		fmt.Fprintf(w, "expr\t%s\n", p.Expr)
	}
	fmt.Fprintf(w, "hard limits\t%s\n", lim(p.Hard))
	fmt.Fprintf(w, "soft limits\t%s\n", lim(p.Soft))
	if p.Weights.Units == 0 && p.Weights.CPU == 0 && p.Weights.Egress == 0 {
		fmt.Fprintf(w, "weights\tunits 1, cpu 0, egress 0 (default: none set)\n")
	} else {
		fmt.Fprintf(w, "weights\tunits %g, cpu %g, egress %g\n", p.Weights.Units, p.Weights.CPU, p.Weights.Egress)
	}
	for _, d := range p.Distances {
		fmt.Fprintf(w, "distance\t%s -> %s: %d\n", esc(d.From), esc(d.To), d.Distance)
	}
	pv := p.Provisioning
	orDefault := func(v, def int64, show func(int64) string) string {
		if v > 0 {
			return show(v)
		}
		return show(def) + " (default)"
	}
	ms := func(v int64) string { return (time.Duration(v) * time.Millisecond).String() }
	retire := "never"
	if pv.IdleRetireMs > 0 {
		retire = ms(pv.IdleRetireMs)
	}
	fmt.Fprintf(w, "provisioning\tcapacity %s, timeout %s, min pool %d, idle retire %s, disabled %v\n",
		orDefault(pv.ServerCapacity, policyspec.DefaultServerCapacity, func(v int64) string { return strconv.FormatInt(v, 10) }),
		orDefault(pv.TimeoutMs, policyspec.DefaultTimeoutMs, ms), pv.MinPool, retire, pv.Disabled)
	fmt.Fprintf(w, "version\t%d (from log index %d)\n", p.Version, p.AppliedAtIndex)
	return w.Flush()
}

func newSimulateCmd() *cobra.Command {
	var trace string
	var strategies, files []string
	var expr string
	var overload float64
	var asJSON bool
	pf := &policyFlags{}
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Replay a request/load trace against several policies and compare them side by side",
		Long: `Replay a trace (JSON lines; format in testdata/traces/README.md) against
each --strategy (default: all of them) and each --policy file, with the limits
and weights given as flags, and print side by side: requests placed and
refused, servers used (ever and at peak), the lower bound
ceil(peak demand / capacity) and the ratio peak/bound (bin-pack quality),
peak utilisation, overloads and cascades per room. Runs offline: no cluster
needed.`,
		Example: `  switchyard policy simulate --trace testdata/traces/steady-rooms.jsonl
  switchyard policy simulate --trace t.jsonl --strategy bin-pack,least-loaded --soft-units 0.8`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if trace == "" {
				return usagef(cmd, "--trace is required")
			}
			fh, err := os.Open(trace)
			if err != nil {
				return err
			}
			defer fh.Close()
			events, err := sim.Read(fh)
			if err != nil {
				return err
			}
			type named struct {
				name string
				p    api.Policy
			}
			var pols []named
			if len(strategies) == 0 && len(files) == 0 {
				strategies = policyspec.Strategies()
			}
			for _, s := range strategies {
				p := api.Policy{Strategy: s, Expr: expr}
				if err := pf.apply(cmd, &p); err != nil {
					return err
				}
				p.Strategy, p.Expr = s, expr
				name := s
				if expr != "" {
					name += "+expr"
				}
				pols = append(pols, named{name, p})
			}
			for _, f := range files {
				p, err := readPolicyFile(f)
				if err != nil {
					return err
				}
				pols = append(pols, named{f, p})
			}
			var results []sim.Result
			for _, np := range pols {
				cp, err := placement.Compile(np.p.ToPB())
				if err != nil {
					return fmt.Errorf("policy %s: %w", np.name, err)
				}
				r, err := sim.Run(np.name, cp, events, sim.Options{Overload: overload})
				if err != nil {
					return err
				}
				results = append(results, r)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), results)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "trace %s: %d events\n", trace, len(events))
			return sim.Format(cmd.OutOrStdout(), results)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&trace, "trace", "", "trace file (JSON lines), required")
	fl.StringSliceVar(&strategies, "strategy", nil, "strategies to compare (comma-separated or repeated; default all)")
	fl.StringSliceVar(&files, "policy", nil, "also compare these JSON policy files (as 'policy get --json' prints)")
	fl.StringVar(&expr, "expr", "", "scoring expression applied with every --strategy")
	fl.Float64Var(&overload, "overload", 0.9, "utilisation above which a placement counts as an overload")
	fl.BoolVar(&asJSON, "json", false, "print JSON (snake_case keys)")
	// Limits and weights for the --strategy policies.
	pf.registerLimits(cmd)
	return cmd
}

func newIntentsCmd() *cobra.Command {
	f := &clientFlags{}
	pf := &pageFlags{}
	cmd := &cobra.Command{
		Use:   "intents",
		Short: "List provisioning and deprovisioning intents",
		Long: `List provisioning and deprovisioning intents, ordered by id. The list is
read a page at a time (--page-size intents per request); the table ends with
the total, or, with --limit or --after, with how many of how many were shown
and the --after that continues.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := pf.check(cmd); err != nil {
				return err
			}
			c, ctx, cancel, err := f.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			intentID := func(it api.Intent) string { return it.ID }
			if f.json {
				return printJSONPages(cmd, ctx, pf, "intents", intentID, c.IntentPages(false))
			}
			return printTablePages(cmd, ctx, pf, "intents", "ID\tKIND\tSTATE\tSERVER\tUNITS\tREQUESTS\tERROR", intentID, c.IntentPages(false), func(it api.Intent) string {
				return fmt.Sprintf("%s\t%s\t%s\t%s\t%d\t%d\t%s", esc(it.ID), it.Kind, it.State, esc(it.ServerID), it.Units, len(it.RequestIDs), esc(it.Error))
			})
		},
	}
	f.register(cmd, true)
	pf.register(cmd, "intents", "id")
	return cmd
}
