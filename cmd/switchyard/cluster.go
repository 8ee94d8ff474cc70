package main

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/cluster"
)

func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Inspect the allocator cluster"}
	f := &clientFlags{}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the leader, members and replication state as seen by --addr",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, cancel, err := f.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			st, err := c.Status(ctx)
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), st)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			leader := st.Leader
			if leader == "" {
				leader = "(none)"
			}
			fmt.Fprintf(w, "cluster:\t%s\nanswered by:\t%s (%s)\nleader:\t%s\nterm:\t%d\ncommit/applied:\t%d/%d\nstate hash:\t%.16s\n\n", esc(st.ClusterID), esc(st.ID), st.State, esc(leader), st.Term, st.CommitIndex, st.AppliedIndex, st.StateHash)
			fmt.Fprintln(w, "ID\tRAFT\tHTTP\tQUIC\tSUFFRAGE\tROLE")
			for _, m := range st.Members {
				role := "follower"
				if m.Leader {
					role = "leader"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", esc(m.ID), esc(m.RaftAddr), esc(m.HTTPAddr), esc(m.QUICAddr), m.Suffrage, role)
			}
			return w.Flush()
		},
	}
	f.register(status, true)
	cmd.AddCommand(status)
	return cmd
}

func newOperatorCmd() *cobra.Command {
	op := &cobra.Command{Use: "operator", Short: "Operator tools"}
	rf := &cobra.Command{Use: "raft", Short: "Raft membership and leadership"}
	op.AddCommand(rf)

	lf := &clientFlags{}
	list := &cobra.Command{
		Use:   "list-peers",
		Short: "List raft voters",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, cancel, err := lf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			ms, err := c.Members(ctx)
			if err != nil {
				return err
			}
			if lf.json {
				return printJSON(cmd.OutOrStdout(), ms)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tADDRESS\tSTATE\tVOTER")
			for _, m := range ms {
				state := "follower"
				if m.Leader {
					state = "leader"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%v\n", esc(m.ID), esc(m.RaftAddr), state, m.Suffrage == "Voter")
			}
			return w.Flush()
		},
	}
	lf.register(list, true)

	rmf := &clientFlags{}
	var rmID string
	remove := &cobra.Command{
		Use:   "remove-peer",
		Short: "Remove a (dead) node from the raft configuration",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if rmID == "" {
				return usagef(cmd, "--id is required")
			}
			c, ctx, cancel, err := rmf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			if err := c.RemovePeer(ctx, rmID); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", rmID)
			return nil
		},
	}
	rmf.register(remove, false)
	remove.Flags().StringVar(&rmID, "id", "", "node id to remove (required)")

	tf := &clientFlags{}
	var toID string
	transfer := &cobra.Command{
		Use:   "transfer-leader",
		Short: "Hand leadership to another voter (--id, or the most up-to-date one)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, cancel, err := tf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			before, berr := c.Status(ctx)
			if berr != nil {
				before.Leader = "" // unknown: only a named target can be confirmed
			}
			if err := c.TransferLeader(ctx, toID); err != nil {
				return err
			}
			// Say who leads once another node does (the one asked for, if
			// any): right after the transfer an agent may still name the
			// old leader.
			wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
			defer wcancel()
			st, err := waitStatus(wctx, c, func(st cluster.Status) bool {
				return toID != "" && st.Leader == toID || toID == "" && before.Leader != "" && st.Leader != "" && st.Leader != before.Leader
			})
			if err != nil {
				fmt.Fprintln(cmd.OutOrStdout(), "leadership transfer started")
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "leader is now %s\n", esc(st.Leader))
			return nil
		},
	}
	tf.register(transfer, false)
	transfer.Flags().StringVar(&toID, "id", "", "voter to hand leadership to (default: let raft pick)")
	rf.AddCommand(list, remove, transfer)
	return op
}

func newSnapshotCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "Save or restore the whole replicated state"}
	sf := &clientFlags{}
	save := &cobra.Command{
		Use:   "save FILE",
		Short: "Save the cluster state (consistent, from the leader) to FILE",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, cancel, err := sf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			tmp := args[0] + ".tmp"
			fh, err := os.Create(tmp)
			if err != nil {
				return err
			}
			if err := c.SaveSnapshot(ctx, fh); err != nil {
				fh.Close()
				os.Remove(tmp)
				return err
			}
			if err := fh.Close(); err != nil {
				return err
			}
			if err := os.Rename(tmp, args[0]); err != nil {
				return err
			}
			fi, _ := os.Stat(args[0])
			fmt.Fprintf(cmd.OutOrStdout(), "saved %s (%d bytes)\n", args[0], fi.Size())
			return nil
		},
	}
	sf.register(save, false)
	rf := &clientFlags{}
	var adopt bool
	restore := &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the whole cluster state with a saved snapshot",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			c, ctx, cancel, err := rf.client(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			r, err := c.RestoreSnapshot(ctx, data, adopt)
			if err != nil {
				return err
			}
			if rf.json {
				return printJSON(cmd.OutOrStdout(), r)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %d servers and %d allocations (state hash %.16s)\n", r.Servers, r.Allocations, r.StateHash)
			return nil
		},
	}
	rf.register(restore, true)
	restore.Flags().BoolVar(&adopt, "adopt", false, "accept a snapshot taken from another cluster (restamped with this cluster's id)")
	cmd.AddCommand(save, restore)
	return cmd
}
