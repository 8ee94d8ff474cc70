package agent_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/mediatoken"
	"github.com/switchyard/switchyard/pki"
)

// aclCluster starts n agents with ACLs on, the API over HTTPS and raft over
// mutual TLS, and returns the cluster and a TLS config trusting its CA.
func aclCluster(t *testing.T, n int) (*testcluster.Cluster, *tls.Config) {
	t.Helper()
	c := testcluster.New(t, n, testcluster.Options{RaftTLS: true, Mutate: func(_ int, cfg *agent.Config) {
		cfg.ACL, cfg.HTTPS = true, true
	}})
	tc, err := pki.CAClientConfig(c.CA.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c, tc
}

// rawDo sends one request and returns the status and body.
func rawDo(t *testing.T, hc *http.Client, method, url, token, ctype, body string, hdr ...string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func httpsClient(tc *tls.Config) *http.Client {
	tr := api.NewTransport()
	tr.TLSClientConfig = tc
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// TestACLRoutesByCredential runs every route with no token, a malformed,
// unknown and revoked token, and each role, and checks the status code and
// that refused requests change nothing.
func TestACLRoutesByCredential(t *testing.T) {
	c, tc := aclCluster(t, 3)
	ctx := ctxT(t, 60*time.Second)
	f := c.Followers()[0]
	anon := api.NewClient(f.Cfg.HTTPAddr).WithTLS(tc).WithToken("")
	// Anonymous writes are refused from the first request on.
	if _, err := anon.RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 10}); !isStatus(err, 401) {
		t.Fatalf("anonymous register before bootstrap: %v", err)
	}
	boot, err := anon.ACLBootstrap(ctx)
	if err != nil || boot.Role != "operator" || boot.Secret == "" {
		t.Fatalf("bootstrap: %+v %v", boot, err)
	}
	if _, err := anon.ACLBootstrap(ctx); !isStatus(err, 409) {
		t.Fatalf("second bootstrap: %v", err)
	}
	op := api.NewClient(c.Addrs()...).WithTLS(tc).WithToken(boot.Secret)
	mustRegisterC(t, op, "m1", 100)
	// A token that expires at once (the 5 s of clock-skew leeway aside).
	expired, err := op.ACLCreateToken(ctx, api.CreateTokenRequest{Role: "operator", Description: "expires", TTLMs: 1})
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{"operator": boot.Secret}
	for _, role := range []string{"allocator", "reader", "media", "revoked"} {
		r := role
		if r == "revoked" {
			r = "allocator"
		}
		tok, err := op.ACLCreateToken(ctx, api.CreateTokenRequest{Role: r, Description: role + " test"})
		if err != nil {
			t.Fatal(err)
		}
		tokens[role] = tok.Secret
		if role == "revoked" {
			if err := op.ACLRevokeToken(ctx, tok.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	list, err := op.ACLTokens(ctx)
	if err != nil || len(list) != 5 {
		t.Fatalf("token list %+v %v", list, err)
	}
	// Secrets never appear in the replicated state.
	for _, nd := range c.Running() {
		st := nd.Agent.Node.FSM().Export()
		if s := st.String(); strings.Contains(s, boot.Secret) || strings.Contains(s, tokens["reader"]) {
			t.Fatalf("%s: a secret is stored in clear", nd.ID)
		}
	}
	type route struct {
		pattern            string // the route it exercises (every route is in the table)
		method, path, body string
		need               string // read, allocate, server, keys, operator
		stream             bool   // answers a stream: checked refused only
	}
	routes := []route{
		{"GET /v1/status", "GET", "/v1/status", "", "read", false},
		{"GET /v1/members", "GET", "/v1/members", "", "read", false},
		{"GET /v1/servers", "GET", "/v1/servers", "", "read", false},
		{"GET /v1/servers/{id}", "GET", "/v1/servers/m1", "", "read", false},
		{"GET /v1/allocations", "GET", "/v1/allocations", "", "read", false},
		{"GET /v1/allocations/{id}", "GET", "/v1/allocations/nope", "", "read", false},
		{"GET /v1/policy", "GET", "/v1/policy", "", "read", false},
		{"POST /v1/policy/validate", "POST", "/v1/policy/validate", `{"strategy":"least-loaded"}`, "read", false},
		{"GET /v1/provisioning/intents", "GET", "/v1/provisioning/intents", "", "read", false},
		{"GET /v1/rooms", "GET", "/v1/rooms", "", "read", false},
		{"GET /v1/rooms/{room}", "GET", "/v1/rooms/nope", "", "read", false},
		{"GET /v1/overview", "GET", "/v1/overview", "", "read", false},
		{"GET /v1/stats", "GET", "/v1/stats", "", "read", false},
		{"GET /v1/watch", "GET", "/v1/watch", "", "read", true},
		{"GET /metrics", "GET", "/metrics", "", "read", false},
		{"POST /v1/allocations", "POST", "/v1/allocations", `{"request_id":"x-%s","room":"r","units":1}`, "allocate", false},
		{"POST /v1/allocations/batch", "POST", "/v1/allocations/batch", `{"requests":[]}`, "allocate", false},
		{"DELETE /v1/allocations/{id}", "DELETE", "/v1/allocations/nope", "", "allocate", false},
		{"POST /v1/rooms/{room}/placement", "POST", "/v1/rooms/room-%s/placement", `{}`, "allocate", false},
		{"DELETE /v1/rooms/{room}", "DELETE", "/v1/rooms/nope", "", "allocate", false},
		{"POST /v1/media/tokens", "POST", "/v1/media/tokens", `{"room":"r","action":"play"}`, "allocate", false},
		{"POST /v1/servers", "POST", "/v1/servers", `{"id":"m-%s","capacity":1}`, "server", false},
		{"POST /v1/servers/{id}/drain", "POST", "/v1/servers/nope/drain", "", "server", false},
		{"DELETE /v1/servers/{id}", "DELETE", "/v1/servers/nope", "", "server", false},
		{"POST /v1/rooms/{room}/vacate", "POST", "/v1/rooms/nope/vacate", `{"server":"nope","reason":"refused"}`, "server", false},
		{"GET /v1/media/keys", "GET", "/v1/media/keys", "", "keys", false},
		{"POST /v1/members", "POST", "/v1/members", `{"id":"evil-%s","raft_addr":"127.0.0.1:1"}`, "operator", false},
		{"DELETE /v1/members/{id}", "DELETE", "/v1/members/nope", "", "operator", false},
		{"POST /v1/operator/transfer-leader", "POST", "/v1/operator/transfer-leader", `{"id":"nope"}`, "operator", false},
		{"GET /v1/snapshot", "GET", "/v1/snapshot", "", "operator", false},
		{"POST /v1/snapshot", "POST", "/v1/snapshot", `junk`, "operator", false},
		{"PUT /v1/policy", "PUT", "/v1/policy", `{"strategy":"nope-%s"}`, "operator", false},
		{"GET /v1/acl/tokens", "GET", "/v1/acl/tokens", "", "operator", false},
		{"POST /v1/acl/tokens", "POST", "/v1/acl/tokens", `{"role":"reader"}`, "operator", false},
		{"DELETE /v1/acl/tokens/{id}", "DELETE", "/v1/acl/tokens/nope", "", "operator", false},
		{"POST /v1/media/keys/rotate", "POST", "/v1/media/keys/rotate", "", "operator", false},
		{"GET /debug/pprof/", "GET", "/debug/pprof/", "", "operator", false},
		{"GET /debug/pprof/cmdline", "GET", "/debug/pprof/cmdline", "", "operator", false},
		{"GET /debug/pprof/profile", "GET", "/debug/pprof/profile?seconds=1", "", "operator", false},
		{"GET /debug/pprof/symbol", "GET", "/debug/pprof/symbol", "", "operator", false},
		{"GET /debug/pprof/trace", "GET", "/debug/pprof/trace?seconds=1", "", "operator", false},
	}
	// Routes open to anyone (probes, bootstrap, the dashboard's files, the
	// not-found fallback); each answers without a credential.
	open := map[string]string{
		"GET /v1/internal/info": "/v1/internal/info", "POST /v1/acl/bootstrap": "", "GET /v1/health/live": "/v1/health/live",
		"GET /v1/health/ready": "/v1/health/ready", "GET /ui": "/ui", "GET /ui/": "/ui/", "GET /{$}": "/", "/": "",
	}
	covered := map[string]bool{}
	for _, rt := range routes {
		covered[rt.pattern] = true
	}
	for _, p := range f.Agent.API.Routes() {
		if _, ok := open[p]; !ok && !covered[p] {
			t.Errorf("route %q is not in the authorization table test: add it with the permission it needs", p)
		}
	}
	hcOpen := httpsClient(tc)
	for p, path := range open {
		if path == "" {
			continue
		}
		if code, msg := rawDo(t, hcOpen, "GET", "https://"+f.Cfg.HTTPAddr+path, "", "", ""); code == 401 || code == 403 {
			t.Errorf("open route %s: %d %s", p, code, msg)
		}
	}
	// The expired token is refused once past the leeway.
	testcluster.Eventually(t, 30*time.Second, func() error {
		if code, msg := rawDo(t, hcOpen, "GET", "https://"+f.Cfg.HTTPAddr+"/v1/status", "Bearer "+expired.Secret, "", ""); code != 401 {
			return fmt.Errorf("expired token: %d %s", code, msg)
		}
		return nil
	})
	allowed := map[string][]string{
		"operator":  {"read", "allocate", "server", "keys", "operator"},
		"allocator": {"read", "allocate"},
		"reader":    {"read"},
		"media":     {"read", "allocate", "server", "keys"},
	}
	creds := []struct{ name, header string }{
		{"none", ""}, {"malformed", "Basic abc"}, {"unknown", "Bearer sy_0000"}, {"huge", "Bearer " + strings.Repeat("a", 10000)},
		{"revoked", "Bearer " + tokens["revoked"]}, {"expired", "Bearer " + expired.Secret},
		{"reader", "Bearer " + tokens["reader"]}, {"allocator", "Bearer " + tokens["allocator"]},
		{"media", "Bearer " + tokens["media"]}, {"operator", "Bearer " + tokens["operator"]},
	}
	hc := httpsClient(tc)
	c.WaitMembers(10 * time.Second)
	leader := c.WaitLeader(10 * time.Second)
	// Refused requests first: the state must not move.
	before := leader.Agent.Node.FSM().Hash()
	for _, cr := range creds {
		for _, rt := range routes {
			ok := false
			for _, p := range allowed[cr.name] {
				ok = ok || p == rt.need
			}
			if ok {
				continue
			}
			want := 401
			if _, isRole := allowed[cr.name]; isRole {
				want = 403
			}
			body := rt.body
			if strings.Contains(body, "%s") {
				body = fmt.Sprintf(body, cr.name)
			}
			ctype := ""
			if body != "" {
				ctype = "application/json"
			}
			path := rt.path
			if strings.Contains(path, "%s") {
				path = fmt.Sprintf(path, cr.name)
			}
			for _, nd := range c.Running() {
				code, msg := rawDo(t, hc, rt.method, "https://"+nd.Cfg.HTTPAddr+path, cr.header, ctype, body)
				for try := 0; code == 429 && try < 200; try++ {
					// Refused credentials share the per-address limit of
					// anonymous clients: wait for it, as a client would.
					time.Sleep(20 * time.Millisecond)
					code, msg = rawDo(t, hc, rt.method, "https://"+nd.Cfg.HTTPAddr+path, cr.header, ctype, body)
				}
				if code != want {
					t.Errorf("%s %s as %s via %s: %d %s, want %d", rt.method, rt.path, cr.name, nd.ID, code, msg, want)
				}
			}
		}
	}
	c.WaitConverged(20 * time.Second)
	if after := leader.Agent.Node.FSM().Hash(); after != before {
		t.Fatal("refused requests changed the state")
	}
	// Allowed requests pass authorization (they may still fail validation).
	for _, cr := range creds {
		for _, rt := range routes {
			ok := false
			for _, p := range allowed[cr.name] {
				ok = ok || p == rt.need
			}
			if !ok || rt.stream {
				continue
			}
			body := rt.body
			if strings.Contains(body, "%s") {
				body = fmt.Sprintf(body, cr.name)
			}
			ctype := ""
			if body != "" {
				ctype = "application/json"
			}
			path := rt.path
			if strings.Contains(path, "%s") {
				path = fmt.Sprintf(path, cr.name)
			}
			code, msg := rawDo(t, hc, rt.method, "https://"+f.Cfg.HTTPAddr+path, cr.header, ctype, body)
			if code == 401 || code == 403 {
				t.Errorf("%s %s as %s: %d %s, want it authorized", rt.method, rt.path, cr.name, code, msg)
			}
		}
	}
	// Refusals are counted.
	code, metrics := rawDo(t, hc, "GET", "https://"+f.Cfg.HTTPAddr+"/metrics", "Bearer "+tokens["reader"], "", "")
	if code != 200 || metricValue(metrics, `switchyard_http_refused_total{reason="unauthenticated"}`) <= 0 ||
		metricValue(metrics, `switchyard_http_refused_total{reason="permission_denied"}`) <= 0 {
		t.Fatalf("refusal metrics missing: %d", code)
	}
}

func isStatus(err error, status int) bool {
	var ae *api.APIError
	return errors.As(err, &ae) && ae.Status == status
}

func mustRegisterC(t *testing.T, c *api.Client, id string, capacity int64) {
	t.Helper()
	if _, err := c.RegisterServer(ctxT(t, 20*time.Second), api.RegisterServerRequest{ID: id, Capacity: capacity}); err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
}

// TestACLAttacks replays the attacks an anonymous client or a stolen media
// certificate could mount.
func TestACLAttacks(t *testing.T) {
	c, tc := aclCluster(t, 3)
	ctx := ctxT(t, 60*time.Second)
	hc := httpsClient(tc)
	f := c.Followers()[0]
	base := "https://" + f.Cfg.HTTPAddr
	boot, err := api.NewClient(f.Cfg.HTTPAddr).WithTLS(tc).ACLBootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	op := api.NewClient(c.Addrs()...).WithTLS(tc).WithToken(boot.Secret)
	mustRegisterC(t, op, "m1", 10)
	mustRegisterC(t, op, "m2", 10)
	snap := &strings.Builder{}
	if err := op.SaveSnapshot(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if code, msg := rawDo(t, hc, "POST", base+"/v1/snapshot", "", "application/x-protobuf", snap.String()); code != 401 {
		t.Fatalf("anonymous snapshot restore: %d %s", code, msg)
	}
	// A browser page: text/plain and cross-origin writes are refused even
	// with a valid token.
	if code, msg := rawDo(t, hc, "POST", base+"/v1/servers", "Bearer "+boot.Secret, "text/plain", `{"id":"m1","capacity":1}`); code != 415 {
		t.Fatalf("text/plain POST: %d %s", code, msg)
	}
	if code, msg := rawDo(t, hc, "POST", base+"/v1/servers/m1/drain", "Bearer "+boot.Secret, "", "", "Origin", "https://evil.example"); code != 403 {
		t.Fatalf("cross-origin drain: %d %s", code, msg)
	}
	// A media certificate: may register itself only, may not join raft or
	// move leadership.
	mc, mk, err := c.CA.IssueRole("m1", pki.RoleMedia, nil)
	if err != nil {
		t.Fatal(err)
	}
	mid, err := pki.NewIdentity(c.CA.CertPEM, mc, mk)
	if err != nil {
		t.Fatal(err)
	}
	mcfg := mid.ClientConfig()
	mediaHC := httpsClient(mcfg)
	if code, msg := rawDo(t, mediaHC, "POST", base+"/v1/servers", "", "application/json", `{"id":"m2","capacity":1,"addresses":["http://evil"]}`); code != 403 {
		t.Fatalf("m1 certificate registering m2: %d %s", code, msg)
	}
	if code, msg := rawDo(t, mediaHC, "POST", base+"/v1/servers/m2/drain", "", "", ""); code != 403 {
		t.Fatalf("m1 certificate draining m2: %d %s", code, msg)
	}
	if code, msg := rawDo(t, mediaHC, "POST", base+"/v1/servers", "", "application/json", `{"id":"m1","capacity":5}`); code != 200 {
		t.Fatalf("m1 certificate registering m1: %d %s", code, msg)
	}
	// Once every voter names the certificate whose request it forwards,
	// the leader authorizes such a request as that certificate: m1's
	// certificate still acts as m1 through a follower.
	c.WaitFeature(cluster.FeatureForwardedPrincipal, 20*time.Second)
	leader := c.WaitLeader(10 * time.Second)
	leaderBase := "https://" + leader.Cfg.HTTPAddr
	if code, msg := rawDo(t, mediaHC, "POST", base+"/v1/servers", "", "application/json", `{"id":"m1","capacity":6}`); code != 200 {
		t.Fatalf("m1 certificate registering m1 through a follower: %d %s", code, msg)
	}
	if s, ok := leader.Agent.Node.FSM().Server("m1"); !ok || s.CapacityUnits != 6 {
		t.Fatalf("m1 after its re-registration through a follower: %+v", s)
	}
	// Only a member forwarding a request names its sender: the same
	// headers from anyone else are dropped.
	agentHC := agentCertClient(t, c)
	legacyHC := httpsClient(c.LegacyIdentity(f.ID).ClientConfig())
	memberHC := httpsClient(c.AgentIdentity(f.ID).ClientConfig())
	other := leader.ID
	if other == f.ID {
		other = c.Followers()[0].ID
	}
	for _, tc := range []struct {
		name       string
		hc         *http.Client
		by, claim  string
		path, body string
		want       int
	}{
		{"media certificate claiming an agent", mediaHC, f.ID, "agent " + f.ID, "/v1/operator/transfer-leader", `{"id":"nope"}`, 403},
		{"media certificate claiming another server", mediaHC, f.ID, "media m2", "/v1/servers", `{"id":"m2","capacity":1}`, 403},
		{"agent certificate of a non-member claiming a server", agentHC, "n9", "media m2", "/v1/servers", `{"id":"m2","capacity":1}`, 403},
		{"role-less certificate named after a member claiming it", legacyHC, f.ID, "agent " + f.ID, "/v1/operator/transfer-leader", `{"id":"nope"}`, 401},
		{"a member's certificate passing as another member's forward", memberHC, other, "media m2", "/v1/servers", `{"id":"m2","capacity":1}`, 403},
	} {
		code, msg := rawDo(t, tc.hc, "POST", leaderBase+tc.path, "", "application/json", tc.body,
			"X-Switchyard-Forwarded", tc.by, "X-Switchyard-Principal", tc.claim)
		if code != tc.want {
			t.Fatalf("%s: %d %s, want %d", tc.name, code, msg, tc.want)
		}
	}
	// An agent certificate is not a media server: it may not register,
	// drain or deregister one, through a follower or on the leader.
	for _, b := range []string{base, leaderBase} {
		if code, msg := rawDo(t, agentHC, "POST", b+"/v1/servers", "", "application/json", `{"id":"m2","capacity":1,"addresses":["http://evil"]}`); code != 403 {
			t.Fatalf("agent certificate registering m2 via %s: %d %s", b, code, msg)
		}
		if code, msg := rawDo(t, agentHC, "POST", b+"/v1/servers/m2/drain", "", "", ""); code != 403 {
			t.Fatalf("agent certificate draining m2 via %s: %d %s", b, code, msg)
		}
		if code, msg := rawDo(t, agentHC, "GET", b+"/v1/status", "", "", ""); code != 200 {
			t.Fatalf("agent certificate reading the status via %s: %d %s", b, code, msg)
		}
	}
	if code, msg := rawDo(t, mediaHC, "POST", base+"/v1/members", "", "application/json", `{"id":"evil","raft_addr":"127.0.0.1:1"}`); code != 403 {
		t.Fatalf("media certificate adding a voter: %d %s", code, msg)
	}
	if code, msg := rawDo(t, mediaHC, "POST", base+"/v1/operator/transfer-leader", "", "application/json", `{"id":"n1"}`); code != 403 {
		t.Fatalf("media certificate moving leadership: %d %s", code, msg)
	}
	// Raft itself refuses the media certificate's handshake.
	conn, err := tls.Dial("tcp", f.Cfg.RaftAddr, mid.ClientConfig(cluster.RaftALPN))
	if err == nil {
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil {
		t.Fatal("raft accepted a media certificate")
	}
	if s, _ := c.WaitLeader(10 * time.Second).Agent.Node.FSM().Server("m2"); s == nil || len(s.Addresses) != 0 || s.State != 1 {
		t.Fatalf("m2 was changed: %+v", s)
	}
	if n := len(c.WaitLeader(10 * time.Second).Agent.Node.Status().Members); n != 3 {
		t.Fatalf("%d members", n)
	}
}

// agentCertClient is an HTTPS client with an agent certificate of c's CA
// (named n9, not a member).
func agentCertClient(t *testing.T, c *testcluster.Cluster) *http.Client {
	t.Helper()
	ac, ak, err := c.CA.IssueRole("n9", pki.RoleAgent, nil)
	if err != nil {
		t.Fatal(err)
	}
	aid, err := pki.NewIdentity(c.CA.CertPEM, ac, ak)
	if err != nil {
		t.Fatal(err)
	}
	return httpsClient(aid.ClientConfig())
}

// TestAgentCertificateActsForMediaDuringUpgrade: while a voter of an
// older release (one that forwards a media node's request as itself) is
// in the cluster, the leader lets agent certificates act for media
// servers, so media nodes behind that follower keep working.
func TestAgentCertificateActsForMediaDuringUpgrade(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{RaftTLS: true, Mutate: func(i int, cfg *agent.Config) {
		cfg.ACL, cfg.HTTPS = true, true
		if i == 2 {
			cfg.Features = []string{cluster.FeatureCommittedRefusals}
		}
	}})
	c.WaitFeature(cluster.FeatureCommittedRefusals, 20*time.Second)
	hc := agentCertClient(t, c)
	leader := c.WaitLeader(10 * time.Second)
	if leader.Agent.Node.FeatureOn(cluster.FeatureForwardedPrincipal) {
		t.Fatal("forwarded_principal is on with a voter that lacks it")
	}
	if code, msg := rawDo(t, hc, "POST", "https://"+leader.Cfg.HTTPAddr+"/v1/servers", "", "application/json", `{"id":"m1","capacity":1}`); code != 200 {
		t.Fatalf("agent certificate registering m1 during the upgrade: %d %s", code, msg)
	}
	// The older member does not name its forwards' senders: whatever
	// principal header it passes on is its client's, and is dropped (its
	// request here stays its own, an agent's, with operator rights).
	old := c.Nodes[2]
	oldHC := httpsClient(c.AgentIdentity(old.ID).ClientConfig())
	if code, msg := rawDo(t, oldHC, "GET", "https://"+leader.Cfg.HTTPAddr+"/v1/acl/tokens", "", "", "",
		"X-Switchyard-Forwarded", old.ID, "X-Switchyard-Principal", "media m1"); code != 200 {
		t.Fatalf("a forward from the older member naming a media server: %d %s, want it taken as the member's own", code, msg)
	}
}

// TestACLBootstrapRace bootstraps from every node at once: exactly one wins.
func TestACLBootstrapRace(t *testing.T) {
	c, tc := aclCluster(t, 3)
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, refused := 0, 0
	for _, nd := range c.Running() {
		for i := 0; i < 2; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := api.NewClient(nd.Cfg.HTTPAddr).WithTLS(tc).ACLBootstrap(ctxT(t, 30*time.Second))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case isStatus(err, 409):
					refused++
				default:
					t.Errorf("bootstrap via %s: %v", nd.ID, err)
				}
			}()
		}
	}
	wg.Wait()
	if wins != 1 || refused != 5 {
		t.Fatalf("%d bootstraps won, %d refused", wins, refused)
	}
}

// TestACLRevokeUnderLoad revokes a token while clients use it through every
// node: no allocation made with it commits after the revocation's log
// index (an allocation's id names the index of its entry), and once the
// revocation is acknowledged no request with it succeeds.
func TestACLRevokeUnderLoad(t *testing.T) {
	c, tc := aclCluster(t, 3)
	ctx := ctxT(t, 60*time.Second)
	c.WaitFeature(cluster.FeatureACLInApply, 30*time.Second)
	boot, err := api.NewClient(c.Addrs()...).WithTLS(tc).ACLBootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	op := api.NewClient(c.Addrs()...).WithTLS(tc).WithToken(boot.Secret)
	mustRegisterC(t, op, "m1", 1000000)
	tok, err := op.ACLCreateToken(ctx, api.CreateTokenRequest{Role: "allocator", Description: "load"})
	if err != nil {
		t.Fatal(err)
	}
	var revokedAt time.Time
	var mu sync.Mutex
	var acceptedAfter, before, triedAfter int
	var granted []string // allocation ids
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := api.NewClient(c.Nodes[w%3].Cfg.HTTPAddr).WithTLS(tc).WithToken(tok.Secret)
			cl.Retry = false
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				sent := time.Now()
				a, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: fmt.Sprintf("w%d-%d", w, i), Room: "r", Units: 1})
				mu.Lock()
				if err == nil {
					granted = append(granted, a.ID)
				}
				if !revokedAt.IsZero() && sent.After(revokedAt) {
					triedAfter++
				}
				if err == nil {
					if !revokedAt.IsZero() && sent.After(revokedAt) {
						acceptedAfter++
					} else {
						before++
					}
				}
				mu.Unlock()
			}
		}()
	}
	testcluster.Eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if before < 20 {
			return fmt.Errorf("%d allocations so far", before)
		}
		return nil
	})
	rv, err := op.ACLRevoke(ctx, tok.ID)
	if err != nil || rv.RevokedAtIndex == 0 {
		t.Fatalf("revoke: %+v, %v", rv, err)
	}
	mu.Lock()
	revokedAt = time.Now()
	mu.Unlock()
	// Keep the load running well past the revocation.
	testcluster.Eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if triedAfter < 60 {
			return fmt.Errorf("%d requests after the revocation so far", triedAfter)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	if acceptedAfter != 0 {
		t.Fatalf("%d requests accepted after the revocation was acknowledged", acceptedAfter)
	}
	// By index: no grant's entry follows the revocation's. (A grant in the
	// revocation's own entry may precede it there: entries hold batches.)
	for _, id := range granted {
		var index, pos uint64
		if _, err := fmt.Sscanf(id, "a-%d-%d", &index, &pos); err != nil {
			t.Fatalf("allocation id %q does not name its index: %v", id, err)
		}
		if index > rv.RevokedAtIndex {
			t.Errorf("allocation %s committed at index %d, after the revocation at %d", id, index, rv.RevokedAtIndex)
		}
	}
	t.Logf("%d grants, none after the revocation at index %d", len(granted), rv.RevokedAtIndex)
}

// TestInputCaps sends what an attacker sent before the caps: every one is
// refused with a clear error and changes nothing.
func TestInputCaps(t *testing.T) {
	c, tc := aclCluster(t, 3)
	ctx := ctxT(t, 60*time.Second)
	boot, err := api.NewClient(c.Addrs()...).WithTLS(tc).ACLBootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	op := api.NewClient(c.Addrs()...).WithTLS(tc).WithToken(boot.Secret)
	mustRegisterC(t, op, "m1", 100)
	hc := httpsClient(tc)
	f := c.Followers()[0]
	base := "https://" + f.Cfg.HTTPAddr
	auth := "Bearer " + boot.Secret
	c.WaitMembers(10 * time.Second)
	c.WaitConverged(10 * time.Second)
	leader := c.WaitLeader(10 * time.Second)
	before := leader.Agent.Node.FSM().Hash()
	cases := []struct {
		name, method, path, body string
		want                     int
	}{
		{"500 KB room", "POST", "/v1/allocations", `{"request_id":"a","room":"` + strings.Repeat("r", 500<<10) + `","units":1}`, 400},
		{"room with escape", "POST", "/v1/allocations", `{"request_id":"a","room":"\u001b[2J","units":1}`, 400},
		{"ttl overflow", "POST", "/v1/allocations", `{"request_id":"a","room":"r","units":1,"ttl_ms":18446744073719}`, 400},
		{"huge id", "POST", "/v1/servers", `{"id":"` + strings.Repeat("m", 1000) + `","capacity":1}`, 400},
		{"retention", "PUT", "/v1/policy", `{"strategy":"least-loaded","tombstone_retention_ms":9000000000000000}`, 400},
		{"2 MiB body", "POST", "/v1/servers", `{"id":"m2","capacity":1,"labels":{"x":"` + strings.Repeat("x", 2<<20) + `"}}`, 413},
	}
	for _, tc := range cases {
		code, msg := rawDo(t, hc, tc.method, base+tc.path, auth, "application/json", tc.body)
		if code != tc.want {
			t.Errorf("%s: %d %.300s, want %d", tc.name, code, msg, tc.want)
		}
	}
	// A secret this follower does not know is passed to the leader (the
	// token may be new), but only with a JSON-sized body: a snapshot-sized
	// one is refused here, announced or streamed.
	big := strings.Repeat("x", 2<<20)
	if code, msg := rawDo(t, hc, "POST", base+"/v1/snapshot", "Bearer sy_nobody", "application/x-protobuf", big); code != 401 || !strings.Contains(msg, "only with a body up to") {
		t.Errorf("2 MiB snapshot with an unknown token: %d %.300s, want 401 refused on the follower", code, msg)
	}
	req, _ := http.NewRequest("POST", base+"/v1/snapshot", io.MultiReader(strings.NewReader(big))) // no length: chunked
	req.Header.Set("Authorization", "Bearer sy_nobody")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if req.ContentLength != 0 || resp.StatusCode != 413 {
		t.Errorf("streamed 2 MiB snapshot with an unknown token: length %d, %d %.300s, want 413", req.ContentLength, resp.StatusCode, msg)
	}
	c.WaitConverged(20 * time.Second)
	if leader.Agent.Node.FSM().Hash() != before {
		t.Fatal("refused input changed the state")
	}
	// Anonymous clients are rate limited per address (429, Retry-After).
	limited := false
	for i := 0; i < 1000 && !limited; i++ {
		req, _ := http.NewRequest("GET", base+"/v1/status", nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 429 {
			limited = resp.Header.Get("Retry-After") != ""
			if !limited {
				t.Fatal("429 without Retry-After")
			}
		}
	}
	if !limited {
		t.Fatal("1000 anonymous requests were never rate limited")
	}
}

// TestMediaTokenMinting: allocators mint WHIP/WHEP tokens that verify with
// the keys media credentials fetch; readers may not mint, allocators may
// not read the keys.
func TestMediaTokenMinting(t *testing.T) {
	c, tc := aclCluster(t, 3)
	ctx := ctxT(t, 60*time.Second)
	boot, err := api.NewClient(c.Addrs()...).WithTLS(tc).ACLBootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	op := api.NewClient(c.Addrs()...).WithTLS(tc).WithToken(boot.Secret)
	client := func(role string) *api.Client {
		tok, err := op.ACLCreateToken(ctx, api.CreateTokenRequest{Role: role})
		if err != nil {
			t.Fatal(err)
		}
		return api.NewClient(c.Addrs()...).WithTLS(tc).WithToken(tok.Secret)
	}
	alloc, reader, media := client("allocator"), client("reader"), client("media")
	if _, err := reader.MintMediaToken(ctx, api.MintRequest{Room: "demo", Action: "publish"}); !isStatus(err, 403) {
		t.Fatalf("reader minting: %v", err)
	}
	m, err := alloc.MintMediaToken(ctx, api.MintRequest{Room: "demo", Action: "publish", TTLMs: 60000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alloc.MediaKeys(ctx); !isStatus(err, 403) {
		t.Fatalf("allocator reading media keys: %v", err)
	}
	keys, err := media.MediaKeys(ctx)
	if err != nil || len(keys) != 1 {
		t.Fatalf("media keys %v %v", keys, err)
	}
	kr := &mediatoken.Keyring{}
	kr.Set(keys)
	if _, err := kr.Check(m.Token, "demo", "publish", time.Now()); err != nil {
		t.Fatalf("minted token does not verify: %v", err)
	}
	// Rotation keeps the old key for verification.
	var out map[string]any
	if err := op.RotateMediaKey(ctx, &out); err != nil {
		t.Fatal(err)
	}
	if keys, err = media.MediaKeys(ctx); err != nil || len(keys) != 2 {
		t.Fatalf("after rotation: %v %v", keys, err)
	}
	kr.Set(keys)
	if _, err := kr.Check(m.Token, "demo", "publish", time.Now()); err != nil {
		t.Fatalf("old token after rotation: %v", err)
	}
	if s, _ := kr.Signer(); s.ID == keys[0].ID {
		t.Fatal("the newest key does not sign")
	}
}

// TestAuditLog: every write accepted from a token is logged once at info
// level, by the agent that received it (not again by the leader it was
// forwarded to), with the token's id and description, the operation and
// its target; reads, refused writes and media certificates' writes are
// not, and no secret ever reaches the log.
func TestAuditLog(t *testing.T) {
	var logs testcluster.LogBuffer
	c := testcluster.New(t, 3, testcluster.Options{RaftTLS: true, Mutate: func(_ int, cfg *agent.Config) {
		cfg.ACL, cfg.HTTPS = true, true
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}})
	tc, err := pki.CAClientConfig(c.CA.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	// A leader takes a follower's word that it forwards (and so does not
	// log the request again) once that follower's member entry lists it.
	c.WaitFeature(cluster.FeatureForwardedPrincipal, 30*time.Second)
	ctx := ctxT(t, 60*time.Second)
	f := c.Followers()[0]
	boot, err := api.NewClient(f.Cfg.HTTPAddr).WithTLS(tc).ACLBootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	op := api.NewClient(f.Cfg.HTTPAddr).WithTLS(tc).WithToken(boot.Secret)
	mustRegisterC(t, op, "m1", 10)
	bot, err := op.ACLCreateToken(ctx, api.CreateTokenRequest{Role: "allocator", Description: "ci-bot"})
	if err != nil {
		t.Fatal(err)
	}
	alc := api.NewClient(f.Cfg.HTTPAddr).WithTLS(tc).WithToken(bot.Secret)
	if _, err := alc.Allocate(ctx, api.AllocateRequest{RequestID: "audit-1", Room: "r", Units: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := alc.Servers(ctx, false); err != nil { // a read: not audited
		t.Fatal(err)
	}
	if _, err := alc.DrainServer(ctx, "m1"); !errors.Is(err, errcode.ErrPermissionDenied) { // refused: not audited
		t.Fatalf("allocator draining: %v", err)
	}
	if _, err := op.DrainServer(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	// Each token write is logged exactly once: by f, or, when f had not
	// applied the token yet and passed the request on, by the leader.
	want := []struct{ id, operation, target string }{
		{boot.ID, `"POST /v1/servers"`, "target=/v1/servers "},
		{boot.ID, `"POST /v1/acl/tokens"`, "target=/v1/acl/tokens "},
		// (as a batch when the leader logs it: f coalesces allocations)
		{bot.ID, `"POST /v1/allocations`, "target=/v1/allocations"},
		{boot.ID, `"POST /v1/servers/{id}/drain"`, "target=/v1/servers/m1/drain "},
	}
	var audit []string
	testcluster.Eventually(t, 20*time.Second, func() error {
		audit = audit[:0]
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "msg=audit") && strings.Contains(l, "principal=token") {
				audit = append(audit, l)
			}
		}
		if len(audit) < len(want) {
			return fmt.Errorf("%d audit lines: %q", len(audit), audit)
		}
		return nil
	})
	if len(audit) != len(want) {
		t.Fatalf("audit lines of tokens:\n%s\nwant %d", strings.Join(audit, "\n"), len(want))
	}
	for i, w := range want {
		l := audit[i]
		if !strings.Contains(l, "level=INFO") || !strings.Contains(l, "id="+w.id) ||
			!strings.Contains(l, "operation="+w.operation) || !strings.Contains(l, w.target) {
			t.Errorf("audit line %d: %s\nwant token %s, %s, %s", i, l, w.id, w.operation, w.target)
		}
	}
	if !strings.Contains(audit[2], "description=ci-bot") {
		t.Errorf("the allocator's line lacks its description: %s", audit[2])
	}
	// Agents' own writes (member entries) are audited as their
	// certificates.
	if !strings.Contains(logs.String(), "principal=cert id=n") {
		t.Error("no agent certificate's write was audited")
	}
	for _, secret := range []string{boot.Secret, bot.Secret} {
		if strings.Contains(logs.String(), secret) {
			t.Fatal("a token secret reached the log")
		}
	}
}

// TestMediaTokenBoundToItsServer: a media token created with --server acts
// as that media server only (register, drain, deregister), through a
// follower and on the leader; an unbound one acts for any (as before the
// binding existed); only a media token can be bound.
func TestMediaTokenBoundToItsServer(t *testing.T) {
	c, tc := aclCluster(t, 3)
	ctx := ctxT(t, 60*time.Second)
	boot, err := api.NewClient(c.Addrs()...).WithTLS(tc).ACLBootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.WaitFeature(cluster.FeatureMediaTokenServer, 20*time.Second)
	op := api.NewClient(c.Addrs()...).WithTLS(tc).WithToken(boot.Secret)
	bound, err := op.ACLCreateToken(ctx, api.CreateTokenRequest{Role: "media", Server: "m1", Description: "m1's token"})
	if err != nil || bound.Server != "m1" {
		t.Fatalf("bound media token: %+v %v", bound, err)
	}
	anyServer, err := op.ACLCreateToken(ctx, api.CreateTokenRequest{Role: "media"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.ACLCreateToken(ctx, api.CreateTokenRequest{Role: "allocator", Server: "m1"}); !errors.Is(err, errcode.ErrInvalid) {
		t.Fatalf("an allocator token bound to a server: %v", err)
	}
	mustRegisterC(t, op, "m2", 10)
	c.WaitConverged(10 * time.Second)
	hc := httpsClient(tc)
	leader := c.WaitLeader(10 * time.Second)
	for _, nd := range []*testcluster.Node{c.Followers()[0], leader} {
		base := "https://" + nd.Cfg.HTTPAddr
		auth := "Bearer " + bound.Secret
		for _, tc := range []struct {
			name, path, body string
			want             int
		}{
			{"register itself", "/v1/servers", `{"id":"m1","capacity":4}`, 200},
			{"register another", "/v1/servers", `{"id":"m2","capacity":1,"addresses":["http://evil"]}`, 403},
			{"drain another", "/v1/servers/m2/drain", "", 403},
			{"deregister another", "DELETE /v1/servers/m2", "", 403},
			{"read the media keys", "GET /v1/media/keys", "", 200},
		} {
			ctype, method, path := "", "POST", tc.path
			if tc.want == 200 && tc.body == "" && strings.HasPrefix(tc.path, "GET ") {
				// The keys exist once a token was minted.
				if _, err := op.MintMediaToken(ctx, api.MintRequest{Room: "r", Action: "play"}); err != nil {
					t.Fatal(err)
				}
			}
			if tc.body != "" {
				ctype = "application/json"
			}
			if m, p, ok := strings.Cut(tc.path, " "); ok {
				method, path = m, p
			}
			if code, msg := rawDo(t, hc, method, base+path, auth, ctype, tc.body); code != tc.want {
				t.Errorf("m1's token via %s, %s: %d %s, want %d", nd.ID, tc.name, code, msg, tc.want)
			}
		}
	}
	// m2 untouched by m1's token; the unbound token still acts for it.
	if s, ok := leader.Agent.Node.FSM().Server("m2"); !ok || len(s.Addresses) != 0 || s.State != 1 || s.CapacityUnits != 10 {
		t.Fatalf("m2 was changed by m1's token: %+v", s)
	}
	if code, msg := rawDo(t, hc, "POST", "https://"+leader.Cfg.HTTPAddr+"/v1/servers/m2/drain", "Bearer "+anyServer.Secret, "", ""); code != 200 {
		t.Fatalf("an unbound media token draining m2: %d %s", code, msg)
	}
	toks, err := op.ACLTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, tk := range toks {
		if tk.ID == bound.ID {
			found = tk.Server == "m1"
		}
	}
	if !found {
		t.Fatalf("token list: %+v, want %s bound to m1", toks, bound.ID)
	}
}
