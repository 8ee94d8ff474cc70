package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/mediatoken"
	"github.com/switchyard/switchyard/pki"
)

// Client talks to any agent(s). Retryable failures (no leader, leadership
// lost, unknown outcome, connection errors) are retried with backoff across
// the configured addresses until the context ends; every write it sends is
// idempotent (allocations carry request ids), so a retry never grants
// twice.
//
// With more than one address, each attempt has its own deadline
// (AttemptTimeout, doubling on every round through the addresses), so a
// frozen agent (SIGSTOP, a hung VM)
// costs one attempt, not the caller's whole timeout: the next attempt goes
// to another agent, which forwards to the leader and fails over to a new
// one by itself. Allocations and room placements do not even wait for
// that: after a quarter of the deadline without an answer a second copy
// goes to the next agent (hedge.go). The client starts with the agent
// that answered last.
type Client struct {
	addrs []string
	hc    *http.Client
	// Retry disables retries when false (used by bootstrap probes).
	Retry bool
	// Batch makes Allocate coalesce concurrent calls into batch requests
	// (POST /v1/allocations/batch): for a client issuing many allocations
	// at once it saves an HTTP exchange and a forward per allocation.
	// Answers, errors and retries are those of single calls.
	Batch bool

	batch *batcher
	rr    atomic.Uint32 // round-robin over addrs for batches
	// token is sent as "Authorization: Bearer <token>" when set; until
	// WithToken is called, SWITCHYARD_TOKEN is read at each request.
	token    string
	tokenSet bool
	scheme   string
	// AttemptTimeout bounds one attempt (doubled for every round through
	// all addresses); zero means DefaultAttemptTimeout. Clusters with
	// other raft timing should use AttemptTimeoutFor.
	AttemptTimeout time.Duration
	// NoAnswerTimeout, when positive, ends the retries once no address
	// has answered HTTP at all (refused or closed connections, TLS or
	// protocol errors) for this long: a wrong address fails in seconds,
	// not at the caller's deadline. Any HTTP answer, a refusal included,
	// and any attempt that merely ran out of time restart the clock. Zero retries until
	// the context ends (what a service riding out a restart wants).
	NoAnswerTimeout time.Duration
	// Attempts counts the attempts this client made (for tests and
	// benchmarks).
	Attempts atomic.Int64

	next atomic.Int64 // index of the address to try first
}

// AttemptTimeoutFor returns the per-attempt deadline suited to agents that
// give one forwarded attempt forward (Status.ForwardTimeoutMs): two of
// their forward windows, long enough for the agent asked to fail a
// forwarded request over to a new leader once. Slower answers only cost a
// retry with the same request id, and the deadline doubles on every round
// through the addresses.
func AttemptTimeoutFor(forward time.Duration) time.Duration { return 2 * forward }

// DefaultAttemptTimeout is AttemptTimeoutFor the forward window of the
// agent's default raft timing (550 ms with 150 ms heartbeat and election
// timeouts); a test of the cluster package keeps the two in step.
const DefaultAttemptTimeout = 1100 * time.Millisecond

// NewClient returns a client for the given agent HTTP addresses (host:port).
// It sends the token in SWITCHYARD_TOKEN (read at each request), if set
// (see WithToken), and
// speaks HTTPS, verifying the agents against the CA in the file
// SWITCHYARD_CACERT names, if set (see WithTLS).
func NewClient(addrs ...string) *Client {
	c := &Client{addrs: addrs, hc: &http.Client{Timeout: 15 * time.Second, Transport: NewTransport()}, Retry: true,
		scheme: "http"}
	c.batch = &batcher{c: c, maxInflight: 4}
	if f := os.Getenv(CACertEnv); f != "" {
		if pem, err := os.ReadFile(f); err == nil {
			if tc, err := pki.CAClientConfig(pem); err == nil {
				c.WithTLS(tc)
			}
		}
	}
	return c
}

// Environment variables clients read: the token to send, and the CA file
// that makes them speak HTTPS.
const (
	TokenEnv  = "SWITCHYARD_TOKEN"
	CACertEnv = "SWITCHYARD_CACERT"
)

// WithToken makes c send secret as its bearer token ("" sends none).
func (c *Client) WithToken(secret string) *Client {
	c.token, c.tokenSet = secret, true
	return c
}

// WithTLS makes c speak HTTPS with cfg (nil switches back to plain HTTP).
func (c *Client) WithTLS(cfg *tls.Config) *Client {
	tr := NewTransport()
	tr.TLSClientConfig = cfg
	c.hc = &http.Client{Timeout: c.hc.Timeout, Transport: tr}
	c.scheme = "http"
	if cfg != nil {
		c.scheme = "https"
	}
	return c
}

// PresentCertificate makes c, when it speaks HTTPS (SWITCHYARD_CACERT or
// WithTLS), present the client certificate of id (a media node's or a
// sidecar's TLS configuration, as given to the QUIC transport; its
// application protocols are dropped) and accept only an agent's server
// certificate chaining to id's CA. The agents then know c as the media
// server the certificate names, with no token needed. Over plain HTTP, or
// with id nil, it changes nothing. A token, when c sends one, still takes
// precedence on the agents.
func (c *Client) PresentCertificate(id *tls.Config) *Client {
	if c.scheme != "https" || id == nil {
		return c
	}
	cfg := id.Clone()
	cfg.NextProtos = nil
	return c.WithTLS(pki.RequireAgent(cfg, nil))
}

// pick returns the next address, round-robin.
func (c *Client) pick() string { return c.addrs[int(c.rr.Add(1))%len(c.addrs)] }

// perAttempt reports whether attempts get their own deadline: only when
// there is another agent to turn to, and not for bulk transfers
// (snapshots), which may legitimately take long.
func (c *Client) perAttempt(body []byte, out any) bool {
	if _, bulk := out.(io.Writer); bulk || len(body) > 1<<20 {
		return false
	}
	return len(c.addrs) > 1
}

// attemptTimeout is the deadline of the given attempt (0-based).
func (c *Client) attemptTimeout(attempt int) time.Duration {
	d := c.AttemptTimeout
	if d <= 0 {
		d = DefaultAttemptTimeout
	}
	return d << min(attempt/max(len(c.addrs), 1), 4)
}

// NewTransport returns an HTTP transport for agent-to-agent and client
// traffic: many concurrent requests go to few hosts, so it keeps many idle
// connections per host (Go's default of 2 makes every burst open and close
// connections) and dials with a short timeout so a dead agent is skipped
// quickly: a host that died silently swallows the SYN, and every request a
// follower forwards to a leader it still believes alive would otherwise
// wait out the dial (2 s cost ~2 s per failover with blackholed addresses;
// a LAN connect takes well under a millisecond).
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 300 * time.Millisecond, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 256,
		// Below an agent's per-source connection cap (1024): requests past
		// it wait for a connection instead of being refused on accept (a
		// follower forwarding for many clients is one source).
		MaxConnsPerHost: 512,
		IdleConnTimeout: 90 * time.Second,
	}
}

// APIError is a non-2xx answer. It unwraps to the matching errcode
// sentinel, so errors.Is(err, errcode.ErrCapacity) works across the wire.
type APIError struct {
	Status int
	Body   Error
}

func (e *APIError) Error() string { return e.Body.Error }

// Unwrap maps the code to a sentinel.
func (e *APIError) Unwrap() error {
	return errcode.FromCode(e.Body.Code, "")
}

// IsRetryable reports whether err may succeed if sent again.
func IsRetryable(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Body.Retryable
	}
	var ue *url.Error
	return errors.As(err, &ue) || errcode.Retryable(err)
}

// do sends one request, retrying retryable failures on the next address
// with capped exponential backoff until ctx ends.
func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	return c.doAfter(ctx, method, path, body, out, false)
}

// doAfter is do for a request of which an earlier attempt may already have
// reached an agent and gone unanswered (unanswered): a momentary refusal
// (errcode.Momentary: insufficient capacity, a server not active) from a
// later attempt then does not settle the request — that earlier copy may
// still be granted, by an agent that gets it late — and is returned as
// errcode.Unsettled (unknown_outcome, retryable) instead.
func (c *Client) doAfter(ctx context.Context, method, path string, body []byte, out any, unanswered bool) error {
	if len(c.addrs) == 0 {
		return ErrNoAddress
	}
	if !Resendable(method, path) {
		return c.doNotResent(ctx, method, path, body, out)
	}
	if c.Retry && c.hedged(method, path, body, out) {
		return c.doHedged(ctx, method, path, body, out, unanswered) // hedge.go
	}
	var (
		last     error
		backoff  retryBackoff
		answered = time.Now() // when an agent last answered HTTP
	)
	first := int(c.next.Load())
	for attempt := 0; ; attempt++ {
		i := (first + attempt) % len(c.addrs)
		addr := c.addrs[i]
		c.Attempts.Add(1)
		if !c.Retry {
			return c.once(ctx, addr, method, path, body, out)
		}
		actx, cancel := ctx, context.CancelFunc(func() {})
		if c.perAttempt(body, out) {
			actx, cancel = context.WithTimeout(ctx, c.attemptTimeout(attempt))
		}
		last = c.once(actx, addr, method, path, body, out)
		cancel()
		if last == nil {
			c.next.Store(int64(i))
			return nil
		}
		if !IsRetryable(last) {
			return settleRefusal(last, unanswered)
		}
		unanswered = unanswered || mayHaveArrived(last)
		if wasAnswered(last) {
			answered = time.Now()
		} else if c.NoAnswerTimeout > 0 && time.Since(answered) >= c.NoAnswerTimeout {
			return c.noAnswer(last)
		}
		if ctx.Err() != nil {
			return gaveUp(last, len(c.addrs), attempt+1, ctx.Err())
		}
		select {
		case <-ctx.Done():
			return gaveUp(last, len(c.addrs), attempt+1, ctx.Err())
		case <-time.After(backoff.next()):
		}
	}
}

// retryBackoff is the wait before retrying a retryable failure:
// elections take a few hundred ms, so 10 ms doubling to a 100 ms cap,
// with jitter so that clients do not march in step. The zero value is
// ready.
type retryBackoff struct{ d time.Duration }

func (b *retryBackoff) next() time.Duration {
	if b.d == 0 {
		b.d = 10 * time.Millisecond
	}
	w := b.d/2 + rand.N(b.d/2+1)
	if b.d < 100*time.Millisecond {
		b.d *= 2
	}
	return w
}

// settleRefusal is the answer for a final refusal err: a momentary
// refusal (errcode.Unsettling) of a request of which a copy went
// unanswered (it may still be acted on) does not settle it and becomes
// errcode.Unsettled (unknown_outcome, retryable).
func settleRefusal(err error, unanswered bool) error {
	var ae *APIError
	if unanswered && errors.As(err, &ae) && errcode.Unsettling(ae.Body.Code, ae.Body.Committed) {
		return unsettled(ae)
	}
	return err
}

// wasAnswered reports whether a retryable failure came from an agent's
// answer, or an attempt that ran out of time on a connection made (a
// slow or frozen agent, not a wrong address): the no-answer clock
// starts over.
func wasAnswered(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) || errors.Is(err, context.DeadlineExceeded)
}

// noAnswer is the error once no agent answered for NoAnswerTimeout.
func (c *Client) noAnswer(last error) error {
	return fmt.Errorf("no agent answered HTTP at %s for %v: %w", strings.Join(c.addrs, ","), c.NoAnswerTimeout.Round(time.Millisecond), last)
}

// gaveUp is the error when the caller's context ends the retries.
func gaveUp(last error, agents, attempts int, cause error) error {
	if last == nil {
		last = cause
	}
	return fmt.Errorf("%w (no leader reachable through %d agent(s) in %d attempts; gave up: %v)", last, agents, attempts, cause)
}

// infoPath is the bootstrap probe's route, open to anyone: it is sent
// without the client's token, because an agent refuses a token it does not
// know (401) even where none is needed, and a probe carrying another
// cluster's token would then look like an unreachable peer.
const infoPath = "/v1/internal/info"

// newRequest builds one attempt's request, with the client's token (none
// on infoPath).
func (c *Client) newRequest(ctx context.Context, addr, method, path string, body []byte) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.scheme+"://"+addr+path, rd)
	if err != nil {
		return nil, err
	}
	tok := c.token
	if !c.tokenSet {
		tok = os.Getenv(TokenEnv)
	}
	if tok != "" && path != infoPath {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// answerError reads a non-2xx answer into an *APIError.
func answerError(method, path string, resp *http.Response) *APIError {
	ae := &APIError{Status: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(b, &ae.Body) != nil || ae.Body.Error == "" {
		ae.Body.Error = fmt.Sprintf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return ae
}

func (c *Client) once(ctx context.Context, addr, method, path string, body []byte, out any) error {
	req, err := c.newRequest(ctx, addr, method, path, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return answerError(method, path, resp)
	}
	if wh, ok := out.(*withHeader); ok {
		wh.header, out = resp.Header, wh.out
	}
	switch o := out.(type) {
	case nil:
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	case io.Writer:
		_, err = io.Copy(o, resp.Body)
		return err
	default:
		return json.NewDecoder(resp.Body).Decode(out)
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own plain structs are marshalled
	}
	return b
}

// Status returns the answering agent's view of the cluster.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.do(ctx, "GET", "/v1/status", nil, &s)
}

// Members lists the allocator voters.
func (c *Client) Members(ctx context.Context) ([]MemberStatus, error) {
	var m []MemberStatus
	return m, c.do(ctx, "GET", "/v1/members", nil, &m)
}

// Info implements cluster.PeerClient (no retries: the caller polls).
func (c *Client) Info(ctx context.Context, addr string) (PeerInfo, error) {
	var p PeerInfo
	return p, c.once(ctx, addr, "GET", infoPath, nil, &p)
}

// Join implements cluster.PeerClient (no retries: the caller polls).
func (c *Client) Join(ctx context.Context, addr string, m *fsmpb.Member) error {
	return c.once(ctx, addr, "POST", "/v1/members", mustJSON(Member{ID: m.GetId(), RaftAddr: m.GetRaftAddr(), HTTPAddr: m.GetHttpAddr(), QUICAddr: m.GetQuicAddr(), Features: m.GetFeatures()}), nil)
}

// RemovePeer removes a voter.
func (c *Client) RemovePeer(ctx context.Context, id string) error {
	return c.do(ctx, "DELETE", "/v1/members/"+url.PathEscape(id), nil, nil)
}

// TransferLeader moves leadership (to id, or to the best voter if empty).
// Not retried: a retry after an unknown outcome could move it twice.
func (c *Client) TransferLeader(ctx context.Context, id string) error {
	body := mustJSON(TransferRequest{ID: id})
	var last error
	for _, a := range c.addrs {
		last = c.once(ctx, a, "POST", "/v1/operator/transfer-leader", body, nil)
		if last == nil {
			return nil
		}
		var ae *APIError
		if !errors.As(last, &ae) {
			continue // unreachable: try the next address
		}
		return last
	}
	return last
}

func staleQuery(stale bool) string {
	if stale {
		return "?stale=true"
	}
	return ""
}

// Servers lists the registered media servers (all of them in one answer;
// see ServersPage and Pages to read them a page at a time).
func (c *Client) Servers(ctx context.Context, stale bool) ([]Server, error) {
	var s []Server
	return s, c.do(ctx, "GET", "/v1/servers"+staleQuery(stale), nil, &s)
}

// ServersWithLoad lists the registered media servers with the load each
// last reported, as the answering agent holds it.
func (c *Client) ServersWithLoad(ctx context.Context, stale bool) ([]ServerWithLoad, error) {
	var s []ServerWithLoad
	return s, c.do(ctx, "GET", "/v1/servers"+staleQuery(stale), nil, &s)
}

// ServersRaw lists servers as raw JSON objects (with any soft-state fields
// the agent adds).
func (c *Client) ServersRaw(ctx context.Context, stale bool) ([]map[string]any, error) {
	var s []map[string]any
	return s, c.do(ctx, "GET", "/v1/servers"+staleQuery(stale), nil, &s)
}

// RegisterServer registers or updates a media server.
func (c *Client) RegisterServer(ctx context.Context, r RegisterServerRequest) (Server, error) {
	var s Server
	return s, c.do(ctx, "POST", "/v1/servers", mustJSON(r), &s)
}

// DrainServer stops new allocations landing on a server.
func (c *Client) DrainServer(ctx context.Context, id string) (Server, error) {
	var s Server
	return s, c.do(ctx, "POST", "/v1/servers/"+url.PathEscape(id)+"/drain", nil, &s)
}

// DeregisterServer removes a server that holds no active allocations.
func (c *Client) DeregisterServer(ctx context.Context, id string) error {
	return c.do(ctx, "DELETE", "/v1/servers/"+url.PathEscape(id), nil, nil)
}

// Allocate asks for an allocation. Retries reuse r.RequestID, so the
// cluster grants it at most once.
func (c *Client) Allocate(ctx context.Context, r AllocateRequest) (Allocation, error) {
	if c.Batch && c.batch != nil && len(c.addrs) > 0 {
		return c.batch.allocate(ctx, r)
	}
	return c.allocateOne(ctx, r)
}

func (c *Client) allocateOne(ctx context.Context, r AllocateRequest) (Allocation, error) {
	return c.allocateAfter(ctx, r, false)
}

// allocateAfter is allocateOne after an attempt (a batch) that may have
// reached an agent and gone unanswered (see doAfter).
func (c *Client) allocateAfter(ctx context.Context, r AllocateRequest, unanswered bool) (Allocation, error) {
	var a Allocation
	return a, c.doAfter(ctx, "POST", "/v1/allocations", mustJSON(r), &a, unanswered)
}

// Release ends an allocation by id or request id.
func (c *Client) Release(ctx context.Context, id string) (Allocation, error) {
	var a Allocation
	return a, c.do(ctx, "DELETE", "/v1/allocations/"+url.PathEscape(id), nil, &a)
}

// AllocationListOptions filters Allocations.
type AllocationListOptions struct {
	Room, Server string
	ActiveOnly   bool
	Stale        bool
}

// Allocations lists allocations (all of them in one answer; see
// AllocationsPage and Pages to read them a page at a time).
func (c *Client) Allocations(ctx context.Context, o AllocationListOptions) ([]Allocation, error) {
	q := o.values()
	p := "/v1/allocations"
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	var a []Allocation
	return a, c.do(ctx, "GET", p, nil, &a)
}

// values is o as the query of GET /v1/allocations.
func (o AllocationListOptions) values() url.Values {
	q := url.Values{}
	if o.Room != "" {
		q.Set("room", o.Room)
	}
	if o.Server != "" {
		q.Set("server", o.Server)
	}
	if o.ActiveOnly {
		q.Set("active", "true")
	}
	if o.Stale {
		q.Set("stale", "true")
	}
	return q
}

// SaveSnapshot writes the cluster state (snapshot format) to w.
func (c *Client) SaveSnapshot(ctx context.Context, w io.Writer) error {
	var buf bytes.Buffer
	if err := c.do(ctx, "GET", "/v1/snapshot", nil, &buf); err != nil {
		return err
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// RestoreResult is the answer to a restore.
type RestoreResult struct {
	Restored    bool   `json:"restored"`
	StateHash   string `json:"state_hash"`
	Servers     int    `json:"servers"`
	Allocations int    `json:"allocations"`
}

// RestoreSnapshot replaces the cluster state with a saved snapshot. adopt
// accepts a snapshot taken from another cluster.
func (c *Client) RestoreSnapshot(ctx context.Context, data []byte, adopt bool) (RestoreResult, error) {
	var r RestoreResult
	p := "/v1/snapshot"
	if adopt {
		p += "?adopt=true"
	}
	return r, c.do(ctx, "POST", p, data, &r)
}

// ACLBootstrap creates the first operator token (once per cluster).
func (c *Client) ACLBootstrap(ctx context.Context) (ACLTokenSecret, error) {
	var t ACLTokenSecret
	return t, c.do(ctx, "POST", "/v1/acl/bootstrap", nil, &t) // not resent: Resendable
}

// mayHaveArrived reports whether a failed attempt may have reached an
// agent that can still act on it: anything but an answer that says it was
// not run, or a connection that was never made.
func mayHaveArrived(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return errcode.OutcomeUnknown(ae.Body.Code)
	}
	var op *net.OpError
	return !errors.As(err, &op) || op.Op != "dial"
}

// unsettled is the answer for the momentary refusal ae of a request of
// which an earlier attempt went unanswered (see doAfter).
func unsettled(ae *APIError) *APIError {
	err := errcode.Unsettled(ae.Body.Error)
	return &APIError{Status: http.StatusServiceUnavailable, Body: Error{Error: err.Error(), Code: errcode.Code(err), Retryable: true, Leader: ae.Body.Leader}}
}

// doNotResent sends a write that must not be sent twice (bootstrapping
// ACLs answers its secret once: a resent bootstrap that the first one beat
// would be refused and the secret lost). It waits for the answer without a
// per-attempt deadline and tries again, on the next address, only when the
// request certainly changed nothing: the connection was refused, or an
// agent answered that there is no leader to run it.
func (c *Client) doNotResent(ctx context.Context, method, path string, body []byte, out any) error {
	if len(c.addrs) == 0 {
		return ErrNoAddress
	}
	for attempt := 0; ; attempt++ {
		err := c.once(ctx, c.addrs[attempt%len(c.addrs)], method, path, body, out)
		var ae *APIError
		var op *net.OpError
		unsent := (errors.As(err, &ae) && (ae.Body.Code == "not_leader" || ae.Body.Code == "no_leader")) ||
			(errors.As(err, &op) && op.Op == "dial")
		if err == nil || !unsent || !c.Retry {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %v)", err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ACLCreateToken creates a token.
func (c *Client) ACLCreateToken(ctx context.Context, r CreateTokenRequest) (ACLTokenSecret, error) {
	var t ACLTokenSecret
	return t, c.do(ctx, "POST", "/v1/acl/tokens", mustJSON(r), &t)
}

// ACLTokens lists tokens (without secrets), all in one answer.
func (c *Client) ACLTokens(ctx context.Context) ([]ACLToken, error) {
	var t []ACLToken
	return t, c.do(ctx, "GET", "/v1/acl/tokens", nil, &t)
}

// ACLRevokeToken revokes a token by id.
func (c *Client) ACLRevokeToken(ctx context.Context, id string) error {
	_, err := c.ACLRevoke(ctx, id)
	return err
}

// ACLRevoke revokes a token by id and returns the revocation's log index.
func (c *Client) ACLRevoke(ctx context.Context, id string) (ACLRevocation, error) {
	var r ACLRevocation
	return r, c.do(ctx, "DELETE", "/v1/acl/tokens/"+url.PathEscape(id), nil, &r)
}

// MintMediaToken mints a WHIP/WHEP token for a room.
func (c *Client) MintMediaToken(ctx context.Context, r MintRequest) (MintedToken, error) {
	var t MintedToken
	return t, c.do(ctx, "POST", "/v1/media/tokens", mustJSON(r), &t)
}

// MediaKeys fetches the media-token verification keys (media nodes).
func (c *Client) MediaKeys(ctx context.Context) ([]mediatoken.Key, error) {
	var k []mediatoken.Key
	return k, c.do(ctx, "GET", "/v1/media/keys", nil, &k)
}

// RotateMediaKey adds a media-token signing key; out receives the answer.
func (c *Client) RotateMediaKey(ctx context.Context, out any) error {
	return c.do(ctx, "POST", "/v1/media/keys/rotate", nil, out) // not resent: Resendable
}
