package quicapi

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"golang.org/x/time/rate"

	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/loadview"
	"github.com/switchyard/switchyard/pki"
	"github.com/switchyard/switchyard/service"
	"github.com/switchyard/switchyard/transport"
	"github.com/switchyard/switchyard/transport/transportpb"
)

// Backend is the allocator node a Server serves. *cluster.Node implements
// it. Requests run through the service layer (service.Node), with the HTTP
// API's rules and codes.
type Backend interface {
	service.Node
	ID() string
	IsLeader() bool
	Leader() (string, *fsmpb.Member, bool)
	// IsPeer reports whether id is a server of raft's configuration (the
	// agents allowed to relay requests).
	IsPeer(id string) bool
}

// State is the read side of the node's replica the listener consults:
// whether a server or an agent is known. *fsm.FSM implements it.
type State interface {
	Server(id string) (*fsmpb.Server, bool)
	Member(id string) (*fsmpb.Member, bool)
	Members() []*fsmpb.Member
}

// Defaults of ServerConfig.
const (
	DefaultDatagramRate    = 100
	DefaultDatagramBurst   = 200
	DefaultRequestTimeout  = 5 * time.Second
	DefaultHandlerTimeout  = 15 * time.Second
	DefaultForwardInterval = 50 * time.Millisecond
	DefaultMaxIdleTimeout  = 10 * time.Second
	DefaultViewRetention   = 10 * time.Minute
	// forwardChunk caps the reports in one ReportBatch frame.
	forwardChunk = 4096
)

// ServerConfig configures the QUIC listener of one agent.
type ServerConfig struct {
	// Addr is the UDP host:port to listen on.
	Addr string
	// Identity is the agent's certificate and the cluster CA. Required:
	// media nodes and other agents must present a certificate of this CA.
	Identity *pki.Identity
	Backend  Backend
	// State is the node's replica (read only).
	State State
	// View receives the reports this agent gets: from its own media nodes,
	// and those every other agent shares.
	View       *loadview.View
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// DatagramRate and DatagramBurst limit datagrams per connection
	// (token bucket); excess datagrams are dropped and counted. A negative
	// rate disables the limit.
	DatagramRate  float64
	DatagramBurst int
	// RequestTimeout is how long a peer has to send a whole request once
	// it opened a stream; a stream that stalls is cancelled and counted.
	RequestTimeout time.Duration
	// HandlerTimeout bounds the handling of one request (commit included).
	HandlerTimeout time.Duration
	// ForwardInterval is how long an agent coalesces its media nodes'
	// reports before it shares the latest per server with the other agents.
	ForwardInterval time.Duration
	// MaxIdleTimeout closes connections silent for this long.
	MaxIdleTimeout time.Duration
	// ViewRetention drops view entries of servers not heard from for this
	// long (deregistered or long dead), so the view does not grow forever.
	ViewRetention time.Duration
}

func (c ServerConfig) withDefaults() (ServerConfig, error) {
	if c.Identity == nil {
		return c, fmt.Errorf("%w: the QUIC listener needs a TLS identity (--tls-ca/--tls-cert/--tls-key)", cluster.ErrBadConfig)
	}
	if c.Backend == nil || c.State == nil || c.View == nil {
		return c, fmt.Errorf("%w: the QUIC listener needs a backend, its state and a load view", cluster.ErrBadConfig)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.DatagramRate == 0 {
		c.DatagramRate = DefaultDatagramRate
	}
	if c.DatagramBurst <= 0 {
		c.DatagramBurst = DefaultDatagramBurst
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.HandlerTimeout <= 0 {
		c.HandlerTimeout = DefaultHandlerTimeout
	}
	if c.ForwardInterval <= 0 {
		c.ForwardInterval = DefaultForwardInterval
	}
	if c.MaxIdleTimeout <= 0 {
		c.MaxIdleTimeout = DefaultMaxIdleTimeout
	}
	if c.ViewRetention <= 0 {
		c.ViewRetention = DefaultViewRetention
	}
	return c, nil
}

// Server is one agent's QUIC endpoint: it accepts media-node and agent
// connections, ingests load datagrams into the view, serves requests on
// streams (relaying them to the leader from a follower) and shares the
// latest report per server of its own media nodes with every other agent.
type Server struct {
	cfg ServerConfig
	svc *service.Service
	log *slog.Logger
	m   *Metrics
	ln  *quic.Listener
	tr  *quic.Transport

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// hot-path counters, resolved once.
	dAccepted, dStale, dLimited, dNotBound, dOverflow prometheus.Counter
	ingest                                            chan inbound

	bindMu   sync.RWMutex
	bindings map[string]*peerConn // server id -> connection that registered it

	connsMu sync.Mutex
	conns   map[*peerConn]struct{}

	peers *peers
	fwd   *forwarder
}

// peerConn is one accepted connection.
type peerConn struct {
	conn    *quic.Conn
	name    string // client certificate CommonName
	limiter *rate.Limiter
	id      pki.CertIdentity // role and name the certificate carries (auth.go)
}

// NewServer binds the UDP address and starts serving. Close stops it.
func NewServer(cfg ServerConfig) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, svc: service.New(cfg.Backend), log: cfg.Logger.With("component", "quic"), m: newMetrics(cfg.Registerer),
		bindings: map[string]*peerConn{}, conns: map[*peerConn]struct{}{}}
	s.dAccepted = s.m.Datagrams.WithLabelValues("accepted")
	s.dStale = s.m.Datagrams.WithLabelValues("stale")
	s.dLimited = s.m.Datagrams.WithLabelValues("rate_limited")
	s.dNotBound = s.m.Datagrams.WithLabelValues("not_bound")
	s.dOverflow = s.m.Datagrams.WithLabelValues("overflow")
	s.ingest = make(chan inbound, ingestQueue)
	tlsConf := cfg.Identity.ServerConfig(func(err error) {
		reason := "untrusted_cert"
		if errors.Is(err, pki.ErrNoClientCert) {
			reason = "no_client_cert"
		}
		s.m.HandshakesRefused.WithLabelValues(reason).Inc()
	}, transport.ALPN)
	udp, err := net.ListenPacket("udp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on quic address %s: %w", cfg.Addr, err)
	}
	if uc, ok := udp.(*net.UDPConn); ok {
		_ = uc.SetReadBuffer(4 << 20)
	}
	s.tr = &quic.Transport{Conn: udp, StatelessResetKey: resetKey(cfg.Identity)}
	s.ln, err = s.tr.Listen(tlsConf, s.quicConfig())
	if err != nil {
		_ = udp.Close()
		return nil, fmt.Errorf("quic listen on %s: %w", cfg.Addr, err)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.peers = newPeers(s)
	s.fwd = newForwarder(s)
	workers := runtime.GOMAXPROCS(0)
	s.wg.Add(2 + workers)
	go s.acceptLoop()
	go s.fwd.run()
	for i := 0; i < workers; i++ {
		go s.ingestWorker()
	}
	s.log.Info("quic listener started", "addr", s.Addr().String())
	return s, nil
}

func (s *Server) quicConfig() *quic.Config {
	return &quic.Config{
		EnableDatagrams:       true,
		MaxIdleTimeout:        s.cfg.MaxIdleTimeout,
		KeepAlivePeriod:       s.cfg.MaxIdleTimeout / 4,
		HandshakeIdleTimeout:  5 * time.Second,
		MaxIncomingStreams:    256,
		MaxIncomingUniStreams: 4,
	}
}

// Addr is the UDP address the listener is bound to.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Metrics exposes the listener's counters.
func (s *Server) Metrics() *Metrics { return s.m }

// Close stops accepting, closes every connection and waits for every
// goroutine the server started. Safe to call more than once.
func (s *Server) Close() error {
	s.cancel()
	err := s.ln.Close()
	s.connsMu.Lock()
	for pc := range s.conns {
		_ = pc.conn.CloseWithError(0, "agent shutting down")
	}
	s.connsMu.Unlock()
	s.peers.close()
	s.wg.Wait()
	_ = s.tr.Close()
	_ = s.tr.Conn.Close()
	if errors.Is(err, quic.ErrServerClosed) {
		err = nil
	}
	return err
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept(s.ctx)
		if err != nil {
			return
		}
		pc := &peerConn{conn: conn, name: pki.PeerName(conn.ConnectionState().TLS), id: peerIdentity(conn.ConnectionState().TLS)}
		if s.cfg.DatagramRate > 0 {
			pc.limiter = rate.NewLimiter(rate.Limit(s.cfg.DatagramRate), s.cfg.DatagramBurst)
		}
		s.connsMu.Lock()
		if s.ctx.Err() != nil {
			s.connsMu.Unlock()
			_ = conn.CloseWithError(0, "agent shutting down")
			return
		}
		s.conns[pc] = struct{}{}
		s.connsMu.Unlock()
		s.m.Connections.Inc()
		s.m.OpenConnections.Inc()
		s.wg.Add(3)
		go s.datagramLoop(pc)
		go s.streamLoop(pc)
		go s.uniStreamLoop(pc)
	}
}

// connDone runs when a connection's datagram loop ends (the connection is
// gone): it forgets the connection and its bindings.
func (s *Server) connDone(pc *peerConn) {
	s.connsMu.Lock()
	delete(s.conns, pc)
	s.connsMu.Unlock()
	s.m.OpenConnections.Dec()
	s.bindMu.Lock()
	for id, owner := range s.bindings {
		if owner == pc {
			delete(s.bindings, id)
		}
	}
	s.bindMu.Unlock()
}

// datagramLoop drains the connection's datagrams as fast as they come
// (quic-go keeps only 128 queued per connection and silently drops the
// rest): it only applies the connection's rate limit and hands each
// datagram to the shared ingest queue, whose workers decode and apply it.
// A flooding peer is cut by its own limiter before it reaches the shared
// queue, so it cannot crowd out the others.
func (s *Server) datagramLoop(pc *peerConn) {
	defer s.wg.Done()
	defer s.connDone(pc)
	ctx := pc.conn.Context()
	for {
		b, err := pc.conn.ReceiveDatagram(ctx)
		if err != nil {
			return
		}
		now := time.Now()
		if pc.limiter != nil && !pc.limiter.AllowN(now, 1) {
			s.dLimited.Inc()
			continue
		}
		select {
		case s.ingest <- inbound{pc: pc, b: b, at: now}:
		default:
			s.dOverflow.Inc()
		}
	}
}

// inbound is one datagram waiting for an ingest worker.
type inbound struct {
	pc *peerConn
	b  []byte
	at time.Time
}

// ingestQueue is the shared queue's capacity: ~100 ms of datagrams at
// 100k/s, to ride out scheduling hiccups.
const ingestQueue = 16384

// ingestWorker applies queued datagrams until the server stops.
func (s *Server) ingestWorker() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case in := <-s.ingest:
			s.handleDatagram(in.pc, in.b, in.at)
		}
	}
}

func (s *Server) handleDatagram(pc *peerConn, b []byte, now time.Time) {
	r, err := transport.DecodeDatagram(b)
	if err != nil {
		s.m.Datagrams.WithLabelValues(transport.Reason(err)).Inc()
		return
	}
	s.bindMu.RLock()
	owner := s.bindings[r.GetServerId()]
	s.bindMu.RUnlock()
	if owner != pc {
		if owner == nil {
			// Slow path (clones the record) only for refused reports, which
			// the rate limiter above already bounds.
			if _, ok := s.cfg.State.Server(r.GetServerId()); !ok {
				s.m.Datagrams.WithLabelValues("unknown_server").Inc()
				return
			}
		}
		s.dNotBound.Inc()
		return
	}
	if !s.cfg.View.Offer(r, now) {
		s.dStale.Inc()
		return
	}
	s.dAccepted.Inc()
	s.fwd.add(r, now)
}

func (s *Server) bind(id string, pc *peerConn) {
	s.bindMu.Lock()
	s.bindings[id] = pc
	s.bindMu.Unlock()
}

func (s *Server) streamLoop(pc *peerConn) {
	defer s.wg.Done()
	for {
		st, err := pc.conn.AcceptStream(pc.conn.Context())
		if err != nil {
			return
		}
		s.wg.Add(1)
		go s.handleStream(pc, st)
	}
}

// Application error codes on streams and connections.
const (
	codeRequestTimeout quic.StreamErrorCode = 1
	codeBadRequest     quic.StreamErrorCode = 2
	codeRefused        quic.StreamErrorCode = 3
)

func (s *Server) handleStream(pc *peerConn, st *quic.Stream) {
	defer s.wg.Done()
	_ = st.SetReadDeadline(time.Now().Add(s.cfg.RequestTimeout))
	req := &transportpb.Request{}
	if err := transport.ReadFrame(st, transport.MaxRequestFrame, req); err != nil {
		reason := transport.Reason(err)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			reason = "timeout"
		}
		if errors.Is(err, context.Canceled) || pc.conn.Context().Err() != nil {
			reason = "closed"
		}
		s.m.StreamErrors.WithLabelValues(reason).Inc()
		code := codeBadRequest
		if reason == "timeout" {
			code = codeRequestTimeout
		}
		st.CancelRead(code)
		st.CancelWrite(code)
		return
	}
	ctx, cancel := context.WithTimeout(pc.conn.Context(), s.cfg.HandlerTimeout)
	defer cancel()
	op, resp := s.dispatch(ctx, pc, req)
	code := resp.GetErrorCode()
	if code == "" {
		code = "ok"
	}
	s.m.Requests.WithLabelValues(op, code).Inc()
	_ = st.SetWriteDeadline(time.Now().Add(s.cfg.RequestTimeout))
	if err := transport.WriteFrame(st, resp); err != nil {
		st.CancelWrite(codeBadRequest)
		return
	}
	_ = st.Close()
}

// opName names a request's operation for metrics and logs.
func opName(req *transportpb.Request) string {
	switch req.GetBody().(type) {
	case *transportpb.Request_Register:
		return "register"
	case *transportpb.Request_Allocate:
		return "allocate"
	case *transportpb.Request_Release:
		return "release"
	case *transportpb.Request_Drain:
		return "drain"
	}
	return "unknown"
}

// dispatch answers one request: on the leader by running it, on a follower
// by relaying it to the leader (once: a relayed request is never relayed
// again).
func (s *Server) dispatch(ctx context.Context, pc *peerConn, req *transportpb.Request) (string, *transportpb.Response) {
	op := opName(req)
	if req.GetVersion() != transport.RequestVersion {
		return op, s.errResponse(fmt.Errorf("%w: request version %d, this agent speaks %d", fsm.ErrUnsupportedVersion, req.GetVersion(), transport.RequestVersion))
	}
	if op == "unknown" {
		return op, s.errResponse(fmt.Errorf("%w: request has no known body", fsm.ErrInvalid))
	}
	if err := authorize(pc, req, s.cfg.Backend.IsPeer); err != nil { // auth.go: the acl package's check
		return op, s.errResponse(err)
	}
	if r := req.GetRegister(); r != nil && req.GetForwardedBy() == "" {
		// A media node that failed over re-registers the incarnation the
		// registry already holds: accept its reports on this connection at
		// once, not only after the commit. With the leader paused or being
		// replaced that commit can take seconds, and reports dropped
		// meanwhile as unbound would get the server marked down.
		if cur, ok := s.cfg.State.Server(r.GetServer().GetId()); ok && cur.GetIncarnation() != 0 && cur.GetIncarnation() == r.GetServer().GetIncarnation() {
			s.bind(cur.GetId(), pc)
		}
	}
	if !s.cfg.Backend.IsLeader() {
		if req.GetForwardedBy() != "" {
			return op, s.errResponse(cluster.ErrNotLeader)
		}
		resp, err := s.peers.relay(ctx, req)
		if err != nil {
			return op, s.errResponse(err)
		}
		if resp.GetErrorCode() == "" {
			if r := req.GetRegister(); r != nil {
				s.bind(r.GetServer().GetId(), pc)
			}
		}
		return op, resp
	}
	resp, err := s.handle(ctx, pc, req)
	if err != nil {
		return op, s.errResponse(err)
	}
	return op, resp
}

// handle runs a request on the leader through the service layer: the
// HTTP API's rules, idempotency and codes.
func (s *Server) handle(ctx context.Context, pc *peerConn, req *transportpb.Request) (*transportpb.Response, error) {
	switch body := req.GetBody().(type) {
	case *transportpb.Request_Register:
		v, err := s.svc.RegisterServer(ctx, body.Register.GetServer())
		if err != nil {
			return nil, err
		}
		if req.GetForwardedBy() == "" {
			s.bind(v.GetId(), pc)
		}
		return &transportpb.Response{Server: v}, nil
	case *transportpb.Request_Allocate:
		a := body.Allocate
		al, dup, err := s.svc.Allocate(ctx, service.AllocateInput{RequestID: a.GetRequestId(), Room: a.GetRoom(), Units: a.GetUnits(),
			Requester: a.GetRequester(), Region: a.GetRegion(), Server: a.GetServer(), TTLMs: a.GetTtlMs()})
		if err != nil {
			return nil, err
		}
		return &transportpb.Response{Allocation: al, Duplicate: dup}, nil
	case *transportpb.Request_Release:
		al, err := s.svc.Release(ctx, body.Release.GetId())
		if err != nil {
			return nil, err
		}
		return &transportpb.Response{Allocation: al}, nil
	case *transportpb.Request_Drain:
		v, err := s.svc.DrainServer(ctx, body.Drain.GetServerId())
		if err != nil {
			return nil, err
		}
		return &transportpb.Response{Server: v}, nil
	}
	return nil, fmt.Errorf("%w: request has no known body", fsm.ErrInvalid)
}

// errResponse turns err into a Response with its stable code and retry
// hint: errcode's table, shared with the HTTP API and the clients.
func (s *Server) errResponse(err error) *transportpb.Response {
	lid, _, _ := s.cfg.Backend.Leader()
	r := &transportpb.Response{ErrorMessage: err.Error(), Leader: lid}
	ent, ok := errcode.Lookup(err)
	if !ok {
		r.ErrorCode = errcode.Internal
		s.log.Error("quic request failed", "err", err)
		return r
	}
	r.ErrorCode, r.Retryable, r.Committed = ent.Code, ent.Retryable, errcode.IsCommitted(err)
	return r
}

// uniStreamLoop accepts report-sharing streams, only from other agents (a
// peer whose certificate names a member of the cluster).
func (s *Server) uniStreamLoop(pc *peerConn) {
	defer s.wg.Done()
	for {
		st, err := pc.conn.AcceptUniStream(pc.conn.Context())
		if err != nil {
			return
		}
		if _, ok := s.cfg.State.Member(pc.name); !ok || !pc.id.IsAgent() {
			s.m.StreamErrors.WithLabelValues("refused").Inc()
			st.CancelRead(codeRefused)
			continue
		}
		s.wg.Add(1)
		go s.readReports(pc, st)
	}
}

// readReports ingests ReportBatch frames from another agent until the
// stream or the connection ends. Each report is dated by when it reached
// the agent that shared it (its age), and is only offered to the view:
// shared reports are never shared again.
func (s *Server) readReports(pc *peerConn, st *quic.ReceiveStream) {
	defer s.wg.Done()
	recv := s.m.Forwarded.WithLabelValues("received")
	for {
		var b transportpb.ReportBatch
		if err := transport.ReadFrame(st, transport.MaxBatchFrame, &b); err != nil {
			if pc.conn.Context().Err() == nil && s.ctx.Err() == nil {
				s.log.Debug("report stream ended", "peer", pc.name, "err", err)
			}
			st.CancelRead(codeBadRequest)
			return
		}
		now := time.Now()
		for _, fr := range b.GetReports() {
			r := fr.GetReport()
			if transport.ValidReport(r) != nil {
				s.m.Datagrams.WithLabelValues("malformed").Inc()
				continue
			}
			recv.Inc()
			s.cfg.View.Offer(r, now.Add(-time.Duration(fr.GetAgeMs())*time.Millisecond))
		}
	}
}

// clientTLS returns the client TLS configuration agents use towards each
// other.
func (s *Server) clientTLS() *tls.Config {
	return pki.RequireAgent(s.cfg.Identity.ClientConfig(transport.ALPN), nil) // peers are agents
}

// resetKey derives the QUIC stateless reset key from the agent's private
// key, so it is the same across restarts: a restarted agent answers
// packets of its predecessor's connections with a stateless reset, and
// peers (agents forwarding to it, media nodes) learn at once that the
// connection is gone instead of writing into it until the idle timeout.
// Nil (no resets) when the key cannot be encoded.
func resetKey(id *pki.Identity) *quic.StatelessResetKey {
	der, err := x509.MarshalPKCS8PrivateKey(id.Cert.PrivateKey)
	if err != nil {
		return nil
	}
	k := quic.StatelessResetKey(sha256.Sum256(append([]byte("switchyard quic stateless reset v1\x00"), der...)))
	return &k
}
