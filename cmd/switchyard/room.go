package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
)

func newRoomCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "room", Short: "Place application rooms on servers (any SFU kind) and list them"}

	pf := &clientFlags{}
	var room string
	var req api.PlaceRoomRequest
	var waitReady time.Duration
	place := &cobra.Command{
		Use:   "place",
		Short: "Pick a server for a room (sticky: the same answer while its server is alive and not draining)",
		Long: `Pick a server for a room with the live placement policy and print where clients
connect: WHIP/WHEP URLs for Switchyard's media node, the SFU's URL (and Janus'
VideoRoom number) for LiveKit and Janus servers. While the room's server is
registered, active and not draining, every call answers the same placement.
When that server was marked down, drained or deregistered, the room is placed
again and the answer says moved: true.

  switchyard room place --room standup --units 4 --sfu janus --json`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := api.ValidateRoomName(room); err != nil {
				return usagef(cmd, "--room: %v", err)
			}
			if req.Units <= 0 {
				return usagef(cmd, "--units must be a positive number, got %d", req.Units)
			}
			if req.SFU != "" && !fsm.ValidSFU(req.SFU) {
				return usagef(cmd, "--sfu %q: want one of %s", req.SFU, strings.Join(fsm.SFUKinds(), ", "))
			}
			c, ctx, cancel, err := pf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			r, err := c.PlaceRoom(ctx, room, req)
			if err != nil {
				return fmt.Errorf("placement refused: %w", err)
			}
			if waitReady > 0 {
				wctx, wcancel := context.WithTimeout(cmd.Context(), waitReady)
				err := c.WaitRoomReady(wctx, r)
				wcancel()
				if err != nil {
					return err
				}
			}
			if pf.json {
				return printJSON(cmd.OutOrStdout(), r)
			}
			moved := ""
			if r.Moved {
				moved = " (moved)"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "room %s on %s (%s)%s, allocation %s\n", esc(r.Room), esc(r.Server), r.SFU, moved, r.AllocationID)
			for _, k := range sortedKeys(r.URLs) {
				fmt.Fprintf(cmd.OutOrStdout(), "  %s: %s\n", k, esc(fmt.Sprint(r.URLs[k])))
			}
			return nil
		},
	}
	pf.register(place, true)
	place.Flags().StringVar(&room, "room", "", "room name (required)")
	place.Flags().Int64Var(&req.Units, "units", 1, "units to allocate for the room (> 0)")
	place.Flags().StringVar(&req.Region, "region", "", "preferred region")
	place.Flags().DurationVar(&waitReady, "wait-ready", 0, "also wait (up to this long) until the room's server reports the room (a Janus/LiveKit sidecar: the room exists on the SFU); 0: do not wait")
	place.Flags().StringVar(&req.SFU, "sfu", "", "only servers of this SFU kind: "+strings.Join(fsm.SFUKinds(), ", ")+" (default any)")

	lf := &clientFlags{}
	pages := &pageFlags{}
	var server string
	var stale bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List placed rooms",
		Long: `List placed rooms, ordered by name. The list is read a page at a time
(--page-size rooms per request); the table ends with the total, or, with
--limit or --after, with how many of how many were shown and the --after
that continues.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := pages.check(cmd); err != nil {
				return err
			}
			c, ctx, cancel, err := lf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			roomName := func(r api.Room) string { return r.Room }
			if lf.json {
				return printJSONPages(cmd, ctx, pages, "rooms", roomName, c.RoomPages(server, stale))
			}
			return printTablePages(cmd, ctx, pages, "rooms", "ROOM\tSERVER\tSFU\tALLOCATION\tMOVED\tPLACED", roomName, c.RoomPages(server, stale), func(r api.Room) string {
				srv := r.Server
				if srv == "" {
					srv = "-"
				}
				return fmt.Sprintf("%s\t%s\t%s\t%s\t%v\t%s", esc(r.Room), esc(srv), r.SFU, r.AllocationID, r.Moved, time.UnixMilli(r.PlacedAtUnixMs).UTC().Format(time.RFC3339))
			})
		},
	}
	lf.register(list, true)
	pages.register(list, "rooms", "name")
	list.Flags().StringVar(&server, "server", "", "only rooms on this server")
	list.Flags().BoolVar(&stale, "stale", false, "answer from the contacted agent's replica instead of the leader")

	gf := &clientFlags{}
	get := &cobra.Command{
		Use:   "get ROOM",
		Short: "Show one room's placement",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, cancel, err := gf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			r, err := c.Room(ctx, args[0])
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), r)
		},
	}
	gf.register(get, true)

	rf := &clientFlags{}
	release := &cobra.Command{
		Use:   "release ROOM",
		Short: "End a room's placement (its allocation is released); a room not placed is not an error",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, cancel, err := rf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			r, err := c.ReleaseRoom(ctx, args[0])
			if err != nil {
				return err
			}
			if rf.json {
				return printJSON(cmd.OutOrStdout(), r)
			}
			if !r.Released {
				fmt.Fprintf(cmd.OutOrStdout(), "room %s was not placed\n", esc(r.Room))
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "released room %s (allocation %s)\n", esc(r.Room), r.AllocationID)
			return nil
		},
	}
	rf.register(release, true)
	cmd.AddCommand(place, list, get, release)
	return cmd
}

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
