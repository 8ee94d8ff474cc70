package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/pki"
	"github.com/switchyard/switchyard/transport"
)

type loadgenFlags struct {
	allocators         string
	servers            int
	interval, duration time.Duration
	capacity           int64
	prefix             string
	allocRate          float64
	tls                tlsFlags
	caDir, caKey       string
	logLevel           string
}

func newLoadgenCmd() *cobra.Command {
	f := &loadgenFlags{}
	cmd := &cobra.Command{
		Use:   "loadgen",
		Short: "Simulate media servers: register, report load over QUIC, optionally allocate",
		Long: `Simulate --servers media servers. Each one connects to one of the agents
--allocators names (spread round-robin, failing over to the others), each
by its HTTP API address or its QUIC address (told apart by asking; prefix
http://, https:// or quic:// to say which; an agent named by HTTP address
is reached at the QUIC address it advertises in the member table),
registers with a fresh incarnation, and sends a load report every --interval from then on,
until --duration after the last server registered. With
--alloc-rate, allocations are requested (and released) at that rate in total.
Prints a summary at the end.

Agents accept a registration, report, allocation or drain only from a media
certificate naming that server id, so loadgen is given the cluster CA (its
key included) and mints, in memory, one media certificate per simulated
server: --ca-dir DIR (DIR/ca.pem and DIR/ca-key.pem), or --tls-ca with
--tls-ca-key. Nothing is written to disk.

  switchyard loadgen --allocators 127.0.0.1:7601,127.0.0.1:7602,127.0.0.1:7603 \
    --servers 100 --interval 500ms --duration 30s --ca-dir certs

--tls-ca, --tls-cert and --tls-key instead give one certificate that every
simulated server shares; current agents accept it only with --servers 1 and
a media certificate naming --id-prefix followed by 0.`,
		RunE: func(cmd *cobra.Command, _ []string) error { return runLoadgen(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.allocators, "allocators", "", allocatorsHelp+" (required)")
	fl.IntVar(&f.servers, "servers", 10, "number of simulated media servers")
	fl.DurationVar(&f.interval, "interval", 500*time.Millisecond, "load report interval per server")
	fl.DurationVar(&f.duration, "duration", 10*time.Second, "how long to report")
	fl.Int64Var(&f.capacity, "capacity", 100, "capacity units of each simulated server")
	fl.StringVar(&f.prefix, "id-prefix", "lg-", "server id prefix")
	fl.Float64Var(&f.allocRate, "alloc-rate", 0, "allocations per second to request in total (0: none)")
	fl.StringVar(&f.logLevel, "log-level", "warn", "debug, info, warn or error")
	f.tls.register(cmd)
	fl.StringVar(&f.caDir, "ca-dir", "", "directory holding the cluster CA (ca.pem, ca-key.pem): mint one media certificate per simulated server")
	fl.StringVar(&f.caKey, "tls-ca-key", "", "the cluster CA's private key (PEM), with --tls-ca: mint one media certificate per simulated server")
	return cmd
}

type loadgenStats struct {
	registered, regFailed       atomic.Int64
	reports, reportErrs         atomic.Int64
	allocs, allocFailed, relErr atomic.Int64
	regTime                     atomic.Int64 // ns, max
	allocNs                     atomic.Int64 // sum
}

func runLoadgen(cmd *cobra.Command, f *loadgenFlags) error {
	entries := splitList(f.allocators)
	switch {
	case len(entries) == 0:
		return usagef(cmd, "--allocators is required")
	case f.servers < 1:
		return usagef(cmd, "--servers must be positive")
	case f.interval <= 0 || f.duration <= 0:
		return usagef(cmd, "--interval and --duration must be positive")
	case f.capacity <= 0:
		return usagef(cmd, "--capacity must be positive")
	case f.allocRate < 0:
		return usagef(cmd, "--alloc-rate must not be negative")
	}
	serverID := func(i int) string { return fmt.Sprintf("%s%d", f.prefix, i) }
	identity, err := loadgenIdentities(cmd, f, serverID)
	if err != nil {
		return err
	}
	log, err := newLogger(f.logLevel, "text")
	if err != nil {
		return usagef(cmd, "%v", err)
	}
	ctx := cmd.Context()
	// Any of the certificates will do to ask an agent for its QUIC address.
	probe, err := identity(0)
	if err != nil {
		return err
	}
	resolved, err := resolveAllocators(ctx, entries, resolveOpts{QUIC: probe.ClientConfig(transport.ALPN)})
	if err != nil {
		return usagef(cmd, "%v", err)
	}
	addrs := resolved.QUIC
	var st loadgenStats
	clients := make([]*transport.Client, f.servers)
	defer func() {
		var wg sync.WaitGroup
		for _, c := range clients {
			if c != nil {
				wg.Add(1)
				go func() { defer wg.Done(); _ = c.Close() }()
			}
		}
		wg.Wait()
	}()
	incarnation := uint64(time.Now().UnixNano())
	start := time.Now()
	// Each server reports from its registration on (not once everyone is
	// registered: registering thousands takes longer than the failure
	// window, and the first would be marked down), until --duration after
	// the last registration.
	rctx, stopReports := context.WithCancel(ctx)
	defer stopReports()
	var reporters sync.WaitGroup
	report := func(i int, c *transport.Client) {
		reporters.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), incarnation))
			// Spread the first report over one interval.
			select {
			case <-rctx.Done():
				return
			case <-time.After(time.Duration(rng.Int64N(int64(f.interval)))):
			}
			t := time.NewTicker(f.interval)
			defer t.Stop()
			for {
				err := c.Report(transport.Load{CPU: rng.Float64(), IngressBps: rng.Int64N(50e6), EgressBps: rng.Int64N(200e6),
					Peers: rng.Int64N(500), Tracks: rng.Int64N(1000), Rooms: []string{fmt.Sprintf("room-%d", rng.IntN(50))},
					FreeUnits: f.capacity})
				if err != nil {
					st.reportErrs.Add(1)
				} else {
					st.reports.Add(1)
				}
				select {
				case <-rctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	// Register everyone (bounded concurrency), each server on its own
	// connection, spread round-robin across the allocators.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	// On an error here, stop what runs before the clients close.
	abort := func(err error) error {
		stopReports()
		wg.Wait()
		reporters.Wait()
		return err
	}
	for i := range clients {
		rot := append(append([]string{}, addrs[i%len(addrs):]...), addrs[:i%len(addrs)]...)
		id, err := identity(i)
		if err != nil {
			return abort(err)
		}
		c, err := transport.NewClient(transport.ClientConfig{Addrs: rot, TLS: id.ClientConfig(transport.ALPN), Logger: log})
		if err != nil {
			return abort(err)
		}
		clients[i] = c
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			regCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			t0 := time.Now()
			_, err := c.Register(regCtx, transport.ServerInfo{ID: serverID(i), Capacity: f.capacity,
				Incarnation: incarnation, Addresses: []string{fmt.Sprintf("http://loadgen.invalid/%d", i)}})
			if err != nil {
				st.regFailed.Add(1)
				log.Warn("register failed", "server", i, "err", err)
				return
			}
			st.registered.Add(1)
			report(i, c)
			for d := time.Since(t0).Nanoseconds(); ; {
				cur := st.regTime.Load()
				if d <= cur || st.regTime.CompareAndSwap(cur, d) {
					break
				}
			}
		}()
	}
	wg.Wait()
	regDone := time.Since(start)
	reportsAtRegDone := st.reports.Load()
	stopAfter := time.AfterFunc(f.duration, stopReports)
	defer stopAfter.Stop()
	if f.allocRate > 0 {
		reporters.Go(func() { allocLoop(rctx, clients, f.allocRate, incarnation, &st) })
	}
	reporters.Wait()
	// The rate once everyone is registered (servers report from their own
	// registration on; those reports are counted, not in the rate).
	steady := time.Since(start) - regDone
	var failovers uint64
	for _, c := range clients {
		failovers += c.Failovers()
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "loadgen: %d servers over %d allocators, report interval %v, for %v\n", f.servers, len(addrs), f.interval, f.duration)
	fmt.Fprintf(out, "registered:   %d ok, %d failed, all done in %v (slowest %v)\n", st.registered.Load(), st.regFailed.Load(),
		regDone.Round(time.Millisecond), time.Duration(st.regTime.Load()).Round(time.Millisecond))
	fmt.Fprintf(out, "reports sent: %d (%.0f/s once all were registered), %d not sent (disconnected or unregistered)\n", st.reports.Load(),
		float64(st.reports.Load()-reportsAtRegDone)/steady.Seconds(), st.reportErrs.Load())
	if f.allocRate > 0 {
		mean := time.Duration(0)
		if n := st.allocs.Load(); n > 0 {
			mean = time.Duration(st.allocNs.Load() / n)
		}
		fmt.Fprintf(out, "allocations:  %d ok (mean %v), %d failed, %d release errors\n", st.allocs.Load(), mean.Round(time.Microsecond), st.allocFailed.Load(), st.relErr.Load())
	}
	fmt.Fprintf(out, "failovers:    %d\n", failovers)
	if st.regFailed.Load() > 0 {
		return errors.New("some servers failed to register")
	}
	return nil
}

// loadgenIdentities returns the certificate simulated server i connects
// with: with --ca-dir or --tls-ca-key a media certificate for its own id
// (serverID(i)), minted in memory from the CA; with --tls-cert and
// --tls-key the one certificate given, shared by every server.
func loadgenIdentities(cmd *cobra.Command, f *loadgenFlags, serverID func(int) string) (func(i int) (*pki.Identity, error), error) {
	mint := f.caDir != "" || f.caKey != ""
	switch {
	case f.caDir != "" && (f.caKey != "" || f.tls.ca != "" || f.tls.cert != "" || f.tls.key != ""):
		return nil, usagef(cmd, "--ca-dir replaces --tls-ca, --tls-ca-key, --tls-cert and --tls-key")
	case f.caKey != "" && f.tls.ca == "":
		return nil, usagef(cmd, "--tls-ca-key needs --tls-ca (the CA certificate it belongs to)")
	case mint && (f.tls.cert != "" || f.tls.key != ""):
		return nil, usagef(cmd, "give either the CA key (--ca-dir or --tls-ca-key), to mint a certificate per server, or one shared --tls-cert and --tls-key, not both")
	}
	if mint {
		var ca *pki.CA
		var err error
		if f.caDir != "" {
			ca, err = pki.LoadCA(f.caDir)
		} else {
			ca, err = pki.LoadCAFiles(f.tls.ca, f.caKey)
		}
		if err != nil {
			return nil, err
		}
		return func(i int) (*pki.Identity, error) {
			id, err := ca.IssueIdentity(serverID(i), pki.RoleMedia, nil)
			if err != nil {
				return nil, fmt.Errorf("media certificate for %s: %w", serverID(i), err)
			}
			return id, nil
		}, nil
	}
	id, err := f.tls.identity(cmd)
	if err != nil {
		return nil, err
	}
	if id == nil {
		return nil, usagef(cmd, "--ca-dir (or --tls-ca with --tls-ca-key), or --tls-ca, --tls-cert and --tls-key, is required (QUIC uses mutual TLS)")
	}
	return func(int) (*pki.Identity, error) { return id, nil }, nil
}

// allocLoop requests one-unit allocations at rate per second through the
// simulated servers' connections and releases each right away.
func allocLoop(ctx context.Context, clients []*transport.Client, rate float64, run uint64, st *loadgenStats) {
	t := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c := clients[n%len(clients)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			t0 := time.Now()
			a, _, err := c.Allocate(actx, transport.AllocateRequest{RequestID: fmt.Sprintf("lg-%d-%d", run, n), Room: fmt.Sprintf("room-%d", n%50), Units: 1})
			if err != nil {
				st.allocFailed.Add(1)
				return
			}
			st.allocs.Add(1)
			st.allocNs.Add(time.Since(t0).Nanoseconds())
			if _, err := c.Release(actx, a.GetId()); err != nil {
				st.relErr.Add(1)
			}
		}()
	}
}
