package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/httpapi"
	"github.com/switchyard/switchyard/loadview"
)

// agentFlags are `switchyard agent`'s flags.
type agentFlags struct {
	id, dataDir, raftAddr, httpAddr, quicAddr string
	join                                      string
	bootstrapExpect                           int
	heartbeat, election, lease, commit        time.Duration
	snapshotInterval, applyTimeout            time.Duration
	snapshotThreshold, trailingLogs           uint64
	maxBatch                                  int
	logLevel, logFormat                       string
	tls                                       tlsFlags
	failureWindow                             time.Duration
	clockTolerance                            time.Duration
	fastFailover, silentFailover              bool
	faultClockFile                            string
	prov                                      provisionerFlags // provisionflags.go
	acl                                       string
	httpPlain                                 bool
	token                                     string
	rateLimit, anonRateLimit                  float64
}

func newAgentCmd() *cobra.Command {
	f := &agentFlags{}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run an allocator node",
		Long: `Run one allocator node. Every node of a new cluster may be started with the
same command line (its own --id and addresses aside):

  switchyard agent --id n1 --data-dir /var/lib/switchyard/n1 \
    --raft-addr 10.0.0.1:7301 --http-addr 10.0.0.1:7501 --quic-addr 10.0.0.1:7601 \
    --bootstrap-expect 3 --join 10.0.0.1:7501,10.0.0.2:7501,10.0.0.3:7501 \
    --tls-ca certs/ca.pem --tls-cert certs/n1.pem --tls-key certs/n1-key.pem

A node whose data dir already holds state just restarts. A node started
later with --join joins the existing cluster. SIGTERM/SIGINT on the leader
hands leadership to another node before exiting.`,
		RunE: func(cmd *cobra.Command, _ []string) error { return runAgent(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.id, "id", "", "this node's unique id (required)")
	f.prov.register(cmd)
	fl.StringVar(&f.dataDir, "data-dir", "", "directory for the raft log, stable store and snapshots (required)")
	fl.StringVar(&f.raftAddr, "raft-addr", "", "host:port for raft traffic, reachable by the other agents (required)")
	fl.StringVar(&f.httpAddr, "http-addr", "", "host:port for the HTTP admin API (required)")
	fl.StringVar(&f.quicAddr, "quic-addr", "", "host:port (UDP) for media nodes' QUIC connections")
	fl.IntVar(&f.bootstrapExpect, "bootstrap-expect", 0, "bootstrap a new cluster once this many fresh nodes (this one included) are reachable through --join; 0 only joins")
	fl.StringVar(&f.join, "join", "", "comma-separated HTTP addresses of the other agents (may include this one)")
	fl.DurationVar(&f.heartbeat, "raft-heartbeat-timeout", cluster.DefaultHeartbeatTimeout, "raft heartbeat timeout")
	fl.DurationVar(&f.election, "raft-election-timeout", cluster.DefaultElectionTimeout, "raft election timeout")
	fl.DurationVar(&f.lease, "raft-lease-timeout", cluster.DefaultLeaderLeaseTimeout, "raft leader lease timeout (≤ heartbeat timeout)")
	fl.DurationVar(&f.commit, "raft-commit-timeout", cluster.DefaultCommitTimeout, "raft commit timeout")
	fl.BoolVar(&f.fastFailover, "raft-fast-failover", true, "start an election as soon as a silent leader's raft port refuses connections (its process is gone), instead of waiting out the heartbeat timeout")
	fl.BoolVar(&f.silentFailover, "raft-silent-failover", true, "start an election as soon as a majority of voters has not heard from the leader for a heartbeat timeout (a paused or cut-off leader), instead of waiting for raft's timers; needs --raft-fast-failover")
	fl.Uint64Var(&f.snapshotThreshold, "snapshot-threshold", cluster.DefaultSnapshotThreshold, "log entries between snapshots")
	fl.DurationVar(&f.snapshotInterval, "snapshot-interval", cluster.DefaultSnapshotInterval, "how often to check whether to snapshot")
	fl.Uint64Var(&f.trailingLogs, "trailing-logs", cluster.DefaultTrailingLogs, "log entries kept after a snapshot")
	fl.DurationVar(&f.applyTimeout, "apply-timeout", cluster.DefaultApplyTimeout, "how long a commit may take before its outcome is reported unknown (retryable)")
	fl.IntVar(&f.maxBatch, "max-batch", cluster.DefaultMaxBatch, "most commands packed into one log entry")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fl.DurationVar(&f.failureWindow, "failure-window", loadview.DefaultWindow, "mark a media server (with an incarnation) down after this long without a load report; 0 disables")
	fl.DurationVar(&f.clockTolerance, "clock-tolerance", cluster.DefaultClockTolerance, "how far this node's wall clock may disagree with the time stamped into the log before it is reported and, on the leader, replaced by the log's time")
	fl.StringVar(&f.faultClockFile, "fault-clock-file", "", "fault injection for tests: a file holding a duration (240h, -90s) added to this agent's wall clock, re-read every 100 ms")
	_ = fl.MarkHidden("fault-clock-file")
	f.tls.register(cmd)
	fl.StringVar(&f.acl, "acl", "off", "default-deny: every API request needs a token (or an agent/media certificate over HTTPS) whose role allows it, from the first request on ('switchyard acl bootstrap' makes the first); off: anyone who reaches --http-addr controls the cluster")
	fl.Float64Var(&f.rateLimit, "rate-limit", httpapi.DefaultTokenRate, "requests per second each token may send to this agent while ACLs are on (bursts of twice that); negative: no limit")
	fl.Float64Var(&f.anonRateLimit, "anonymous-rate-limit", httpapi.DefaultAnonymousRate, "requests per second each anonymous source (an IPv4 address or an IPv6 /64) may send to this agent while ACLs are on (bursts of twice that; health probes and bootstrap are anonymous); negative: no limit")
	fl.BoolVar(&f.httpPlain, "http-plain", false, "serve the admin API over plain HTTP even though the TLS flags are given (by default it is HTTPS with the agent's certificate)")
	fl.StringVar(&f.token, "token", os.Getenv(api.TokenEnv), "ACL token this agent sends when it joins a cluster over plain HTTP (env SWITCHYARD_TOKEN); over HTTPS its certificate is enough")
	return cmd
}

func (f *agentFlags) config(cmd *cobra.Command) (agent.Config, error) {
	for _, req := range []struct{ name, val string }{{"id", f.id}, {"data-dir", f.dataDir}, {"raft-addr", f.raftAddr}, {"http-addr", f.httpAddr}} {
		if req.val == "" {
			return agent.Config{}, usagef(cmd, "--%s is required", req.name)
		}
	}
	var joins []string
	for _, j := range strings.Split(f.join, ",") {
		if j = strings.TrimSpace(j); j != "" {
			if err := checkAddr(j); err != nil {
				return agent.Config{}, usagef(cmd, "--join: %v", err)
			}
			joins = append(joins, j)
		}
	}
	for _, a := range []struct{ name, val string }{{"raft-addr", f.raftAddr}, {"http-addr", f.httpAddr}, {"quic-addr", f.quicAddr}} {
		if a.val == "" {
			continue
		}
		if err := checkAddr(a.val); err != nil {
			return agent.Config{}, usagef(cmd, "--%s: %v", a.name, err)
		}
	}
	if f.bootstrapExpect < 0 {
		return agent.Config{}, usagef(cmd, "--bootstrap-expect must be 0 or more, got %d", f.bootstrapExpect)
	}
	if f.bootstrapExpect == 0 && len(joins) == 0 {
		return agent.Config{}, usagef(cmd, "give --bootstrap-expect N to start a new cluster, or --join to join one")
	}
	log, err := newLogger(f.logLevel, f.logFormat)
	if err != nil {
		return agent.Config{}, usagef(cmd, "%v", err)
	}
	id, err := f.tls.identity(cmd)
	if err != nil {
		return agent.Config{}, err
	}
	// --quic-addr without TLS flags: the agent runs without its QUIC
	// listener and says so in its log (media nodes need mutual TLS).
	if f.failureWindow < 0 {
		return agent.Config{}, usagef(cmd, "--failure-window must not be negative")
	}
	if f.clockTolerance <= 0 {
		return agent.Config{}, usagef(cmd, "--clock-tolerance must be positive, got %v", f.clockTolerance)
	}
	window := f.failureWindow
	if window == 0 {
		window = -1 // disabled
	}
	switch f.acl {
	case "default-deny", "off":
	default:
		return agent.Config{}, usagef(cmd, "--acl %q: want default-deny or off", f.acl)
	}
	if f.acl == "off" {
		log.Warn("ACLs are off (--acl off): anyone who can reach the HTTP API controls the cluster")
	}
	if f.acl == "default-deny" && (id == nil || f.httpPlain) && f.token == "" {
		log.Warn("ACLs are on but this agent has no certificate on its API calls (no TLS flags, or --http-plain) and no --token: it cannot join or record its member entry through another agent")
	}
	return agent.Config{TLS: id, FailureWindow: window, ACL: f.acl == "default-deny", HTTPS: id != nil && !f.httpPlain, Token: f.token, RateLimit: f.rateLimit, AnonymousRateLimit: f.anonRateLimit, Config: cluster.Config{
		ID: f.id, DataDir: f.dataDir, RaftAddr: f.raftAddr, HTTPAddr: f.httpAddr, QUICAddr: f.quicAddr,
		BootstrapExpect: f.bootstrapExpect, Join: joins,
		HeartbeatTimeout: f.heartbeat, ElectionTimeout: f.election, LeaderLeaseTimeout: f.lease, CommitTimeout: f.commit,
		SnapshotThreshold: f.snapshotThreshold, SnapshotInterval: f.snapshotInterval, TrailingLogs: f.trailingLogs,
		ApplyTimeout: f.applyTimeout, MaxBatch: f.maxBatch, Logger: log, ClockTolerance: f.clockTolerance,
		DisableFastFailover: !f.fastFailover, DisableSilentFailover: !f.silentFailover,
	}}, nil
}

func runAgent(cmd *cobra.Command, f *agentFlags) error {
	cfg, err := f.config(cmd)
	if err != nil {
		return err
	}
	if cfg.Provisioner, err = f.prov.provider(cmd); err != nil {
		return err
	}
	if f.faultClockFile != "" {
		fc, err := newFaultClock(cmd.Context(), f.faultClockFile, cfg.Logger)
		if err != nil {
			return usagef(cmd, "--fault-clock-file: %v", err)
		}
		cfg.WallClock = fc.Now
	}
	a, err := agent.Start(cmd.Context(), cfg)
	if err != nil {
		return err
	}
	cfg.Logger.Info("agent running", "id", cfg.ID, "http", a.HTTPAddr(), "raft", cfg.RaftAddr)
	<-cmd.Context().Done()
	cfg.Logger.Info("shutting down")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return a.Shutdown(ctx)
}

// checkAddr validates a host:port flag value.
func checkAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", a, err)
	}
	if _, err := net.LookupPort("tcp", port); err != nil || port == "" {
		return fmt.Errorf("%q has a bad port %q", a, port)
	}
	_ = host
	return nil
}
