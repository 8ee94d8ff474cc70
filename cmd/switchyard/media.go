package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/media"
	"github.com/switchyard/switchyard/transport"
)

// mediaFlags are `switchyard media`'s flags.
type mediaFlags struct {
	id, allocators, httpAddr, publicURL, region string
	quicAllocators                              string
	tls                                         tlsFlags
	iceIPs                                      string
	capacity, cascadeUnits                      int64
	viewerCost, publisherCost                   int64
	cascadeIdle, drainTimeout                   time.Duration
	logLevel, logFormat                         string
	requireToken                                bool
}

func newMediaCmd() *cobra.Command {
	f := &mediaFlags{}
	cmd := &cobra.Command{
		Use:   "media",
		Short: "Run a media node: a WebRTC SFU (WHIP/WHEP) that cascades full rooms onto allocated servers",
		Long: `Run a media node. It serves WHIP (POST /whip/{room}) and WHEP (POST /whep/{room})
and a demo page at http://<http-addr>/, registers with the allocator cluster
(its base URL as address), and when a room's viewers exceed --capacity it asks
the cluster for another server, forwards the room there and redirects viewers
(307). SIGTERM/SIGINT, or 'switchyard server drain --id <id>', drain it: no
new sessions, existing ones finish, then it deregisters and exits.

  switchyard media --id m1 --allocators 127.0.0.1:7501,127.0.0.1:7502,127.0.0.1:7503 \
    --http-addr 127.0.0.1:8081 --capacity 50

--allocators names the agents, each by its HTTP API address or its QUIC
address (told apart by asking; prefix http://, https:// or quic:// to say
which). With --tls-ca/--tls-cert/--tls-key the node registers, allocates,
releases and drains over QUIC with mutual TLS and sends load reports
(measured CPU, bitrates, peers, tracks, rooms, hosted allocations) as QUIC
datagrams; an agent named by HTTP address is reached at the QUIC address it
advertises in the member table, and the other members' QUIC addresses are
failover targets. The HTTP API is then used only to deregister, notice a
drain ordered by 'server drain', look up cascade targets' addresses and
fetch --require-token's keys: an agent named by QUIC address is reached
there at the HTTP address the member table lists for it, which needs one
agent named by HTTP address. With QUIC addresses only, the node registers,
serves, reports load and drains on SIGTERM, but cannot cascade, does not
notice 'server drain' and is not deregistered (the cluster marks it down
once its reports stop). --quic-allocators, the older spelling for QUIC
addresses, still works. Without TLS flags the node talks HTTP and sends no
load reports, so --allocators must be HTTP addresses.`,
		RunE: func(cmd *cobra.Command, _ []string) error { return runMedia(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.id, "id", "", "this media node's id (required)")
	fl.StringVar(&f.allocators, "allocators", defaultAddr, allocatorsHelp)
	fl.StringVar(&f.httpAddr, "http-addr", "127.0.0.1:8081", "host:port for WHIP/WHEP and the demo page")
	fl.StringVar(&f.publicURL, "public-url", "", "base URL viewers and other nodes reach this node at (default http://<http-addr>)")
	fl.StringVar(&f.region, "region", "", "region")
	fl.StringVar(&f.quicAllocators, "quic-allocators", "", "comma-separated QUIC addresses of allocator agents (needs the --tls-* flags; older spelling of QUIC addresses in --allocators)")
	f.tls.register(cmd)
	fl.StringVar(&f.iceIPs, "ice-ips", "", "comma-separated IPs to offer host ICE candidates on (default: every interface, loopback included)")
	fl.Int64Var(&f.capacity, "capacity", 0, "capacity in units (required, > 0)")
	fl.Int64Var(&f.viewerCost, "viewer-units", 1, "units one viewer session costs")
	fl.Int64Var(&f.publisherCost, "publisher-units", 0, "units one publisher (or incoming cascade) costs")
	fl.Int64Var(&f.cascadeUnits, "cascade-units", 4, "units to allocate on a target when cascading a room")
	fl.DurationVar(&f.cascadeIdle, "cascade-idle", 30*time.Second, "close a cascade (and release its allocation) after this long without viewers")
	fl.DurationVar(&f.drainTimeout, "drain-timeout", 10*time.Minute, "on SIGTERM, wait at most this long for sessions to end")
	fl.BoolVar(&f.requireToken, "require-token", false, "WHIP/WHEP need a token from 'switchyard token mint' (Authorization: Bearer, or ?access_token= on redirects); the signing keys are fetched from the cluster (needs a media credential: SWITCHYARD_TOKEN, or HTTPS with a media certificate)")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&f.logFormat, "log-format", "text", "text or json")
	return cmd
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func runMedia(cmd *cobra.Command, f *mediaFlags) error {
	if f.id == "" {
		return usagef(cmd, "--id is required")
	}
	if f.capacity <= 0 {
		return usagef(cmd, "--capacity must be a positive number of units, got %d", f.capacity)
	}
	if err := checkAddr(f.httpAddr); err != nil {
		return usagef(cmd, "%v", err)
	}
	var ips []net.IP
	for _, s := range splitList(f.iceIPs) {
		ip := net.ParseIP(s)
		if ip == nil {
			return usagef(cmd, "--ice-ips: %q is not an IP", s)
		}
		ips = append(ips, ip)
	}
	log, err := newLogger(f.logLevel, f.logFormat)
	if err != nil {
		return usagef(cmd, "%v", err)
	}
	cfg := media.Config{
		ID: f.id, Region: f.region, Capacity: f.capacity, PublicURL: f.publicURL, ICEIPs: ips,
		Costs:        &media.CostModel{Viewer: f.viewerCost, Publisher: f.publisherCost},
		CascadeUnits: f.cascadeUnits, CascadeIdle: f.cascadeIdle, Logger: log,
	}
	id, err := f.tls.identity(cmd)
	if err != nil {
		return err
	}
	if id == nil && len(splitList(f.quicAllocators)) > 0 {
		return usagef(cmd, "--quic-allocators needs --tls-ca, --tls-cert and --tls-key")
	}
	entries := allocatorEntries(cmd, f.allocators, f.quicAllocators)
	if len(entries) == 0 {
		return usagef(cmd, "--allocators is empty")
	}
	ropts := resolveOpts{}
	if id != nil {
		ropts.QUIC = id.ClientConfig(transport.ALPN)
	}
	addrs, err := resolveAllocators(cmd.Context(), entries, ropts)
	if err != nil {
		return usagef(cmd, "%v", err)
	}
	if len(addrs.HTTP) == 0 && f.requireToken {
		return usagef(cmd, "--require-token reads the signing keys over the HTTP API: name at least one agent by its HTTP address in --allocators")
	}
	var cl media.Cluster
	if id == nil {
		cl = media.NewHTTPCluster(f.id, addrs.HTTP...)
	} else {
		if len(addrs.HTTP) == 0 {
			log.Warn("--allocators names no agent's HTTP API address: cascading, noticing 'server drain' and deregistering need one; registering, allocating, draining on SIGTERM and load reports work over QUIC")
		}
		qc, err := media.NewQUICCluster(f.id, addrs.dialQUIC(f.quicAllocators), addrs.HTTP, ropts.QUIC, log)
		if err != nil {
			return err
		}
		defer qc.Close()
		cl = qc
	}
	if f.requireToken {
		if cfg.Tokens, cfg.RefreshTokens, err = fetchMediaKeys(cmd.Context(), addrs.HTTP, ropts.QUIC, log); err != nil {
			return err
		}
	} else {
		log.Warn("WHIP and WHEP accept offers without a token: anyone who reaches this node can publish to or watch any room it hosts; start it with --require-token to need tokens from 'switchyard token mint'")
	}
	n, err := media.New(cfg, cl)
	if err != nil {
		return usagef(cmd, "%v", err)
	}
	ln, err := net.Listen("tcp", f.httpAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", f.httpAddr, err)
	}
	ctx := cmd.Context()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := n.Start(sctx, ln); err != nil {
		_ = n.Close(context.Background())
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "media node %s: demo page %s/  (WHIP %s/whip/<room>, WHEP %s/whep/<room>)\n", f.id, n.BaseURL(), n.BaseURL(), n.BaseURL())
	select {
	case <-ctx.Done():
		fmt.Fprintf(cmd.OutOrStdout(), "draining %s (up to %v)\n", f.id, f.drainTimeout)
		dctx, dcancel := context.WithTimeout(context.Background(), f.drainTimeout)
		defer dcancel()
		if err := n.Drain(dctx); err != nil {
			log.Warn("drain did not finish", "err", err)
		}
	case <-n.Drained():
		fmt.Fprintf(cmd.OutOrStdout(), "%s drained and deregistered\n", f.id)
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer ccancel()
	return n.Close(cctx)
}
