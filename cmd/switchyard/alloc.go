package main

import (
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/api"
)

func newAllocCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "alloc", Short: "Request, release and list allocations"}

	rf := &clientFlags{}
	var req api.AllocateRequest
	var ttl, attempt time.Duration
	request := &cobra.Command{
		Use:   "request",
		Short: "Allocate units for a room on the server the policy picks",
		Long: `Allocate units for a room. The request id makes the call idempotent: sending
the same id again (after a timeout, or to another agent) returns the
allocation it already got, never a second one. A refused request exits 1 and
says which capacity was missing.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.Room == "" {
				return usagef(cmd, "--room is required")
			}
			if req.RequestID == "" {
				return usagef(cmd, "--request-id is required (any unique string; reuse it to retry safely)")
			}
			if req.Units <= 0 {
				return usagef(cmd, "--units must be a positive number, got %d", req.Units)
			}
			if ttl < 0 {
				return usagef(cmd, "--ttl must not be negative")
			}
			req.TTLMs = ttl.Milliseconds()
			if attempt <= 0 {
				return usagef(cmd, "--attempt-timeout must be positive")
			}
			c, ctx, cancel, err := rf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			c.AttemptTimeout = attempt
			a, err := c.Allocate(ctx, req)
			if err != nil {
				return fmt.Errorf("allocation refused: %w", err)
			}
			if rf.json {
				return printJSON(cmd.OutOrStdout(), a)
			}
			again := ""
			if a.Duplicate {
				again = " (request id seen before: same allocation)"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "allocated %s: room %s, %d units on %s%s\n", a.ID, esc(a.Room), a.Units, esc(a.Server), again)
			// Say so when no server had room and the leader started one
			// for this request (a provisioning intent lists its id).
			if its, err := c.Intents(ctx, true); err == nil {
				for _, it := range its {
					if it.Kind == "provision" && it.ServerID == a.Server && slices.Contains(it.RequestIDs, a.RequestID) {
						fmt.Fprintf(cmd.OutOrStdout(), "no server had room: %s was started for this request (provisioning intent %s, %s)\n", a.Server, it.ID, it.State)
					}
				}
			}
			return nil
		},
	}
	rf.register(request, true)
	request.Flags().StringVar(&req.Room, "room", "", "room the units are for (required)")
	request.Flags().Int64Var(&req.Units, "units", 1, "units to allocate (> 0)")
	request.Flags().StringVar(&req.RequestID, "request-id", "", "idempotency key (required)")
	request.Flags().StringVar(&req.Requester, "requester", "", "who asks (e.g. the origin media server)")
	request.Flags().StringVar(&req.Region, "region", "", "preferred region")
	request.Flags().StringVar(&req.Server, "server", "", "pin to this server")
	request.Flags().DurationVar(&ttl, "ttl", 0, "expire the allocation after this long (0: never)")
	request.Flags().DurationVar(&attempt, "attempt-timeout", api.DefaultAttemptTimeout,
		"with several --addr, give up on one agent after this long (doubling each round) and ask the next; suits the default raft timing, use 2×(2×heartbeat+election+100ms) for other raft timing")

	relf := &clientFlags{}
	release := &cobra.Command{
		Use:   "release ID",
		Short: "Release an allocation (by allocation id or request id)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, cancel, err := relf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			a, err := c.Release(ctx, args[0])
			if err != nil {
				return err
			}
			if relf.json {
				return printJSON(cmd.OutOrStdout(), a)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "released %s (%d units on %s)\n", esc(a.ID), a.Units, esc(a.Server))
			return nil
		},
	}
	relf.register(release, true)

	lf := &clientFlags{}
	pf := &pageFlags{}
	var opts api.AllocationListOptions
	var watch bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List allocations",
		Long: `List allocations, ordered by id. The list is read a page at a time (--page-size
allocations per request); the table ends with the total, or, with --limit
or --after, with how many of how many were shown and the --after that
continues.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := pf.check(cmd); err != nil {
				return err
			}
			if watch { // watch.go
				if pf.partial() {
					return usagef(cmd, "--watch prints the whole list: it takes no --limit or --after")
				}
				return runWatch(cmd, lf, "allocations", allocWatchFilter(opts))
			}
			c, ctx, cancel, err := lf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			allocID := func(a api.Allocation) string { return a.ID }
			if lf.json {
				return printJSONPages(cmd, ctx, pf, "allocations", allocID, c.AllocationPages(opts))
			}
			return printTablePages(cmd, ctx, pf, "allocations", "ID\tREQUEST\tROOM\tSERVER\tUNITS\tSTATE\tCREATED", allocID, c.AllocationPages(opts), func(a api.Allocation) string {
				return fmt.Sprintf("%s\t%s\t%s\t%s\t%d\t%s\t%s", esc(a.ID), esc(a.RequestID), esc(a.Room), esc(a.Server), a.Units, a.State, time.UnixMilli(a.CreatedAtUnixMs).UTC().Format(time.RFC3339))
			})
		},
	}
	lf.register(list, true)
	pf.register(list, "allocations", "id")
	list.Flags().StringVar(&opts.Room, "room", "", "only this room")
	list.Flags().StringVar(&opts.Server, "server", "", "only this server")
	list.Flags().BoolVar(&opts.ActiveOnly, "active", false, "only active allocations")
	list.Flags().BoolVar(&opts.Stale, "stale", false, "answer from the contacted agent's replica instead of the leader")
	list.Flags().BoolVar(&watch, "watch", false, watchHelp+" (--active filters the initial list only)")
	cmd.AddCommand(request, release, list)
	return cmd
}

// allocWatchFilter is the event filter of `alloc list --watch`: --room and
// --server keep the allocations they name, --active the active ones of the
// first copy only; a deletion is kept for an allocation kept before (a
// resume at another agent may send a deletion carrying only the id).
func allocWatchFilter(opts api.AllocationListOptions) func(api.WatchEvent, bool) bool {
	shown := map[string]bool{}
	return func(ev api.WatchEvent, inCopy bool) bool {
		a := ev.Allocation
		match := (opts.Room == "" || a.Room == opts.Room) && (opts.Server == "" || a.Server == opts.Server) && (!inCopy || !opts.ActiveOnly || a.State == "active")
		if ev.Op == "delete" {
			match = match || shown[ev.ID]
			delete(shown, ev.ID)
			return match
		}
		if match {
			shown[ev.ID] = true
		}
		return match
	}
}
