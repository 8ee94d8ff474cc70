package main

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/api"
)

func newServerCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "server", Short: "Register, list, drain and deregister media servers"}

	rf := &clientFlags{}
	var req api.RegisterServerRequest
	var addrs, labels string
	register := &cobra.Command{
		Use:   "register",
		Short: "Register (or update) a media server",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.ID == "" {
				return usagef(cmd, "--id is required")
			}
			if req.Capacity <= 0 {
				return usagef(cmd, "--capacity must be a positive number of units, got %d", req.Capacity)
			}
			for _, a := range strings.Split(addrs, ",") {
				if a = strings.TrimSpace(a); a != "" {
					req.Addresses = append(req.Addresses, a)
				}
			}
			if labels != "" {
				req.Labels = map[string]string{}
				for _, kv := range strings.Split(labels, ",") {
					k, v, ok := strings.Cut(kv, "=")
					if !ok || k == "" {
						return usagef(cmd, "--labels: %q is not key=value", kv)
					}
					req.Labels[k] = v
				}
			}
			c, ctx, cancel, err := rf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			s, err := c.RegisterServer(ctx, req)
			if err != nil {
				return err
			}
			if rf.json {
				return printJSON(cmd.OutOrStdout(), s)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "registered %s: %d units (%d free), %s\n", esc(s.ID), s.Capacity, s.Free, s.State)
			return nil
		},
	}
	rf.register(register, true)
	register.Flags().StringVar(&req.ID, "id", "", "server id (required)")
	register.Flags().Int64Var(&req.Capacity, "capacity", 0, "capacity in units (required, > 0)")
	register.Flags().StringVar(&req.Region, "region", "", "region")
	register.Flags().StringVar(&req.Zone, "zone", "", "zone")
	register.Flags().StringVar(&addrs, "addresses", "", "comma-separated addresses (e.g. its WHEP base URL)")
	register.Flags().StringVar(&labels, "labels", "", "comma-separated key=value labels")

	lf := &clientFlags{}
	pf := &pageFlags{}
	var stale, watch, summaryOnly bool
	var stateFlag, prefix string
	list := &cobra.Command{
		Use:   "list",
		Short: "List media servers (a summary by state and region first)",
		Long: `List media servers, ordered by id, with the load each last reported as the
answering agent holds it. The list is read a page at a time (--page-size
servers per request). Without --limit or --after the table starts with the
summary by state and region of every server; with them it prints the servers
asked for and ends with how many of how many were shown and the --after that
continues (the summary needs every server: it is left out). --state keeps
only the servers in the states it names (active, draining, down; several
comma-separated) and --prefix those whose id starts with it: the summary,
the totals and --limit then count those.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := pf.check(cmd); err != nil {
				return err
			}
			if len(prefix) > api.MaxIDLen {
				return usagef(cmd, "--prefix is %d bytes; server ids are at most %d", len(prefix), api.MaxIDLen)
			}
			states := splitList(stateFlag)
			if stateFlag != "" && len(states) == 0 {
				return usagef(cmd, "--state names no state (want %s)", strings.Join(knownServerStates(), ", "))
			}
			if watch { // watch.go
				if pf.partial() {
					return usagef(cmd, "--watch prints the whole list: it takes no --limit or --after")
				}
				keep, err := watchStateFilter(cmd, states)
				if err != nil {
					return err
				}
				return runWatch(cmd, lf, "servers", watchPrefixFilter(prefix, keep))
			}
			if summaryOnly && pf.partial() {
				return usagef(cmd, "--summary counts every server: it takes no --limit or --after")
			}
			c, ctx, cancel, err := lf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			opts := api.ServerListOptions{Stale: stale, States: states, Prefix: prefix}
			serverID := func(s api.ServerWithLoad) string { return s.ID }
			if summaryOnly {
				sum := newServerSummary()
				if _, err := listPages(ctx, pf, serverID, c.FilteredServerPages(opts), func(s api.ServerWithLoad) error {
					sum.add(s.Server)
					return nil
				}); err != nil {
					return err
				}
				if lf.json {
					return printJSON(cmd.OutOrStdout(), sum.done())
				}
				return sum.done().print(cmd.OutOrStdout())
			}
			if lf.json {
				// Raw objects: every field the agent sends, known here or not.
				return printJSONPages(cmd, ctx, pf, "servers", func(m map[string]any) string { id, _ := m["id"].(string); return id },
					c.FilteredServerRawPages(opts))
			}
			// One pass over the pages: the summary keeps counts, the table
			// its rows, until both are printed.
			sum := newServerSummary()
			var table bytes.Buffer
			w := tabwriter.NewWriter(&table, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tSTATE\tREGION\tUSED\tCAPACITY\tFREE\tCPU\tPEERS\tREPORTED FREE\tLOAD AGE")
			res, err := listPages(ctx, pf, serverID, c.FilteredServerPages(opts), func(s api.ServerWithLoad) error {
				sum.add(s.Server)
				cpu, peers, rfree, age := "-", "-", "-", "-"
				if l := s.Load; l != nil {
					cpu, peers, rfree = fmt.Sprintf("%.0f%%", 100*l.CPU), fmt.Sprint(l.Peers), fmt.Sprint(l.FreeUnits)
					if s.LoadAgeMs != nil {
						age = (time.Duration(*s.LoadAgeMs) * time.Millisecond).String()
					}
				}
				_, err := fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n", esc(s.ID), s.State, esc(s.Region), s.Used, s.Capacity, s.Free,
					cpu, peers, rfree, age)
				return err
			})
			if err != nil {
				return err
			}
			if err := w.Flush(); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if !pf.partial() {
				if err := sum.done().print(out); err != nil {
					return err
				}
				fmt.Fprintln(out)
			}
			if _, err := table.WriteTo(out); err != nil {
				return err
			}
			if pf.partial() {
				fmt.Fprintln(out, res.footer("servers"))
			}
			return nil
		},
	}
	lf.register(list, true)
	pf.register(list, "servers", "id")
	list.Flags().BoolVar(&stale, "stale", false, "answer from the contacted agent's replica instead of the leader")
	list.Flags().BoolVar(&watch, "watch", false, watchHelp)
	list.Flags().StringVar(&stateFlag, "state", "", "only servers in these states (comma-separated: "+strings.Join(knownServerStates(), ", ")+"); with --watch, the servers in them and those leaving them")
	list.Flags().StringVar(&prefix, "prefix", "", "only servers whose id starts with this (at most 128 bytes); with --watch, filtered here")
	list.Flags().BoolVar(&summaryOnly, "summary", false, "print only the counts by state and region (with --json: the summary object)")

	idCmd := func(use, short string, run func(c *api.Client, cmd *cobra.Command, id string, f *clientFlags) error) *cobra.Command {
		f := &clientFlags{}
		var id string
		cc := &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.MaximumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				if len(args) == 1 {
					if id != "" && id != args[0] {
						return usagef(cmd, "give the server id once (--id or argument)")
					}
					id = args[0]
				}
				if id == "" {
					return usagef(cmd, "--id is required")
				}
				c, ctx, cancel, err := f.client(cmd)
				if err != nil {
					return err
				}
				defer cancel()
				cmd.SetContext(ctx)
				return run(c, cmd, id, f)
			},
		}
		f.register(cc, true)
		cc.Flags().StringVar(&id, "id", "", "server id")
		return cc
	}
	drain := idCmd("drain [ID]", "Stop new allocations landing on a server (existing ones stay)", func(c *api.Client, cmd *cobra.Command, id string, f *clientFlags) error {
		s, err := c.DrainServer(cmd.Context(), id)
		if err != nil {
			return err
		}
		if f.json {
			return printJSON(cmd.OutOrStdout(), s)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s is %s (%d units still allocated)\n", esc(s.ID), s.State, s.Used)
		return nil
	})
	dereg := idCmd("deregister [ID]", "Remove a server that holds no active allocations", func(c *api.Client, cmd *cobra.Command, id string, f *clientFlags) error {
		if err := c.DeregisterServer(cmd.Context(), id); err != nil {
			return err
		}
		if f.json {
			return printJSON(cmd.OutOrStdout(), map[string]string{"deregistered": id})
		}
		fmt.Fprintf(cmd.OutOrStdout(), "deregistered %s\n", esc(id))
		return nil
	})
	cmd.AddCommand(register, list, drain, dereg)
	return cmd
}

// watchPrefixFilter narrows the event filter next (nil: every event) of
// `server list --watch` to the servers whose id starts with prefix; other
// events pass to next.
func watchPrefixFilter(prefix string, next func(api.WatchEvent, bool) bool) func(api.WatchEvent, bool) bool {
	if prefix == "" {
		return next
	}
	return func(ev api.WatchEvent, inCopy bool) bool {
		if ev.Server != nil && !strings.HasPrefix(ev.Server.ID, prefix) {
			return false
		}
		return next == nil || next(ev, inCopy)
	}
}

// knownServerStates are the server states --state may name with --watch,
// which filters the change stream here rather than on the agent.
func knownServerStates() []string {
	return []string{api.ServerActive, api.ServerDraining, api.ServerDown}
}

// watchStateFilter returns the event filter of `server list --watch
// --state`: the full copy holds the servers in states; after it, a change
// is printed when the server is in states, or when it was printed as in
// them before (so a server leaving the filter shows its new state, or its
// deletion, once). No states: nil, every event. An unknown state is a
// usage error, as the agent would refuse it on a list.
func watchStateFilter(cmd *cobra.Command, states []string) (func(api.WatchEvent, bool) bool, error) {
	if len(states) == 0 {
		return nil, nil
	}
	want := map[string]bool{}
	for _, st := range states {
		if !slices.Contains(knownServerStates(), st) {
			return nil, usagef(cmd, "--state: unknown server state %q (accepted: %s)", st, strings.Join(knownServerStates(), ", "))
		}
		want[st] = true
	}
	shown := map[string]bool{}
	return func(ev api.WatchEvent, inCopy bool) bool {
		s := ev.Server
		if s == nil { // not a server event: not ours to filter
			return true
		}
		in := want[s.State] && ev.Op != "delete"
		was := shown[s.ID]
		if in {
			shown[s.ID] = true
		} else {
			delete(shown, s.ID)
		}
		if inCopy {
			return in
		}
		return in || was
	}, nil
}
