package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/pki"
	"github.com/switchyard/switchyard/provision"
)

type devFlags struct {
	nodes                        int
	host                         string
	raftPort, httpPort, quicPort int
	dataDir, logLevel, logFormat string
	keep                         bool
	provisioner                  string
	acl                          string
}

func newDevCmd() *cobra.Command {
	f := &devFlags{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a local dev cluster (3 allocator agents on loopback) until Ctrl-C",
		Long: `Run a dev cluster in this process: --nodes allocator agents on loopback with
embedded defaults and data in a temp dir (removed on exit unless --keep).
The first agent's HTTP address is the CLI's default --addr, so in another
terminal 'switchyard cluster status' just works.`,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDev(cmd, f) },
	}
	fl := cmd.Flags()
	fl.IntVar(&f.nodes, "nodes", 3, "number of allocator agents")
	fl.StringVar(&f.host, "host", "127.0.0.1", "address to listen on")
	fl.IntVar(&f.raftPort, "raft-port", 7301, "first raft port (node i uses port+i)")
	fl.IntVar(&f.httpPort, "http-port", 7501, "first HTTP port")
	fl.IntVar(&f.quicPort, "quic-port", 7601, "first QUIC (UDP) port")
	fl.StringVar(&f.dataDir, "data-dir", "", "data directory (default: a new temp dir)")
	fl.BoolVar(&f.keep, "keep", false, "keep the data directory on exit")
	fl.StringVar(&f.logLevel, "log-level", "error", "debug, info, warn or error")
	fl.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fl.StringVar(&f.provisioner, "provisioner", "local", "when no media server fits: local (start a 'switchyard media' process) or none")
	fl.StringVar(&f.acl, "acl", "default-deny", "default-deny: bootstrap ACLs and print the operator token (the CLI finds it for this cluster by itself); off: no authentication")
	return cmd
}

func runDev(cmd *cobra.Command, f *devFlags) error {
	if f.nodes < 1 || f.nodes > 9 {
		return usagef(cmd, "--nodes must be between 1 and 9, got %d", f.nodes)
	}
	for _, p := range []int{f.raftPort, f.httpPort, f.quicPort} {
		if p < 1 || p+f.nodes > 65535 {
			return usagef(cmd, "port %d out of range", p)
		}
	}
	if f.acl != "default-deny" && f.acl != "off" {
		return usagef(cmd, "--acl %q: want default-deny or off", f.acl)
	}
	log, err := newLogger(f.logLevel, f.logFormat)
	if err != nil {
		return usagef(cmd, "%v", err)
	}
	dir := f.dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "switchyard-dev-"); err != nil {
			return err
		}
		if !f.keep {
			defer os.RemoveAll(dir)
		}
	}
	var joins []string
	for i := 0; i < f.nodes; i++ {
		joins = append(joins, fmt.Sprintf("%s:%d", f.host, f.httpPort+i))
	}
	certDir := filepath.Join(dir, "certs")
	ca, err := devCA(certDir)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	var agents []*agent.Agent
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for _, a := range agents {
			wg.Add(1)
			go func() { defer wg.Done(); _ = a.Shutdown(sctx) }()
		}
		wg.Wait()
	}()
	// The leader provisions media nodes as local processes.
	var prov *provision.Local
	switch f.provisioner {
	case "local":
		prov = &provision.Local{Host: f.host, Logger: log.With("component", "provision"),
			ExtraArgs: []string{"--drain-timeout", "5s", "--log-level", f.logLevel}}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			_ = prov.Close(sctx)
		}()
	case "none":
	default:
		return usagef(cmd, "--provisioner %q: want local or none", f.provisioner)
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "switchyard dev: %d allocator agents, data in %s\n", f.nodes, dir)
	for i := 0; i < f.nodes; i++ {
		id := fmt.Sprintf("n%d", i+1)
		cfg := agent.Config{Config: cluster.Config{
			ID: id, DataDir: filepath.Join(dir, id),
			RaftAddr:        fmt.Sprintf("%s:%d", f.host, f.raftPort+i),
			HTTPAddr:        joins[i],
			QUICAddr:        fmt.Sprintf("%s:%d", f.host, f.quicPort+i),
			BootstrapExpect: f.nodes, Join: joins, Logger: log, // the node and the agent add node=ID
		}, ACL: f.acl == "default-deny"}
		if prov != nil {
			cfg.Provisioner = prov
		}
		if cfg.TLS, err = devIdentity(ca, certDir, id); err != nil {
			return err
		}
		a, err := agent.Start(ctx, cfg)
		if err != nil {
			return fmt.Errorf("start %s: %w", id, err)
		}
		agents = append(agents, a)
		fmt.Fprintf(out, "  %s  http=%s  raft=%s  quic=%s\n", id, cfg.HTTPAddr, cfg.RaftAddr, cfg.QUICAddr)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if f.acl == "default-deny" {
		// Plain HTTP (dev): the agents, media nodes and provisioned media
		// processes of this process prove themselves with the operator
		// token, which devBootstrapACL exports as SWITCHYARD_TOKEN.
		stopACL, err := devBootstrapACL(wctx, out, joins, filepath.Join(dir, "operator.token"))
		if err != nil {
			return err
		}
		defer stopACL()
	} else {
		fmt.Fprintln(out, "ACLs are off (--acl off): anyone who reaches the HTTP ports controls this cluster")
	}
	st, err := waitForLeader(wctx, api.NewClient(joins...))
	if err != nil {
		return fmt.Errorf("dev cluster did not elect a leader: %w", err)
	}
	fmt.Fprintf(out, "leader: %s (cluster %s)\n", st.Leader, st.ClusterID)
	dash := fmt.Sprintf("http://%s/ui/", joins[0])
	if f.acl == "default-deny" {
		// The page gets a token that may only read (ui/static/auth.js).
		rd, err := api.NewClient(joins...).ACLCreateToken(wctx, api.CreateTokenRequest{Role: "reader", Description: "dev dashboard"})
		if err != nil {
			return fmt.Errorf("dev dashboard token: %w", err)
		}
		dash += "#token=" + rd.Secret
	}
	fmt.Fprintf(out, "dashboard: %s (every agent serves it)\n", dash)
	self := os.Args[0] // as invoked: bin/switchyard under make run
	fmt.Fprintf(out, "try:  %[1]s cluster status\n      %[1]s server list\n      %[1]s alloc request --room demo --units 1 --request-id r1\n      %[1]s server register --id extra1 --capacity 10   (a server record without a media node behind it)\n", self)
	// loadgen mints a media certificate per simulated server from the CA.
	fmt.Fprintf(out, "      %s loadgen --allocators %s --servers 100 --duration 10s --ca-dir %s\n",
		self, devQUICAddrs(f), certDir)
	stopMedia, err := startDevMedia(ctx, out, log, f.host, joins, strings.Split(devQUICAddrs(f), ","),
		func(name string) (*pki.Identity, error) { return devRoleIdentity(ca, certDir, name, pki.RoleMedia) }, f.acl == "default-deny")
	if err != nil {
		return fmt.Errorf("dev media nodes: %w", err)
	}
	defer stopMedia()
	fmt.Fprintln(out, "Ctrl-C stops the cluster.")
	go reportLeaderChanges(ctx, out, agents[0].Node, st.Leader)
	<-ctx.Done()
	fmt.Fprintln(out, "stopping dev cluster")
	return nil
}

// devCA loads the dev cluster's CA from dir, creating it on first use.
func devCA(dir string) (*pki.CA, error) {
	if ca, err := pki.LoadCA(dir); err == nil {
		return ca, nil
	}
	ca, err := pki.NewCA("switchyard dev CA")
	if err != nil {
		return nil, err
	}
	if err := ca.WriteCA(dir); err != nil {
		return nil, err
	}
	return ca, nil
}

// devIdentity issues (or reuses) the agent certificate name in dir.
func devIdentity(ca *pki.CA, dir, name string) (*pki.Identity, error) {
	return devRoleIdentity(ca, dir, name, pki.RoleAgent)
}

// devRoleIdentity issues (or reuses) the certificate name of role in dir.
func devRoleIdentity(ca *pki.CA, dir, name, role string) (*pki.Identity, error) {
	cf, kf := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if _, err := os.Stat(cf); err != nil {
		if cf, kf, err = ca.IssueRoleFiles(name, role, nil, dir); err != nil {
			return nil, err
		}
	}
	return pki.LoadIdentity(filepath.Join(dir, pki.CACertFile), cf, kf)
}

func devQUICAddrs(f *devFlags) string {
	var a []string
	for i := 0; i < f.nodes; i++ {
		a = append(a, fmt.Sprintf("%s:%d", f.host, f.quicPort+i))
	}
	return strings.Join(a, ",")
}

// waitForLeader polls status until a leader is known and the cluster id is
// stamped.
func waitForLeader(ctx context.Context, c *api.Client) (cluster.Status, error) {
	return waitStatus(ctx, c, func(st cluster.Status) bool { return st.Leader != "" && st.ClusterID != "" })
}

// waitStatus polls status every 50 ms until ok accepts it or ctx ends
// (then it returns the last status and why it was not accepted).
func waitStatus(ctx context.Context, c *api.Client, ok func(cluster.Status) bool) (cluster.Status, error) {
	for {
		st, err := c.Status(ctx)
		if err == nil && ok(st) {
			return st, nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return st, err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// devBootstrapACL bootstraps the dev cluster's ACLs, prints the operator
// token, and leaves it where the CLI looks for it (one file per agent
// address, removed by the returned stop) and in SWITCHYARD_TOKEN for this
// process (its agents, media nodes and the media processes the local
// provisioner starts).
func devBootstrapACL(ctx context.Context, out io.Writer, joins []string, keep string) (stop func(), err error) {
	var boot api.ACLTokenSecret
	for {
		boot, err = api.NewClient(joins...).WithToken("").ACLBootstrap(ctx)
		if err == nil {
			// Kept in the data dir, so a restart with --data-dir finds it.
			if err := os.WriteFile(keep, []byte(boot.Secret+"\n"), 0o600); err != nil {
				return nil, fmt.Errorf("keep the operator token: %w", err)
			}
			break
		}
		if errors.Is(err, fsm.ErrACLBootstrapped) {
			b, rerr := os.ReadFile(keep)
			if rerr != nil {
				return nil, fmt.Errorf("ACLs of this dev cluster (--data-dir) were bootstrapped by an earlier run whose token is not in %s; use --acl off: %w", keep, err)
			}
			boot.Secret = strings.TrimSpace(string(b))
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("bootstrap ACLs: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := os.MkdirAll(devTokenDir(), 0o700); err != nil {
		return nil, err
	}
	var files []string
	stop = func() {
		for _, f := range files {
			_ = os.Remove(f)
		}
	}
	for _, a := range joins {
		for ext, content := range map[string]string{".token": boot.Secret} {
			f := devTokenFile(a, ext)
			_ = os.Remove(f)
			if err := os.WriteFile(f, []byte(content+"\n"), 0o600); err != nil {
				stop()
				return nil, fmt.Errorf("write dev token: %w", err)
			}
			files = append(files, f)
		}
	}
	// Read by every api.Client of this process at each request (the
	// agents' own calls to each other included) and inherited by the media
	// processes the local provisioner starts.
	_ = os.Setenv(api.TokenEnv, boot.Secret)
	fmt.Fprintf(out, "ACLs on. Operator token (the CLI finds it for this cluster; elsewhere: export SWITCHYARD_TOKEN=<token>):\n  %s\n", boot.Secret)
	return stop, nil
}

// reportLeaderChanges prints every leader change n observes, with the
// term, so elections on a busy machine are seen where the dev cluster
// prints (its log level is error).
func reportLeaderChanges(ctx context.Context, out io.Writer, n *cluster.Node, last string) {
	ch := n.LeaderChange()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
		// The next change's channel first: one that lands while this one
		// is printed is then not missed.
		ch = n.LeaderChange()
		id, _, ok := n.Leader()
		if !ok || id == last {
			continue
		}
		fmt.Fprintf(out, "%s leader changed: %s -> %s (term %d)\n", time.Now().Format("15:04:05"), last, id, n.Status().Term)
		last = id
	}
}
