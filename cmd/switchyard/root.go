package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/api"
)

// usageError marks errors in how a command was called (flags, arguments),
// which exit with status 2 and a pointer to --help.
type usageError struct {
	cmd string
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf(format, args...)}
}

// defaultAddr is the first agent of `switchyard dev`, so the CLI works
// against a dev cluster with no flags.
const defaultAddr = "127.0.0.1:7501"

// clientFlags are the flags every client command takes.
type clientFlags struct {
	addr    string
	timeout time.Duration
	json    bool
	auth    authFlags // acl.go
}

func (f *clientFlags) register(cmd *cobra.Command, withJSON bool) {
	def := defaultAddr
	if v := os.Getenv("SWITCHYARD_ADDR"); v != "" {
		def = v
	}
	cmd.Flags().StringVar(&f.addr, "addr", def, "HTTP address(es) of any agent, comma-separated (env SWITCHYARD_ADDR)")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 15*time.Second, "give up (retries included) after this long")
	f.auth.register(cmd) // acl.go: --token, --tls-ca
	if withJSON {
		cmd.Flags().BoolVar(&f.json, "json", false, "print JSON (snake_case keys)")
	}
}

func (f *clientFlags) client(cmd *cobra.Command) (*api.Client, context.Context, context.CancelFunc, error) {
	var addrs []string
	for _, a := range strings.Split(f.addr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, nil, nil, usagef(cmd, "--addr is empty")
	}
	for _, a := range addrs {
		if err := checkAddr(a); err != nil {
			return nil, nil, nil, usagef(cmd, "--addr: %v", err)
		}
	}
	if f.timeout <= 0 {
		return nil, nil, nil, usagef(cmd, "--timeout must be positive")
	}
	c := api.NewClient(addrs...)
	// A wrong address (nothing listening, or not the HTTP API) fails in a
	// few seconds; an election or a restarting agent answers (503) or
	// comes back sooner than that.
	c.NoAnswerTimeout = 3 * time.Second
	if err := f.auth.apply(cmd, c, addrs); err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	return c, ctx, cancel, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "switchyard",
		Short: "Fault-tolerant allocator for horizontally scaled WebRTC media servers",
		Long: `Switchyard keeps the registry of media servers (capacity, allocations, policy)
in a Raft cluster of allocator agents, and decides which server a room spills
onto when it outgrows the one it is on.

Start a dev cluster with 'switchyard dev' (or 'make run'), then try
'switchyard cluster status' and 'switchyard alloc request --room demo --units 1 --request-id r1'.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &usageError{cmd: c.CommandPath(), err: err} })
	root.AddCommand(newAgentCmd(), newDevCmd(), newClusterCmd(), newOperatorCmd(), newSnapshotCmd(), newServerCmd(), newAllocCmd(), newPolicyCmd(), newTLSCmd(), newLoadgenCmd(), newMediaCmd(), newACLCmd(), newTokenCmd())
	root.AddCommand(newRoomCmd(), newSidecarCmd()) // room.go, sidecar.go
	// Unknown subcommands and bad positional args are usage errors too.
	for _, c := range allCommands(root) {
		if c.Args == nil {
			c.Args = cobra.NoArgs
		}
		args := c.Args
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return &usageError{cmd: cmd.CommandPath(), err: err}
			}
			return nil
		}
		if c.HasSubCommands() && c.RunE == nil {
			c.RunE = func(cmd *cobra.Command, a []string) error {
				return usagef(cmd, "%s needs a subcommand", cmd.CommandPath())
			}
		}
	}
	return root
}

func allCommands(c *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{c}
	for _, s := range c.Commands() {
		out = append(out, allCommands(s)...)
	}
	return out
}

// newLogger builds the process logger from --log-level/--log-format.
func newLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
