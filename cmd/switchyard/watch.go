package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/api"
)

// watchHelp is the --watch flag's help.
const watchHelp = "print the current list, then every change as it is applied (GET /v1/watch), until interrupted; " +
	"follows the other --addr agents if one goes away"

// runWatch follows GET /v1/watch for kind (servers or allocations) and
// prints each change: with --json every event as one JSON line (reset,
// objects, synced, ...; heartbeats left out), else one line per object
// change, prefixed with the log index it was applied at. keep filters
// object events; inCopy tells it whether the event belongs to a full copy
// (the list as it stands) rather than a change.
func runWatch(cmd *cobra.Command, f *clientFlags, kind string, keep func(ev api.WatchEvent, inCopy bool) bool) error {
	c, _, cancel, err := f.client(cmd)
	if err != nil {
		return err
	}
	cancel() // the watch runs until interrupted, not for --timeout
	out := cmd.OutOrStdout()
	enc := json.NewEncoder(out)
	inCopy := false
	err = c.Watch(cmd.Context(), api.WatchOptions{Kinds: []string{kind}}, func(ev api.WatchEvent) error {
		switch ev.Kind {
		case api.WatchHeartbeat:
			return nil
		case api.WatchReset:
			inCopy = true
		case api.WatchSynced:
			wasCopy := inCopy
			inCopy = false
			if !f.json {
				if wasCopy {
					fmt.Fprintf(out, "# the list above is complete as of index %d; changes follow\n", ev.Index)
				}
				return nil
			}
		case api.WatchServer, api.WatchAllocation:
			if keep != nil && !keep(ev, inCopy) {
				return nil
			}
		}
		if f.json {
			return enc.Encode(ev)
		}
		switch {
		case ev.Kind == api.WatchReset:
			fmt.Fprintf(out, "# full list at index %d\n", ev.Index)
		case ev.Server != nil:
			s := ev.Server
			fmt.Fprintf(out, "%d\t%s\t%s\tstate=%s used=%d capacity=%d free=%d region=%s\n", ev.Index, ev.Op, esc(s.ID), s.State, s.Used, s.Capacity, s.Free, esc(s.Region))
		case ev.Allocation != nil:
			a := ev.Allocation
			fmt.Fprintf(out, "%d\t%s\t%s\trequest=%s room=%s server=%s units=%d state=%s\n", ev.Index, ev.Op, esc(a.ID), esc(a.RequestID), esc(a.Room), esc(a.Server), a.Units, a.State)
		}
		return nil
	})
	if errors.Is(err, context.Canceled) {
		return nil // interrupted
	}
	return err
}
