package main

import (
	"fmt"
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
			fmt.Fprintf(cmd.OutOrStdout(), "registered %s: %d units (%d free), %s\n", s.ID, s.Capacity, s.Free, s.State)
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
	var stale, watch, summaryOnly bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List media servers (a summary by state and region first)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if watch { // watch.go
				return runWatch(cmd, lf, "servers", nil)
			}
			c, ctx, cancel, err := lf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			if summaryOnly {
				ss, err := c.Servers(ctx, stale)
				if err != nil {
					return err
				}
				sum := summarizeServers(ss)
				if lf.json {
					return printJSON(cmd.OutOrStdout(), sum)
				}
				return sum.print(cmd.OutOrStdout())
			}
			if lf.json {
				raw, err := c.ServersRaw(ctx, stale)
				if err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), raw)
			}
			// One list, with the load each server last reported as the
			// answering agent holds it.
			ss, err := c.ServersWithLoad(ctx, stale)
			if err != nil {
				return err
			}
			plain := make([]api.Server, len(ss))
			for i, s := range ss {
				plain[i] = s.Server
			}
			if err := summarizeServers(plain).print(cmd.OutOrStdout()); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout())
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tSTATE\tREGION\tUSED\tCAPACITY\tFREE\tCPU\tPEERS\tREPORTED FREE\tLOAD AGE")
			for _, s := range ss {
				cpu, peers, rfree, age := "-", "-", "-", "-"
				if l := s.Load; l != nil {
					cpu, peers, rfree = fmt.Sprintf("%.0f%%", 100*l.CPU), fmt.Sprint(l.Peers), fmt.Sprint(l.FreeUnits)
					if s.LoadAgeMs != nil {
						age = (time.Duration(*s.LoadAgeMs) * time.Millisecond).String()
					}
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n", esc(s.ID), s.State, esc(s.Region), s.Used, s.Capacity, s.Free,
					cpu, peers, rfree, age)
			}
			return w.Flush()
		},
	}
	lf.register(list, true)
	list.Flags().BoolVar(&stale, "stale", false, "answer from the contacted agent's replica instead of the leader")
	list.Flags().BoolVar(&watch, "watch", false, watchHelp)
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
		fmt.Fprintf(cmd.OutOrStdout(), "%s is %s (%d units still allocated)\n", s.ID, s.State, s.Used)
		return nil
	})
	dereg := idCmd("deregister [ID]", "Remove a server that holds no active allocations", func(c *api.Client, cmd *cobra.Command, id string, f *clientFlags) error {
		if err := c.DeregisterServer(cmd.Context(), id); err != nil {
			return err
		}
		if f.json {
			return printJSON(cmd.OutOrStdout(), map[string]string{"deregistered": id})
		}
		fmt.Fprintf(cmd.OutOrStdout(), "deregistered %s\n", id)
		return nil
	})
	cmd.AddCommand(register, list, drain, dereg)
	return cmd
}
