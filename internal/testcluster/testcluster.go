// Package testcluster starts real multi-node Switchyard clusters inside a
// test process: real raft over TCP loopback, real bolt files in temp dirs,
// real HTTP. It polls for conditions instead of sleeping.
package testcluster

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/acl"
	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/internal/ports"
	"github.com/switchyard/switchyard/pki"
)

// Raft timing of test clusters (see New). Under the race detector on a
// loaded 2-core machine a goroutine's wake-up was measured to lag by up to
// ~400 ms, and a heartbeat round trip takes four: with a 500 ms heartbeat
// timeout and a 400 ms lease, leaders stepped down every few seconds and
// elections (whose vote round trips took longer than the election
// timeout) were abandoned and restarted for 12–20 s. A 1 s heartbeat
// timeout, a lease as long (a leader gives up no sooner than its
// followers would) and an election timeout of twice that keep a leader
// there; failover of a stopped node does not wait for these timers (fast
// failover sees the closed port).
const (
	TestHeartbeat = 1000 * time.Millisecond
	TestLease     = TestHeartbeat
	TestElection  = 2 * TestHeartbeat
)

// Node is one agent of a test cluster and how to restart it.
type Node struct {
	ID    string
	Cfg   agent.Config
	Agent *agent.Agent // nil while stopped
}

// Cluster is a set of agents started by New.
type Cluster struct {
	t     testing.TB
	Nodes []*Node
	// CA signs every node's certificate (QUIC and raft run over mutual
	// TLS); Identity issues media certificates for media-node clients,
	// AgentIdentity agent certificates.
	CA *pki.CA
	// Token is the operator token New bootstrapped ACLs with ("" when the
	// cluster runs with ACLs off, Options.NoACL, or when the test turned
	// ACLs on itself in Options.Mutate and bootstraps them). Client sends
	// it; Authorize adds it to a hand-built request.
	Token string
	// peers is how the agents New starts call one another (see peerClient).
	peers *peerClient
	https bool // some node serves its API over HTTPS (Config.HTTPS)
}

// peerClient is the agents' client for one another (bootstrap probes,
// joins that record a follower's addresses): over plain HTTP with ACLs on
// a follower needs a token to record its member entry through the
// leader's API (`switchyard agent --token`). New has no token before it
// bootstraps ACLs, so the agents start with this client and it carries the
// operator token from then on (followers retry recording themselves).
type peerClient struct{ cl atomic.Pointer[api.Client] }

func newPeerClient() *peerClient {
	p := &peerClient{}
	p.setToken("")
	return p
}

func (p *peerClient) setToken(secret string) {
	cl := api.NewClient().WithToken(secret)
	cl.Retry = false
	p.cl.Store(cl)
}

func (p *peerClient) Info(ctx context.Context, addr string) (cluster.PeerInfo, error) {
	return p.cl.Load().Info(ctx, addr)
}

func (p *peerClient) Join(ctx context.Context, addr string, m *fsmpb.Member) error {
	return p.cl.Load().Join(ctx, addr, m)
}

// FreeAddr returns a loopback host:port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return ports.Free(t, "tcp")
}

// LogBuffer collects what several goroutines write (a test's log sink,
// a child process's output) and reads it back at any time.
type LogBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// Write appends p.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Logger returns a logger that writes to the test log only with -v, and
// is silent otherwise.
func Logger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Options tweak New.
type Options struct {
	// Mutate, if set, edits each node's config before start.
	Mutate func(i int, c *agent.Config)
	// RaftTLS runs raft over mutual TLS too. Off by default so that tests
	// can add nodes built by hand (without certificates) to a cluster;
	// QUIC always uses TLS.
	RaftTLS bool
	// NoQUIC starts no QUIC listener for media nodes: for tests that drive
	// the cluster through the HTTP API alone (servers registered over HTTP
	// with incarnation 0 are not watched by the failure detector, so they
	// stay active without load reports).
	NoQUIC bool
	// NoACL runs the agents with ACLs off. By default they run as in
	// production, with ACLs on (default-deny; rate limits off), and New
	// bootstraps them (Cluster.Token). A test that turns ACLs on itself in
	// Mutate (Config.ACL) keeps them to itself: New neither changes its
	// ACL settings nor bootstraps. Opt out only where a test needs
	// anonymous access, and say why.
	NoACL bool
}

// New starts n agents that bootstrap together and waits for a leader.
func New(t testing.TB, n int, opts ...Options) *Cluster {
	t.Helper()
	ca, err := pki.NewCA("testcluster-ca")
	if err != nil {
		t.Fatalf("test CA: %v", err)
	}
	c := &Cluster{t: t, CA: ca, peers: newPeerClient()}
	plain, quic, useACL := true, true, true
	for _, o := range opts {
		plain = plain && !o.RaftTLS
		quic = quic && !o.NoQUIC
		useACL = useACL && !o.NoACL
	}
	var joins []string
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("n%d", i+1)
		cfg := agent.Config{Config: cluster.Config{
			ID:              id,
			DataDir:         filepath.Join(t.TempDir(), id),
			RaftAddr:        FreeAddr(t),
			HTTPAddr:        FreeAddr(t),
			BootstrapExpect: n,
			// Relaxed raft timing: these clusters run in one process under
			// the race detector, beside other test packages, on 2 cores. The
			// LAN defaults (150 ms) then see a starved leader step down
			// again and again; tests assert behaviour, not speed (bench/ and
			// the chaos suite measure with the defaults).
			HeartbeatTimeout: TestHeartbeat, ElectionTimeout: TestElection, LeaderLeaseTimeout: TestLease,
			Logger: Logger(t),
		}, TLS: c.AgentIdentity(id), RaftPlainTCP: plain}
		if quic {
			cfg.QUICAddr = freeUDP(t)
		}
		joins = append(joins, cfg.HTTPAddr)
		c.Nodes = append(c.Nodes, &Node{ID: id, Cfg: cfg})
	}
	bootstrap := false
	for i, nd := range c.Nodes {
		nd.Cfg.Join = joins
		for _, o := range opts {
			if o.Mutate != nil {
				o.Mutate(i, &nd.Cfg)
			}
		}
		c.https = c.https || nd.Cfg.HTTPS
		if nd.Cfg.ACL {
			useACL = false // the test turned ACLs on itself: its own to bootstrap
		}
	}
	if useACL {
		bootstrap = true
		for _, nd := range c.Nodes {
			nd.Cfg.ACL = true
			if nd.Cfg.RateLimit == 0 {
				// Per-token rate limits off, as chaos passes --rate-limit -1:
				// tests drive many requests with one token.
				nd.Cfg.RateLimit = -1
			}
			if nd.Cfg.Peers == nil && !nd.Cfg.HTTPS {
				// Over HTTPS agents speak for themselves with their
				// certificates; over plain HTTP with the token.
				nd.Cfg.Peers = c.peers
			}
		}
	}
	for _, nd := range c.Nodes {
		c.Start(nd)
	}
	t.Cleanup(c.Close)
	c.WaitLeader(15 * time.Second)
	if bootstrap {
		c.bootstrapACL(30 * time.Second)
		// Followers record their member entries through the leader's API,
		// which needs the token from now on: wait for them, so the cluster
		// New returns is as complete as one with ACLs off.
		c.WaitMembers(30 * time.Second)
	}
	return c
}

// bootstrapACL makes the cluster's first operator token, keeps it in
// c.Token and hands it to the agents' peer client.
func (c *Cluster) bootstrapACL(timeout time.Duration) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// The harness picks the secret and commits the bootstrap on the leader
	// itself, so an attempt whose answer is lost (a leader change under
	// load) is found committed by the next one instead of being lost with
	// its secret.
	id, secret, err := acl.NewSecret()
	if err != nil {
		c.t.Fatal(err)
	}
	tok := &fsmpb.AclToken{Id: id, SecretHash: acl.HashSecret(secret), Role: fsm.RoleOperator, Description: "bootstrap token"}
	Eventually(c.t, timeout, func() error {
		leader := c.WaitLeader(timeout)
		err := leader.Agent.Node.CreateACLToken(ctx, tok, true)
		if errors.Is(err, fsm.ErrACLBootstrapped) {
			if _, ok := leader.Agent.Node.FSM().ACLToken(id); ok {
				return nil // an earlier attempt committed it
			}
			c.t.Fatalf("ACL bootstrap: the cluster was bootstrapped by someone else: %v", err)
		}
		if err != nil {
			return fmt.Errorf("ACL bootstrap: %w", err)
		}
		return nil
	})
	c.Token = secret
	c.peers.setToken(c.Token)
}

// MediaToken mints an ACL token of the media role bound to server id
// ("" when the cluster runs with ACLs off): what a media node or sidecar
// sends over the plain HTTP API, where it has no certificate to show.
func (c *Cluster) MediaToken(id string) string {
	c.t.Helper()
	if c.Token == "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := c.Client().ACLCreateToken(ctx, api.CreateTokenRequest{Role: fsm.RoleMedia, Server: id, Description: "media server " + id})
	if err != nil {
		c.t.Fatalf("media token for %s: %v", id, err)
	}
	return tok.Secret
}

// Identity issues a media certificate of the cluster's CA for server id
// name: what a media node, or a test acting as one, presents over QUIC.
// Agents accept its requests only for that server id.
func (c *Cluster) Identity(name string) *pki.Identity {
	c.t.Helper()
	return c.roleIdentity(name, pki.RoleMedia)
}

// AgentIdentity issues an agent certificate of the cluster's CA for name:
// the agents' own, and what a test acting as an agent presents (agents may
// not act as media servers).
func (c *Cluster) AgentIdentity(name string) *pki.Identity {
	c.t.Helper()
	return c.roleIdentity(name, pki.RoleAgent)
}

// LegacyIdentity issues a certificate of the cluster's CA the way
// certificates were made before roles existed: a CommonName and no
// spiffe://switchyard URI SAN (pki reads it as role-less).
func (c *Cluster) LegacyIdentity(name string) *pki.Identity {
	c.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		c.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.CA.Cert, &key.PublicKey, c.CA.Key)
	if err != nil {
		c.t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		c.t.Fatal(err)
	}
	id, err := pki.NewIdentity(c.CA.CertPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}))
	if err != nil {
		c.t.Fatal(err)
	}
	if got := pki.PeerIdentity(id.Cert.Leaf); got.Role != "" || got.Name != name {
		c.t.Fatalf("legacy certificate reads as %+v", got)
	}
	return id
}

func (c *Cluster) roleIdentity(name, role string) *pki.Identity {
	c.t.Helper()
	certPEM, keyPEM, err := c.CA.IssueRole(name, role, nil)
	if err != nil {
		c.t.Fatalf("issue certificate %s: %v", name, err)
	}
	id, err := pki.NewIdentity(c.CA.CertPEM, certPEM, keyPEM)
	if err != nil {
		c.t.Fatalf("load certificate %s: %v", name, err)
	}
	return id
}

// QUICAddrs lists the QUIC addresses of running nodes.
func (c *Cluster) QUICAddrs() []string {
	var out []string
	for _, nd := range c.Running() {
		if nd.Cfg.QUICAddr != "" {
			out = append(out, nd.Cfg.QUICAddr)
		}
	}
	return out
}

func freeUDP(t testing.TB) string {
	t.Helper()
	return ports.Free(t, "udp")
}

// Start (re)starts a stopped node with its config and data dir.
func (c *Cluster) Start(nd *Node) {
	c.t.Helper()
	a, err := agent.Start(context.Background(), nd.Cfg)
	if err != nil {
		c.t.Fatalf("start %s: %v", nd.ID, err)
	}
	nd.Agent = a
}

// Stop shuts a node down cleanly (transferring leadership if it leads).
func (c *Cluster) Stop(nd *Node) {
	if nd.Agent == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = nd.Agent.Shutdown(ctx)
	nd.Agent = nil
}

// Kill stops a node abruptly: no leadership transfer. (In-process we
// cannot SIGKILL; the process-level chaos suite does that.)
func (c *Cluster) Kill(nd *Node) {
	if nd.Agent == nil {
		return
	}
	nd.Agent.Node.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = nd.Agent.Shutdown(ctx)
	nd.Agent = nil
}

// Close stops every node.
func (c *Cluster) Close() {
	for _, nd := range c.Nodes {
		c.Stop(nd)
	}
}

// Running returns the running nodes.
func (c *Cluster) Running() []*Node {
	var out []*Node
	for _, nd := range c.Nodes {
		if nd.Agent != nil {
			out = append(out, nd)
		}
	}
	return out
}

// Addrs lists the HTTP addresses of running nodes.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, nd := range c.Running() {
		out = append(out, nd.Cfg.HTTPAddr)
	}
	return out
}

// Client returns an API client over every running node, with attempt
// deadlines suited to the test clusters' raft timing, carrying the
// operator token (c.Token) when New bootstrapped ACLs, and speaking HTTPS
// (trusting c.CA) when the agents serve it.
func (c *Cluster) Client() *api.Client {
	cl := api.NewClient(c.Addrs()...)
	cl.AttemptTimeout = api.AttemptTimeoutFor(cluster.ForwardTimeout(TestHeartbeat, TestElection))
	if c.Token != "" {
		cl.WithToken(c.Token)
	}
	if c.https {
		tc, err := pki.CAClientConfig(c.CA.CertPEM)
		if err != nil {
			c.t.Fatal(err)
		}
		cl.WithTLS(tc)
	}
	return cl
}

// Authorize adds the operator token (c.Token), if any, to req as
// "Authorization: Bearer", for tests that build HTTP requests by hand,
// and returns req.
func (c *Cluster) Authorize(req *http.Request) *http.Request {
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	return req
}

// WaitLeader waits for a ready leader among running nodes that every
// running node agrees on, and for the cluster id the first leader stamps
// into the log, and returns the leader.
func (c *Cluster) WaitLeader(timeout time.Duration) *Node {
	c.t.Helper()
	var leader *Node
	Eventually(c.t, timeout, func() error {
		leader = nil
		for _, nd := range c.Running() {
			if nd.Agent.Node.IsLeader() {
				leader = nd
			}
		}
		if leader == nil {
			return fmt.Errorf("no ready leader")
		}
		for _, nd := range c.Running() {
			if id, m, ok := nd.Agent.Node.Leader(); !ok || id != leader.ID || m == nil {
				return fmt.Errorf("%s does not know leader %s (member record) yet", nd.ID, leader.ID)
			}
		}
		if leader.Agent.Node.FSM().ClusterID() == "" {
			return fmt.Errorf("cluster id not stamped yet")
		}
		return nil
	})
	return leader
}

// WaitMembers waits until the leader's member table lists every running
// node with its HTTP address (members announce themselves in the
// background after a start: a test that compares state hashes waits for
// that first).
func (c *Cluster) WaitMembers(timeout time.Duration) {
	c.t.Helper()
	Eventually(c.t, timeout, func() error {
		for _, leader := range c.Running() {
			if !leader.Agent.Node.IsLeader() {
				continue
			}
			for _, nd := range c.Running() {
				if m, ok := leader.Agent.Node.FSM().Member(nd.ID); !ok || m.GetHttpAddr() == "" {
					return fmt.Errorf("member %s not recorded yet", nd.ID)
				}
			}
			return nil
		}
		return fmt.Errorf("no ready leader")
	})
}

// Followers returns the running nodes that are not the leader.
func (c *Cluster) Followers() []*Node {
	var out []*Node
	for _, nd := range c.Running() {
		if !nd.Agent.Node.IsLeader() {
			out = append(out, nd)
		}
	}
	return out
}

// WaitConverged waits until every running node has applied the same index
// and has the same state hash, and returns the hash.
func (c *Cluster) WaitConverged(timeout time.Duration) string {
	c.t.Helper()
	var hash string
	Eventually(c.t, timeout, func() error {
		hash = ""
		var idx uint64
		for i, nd := range c.Running() {
			h, ai := nd.Agent.Node.FSM().HashAt()
			if i == 0 {
				hash, idx = h, ai
				continue
			}
			if h != hash || ai != idx {
				return fmt.Errorf("%s at index %d hash %.8s, first node at %d hash %.8s", nd.ID, ai, h, idx, hash)
			}
		}
		return nil
	})
	return hash
}

// WaitFeature waits until every running node's state machine records
// every running node as understanding feature (cluster.Features), so the
// leader uses it.
func (c *Cluster) WaitFeature(feature string, timeout time.Duration) {
	c.t.Helper()
	Eventually(c.t, timeout, func() error {
		for _, nd := range c.Running() {
			for _, m := range c.Running() {
				rec, ok := nd.Agent.Node.FSM().Member(m.ID)
				if !ok || !slices.Contains(rec.GetFeatures(), feature) {
					return fmt.Errorf("%s does not record %s as understanding %s", nd.ID, m.ID, feature)
				}
			}
		}
		return nil
	})
}

// EditState saves the cluster's state through cl, lets edit change it and
// restores it: for tests that need objects no request makes in a test
// cluster (servers marked down, final provisioning intents).
func EditState(t testing.TB, ctx context.Context, cl *api.Client, edit func(st *fsmpb.State)) {
	t.Helper()
	var buf bytes.Buffer
	if err := cl.SaveSnapshot(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	st, err := fsm.ReadState(&buf)
	if err != nil {
		t.Fatal(err)
	}
	edit(st)
	buf.Reset()
	if err := fsm.WriteState(&buf, st); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.RestoreSnapshot(ctx, buf.Bytes(), false); err != nil {
		t.Fatal(err)
	}
}

// FinalIntents returns n provisioning intents that are done (ids i00, i01,
// ...), stamped now.
func FinalIntents(n int) []*fsmpb.ProvisionIntent {
	now := time.Now().UnixMilli()
	out := make([]*fsmpb.ProvisionIntent, n)
	for i := range out {
		out[i] = &fsmpb.ProvisionIntent{Id: fmt.Sprintf("i%02d", i), Kind: fsmpb.IntentKind_INTENT_KIND_PROVISION,
			State: fsmpb.IntentState_INTENT_STATE_DONE, ServerId: fmt.Sprintf("p%02d", i), Units: 10, CreatedAtUnixMs: now, UpdatedAtUnixMs: now}
	}
	return out
}

// Context returns a context that ends after d or when the test ends.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Eventually polls fn every 20 ms until it returns nil or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = fn(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("condition not met within %v: %v", timeout, err)
}

// LastSnapshotIndex is the highest log index of the snapshots raft's file
// store keeps in dataDir (directories named term-index-time), 0 if none.
func LastSnapshotIndex(t testing.TB, dataDir string) uint64 {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dataDir, "snapshots"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var last uint64
	for _, e := range ents {
		parts := strings.Split(e.Name(), "-")
		if len(parts) != 3 || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		if i, err := strconv.ParseUint(parts[1], 10, 64); err == nil && i > last {
			last = i
		}
	}
	return last
}
