package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/sidecar"
	"github.com/switchyard/switchyard/transport"
)

// sidecarFlags are `switchyard sidecar`'s flags.
type sidecarFlags struct {
	sfu, id, allocators, quicAllocators, region, zone string
	capacity                                          int64
	tls                                               tlsFlags
	interval, roomEmpty, roomIdle, drainTimeout       time.Duration
	pid                                               int
	janusURL, janusPublicURL, janusWSURL              string
	janusAdminURL, janusAdminSecret                   string
	livekitURL, livekitKey, livekitSecret             string
	livekitMetricsURL, pidFile                        string
	logLevel, logFormat                               string
}

func newSidecarCmd() *cobra.Command {
	f := &sidecarFlags{}
	cmd := &cobra.Command{
		Use:   "sidecar",
		Short: "Run beside a third-party SFU (Janus, LiveKit) and make it a server of the cluster",
		Long: `Run beside one SFU instance and make it a first-class server of the cluster:
register it (its connect URLs as addresses, label sfu=<kind>, a new incarnation
whenever the SFU process restarts), report its load over QUIC every --interval
(rooms, participants, published tracks, the SFU process's CPU with --sfu-pid),
create the rooms the cluster places on it (Janus: a VideoRoom numbered as the
placement's urls.room) and release a room's placement once it has ended on the
SFU. While the SFU does not answer, reports stop and the cluster marks the
server down in its usual window. 'switchyard server drain ID' (or SIGTERM)
drains it: Janus is told to refuse new sessions (admin API
accept_new_sessions; LiveKit has no such switch), no new room is placed
there, and when its rooms are empty (or --drain-timeout passed) the
placements are released, the server is deregistered and the sidecar exits.
LiveKit is driven through its RoomService API (--livekit-url,
--livekit-api-key, --livekit-api-secret); no Redis is involved. With
--livekit-metrics-url (its Prometheus endpoint) the reports carry the
server's bitrates too, and the sidecar tells LiveKit processes apart by
their process_start_time_seconds, so a LiveKit restarted between two polls
gets a new incarnation; without it, only a restart that leaves a poll
unanswered does.
--allocators names the agents as for 'switchyard media', each by its HTTP
API address or its QUIC address (prefix http://, https:// or quic:// to say
which); the sidecar needs at least one HTTP address (it lists its rooms and
deregisters over the HTTP API). --quic-allocators, the older spelling for
QUIC addresses, still works.

  switchyard sidecar --sfu janus --id janus1 --allocators 10.0.0.1:7501,10.0.0.2:7501 --capacity 100 \
    --tls-ca certs/ca.pem --tls-cert certs/janus1.pem --tls-key certs/janus1-key.pem \
    --janus-url http://10.0.1.5:8088/janus --janus-ws-url ws://10.0.1.5:8188 \
    --janus-admin-url http://127.0.0.1:7088/admin --janus-admin-secret "$SECRET"`,
		RunE: func(cmd *cobra.Command, _ []string) error { return runSidecar(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.sfu, "sfu", "", "SFU kind: janus or livekit (required)")
	fl.StringVar(&f.id, "id", "", "server id of this SFU instance (required)")
	fl.StringVar(&f.allocators, "allocators", defaultAddr, allocatorsHelp+"; at least one HTTP address")
	fl.StringVar(&f.quicAllocators, "quic-allocators", "", "comma-separated QUIC addresses of allocator agents (older spelling of QUIC addresses in --allocators)")
	fl.Int64Var(&f.capacity, "capacity", 0, "capacity in units (required, > 0)")
	fl.StringVar(&f.region, "region", "", "region")
	fl.StringVar(&f.zone, "zone", "", "zone")
	f.tls.register(cmd)
	fl.DurationVar(&f.interval, "interval", 500*time.Millisecond, "SFU poll and load report period")
	fl.DurationVar(&f.roomEmpty, "room-empty-timeout", 10*time.Second, "a room that had participants and stayed empty this long has ended")
	fl.DurationVar(&f.roomIdle, "room-idle-timeout", 5*time.Minute, "release a placed room nobody joined within this long")
	fl.DurationVar(&f.drainTimeout, "drain-timeout", 10*time.Minute, "on drain, wait at most this long for rooms to empty")
	fl.IntVar(&f.pid, "sfu-pid", 0, "process id of the SFU, to report its CPU (0: not reported)")
	fl.StringVar(&f.pidFile, "sfu-pid-file", "", "file holding the SFU's process id (its service manager's PID file), read at every report so a restarted SFU's CPU is reported too; instead of --sfu-pid")
	fl.StringVar(&f.janusURL, "janus-url", "http://127.0.0.1:8088/janus", "Janus HTTP API URL the sidecar talks to")
	fl.StringVar(&f.janusPublicURL, "janus-public-url", "", "Janus HTTP API URL clients are given (default --janus-url)")
	fl.StringVar(&f.janusWSURL, "janus-ws-url", "", "Janus WebSocket API URL clients are given (optional)")
	fl.StringVar(&f.janusAdminURL, "janus-admin-url", "", "Janus admin API URL (to refuse new sessions on drain, and to read subscribers and bitrates per room)")
	fl.StringVar(&f.janusAdminSecret, "janus-admin-secret", "", "Janus admin API secret")
	fl.StringVar(&f.livekitURL, "livekit-url", "ws://127.0.0.1:7880", "LiveKit URL clients connect to (its RoomService API is on the same host over http)")
	fl.StringVar(&f.livekitKey, "livekit-api-key", "", "LiveKit API key (RoomService requests)")
	fl.StringVar(&f.livekitSecret, "livekit-api-secret", "", "LiveKit API secret")
	fl.StringVar(&f.livekitMetricsURL, "livekit-metrics-url", "", "LiveKit's Prometheus endpoint, http://host:port/metrics (optional: the server's bitrates, and its process start time, which gives a LiveKit restarted between two polls a new incarnation)")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&f.logFormat, "log-format", "text", "text or json")
	return cmd
}

func runSidecar(cmd *cobra.Command, f *sidecarFlags) error {
	switch f.sfu {
	case fsm.SFUJanus, fsm.SFULiveKit:
	case "":
		return usagef(cmd, "--sfu is required (janus or livekit)")
	default:
		return usagef(cmd, "--sfu %q: want janus or livekit", f.sfu)
	}
	if f.id == "" {
		return usagef(cmd, "--id is required")
	}
	if f.capacity <= 0 {
		return usagef(cmd, "--capacity must be a positive number of units, got %d", f.capacity)
	}
	if f.interval <= 0 || f.roomEmpty <= 0 || f.roomIdle <= 0 || f.drainTimeout <= 0 {
		return usagef(cmd, "--interval, --room-empty-timeout, --room-idle-timeout and --drain-timeout must be positive")
	}
	entries := allocatorEntries(cmd, f.allocators, f.quicAllocators)
	if len(entries) == 0 {
		return usagef(cmd, "--allocators is empty")
	}
	id, err := f.tls.identity(cmd)
	if err != nil {
		return err
	}
	if id == nil {
		return usagef(cmd, "--tls-ca, --tls-cert and --tls-key are required (the sidecar reports load over QUIC)")
	}
	tlsConf := id.ClientConfig(transport.ALPN)
	addrs, err := resolveAllocators(cmd.Context(), entries, resolveOpts{QUIC: tlsConf})
	if err != nil {
		return usagef(cmd, "%v", err)
	}
	if len(addrs.HTTP) == 0 {
		return usagef(cmd, "--allocators: the sidecar lists its rooms, reads its state and deregisters over the HTTP API: name at least one agent by its HTTP address (QUIC addresses may be given beside it)")
	}
	log, err := newLogger(f.logLevel, f.logFormat)
	if err != nil {
		return usagef(cmd, "%v", err)
	}
	ctx := cmd.Context()
	var sfu sidecar.SFU
	where := f.janusURL
	switch f.sfu {
	case fsm.SFUJanus:
		j, err := sidecar.NewJanus(sidecar.JanusConfig{URL: f.janusURL, PublicURL: f.janusPublicURL, WSURL: f.janusWSURL,
			AdminURL: f.janusAdminURL, AdminSecret: f.janusAdminSecret})
		if err != nil {
			return usagef(cmd, "%v", err)
		}
		if f.janusAdminURL != "" {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := j.CheckAdmin(cctx)
			cancel()
			if errors.Is(err, sidecar.ErrRefused) || errors.Is(err, sidecar.ErrBadAnswer) {
				return fmt.Errorf("janus admin API %s: %w", f.janusAdminURL, err)
			}
			if err != nil {
				log.Warn("janus admin API not answering yet", "err", err)
			}
		}
		sfu = j
	case fsm.SFULiveKit:
		l, err := sidecar.NewLiveKit(sidecar.LiveKitConfig{URL: f.livekitURL, APIKey: f.livekitKey, APISecret: f.livekitSecret,
			MetricsURL: f.livekitMetricsURL, Logger: log})
		if err != nil {
			return usagef(cmd, "%v", err)
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = l.Poll(cctx)
		if errors.Is(err, sidecar.ErrRefused) || errors.Is(err, sidecar.ErrBadAnswer) {
			cancel()
			return fmt.Errorf("livekit RoomService at %s: %w", f.livekitURL, err)
		}
		if f.livekitMetricsURL != "" {
			if err := l.CheckMetrics(cctx); err != nil {
				log.Warn("livekit metrics endpoint not fully usable: bitrates are reported as 0 while its byte counters are not, and a restart between two polls is missed without its process start time",
					"url", f.livekitMetricsURL, "err", err)
			}
		}
		cancel()
		sfu, where = l, f.livekitURL
	}
	sc, err := sidecar.New(sidecar.Config{
		ID: f.id, Region: f.region, Zone: f.zone, Capacity: f.capacity, SFU: sfu,
		QUICAddrs: addrs.dialQUIC(f.quicAllocators), TLS: tlsConf, HTTPAddrs: addrs.HTTP,
		Interval: f.interval, RoomEmptyTimeout: f.roomEmpty, RoomIdleTimeout: f.roomIdle, DrainTimeout: f.drainTimeout,
		PID: f.pid, PIDFile: f.pidFile, Logger: log,
	})
	if err != nil {
		return usagef(cmd, "%v", err)
	}
	defer sc.Close()
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- sc.Run(runCtx) }()
	fmt.Fprintf(cmd.OutOrStdout(), "sidecar %s: %s at %s\n", f.id, f.sfu, where)
	select {
	case err := <-done:
		if err == nil {
			fmt.Fprintf(cmd.OutOrStdout(), "%s drained and deregistered\n", f.id)
		}
		return err
	case <-ctx.Done():
	}
	fmt.Fprintf(cmd.OutOrStdout(), "draining %s (up to %v)\n", f.id, f.drainTimeout)
	dctx, dcancel := context.WithTimeout(context.Background(), f.drainTimeout+30*time.Second)
	defer dcancel()
	if err := sc.Drain(dctx); err != nil {
		log.Warn("drain", "err", err)
		return nil
	}
	select {
	case err := <-done:
		return err
	case <-dctx.Done():
		log.Warn("drain did not finish")
		return nil
	}
}
