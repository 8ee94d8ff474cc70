// Package proccluster runs Switchyard agents as separate OS processes of
// the real binary, so tests and benchmarks can SIGKILL, SIGSTOP and restart
// them. It is the process-level rung of the testing ladder (the chaos suite
// builds on it).
package proccluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/ports"
	"github.com/switchyard/switchyard/pki"
)

// Proc is one agent process.
type Proc struct {
	ID                           string
	RaftAddr, HTTPAddr, QUICAddr string
	DataDir, LogPath             string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Running reports whether the process is alive (not reaped).
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Cluster is a set of agent processes.
type Cluster struct {
	t     testing.TB
	Bin   string
	Dir   string
	Args  []string // extra agent flags for every node
	Nodes []*Proc
	// CertDir holds the cluster CA (ca.pem, ca-key.pem) and one certificate
	// per node when the cluster was made with Options.QUIC, ACL or HTTPS; tools such as
	// `switchyard loadgen` can issue their own certificates from it.
	CertDir string
	// Prefix, when set, is prepended to every agent command line (for
	// example `ip netns exec NS`, which execs, so signals still reach the
	// agent itself).
	Prefix func(p *Proc) []string
	// NodeArgs, when set, adds flags of node p's own.
	NodeArgs func(c *Cluster, p *Proc) []string
	// Token is the operator token when the cluster was made with
	// Options.ACL.
	Token string
	// ClientTLS trusts the cluster CA when the API is HTTPS (Options.HTTPS).
	ClientTLS *tls.Config
	https     bool
}

// Client returns an API client for every node, speaking HTTPS when the
// cluster does (no token unless SWITCHYARD_TOKEN is set).
func (c *Cluster) Client() *api.Client {
	cl := api.NewClient(c.Addrs()...)
	if c.ClientTLS != nil {
		cl.WithTLS(c.ClientTLS)
	}
	return cl
}

// Options configures NewWithOptions. The zero value starts the cluster New
// starts: every node on 127.0.0.1 with free ports and no QUIC listener.
type Options struct {
	// Args are extra agent flags for every node.
	Args []string
	// QUIC enables the media-node QUIC listener: a cluster CA and one
	// certificate per node are created with the binary's `tls` commands
	// (the agent refuses --quic-addr without them).
	QUIC bool
	// Host returns the IP node i (0-based) listens on. When set, the ports
	// are fixed (raft 7301, HTTP 7501, QUIC 7601): each node is expected to
	// have an address of its own, e.g. in its own network namespace.
	Host func(i int) string
	// Prefix is copied to Cluster.Prefix.
	Prefix func(p *Proc) []string
	// NodeArgs is copied to Cluster.NodeArgs.
	NodeArgs func(c *Cluster, p *Proc) []string
	// LeaderTimeout bounds the wait for the first leader (default 30 s).
	LeaderTimeout time.Duration
	// ACL starts the agents with --acl default-deny (and no rate limit),
	// bootstraps the ACLs, keeps the operator token in Cluster.Token and
	// exports it as SWITCHYARD_TOKEN for the rest of the test (t.Setenv:
	// every api.Client the test builds, and every process it starts, then
	// sends it). Not for parallel tests.
	ACL bool
	// HTTPS (with QUIC, which makes the certificates) serves the agents'
	// API over HTTPS; the harness's clients verify it with the CA
	// (Cluster.ClientTLS).
	HTTPS bool
}

// BuildBinary compiles ./cmd/switchyard into a temp dir and returns its path.
func BuildBinary(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	out := filepath.Join(t.TempDir(), "switchyard")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/switchyard")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build switchyard: %v\n%s", err, b)
	}
	return out
}

func freeAddr(t testing.TB, network string) string {
	t.Helper()
	return ports.Free(t, network)
}

// New starts n agents bootstrapping together and waits for a leader.
func New(t testing.TB, bin string, n int, args ...string) *Cluster {
	t.Helper()
	return NewWithOptions(t, bin, n, Options{Args: args})
}

// NewWithOptions starts n agents bootstrapping together as o says and waits
// for a leader. Every process is killed when the test ends.
func NewWithOptions(t testing.TB, bin string, n int, o Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, Bin: bin, Dir: t.TempDir(), Args: o.Args, Prefix: o.Prefix, NodeArgs: o.NodeArgs}
	if o.ACL {
		c.Args = append([]string{"--acl", "default-deny", "--rate-limit", "-1"}, c.Args...)
	}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("n%d", i+1)
		p := &Proc{ID: id, DataDir: filepath.Join(c.Dir, id), LogPath: filepath.Join(c.Dir, id+".log")}
		if o.Host != nil {
			h := o.Host(i)
			p.RaftAddr, p.HTTPAddr = net.JoinHostPort(h, "7301"), net.JoinHostPort(h, "7501")
			if o.QUIC {
				p.QUICAddr = net.JoinHostPort(h, "7601")
			}
		} else {
			p.RaftAddr, p.HTTPAddr = freeAddr(t, "tcp"), freeAddr(t, "tcp")
			if o.QUIC {
				p.QUICAddr = freeAddr(t, "udp")
			}
		}
		c.Nodes = append(c.Nodes, p)
	}
	if o.QUIC || o.ACL || o.HTTPS {
		c.CertDir = filepath.Join(c.Dir, "certs")
		if err := c.makeCerts(); err != nil {
			t.Fatal(err)
		}
		// With ACLs on, agents prove themselves to each other with their
		// certificates, so the API is HTTPS.
		if o.HTTPS || o.ACL {
			caPEM, err := os.ReadFile(filepath.Join(c.CertDir, "ca.pem"))
			if err != nil {
				t.Fatal(err)
			}
			if c.ClientTLS, err = pki.CAClientConfig(caPEM); err != nil {
				t.Fatal(err)
			}
			c.https = true
			if o.ACL {
				// Every api.Client the test builds (and every process it
				// starts) then speaks HTTPS to the cluster.
				t.Setenv(api.CACertEnv, filepath.Join(c.CertDir, "ca.pem"))
			}
		}
	}
	for _, p := range c.Nodes {
		c.Start(p)
	}
	t.Cleanup(c.Close)
	wait := o.LeaderTimeout
	if wait <= 0 {
		wait = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if o.ACL {
		// Bootstrap is open to anyone, answers its secret once and is not
		// resent: send it to a leader every node agrees on, so no election
		// can leave its outcome unknown.
		leader, err := c.agreedLeader(ctx)
		if err != nil {
			t.Fatalf("no leader: %v\n%s", err, c.Logs())
		}
		cl := api.NewClient(leader.HTTPAddr)
		if c.ClientTLS != nil {
			cl.WithTLS(c.ClientTLS)
		}
		boot, err := cl.WithToken("").ACLBootstrap(ctx)
		if err != nil {
			t.Fatalf("bootstrap ACLs: %v\n%s", err, c.Logs())
		}
		c.Token = boot.Secret
		t.Setenv(api.TokenEnv, boot.Secret)
	}
	if _, err := c.WaitLeader(ctx); err != nil {
		t.Fatalf("no leader: %v\n%s", err, c.Logs())
	}
	return c
}

// agreedLeader waits until every node answers GET /v1/health/ready (open
// to anyone, ACLs or not) naming the same leader, and returns it.
func (c *Cluster) agreedLeader(ctx context.Context) (*Proc, error) {
	tr := api.NewTransport()
	tr.TLSClientConfig = c.ClientTLS
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	scheme := "http"
	if c.ClientTLS != nil {
		scheme = "https"
	}
	last := errors.New("not polled yet")
	for {
		leader := ""
		ok := true
		for _, p := range c.Nodes {
			var rd api.Readiness
			resp, err := hc.Get(scheme + "://" + p.HTTPAddr + "/v1/health/ready")
			if err == nil {
				err = json.NewDecoder(resp.Body).Decode(&rd)
				resp.Body.Close()
			}
			switch {
			case err != nil:
				ok, last = false, err
			case !rd.Ready || rd.Leader == "" || (leader != "" && rd.Leader != leader):
				ok, last = false, fmt.Errorf("%s: ready %v, leader %q (others: %q), %v", p.ID, rd.Ready, rd.Leader, leader, rd.Reasons)
			default:
				leader = rd.Leader
			}
		}
		if ok {
			for _, p := range c.Nodes {
				if p.ID == leader {
					return p, nil
				}
			}
			last = fmt.Errorf("leader %q is not one of this cluster's nodes", leader)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Addrs lists every node's HTTP address (running or not).
func (c *Cluster) Addrs() []string {
	var out []string
	for _, p := range c.Nodes {
		out = append(out, p.HTTPAddr)
	}
	return out
}

// makeCerts creates the cluster CA and one certificate per node with the
// binary's own `tls` commands.
func (c *Cluster) makeCerts() error {
	run := func(args ...string) error {
		if b, err := exec.Command(c.Bin, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("switchyard %s: %w\n%s", strings.Join(args, " "), err, b)
		}
		return nil
	}
	if err := run("tls", "ca", "create", "--out", c.CertDir); err != nil {
		return err
	}
	for _, p := range c.Nodes {
		host, _, _ := net.SplitHostPort(p.RaftAddr)
		if err := run("tls", "cert", "create", "--ca-dir", c.CertDir, "--name", p.ID, "--out", c.CertDir, "--hosts", host); err != nil {
			return err
		}
	}
	return nil
}

// Start (re)starts p with its data dir.
func (c *Cluster) Start(p *Proc) {
	c.t.Helper()
	if err := c.StartDir(p, p.DataDir); err != nil {
		c.t.Fatal(err)
	}
}

// StartDir (re)starts p with dataDir as its data dir (a test may hand it
// another node's) and returns an error instead of failing the test, so it
// may be called from any goroutine.
func (c *Cluster) StartDir(p *Proc, dataDir string) error {
	args := []string{"agent", "--id", p.ID, "--data-dir", dataDir, "--raft-addr", p.RaftAddr,
		"--http-addr", p.HTTPAddr, "--bootstrap-expect", fmt.Sprint(len(c.Nodes)),
		"--join", strings.Join(c.Addrs(), ","), "--log-level", "info"}
	if p.QUICAddr != "" {
		args = append(args, "--quic-addr", p.QUICAddr)
	}
	if c.CertDir != "" {
		args = append(args, "--tls-ca", filepath.Join(c.CertDir, "ca.pem"),
			"--tls-cert", filepath.Join(c.CertDir, p.ID+".pem"), "--tls-key", filepath.Join(c.CertDir, p.ID+"-key.pem"))
		if !c.https {
			args = append(args, "--http-plain") // the harness's clients speak plain HTTP
		}
	}
	args = append(args, c.Args...)
	if c.NodeArgs != nil {
		args = append(args, c.NodeArgs(c, p)...)
	}
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start %s: %w", p.ID, err)
	}
	name := c.Bin
	if c.Prefix != nil {
		if pre := c.Prefix(p); len(pre) > 0 {
			name, args = pre[0], append(append(pre[1:len(pre):len(pre)], c.Bin), args...)
		}
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.ID, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	return nil
}

// Done returns a channel closed when p's current process has exited (nil
// if p was never started).
func (p *Proc) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Pid returns the process id of p's current process (0 if never started).
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Signal sends sig to p.
func (c *Cluster) Signal(p *Proc, sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// Kill SIGKILLs p and waits until it is reaped.
func (c *Cluster) Kill(p *Proc) {
	c.Signal(p, syscall.SIGCONT) // a stopped process must be able to die
	c.Signal(p, syscall.SIGKILL)
	c.wait(p)
}

// Stop sends SIGTERM (graceful: the leader hands over) and waits.
func (c *Cluster) Stop(p *Proc) {
	c.Signal(p, syscall.SIGCONT)
	c.Signal(p, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		c.Kill(p)
	}
	c.wait(p)
}

func (c *Cluster) wait(p *Proc) {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done != nil {
		<-done
	}
}

// Close kills every node.
func (c *Cluster) Close() {
	for _, p := range c.Nodes {
		if p.Running() {
			c.Kill(p)
		}
	}
}

// Status asks p for its status (no retries).
func (c *Cluster) Status(ctx context.Context, p *Proc) (st struct {
	ID, Leader, State, ClusterID, StateHash string
	AppliedIndex                            uint64
}, err error) {
	cl := api.NewClient(p.HTTPAddr)
	if c.ClientTLS != nil {
		cl.WithTLS(c.ClientTLS)
	}
	cl.Retry = false
	s, err := cl.Status(ctx)
	st.ID, st.Leader, st.State, st.ClusterID, st.StateHash, st.AppliedIndex = s.ID, s.Leader, s.State, s.ClusterID, s.StateHash, s.AppliedIndex
	return st, err
}

// WaitLeader polls running nodes until one reports itself leader and all
// running nodes agree, and returns it.
func (c *Cluster) WaitLeader(ctx context.Context) (*Proc, error) {
	for {
		var leader *Proc
		agree := true
		named := ""
		for _, p := range c.Nodes {
			if !p.Running() {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			st, err := c.Status(sctx, p)
			cancel()
			if err != nil || st.Leader == "" || (named != "" && st.Leader != named) {
				agree = false
				break
			}
			named = st.Leader
			if st.State == "Leader" {
				leader = p
			}
		}
		// Every running node names the same leader, which says it leads.
		if agree && leader != nil && leader.ID == named {
			return leader, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no agreed leader: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Logs returns the tail of every node's log, for failure messages.
func (c *Cluster) Logs() string {
	var b strings.Builder
	for _, p := range c.Nodes {
		data, _ := os.ReadFile(p.LogPath)
		s := string(data)
		if len(s) > 3000 {
			s = s[len(s)-3000:]
		}
		fmt.Fprintf(&b, "---- %s ----\n%s\n", p.ID, s)
	}
	return b.String()
}
