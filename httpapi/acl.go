package httpapi

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard/switchyard/acl"
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/internal/connlimit"
	"github.com/switchyard/switchyard/pki"
)

// aclState is the handler's ACL configuration and metrics.
type aclState struct {
	enabled bool
	https   bool
	refused *prometheus.CounterVec
	limits  rateLimits
}

// SetRateLimits sets the per-credential and per-address (anonymous)
// request rates; 0 keeps the default, a negative rate turns that limit off.
// Limits apply while ACLs are on. Call before serving.
func (s *Handler) SetRateLimits(token, anonymous float64) {
	s.acl.limits.token, s.acl.limits.anon = token, anonymous
}

// rateLimits keeps one token bucket per credential and per anonymous
// source (an IPv4 address or an IPv6 /64), in separate maps: anonymous
// sources are unbounded in number, so their map is the one forgotten
// when it grows too large, never the credentials' buckets.
type rateLimits struct {
	token, anon float64
	mu          sync.Mutex
	buckets     map[string]*rate.Limiter // credentials
	anonBuckets map[string]*rate.Limiter // anonymous sources
}

// maxAnonBuckets bounds the anonymous sources remembered; past it they
// are all forgotten at once (a reset only forgives).
const maxAnonBuckets = 100000

// allow takes one request from key's bucket; false means refuse with 429
// after the returned wait.
func (l *rateLimits) allow(key string, anonymous bool) (bool, time.Duration) {
	r := l.token
	if r == 0 {
		r = DefaultTokenRate
	}
	if anonymous {
		r = l.anon
		if r == 0 {
			r = DefaultAnonymousRate
		}
	}
	if r < 0 {
		return true, 0
	}
	l.mu.Lock()
	if l.buckets == nil {
		l.buckets = map[string]*rate.Limiter{}
	}
	if l.anonBuckets == nil || len(l.anonBuckets) > maxAnonBuckets {
		l.anonBuckets = map[string]*rate.Limiter{}
	}
	m := l.buckets
	if anonymous {
		m = l.anonBuckets
	}
	b, ok := m[key]
	if !ok {
		b = rate.NewLimiter(rate.Limit(r), int(2*r)+1)
		m[key] = b
	}
	l.mu.Unlock()
	now := time.Now()
	res := b.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// bodyLimit is the largest request body a route accepts: 1 MiB, but
// snapshots (operator only) may be up to maxBody.
func bodyLimit(r *http.Request) int64 {
	if r.URL.Path == "/v1/snapshot" {
		return maxBody
	}
	return maxJSONBody
}

// EnableACL turns authorization on (default-deny): from then on every
// request needs a credential allowed to perform it. Call before serving.
func (s *Handler) EnableACL() { s.acl.enabled = true }

// ACLEnabled reports whether authorization is on.
func (s *Handler) ACLEnabled() bool { return s.acl.enabled }

func (s *Handler) registerACLRoutes() {
	s.acl.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchyard_http_refused_total",
		Help: "Admin API requests refused before they were served, by reason (unauthenticated, permission_denied, cross_origin, unsupported_media_type, body_too_large, rate_limited).",
	}, []string{"reason"})
	s.reg.MustRegister(s.acl.refused)
	s.handle("POST /v1/acl/bootstrap", s.aclBootstrap, true)
	s.handle("POST /v1/acl/tokens", s.aclCreate, true)
	s.handle("GET /v1/acl/tokens", s.aclList, false)
	s.handle("DELETE /v1/acl/tokens/{id}", s.aclRevoke, true)
	s.registerMediaTokenRoutes() // mediatoken.go
}

// routePerm is the authorization table of the HTTP API: the permission
// each route pattern needs. Routes missing from it need PermRead for GET
// and PermOperator for anything else, so a new route is never open by
// accident.
func routePerm(pattern string) acl.Perm {
	switch pattern {
	case "GET /v1/internal/info", "POST /v1/acl/bootstrap":
		return acl.PermNone
	case "GET /v1/status", "GET /v1/members", "GET /v1/servers", "GET /v1/servers/{id}",
		"GET /v1/allocations", "GET /v1/allocations/{id}", "GET /metrics", "GET /v1/policy",
		"GET /v1/provisioning/intents", "POST /v1/policy/validate":
		return acl.PermRead
	case "POST /v1/allocations", "POST /v1/allocations/batch", "DELETE /v1/allocations/{id}", "POST /v1/media/tokens":
		return acl.PermAllocate
	case "GET /v1/media/keys":
		return acl.PermMediaKeys
	case "POST /v1/servers", "DELETE /v1/servers/{id}", "POST /v1/servers/{id}/drain", "POST /v1/rooms/{room}/vacate":
		return acl.PermServer
	case "GET /v1/snapshot", "POST /v1/snapshot", "GET /v1/acl/tokens":
		return acl.PermOperator
	}
	method, path, _ := strings.Cut(pattern, " ")
	switch {
	case strings.HasPrefix(path, "/debug/pprof/"):
		return acl.PermOperator // profiles show internals and cost CPU
	case (method == http.MethodGet || method == http.MethodHead) && (strings.HasPrefix(path, "/v1/health/") || path == "/healthz" || path == "/readyz" || path == "/livez"):
		return acl.PermNone // load balancer and Kubernetes probes stay open
	case strings.HasPrefix(path, "/v1/rooms"):
		if method == http.MethodGet {
			return acl.PermRead
		}
		return acl.PermAllocate // the allocator role places rooms
	case method == http.MethodGet || method == http.MethodHead:
		if path == "/" || path == "/{$}" || path == "" || path == "/ui" || strings.HasPrefix(path, "/ui/") {
			return acl.PermNone // static UI assets; their API calls carry a token
		}
		return acl.PermRead
	}
	return acl.PermOperator
}

// guard runs before routing: browser protection, then authentication and
// authorization. It answers refused requests itself and returns false;
// otherwise it returns the request to serve, whose context names the ACL
// token that authorized it (cluster.WithACLToken: the leader's commands
// carry it, and Apply refuses them once the token is revoked).
func (s *Handler) guard(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	sent := s.namesSender(r) // forwarded by a member
	if !sent {
		// Only a member forwarding a request says whom it forwards for,
		// or that it could not check the request's token.
		r.Header.Del(principalHeader)
		r.Header.Del(unverifiedHeader)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodOptions {
		if o := r.Header.Get("Origin"); o != "" {
			if u, err := url.Parse(o); err != nil || u.Host != r.Host {
				return r, s.refuse(w, http.StatusForbidden, "cross_origin", "permission_denied",
					fmt.Sprintf("cross-origin %s from %q refused (the admin API is not for browsers of other sites)", r.Method, o))
			}
		}
		// No Content-Type is accepted (curl --data-binary, old clients): a
		// browser sends one with every body, and Origin with every
		// cross-site write.
		if ct := r.Header.Get("Content-Type"); ct != "" {
			mt, _, _ := mime.ParseMediaType(ct)
			if mt != "application/json" && mt != "application/x-protobuf" && mt != "application/octet-stream" {
				return r, s.refuse(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "unsupported_media_type",
					fmt.Sprintf("Content-Type %q refused: send application/json", ct))
			}
		}
	}
	// Bodies are capped before anything reads (or forwards) them.
	if lim := bodyLimit(r); r.ContentLength > lim {
		return r, s.refuse(w, http.StatusRequestEntityTooLarge, "body_too_large", "invalid_argument",
			fmt.Sprintf("request body of %d bytes is over the %d-byte limit", r.ContentLength, lim))
	} else if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, lim)
	}
	if !s.acl.enabled {
		return r, true
	}
	_, pattern := s.mux.Handler(r)
	perm := routePerm(pattern)
	p, err := s.principal(r)
	if p.Role != acl.RoleAgent && !sent { // a member's forward was limited where it arrived
		key, anon := "p:"+p.Kind+":"+p.ID, p.Kind == "anonymous"
		if anon {
			key = "a:" + anonSource(r.RemoteAddr)
		}
		if ok, wait := s.acl.limits.allow(key, anon); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
			return r, s.refuse(w, http.StatusTooManyRequests, "rate_limited", "rate_limited",
				fmt.Sprintf("too many requests from %s; retry after %v", p, wait.Round(time.Millisecond)))
		}
	}
	if err == nil {
		authz := p
		if p.Role == acl.RoleAgent && perm == acl.PermServer && !s.b.FeatureOn(cluster.FeatureForwardedPrincipal) {
			// A follower of an older release forwards a media node's
			// request as itself: until every voter names the sender,
			// an agent certificate keeps the rights it had.
			authz.Role = fsm.RoleOperator
		}
		err = acl.Authorize(authz, perm, s.targetServer(r, pattern, authz))
	}
	if err != nil {
		if errors.Is(err, acl.ErrUnknownToken) && r.Header.Get(forwardedHeader) == "" && !s.b.IsLeader() {
			// A token created a moment ago may not be applied here yet:
			// the leader (which applied it before answering) decides. Such
			// a request is capped at the JSON limit before the forward
			// buffers it: an unknown secret is no credential, and a
			// snapshot-sized body would let anyone fill this agent's memory.
			if r.ContentLength > maxJSONBody {
				return r, s.refuse(w, http.StatusUnauthorized, "unauthenticated", "unauthenticated",
					fmt.Sprintf("%v (this agent does not know the token and passes it to the leader only with a body up to %d bytes)", err, maxJSONBody))
			}
			if r.Body != nil {
				r.Body = http.MaxBytesReader(w, r.Body, maxJSONBody)
			}
			// This agent cannot audit a token it does not know: the
			// leader, which does, logs the request.
			r.Header.Set(unverifiedHeader, "1")
			s.forward(w, r)
			return r, false
		}
		// A bad credential is refused even where none is needed.
		if errors.Is(err, acl.ErrUnauthenticated) {
			return r, s.refuse(w, http.StatusUnauthorized, "unauthenticated", "unauthenticated", err.Error())
		}
		return r, s.refuse(w, http.StatusForbidden, "permission_denied", "permission_denied", err.Error())
	}
	if p.Kind == "cert" && !sent {
		// A forwarded request is authorized again on the leader as the
		// certificate that sent it here, not as this agent.
		r.Header.Set(principalHeader, p.Role+" "+url.PathEscape(p.ID))
	}
	// The agent that received a write logs it; a leader does not log again
	// what a member forwarded, unless that member could not check the
	// token (it was not applied there yet).
	if r.Method != http.MethodGet && r.Method != http.MethodHead && p.Role != fsm.RoleMedia && p.Kind != "anonymous" && (!sent || r.Header.Get(unverifiedHeader) != "") {
		s.log.Info("audit", "principal", p.Kind, "id", p.ID, "role", p.Role, "description", p.Description,
			"operation", pattern, "target", r.URL.Path, "forwarded_by", r.Header.Get(forwardedHeader))
	}
	if p.Kind == "token" {
		r = r.WithContext(cluster.WithACLToken(r.Context(), p.ID))
	}
	return r, true
}

// refuse answers a refused request and counts it.
func (s *Handler) refuse(w http.ResponseWriter, status int, reason, code, msg string) bool {
	s.acl.refused.WithLabelValues(reason).Inc()
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="switchyard"`)
	}
	writeError(w, status, &api.Error{Error: msg, Code: code})
	return false
}

// principal identifies the sender: a bearer token if one is given (a bad
// one is an error even when a certificate is presented), else the verified
// client certificate of an HTTPS connection, else anonymous.
func (s *Handler) principal(r *http.Request) (acl.Principal, error) {
	secret, err := acl.ParseBearer(r.Header.Get("Authorization"))
	if err != nil {
		return acl.Anonymous, err
	}
	if secret != "" {
		return acl.Resolve(s.st, secret, time.Now())
	}
	if v := r.Header.Get(principalHeader); v != "" {
		return forwardedPrincipal(v) // guard kept it only on a member's forward (namesSender)
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		// The TLS layer verified the chain against the cluster CA.
		id := pki.PeerIdentity(r.TLS.PeerCertificates[0])
		switch id.Role {
		case pki.RoleAgent:
			return acl.Principal{Kind: "cert", Role: acl.RoleAgent, ID: id.Name}, nil
		case pki.RoleMedia:
			return acl.Principal{Kind: "cert", Role: fsm.RoleMedia, ID: id.Name, Server: id.Name}, nil
		}
	}
	return acl.Anonymous, nil
}

// unverifiedHeader marks a request a member forwards with a token it
// does not know (created a moment ago, not applied there yet): it could
// neither check nor audit it, so the leader audits it. Honoured only on a
// member's forward (namesSender); it can only cause an audit line.
const unverifiedHeader = "X-Switchyard-Unverified-Token"

// principalHeader carries, on a request a follower forwards, the
// certificate principal the follower authenticated ("ROLE NAME", the name
// path-escaped). The leader honours it only on a forward from a member
// that sends it (namesSender; guard drops it from anyone else), so a
// media certificate's request is authorized as that media server on the
// leader too, and an agent certificate never lends its own rights to it.
const principalHeader = "X-Switchyard-Principal"

// namesSender reports whether r is a request forwarded by a member that
// names the sender's certificate in principalHeader: it came over HTTPS
// with a certificate of the agent role whose name is a member of the
// cluster, that member marked it forwarded (forwardedHeader is its id),
// and its member entry lists FeatureForwardedPrincipal (a member of an
// earlier release passes its clients' headers on unchecked).
func (s *Handler) namesSender(r *http.Request) bool {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return false
	}
	id := pki.PeerIdentity(r.TLS.PeerCertificates[0])
	if id.Role != pki.RoleAgent || id.Name == "" || r.Header.Get(forwardedHeader) != id.Name {
		return false
	}
	return s.st.MemberLists(id.Name, cluster.FeatureForwardedPrincipal)
}

// forwardedPrincipal parses a principalHeader value.
func forwardedPrincipal(v string) (acl.Principal, error) {
	role, esc, _ := strings.Cut(v, " ")
	name, err := url.PathUnescape(esc)
	if err != nil || name == "" {
		return acl.Anonymous, fmt.Errorf("%w: forwarded principal %q is malformed", acl.ErrUnauthenticated, v)
	}
	switch role {
	case acl.RoleAgent:
		return acl.Principal{Kind: "cert", Role: acl.RoleAgent, ID: name}, nil
	case fsm.RoleMedia:
		return acl.Principal{Kind: "cert", Role: fsm.RoleMedia, ID: name, Server: name}, nil
	}
	return acl.Anonymous, fmt.Errorf("%w: forwarded principal %q has an unknown role", acl.ErrUnauthenticated, v)
}

// targetServer is the media server id a PermServer route acts on, for
// principals bound to one server (the body is read and put back).
func (s *Handler) targetServer(r *http.Request, pattern string, p acl.Principal) string {
	if p.Server == "" {
		return ""
	}
	if pattern == "DELETE /v1/servers/{id}" || pattern == "POST /v1/servers/{id}/drain" {
		// The escaped path, unescaped once: r.URL.Path is unescaped already,
		// and unescaping it again would let "m1%2Fx" pass as m1's.
		if parts := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/"); len(parts) >= 3 {
			id, err := url.PathUnescape(parts[2])
			if err == nil {
				return id
			}
		}
		return "\x00invalid"
	}
	if (pattern == "POST /v1/servers" || pattern == "POST /v1/rooms/{room}/vacate") && r.Body != nil {
		b, err := io.ReadAll(io.LimitReader(r.Body, maxJSONBody+1))
		r.Body = io.NopCloser(bytes.NewReader(b))
		if err != nil {
			return ""
		}
		var req struct {
			ID     string `json:"id"`     // a registration
			Server string `json:"server"` // a room's vacation
		}
		_ = json.Unmarshal(b, &req)
		if pattern == "POST /v1/rooms/{room}/vacate" {
			return req.Server
		}
		return req.ID
	}
	return ""
}

// maxJSONBody bounds JSON request bodies.
const maxJSONBody = 1 << 20

// keepACL makes a restored snapshot keep the cluster's current ACL table,
// so a restore can never change who holds credentials.
func (s *Handler) keepACL(st *fsmpb.State) {
	cur := s.st.Export()
	st.AclBootstrapped, st.AclTokens, st.MediaKeys = cur.GetAclBootstrapped(), cur.GetAclTokens(), cur.GetMediaKeys()
}

func tokenFromPB(t *fsmpb.AclToken) api.ACLToken {
	return api.ACLToken{ID: t.GetId(), Role: t.GetRole(), Description: t.GetDescription(),
		CreatedAtUnixMs: t.GetCreatedAtUnixMs(), ExpiresAtUnixMs: t.GetExpiresAtUnixMs(), Server: t.GetServer()}
}

func (s *Handler) aclBootstrap(w http.ResponseWriter, r *http.Request) {
	if s.st.ACLBootstrapped() {
		s.fail(w, fmt.Errorf("%w: ACLs were bootstrapped already; use an operator token to create more", fsm.ErrACLBootstrapped))
		return
	}
	s.createToken(w, r, api.CreateTokenRequest{Role: fsm.RoleOperator, Description: "bootstrap token"}, true)
}

func (s *Handler) aclCreate(w http.ResponseWriter, r *http.Request) {
	var req api.CreateTokenRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, err)
		return
	}
	s.createToken(w, r, req, false)
}

func (s *Handler) createToken(w http.ResponseWriter, r *http.Request, req api.CreateTokenRequest, bootstrap bool) {
	if req.TTLMs < 0 || req.TTLMs > api.MaxTokenTTL.Milliseconds() {
		s.fail(w, fmt.Errorf("%w: ttl_ms must be between 0 (no expiry) and %d", fsm.ErrInvalid, api.MaxTokenTTL.Milliseconds()))
		return
	}
	id, secret, err := acl.NewSecret()
	if err != nil {
		s.fail(w, err)
		return
	}
	t := &fsmpb.AclToken{Id: id, SecretHash: acl.HashSecret(secret), Role: req.Role, Description: req.Description, Server: req.Server}
	if req.Server != "" && !s.b.FeatureOn(cluster.FeatureMediaTokenServer) {
		s.fail(w, fmt.Errorf("%w: not every voter runs a release that binds a media token to a server; finish the upgrade first", fsm.ErrInvalid))
		return
	}
	if req.TTLMs > 0 {
		t.ExpiresAtUnixMs = time.Now().UnixMilli() + req.TTLMs
	}
	if err := fsm.ValidateToken(t); err != nil {
		s.fail(w, err)
		return
	}
	if err := s.b.CreateACLToken(r.Context(), t, bootstrap); err != nil {
		s.fail(w, err)
		return
	}
	s.log.Info("acl token created", "id", id, "role", t.Role, "description", t.Description, "server", t.Server, "bootstrap", bootstrap)
	writeJSON(w, http.StatusOK, api.ACLTokenSecret{ID: id, Secret: secret, Role: t.Role, Description: t.Description, ExpiresAtUnixMs: t.ExpiresAtUnixMs, Server: t.Server})
}

func (s *Handler) aclList(w http.ResponseWriter, r *http.Request) {
	tokens, err := page(w, r, s.st.ACLTokens(), (*fsmpb.AclToken).GetId)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSONList(w, tokens, func(t *fsmpb.AclToken) any { return tokenFromPB(t) })
}

func (s *Handler) aclRevoke(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	index, err := s.b.RevokeACLToken(r.Context(), id)
	if err != nil {
		s.fail(w, err)
		return
	}
	s.log.Info("acl token revoked", "id", id, "index", index)
	writeJSON(w, http.StatusOK, api.ACLRevocation{Revoked: id, RevokedAtIndex: index})
}

// SetForwardTLS makes the handler forward to the leader over HTTPS with cfg
// (the agent's own certificate, so the leader sees an agent).
func (s *Handler) SetForwardTLS(cfg *tls.Config) {
	tr := api.NewTransport()
	tr.TLSClientConfig = cfg
	s.fwd = &http.Client{Timeout: s.fwd.Timeout, Transport: tr}
	s.acl.https = cfg != nil
}

func (s *Handler) fwdScheme() string {
	if s.acl.https {
		return "https"
	}
	return "http"
}

// Default request rate limits (per agent): a token (or an agent's and media
// node's certificate) may send DefaultTokenRate requests per second (bursts
// of twice that), a client without a valid credential DefaultAnonymousRate
// per source address. Agents' own certificates are not limited.
const (
	DefaultTokenRate     = 2000
	DefaultAnonymousRate = 100
)

// anonSource names the source an anonymous request's rate is counted
// under: the source connlimit caps connections by (an IPv4 address or an
// IPv6 /64), or the host as given for what is not an IP address.
func anonSource(remote string) string {
	if p, ok := connlimit.Source(remote); ok {
		if p.Addr().Is4() {
			return p.Addr().String()
		}
		return p.String()
	}
	host, _, _ := net.SplitHostPort(remote)
	return host
}
