package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/transport/transportpb"
)

// Error is a refusal answered by the cluster. It unwraps to the matching
// fsm or cluster sentinel, so errors.Is(err, fsm.ErrCapacity) works.
type Error struct {
	Code      string
	Message   string
	Retryable bool
	// Leader is the leader's id as the answering agent knew it.
	Leader string
	// Committed: a refusal the leader committed under the request id
	// (errcode.Committed).
	Committed bool
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the sentinel matching Code.
func (e *Error) Unwrap() error {
	return errcode.FromCode(e.Code, "")
}

// ServerInfo is what a media server registers.
type ServerInfo struct {
	ID        string
	Addresses []string
	Region    string
	Zone      string
	Labels    map[string]string
	Capacity  int64
	// Incarnation must be non-zero and greater on every process start (a
	// start timestamp works). It is what lets the failure detector tell a
	// restarted server from a silent one.
	Incarnation uint64
}

// Load is one load report's content (the client adds id, incarnation and
// sequence number).
type Load struct {
	CPU        float64 // 0..1 of the server's cores
	IngressBps int64
	EgressBps  int64
	Peers      int64
	Tracks     int64 // published tracks
	// SubscribedTracks counts tracks sent to subscribers: each
	// subscriber's copy of a track once.
	SubscribedTracks int64
	Rooms            []string
	// AllocationIDs lists the allocations the server hosts, newest first
	// (a report too large for one datagram keeps the first ones).
	AllocationIDs []string
	FreeUnits     int64
}

// AllocateRequest asks the cluster for units for a room.
type AllocateRequest struct {
	// RequestID makes the request idempotent: retries (after a timeout or a
	// failover) with the same id return the same allocation.
	RequestID string
	Room      string
	Units     int64
	Requester string
	Region    string
	// Server pins the allocation to one server.
	Server string
	// TTL, when positive, makes the allocation expire on its own.
	TTL time.Duration
}

// ClientConfig configures a media-node client.
type ClientConfig struct {
	// Addrs are allocator agents' QUIC addresses (host:port). The client
	// uses one at a time and moves to the next when it fails.
	Addrs []string
	// TLS is the client's mutual-TLS configuration, e.g.
	// pki.Identity.ClientConfig(transport.ALPN). Required.
	TLS    *tls.Config
	Logger *slog.Logger
	// DialTimeout bounds one connection attempt (default 2 s).
	DialTimeout time.Duration
	// IdleTimeout is how long the client waits without hearing from its
	// allocator (acknowledgements of reports included) before it declares
	// the connection dead and fails over. Default 1 s: with a 500 ms report
	// interval, a crashed allocator costs the server at most ~1.6 s without
	// a report reaching the cluster, inside the default 2 s failure window.
	// Keep-alives go out at half of it when nothing else is sent.
	IdleTimeout time.Duration
	// RequestTimeout bounds one attempt of a request (default 10 s); the
	// caller's ctx bounds all attempts.
	RequestTimeout time.Duration
}

// Client is a media node's connection to the allocator cluster. All
// methods are safe for concurrent use. See the package documentation.
type Client struct {
	cfg ClientConfig
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	dialMu sync.Mutex // serialises dialling
	mu     sync.Mutex
	conn   *quic.Conn
	addr   string
	next   int // index of the address to dial next
	wake   chan struct{}

	regMu    sync.Mutex // serialises Register and re-registration
	stateMu  sync.Mutex // guards info, drained and regConn; never held across I/O
	info     *ServerInfo
	drained  bool
	regConn  *quic.Conn // connection the registration is bound on
	seq      atomic.Uint64
	lastLoad atomic.Pointer[Load]
	failover atomic.Uint64
}

// NewClient starts a client. It connects in the background; requests wait
// for a connection (bounded by their ctx).
func NewClient(cfg ClientConfig) (*Client, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("transport client: no allocator addresses")
	}
	if cfg.TLS == nil {
		return nil, errors.New("transport client: a TLS configuration with a client certificate is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	c := &Client{cfg: cfg, log: cfg.Logger.With("component", "switchyard-client"), wake: make(chan struct{}, 1)}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(1)
	go c.supervise()
	return c, nil
}

// Close stops the client and closes its connection. Reports stop, so the
// cluster marks the server down after its failure-detection window unless
// it was deregistered.
func (c *Client) Close() error {
	c.cancel()
	c.mu.Lock()
	if c.conn != nil {
		_ = c.conn.CloseWithError(0, "client closed")
	}
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}

// Addr returns the allocator address the client is connected to, or "".
func (c *Client) Addr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil || c.conn.Context().Err() != nil {
		return ""
	}
	return c.addr
}

// Failovers counts the connections that died and were replaced.
func (c *Client) Failovers() uint64 { return c.failover.Load() }

func (c *Client) quicConfig() *quic.Config {
	return &quic.Config{EnableDatagrams: true, MaxIdleTimeout: c.cfg.IdleTimeout, KeepAlivePeriod: c.cfg.IdleTimeout / 2,
		HandshakeIdleTimeout: c.cfg.DialTimeout}
}

// current returns the live connection, if any.
func (c *Client) current() *quic.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil && c.conn.Context().Err() == nil {
		return c.conn
	}
	return nil
}

// connect returns a live connection, dialling the addresses in turn
// (starting after the last one that failed) until one answers or ctx ends.
func (c *Client) connect(ctx context.Context) (*quic.Conn, error) {
	if conn := c.current(); conn != nil {
		return conn, nil
	}
	c.dialMu.Lock()
	defer c.dialMu.Unlock()
	backoff := 20 * time.Millisecond
	var last error
	for {
		if conn := c.current(); conn != nil {
			return conn, nil
		}
		if c.ctx.Err() != nil {
			return nil, ErrClosed
		}
		c.mu.Lock()
		i := c.next % len(c.cfg.Addrs)
		c.mu.Unlock()
		addr := c.cfg.Addrs[i]
		dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
		conn, err := quic.DialAddr(dctx, addr, c.cfg.TLS, c.quicConfig())
		cancel()
		if err == nil {
			c.mu.Lock()
			c.conn, c.addr = conn, addr
			c.mu.Unlock()
			select {
			case c.wake <- struct{}{}:
			default:
			}
			c.log.Debug("connected to allocator", "addr", addr)
			return conn, nil
		}
		last = err
		c.mu.Lock()
		c.next = i + 1
		c.mu.Unlock()
		if (i+1)%len(c.cfg.Addrs) != 0 {
			continue // try the next address at once
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w (last: %v)", ErrNoConnection, ctx.Err(), last)
		case <-c.ctx.Done():
			return nil, ErrClosed
		case <-time.After(backoff):
		}
		if backoff < time.Second {
			backoff *= 2
		}
	}
}

// abandon drops conn (after it failed) so that the next connect moves to
// the next address.
func (c *Client) abandon(conn *quic.Conn) {
	c.mu.Lock()
	if c.conn == conn {
		c.conn = nil
		c.next++
	}
	c.mu.Unlock()
	_ = conn.CloseWithError(0, "abandoned")
}

// supervise keeps a connection up, and after every reconnect re-registers
// the server (same incarnation: idempotent) so that its reports are
// accepted by the new allocator, sending the latest load as soon as that
// allocator can accept it (see rebindUntil).
func (c *Client) supervise() {
	defer c.wg.Done()
	for {
		conn, err := c.connect(c.ctx)
		if err != nil {
			if c.ctx.Err() != nil {
				return
			}
			continue
		}
		if err := c.rebindUntil(conn); err != nil {
			if c.ctx.Err() != nil {
				return
			}
			c.log.Warn("re-registration after reconnect failed; moving on", "addr", c.Addr(), "err", err)
			c.abandon(conn)
			continue
		}
		select {
		case <-c.ctx.Done():
			return
		case <-conn.Context().Done():
			if c.ctx.Err() != nil {
				return
			}
			c.failover.Add(1)
			c.log.Info("allocator connection lost; failing over", "err", context.Cause(conn.Context()))
			c.abandon(conn)
		}
	}
}

// rebindUntil re-registers on conn, retrying on the same connection while
// it stays up: a retryable failure (the leader paused or being replaced)
// is not this allocator's fault, and it already accepts the server's
// reports (a re-registration binds them at once). It gives up only when
// the connection dies or the answer is final.
//
// The latest load does not wait for the re-registration to commit, which
// takes as long as the cluster needs to have a leader again: the allocator
// binds the server to this connection when it reads the register request
// of an incarnation its registry already holds, before relaying it, and
// accepts reports from then on. A report is a datagram and the request a
// stream, so one sent right after the request may still be read first and
// dropped (not bound yet); earlyReports therefore sends the latest load
// from the moment the request is written, again on a short doubling
// schedule, until the re-registration is answered. A report accepted that
// way is an ordinary one: the allocator still checks it against the
// binding, which only this server's certificate creates, by a registration
// that commits or by re-registering the incarnation the registry holds.
func (c *Client) rebindUntil(conn *quic.Conn) error {
	sent := make(chan struct{})
	var once sync.Once
	written := func() { once.Do(func() { close(sent) }) }
	answered := make(chan struct{})
	defer close(answered)
	c.wg.Add(1)
	go c.earlyReports(conn, sent, answered)
	backoff := 50 * time.Millisecond
	for {
		err := c.rebind(conn, written)
		if err == nil || conn.Context().Err() != nil || c.ctx.Err() != nil || !errcode.Retryable(err) {
			return err
		}
		c.log.Info("re-registration after reconnect not committed yet; retrying", "addr", c.Addr(), "err", err)
		select {
		case <-c.ctx.Done():
			return c.ctx.Err()
		case <-conn.Context().Done():
			return err
		case <-time.After(backoff):
		}
		if backoff < time.Second {
			backoff *= 2
		}
	}
}

// Early reports: the first goes out as soon as the register request is
// written, the next earlyFirst later, each gap doubling, earlyCount in all
// (about 0.6 s). Enough for an allocator to read the request even on a
// busy machine, and bounded so that a re-registration the cluster cannot
// commit (no quorum) does not keep repeating an old load on its own; the
// caller's reports and the report after the commit take over from there.
const (
	earlyFirst = 5 * time.Millisecond
	earlyCount = 8
)

// earlyReports sends the latest load on conn when sent is closed (the
// register request is written) and then on the early schedule, until
// answered is closed (the re-registration ended), conn dies or the
// client closes. It sends nothing if no load was reported yet.
func (c *Client) earlyReports(conn *quic.Conn, sent, answered <-chan struct{}) {
	defer c.wg.Done()
	var timer <-chan time.Time // nil until the request is written
	gap := earlyFirst
	for i := 0; i < earlyCount; i++ {
		select {
		case <-sent:
			sent = nil // fires once: the first report goes out at once
		case <-timer:
		case <-answered:
			return
		case <-conn.Context().Done():
			return
		case <-c.ctx.Done():
			return
		}
		l := c.lastLoad.Load()
		if l == nil {
			return
		}
		if err := c.sendReport(conn, *l); err != nil {
			c.log.Debug("early load report not sent", "err", err)
			return
		}
		timer = time.After(gap)
		gap *= 2
	}
}

// rebind registers the server again on conn if it was registered on an
// earlier connection; written is called once the register request is on
// its way.
func (c *Client) rebind(conn *quic.Conn, written func()) error {
	c.regMu.Lock()
	defer c.regMu.Unlock()
	c.stateMu.Lock()
	info, drained, bound := c.info, c.drained, c.regConn == conn
	c.stateMu.Unlock()
	if info == nil || bound {
		return nil
	}
	ctx, cancel := context.WithTimeout(c.ctx, 3*c.cfg.RequestTimeout)
	defer cancel()
	if _, err := c.doOnSent(ctx, conn, registerReq(*info), written); err != nil {
		return err
	}
	if drained {
		if _, err := c.doOn(ctx, conn, drainReq(info.ID)); err != nil {
			return err
		}
	}
	c.stateMu.Lock()
	c.regConn = conn
	c.stateMu.Unlock()
	if l := c.lastLoad.Load(); l != nil {
		_ = c.sendReport(conn, *l)
	}
	return nil
}

func registerReq(info ServerInfo) *transportpb.Request {
	return &transportpb.Request{Version: RequestVersion, Body: &transportpb.Request_Register{Register: &transportpb.RegisterRequest{Server: &fsmpb.Server{
		Id: info.ID, Addresses: info.Addresses, Region: info.Region, Zone: info.Zone, Labels: info.Labels,
		CapacityUnits: info.Capacity, Incarnation: info.Incarnation,
	}}}}
}

func drainReq(id string) *transportpb.Request {
	return &transportpb.Request{Version: RequestVersion, Body: &transportpb.Request_Drain{Drain: &transportpb.DrainRequest{ServerId: id}}}
}

// do sends req on the current connection, moving to another allocator when
// the connection fails and retrying retryable answers with backoff, until
// it gets a final answer or ctx ends. Every request is idempotent, so
// retries are safe.
func (c *Client) do(ctx context.Context, req *transportpb.Request) (*transportpb.Response, error) {
	backoff := 20 * time.Millisecond
	// unanswered: an earlier attempt may have reached an agent that can
	// still act on it; a momentary refusal (errcode.Momentary) from a
	// later attempt then does not settle the request, since that copy may
	// still be granted, and is reported as errcode.Unsettled instead.
	unanswered := false
	for {
		conn, err := c.connect(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := c.doOn(ctx, conn, req)
		if err == nil {
			return resp, nil
		}
		var e *Error
		if errors.As(err, &e) && !e.Retryable {
			if unanswered && errcode.Unsettling(e.Code, e.Committed) {
				return nil, errcode.Unsettled(e.Message)
			}
			return nil, err
		}
		unanswered = unanswered || e == nil || errcode.OutcomeUnknown(e.Code)
		if conn.Context().Err() != nil {
			c.abandon(conn)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-c.ctx.Done():
			return nil, ErrClosed
		case <-time.After(backoff):
		}
		if backoff < 500*time.Millisecond {
			backoff *= 2
		}
	}
}

// doOn is one attempt on conn.
func (c *Client) doOn(ctx context.Context, conn *quic.Conn, req *transportpb.Request) (*transportpb.Response, error) {
	return c.doOnSent(ctx, conn, req, nil)
}

// doOnSent is doOn, calling sent (when not nil) once the request is
// written.
func (c *Client) doOnSent(ctx context.Context, conn *quic.Conn, req *transportpb.Request, sent func()) (*transportpb.Response, error) {
	resp, err := roundTrip(ctx, conn, req, c.cfg.RequestTimeout, sent)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errcode.ErrUnknownOutcome, err)
	}
	if resp.GetErrorCode() != "" {
		return resp, &Error{Code: resp.GetErrorCode(), Message: resp.GetErrorMessage(), Retryable: resp.GetRetryable(), Leader: resp.GetLeader(), Committed: resp.GetCommitted()}
	}
	return resp, nil
}

// Register registers (or updates) this media server and binds it to the
// client: after a failover the client re-registers it with the same
// incarnation on its own. Registering is idempotent. It waits for a
// connection and retries retryable failures until ctx ends.
func (c *Client) Register(ctx context.Context, info ServerInfo) (*fsmpb.Server, error) {
	if info.ID == "" || info.Capacity <= 0 {
		return nil, fmt.Errorf("%w: register needs an id and a positive capacity", errcode.ErrInvalid)
	}
	c.regMu.Lock()
	defer c.regMu.Unlock()
	backoff := 20 * time.Millisecond
	for {
		conn, err := c.connect(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := c.doOn(ctx, conn, registerReq(info))
		if err == nil {
			i := info
			c.stateMu.Lock()
			if c.info != nil && c.info.Incarnation != i.Incarnation {
				c.seq.Store(0)
			}
			c.info, c.drained, c.regConn = &i, false, conn
			c.stateMu.Unlock()
			return resp.GetServer(), nil
		}
		var e *Error
		if errors.As(err, &e) && !e.Retryable {
			return nil, err
		}
		if conn.Context().Err() != nil {
			c.abandon(conn)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-time.After(backoff):
		}
		if backoff < 500*time.Millisecond {
			backoff *= 2
		}
	}
}

// Allocate asks the cluster for units for a room (placement by the
// leader's policy, or on req.Server). The same RequestID always returns
// the same allocation; duplicate says this was an earlier answer.
func (c *Client) Allocate(ctx context.Context, req AllocateRequest) (a *fsmpb.Allocation, duplicate bool, err error) {
	if req.RequestID == "" {
		return nil, false, fmt.Errorf("%w: request id is required", errcode.ErrInvalid)
	}
	resp, err := c.do(ctx, &transportpb.Request{Version: RequestVersion, Body: &transportpb.Request_Allocate{Allocate: &transportpb.AllocateRequest{
		RequestId: req.RequestID, Room: req.Room, Units: req.Units, Requester: req.Requester, Region: req.Region,
		Server: req.Server, TtlMs: req.TTL.Milliseconds(),
	}}})
	if err != nil {
		return nil, false, err
	}
	return resp.GetAllocation(), resp.GetDuplicate(), nil
}

// Release ends an allocation, by allocation id or request id. Releasing an
// ended allocation succeeds and changes nothing.
func (c *Client) Release(ctx context.Context, id string) (*fsmpb.Allocation, error) {
	resp, err := c.do(ctx, &transportpb.Request{Version: RequestVersion, Body: &transportpb.Request_Release{Release: &transportpb.ReleaseRequest{Id: id}}})
	if err != nil {
		return nil, err
	}
	return resp.GetAllocation(), nil
}

// Drain marks the registered server draining: it keeps its allocations and
// gets no new ones. The client remembers it and drains again after a
// failover re-registration. Idempotent.
func (c *Client) Drain(ctx context.Context) (*fsmpb.Server, error) {
	c.stateMu.Lock()
	info := c.info
	c.stateMu.Unlock()
	if info == nil {
		return nil, ErrNotRegistered
	}
	resp, err := c.do(ctx, drainReq(info.ID))
	if err != nil {
		return nil, err
	}
	c.stateMu.Lock()
	c.drained = true
	c.stateMu.Unlock()
	return resp.GetServer(), nil
}

// Report sends one load report as a QUIC datagram, at once. It does not
// wait for the network; it can wait briefly only when 32 datagrams are
// already queued on the connection (quic-go's send queue), which a report
// interval of hundreds of milliseconds never reaches. Reports are unreliable by design: a lost one is superseded by
// the next, so call Report on a fixed interval (e.g. every 500 ms). The
// client stamps the server id, incarnation and next sequence number, and
// re-sends the latest load after a failover. It returns ErrNotRegistered
// before Register succeeded and ErrNoConnection while disconnected (the
// load is kept and sent on reconnection).
func (c *Client) Report(l Load) error {
	c.stateMu.Lock()
	registered := c.info != nil
	c.stateMu.Unlock()
	if !registered {
		return ErrNotRegistered
	}
	c.lastLoad.Store(&l)
	conn := c.current()
	if conn == nil {
		return ErrNoConnection
	}
	return c.sendReport(conn, l)
}

func (c *Client) sendReport(conn *quic.Conn, l Load) error {
	c.stateMu.Lock()
	info := c.info
	c.stateMu.Unlock()
	if info == nil {
		return ErrNotRegistered
	}
	r := &transportpb.LoadReport{
		ServerId: info.ID, Incarnation: info.Incarnation, Seq: c.seq.Add(1),
		Cpu: l.CPU, IngressBps: l.IngressBps, EgressBps: l.EgressBps, Peers: l.Peers, Tracks: l.Tracks,
		SubscribedTracks: l.SubscribedTracks, Rooms: l.Rooms, AllocationIds: l.AllocationIDs, FreeUnits: l.FreeUnits, SentAtUnixUs: time.Now().UnixMicro(),
	}
	b, err := EncodeReport(r, 0)
	if err != nil {
		return err
	}
	if err := conn.SendDatagram(b); err != nil {
		return fmt.Errorf("send report: %w", err)
	}
	return nil
}
