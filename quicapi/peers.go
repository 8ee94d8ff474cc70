package quicapi

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/loadview"
	"github.com/switchyard/switchyard/transport"
	"github.com/switchyard/switchyard/transport/transportpb"
)

// peers holds this agent's outgoing QUIC connections to other agents (in
// practice, to the leader), dialled from the listener's own UDP socket.
type peers struct {
	s     *Server
	mu    sync.Mutex
	conns map[string]*quic.Conn // by quic address
}

func newPeers(s *Server) *peers { return &peers{s: s, conns: map[string]*quic.Conn{}} }

// dialTimeout bounds one agent-to-agent dial. Loopback and LAN handshakes
// take milliseconds; a dead leader must not stall forwarding for longer
// than a fraction of the failure-detection window.
const dialTimeout = time.Second

// conn returns a live connection to addr, dialling one if needed. The
// dial is abandoned as soon as addr stops being the leader's address.
func (p *peers) conn(ctx context.Context, addr string) (*quic.Conn, error) {
	p.mu.Lock()
	if c, ok := p.conns[addr]; ok {
		if c.Context().Err() == nil {
			p.mu.Unlock()
			return c, nil
		}
		delete(p.conns, addr)
	}
	p.mu.Unlock()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("resolve leader quic address %s: %w", addr, err)
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	go func() {
		t := time.NewTicker(25 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-dctx.Done():
				return
			case <-t.C:
				if a, err := p.leaderAddr(); err == nil && a != addr {
					cancel()
					return
				}
			}
		}
	}()
	c, err := p.s.tr.Dial(dctx, ua, p.s.clientTLS(), p.s.quicConfig())
	if err != nil {
		return nil, fmt.Errorf("dial leader at %s: %w", addr, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, ok := p.conns[addr]; ok && cur.Context().Err() == nil {
		_ = c.CloseWithError(0, "duplicate")
		return cur, nil
	}
	if p.s.ctx.Err() != nil {
		_ = c.CloseWithError(0, "agent shutting down")
		return nil, transport.ErrClosed
	}
	p.conns[addr] = c
	return c, nil
}

func (p *peers) drop(addr string, c *quic.Conn) {
	p.mu.Lock()
	if p.conns[addr] == c {
		delete(p.conns, addr)
	}
	p.mu.Unlock()
	_ = c.CloseWithError(0, "dropped")
}

func (p *peers) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a, c := range p.conns {
		_ = c.CloseWithError(0, "agent shutting down")
		delete(p.conns, a)
	}
}

// leaderAddr returns the leader's QUIC address, or a retryable error.
func (p *peers) leaderAddr() (string, error) {
	lid, m, ok := p.s.cfg.Backend.Leader()
	if !ok {
		return "", cluster.ErrNoLeader
	}
	if lid == p.s.cfg.Backend.ID() || m == nil || m.GetQuicAddr() == "" {
		// We are the leader but not ready, or its address is not known yet.
		return "", cluster.ErrNotLeader
	}
	return m.GetQuicAddr(), nil
}

// relay sends req to the leader and returns its answer. A transport
// failure after the request may have been sent is reported as an unknown
// outcome (retryable: every request is idempotent). With a backend that
// can fail over (cluster.Node.Forward), each attempt is bounded by the raft
// timing and the request is re-sent to a new leader when leadership moves
// or the leader goes silent, as the HTTP API does.
func (p *peers) relay(ctx context.Context, req *transportpb.Request) (*transportpb.Response, error) {
	fwd := &transportpb.Request{Version: req.GetVersion(), Body: req.GetBody(), ForwardedBy: p.s.cfg.Backend.ID()}
	fw, ok := p.s.cfg.Backend.(leaderForwarder)
	if !ok {
		addr, err := p.leaderAddr()
		if err != nil {
			return nil, err
		}
		return p.relayTo(ctx, addr, fwd)
	}
	var resp *transportpb.Response
	st, err := fw.Forward(ctx, true, func(ctx context.Context, lid string, m *fsmpb.Member) error {
		if m.GetQuicAddr() == "" {
			return fmt.Errorf("%w: leader %s has no known QUIC address", cluster.ErrNotLeader, lid)
		}
		r, err := p.relayTo(ctx, m.GetQuicAddr(), fwd)
		if err != nil {
			return err
		}
		if c := r.GetErrorCode(); c == "not_leader" || c == "no_leader" {
			return fmt.Errorf("%w: %s answered: %s", cluster.ErrNotLeader, lid, r.GetErrorMessage())
		}
		resp = r
		return nil
	})
	if st.Attempts > 1 {
		p.s.log.Info("relayed request failed over to another leader", "op", opName(req), "attempts", st.Attempts, "leaders", st.Leaders, "err", err)
	}
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// leaderForwarder is implemented by backends that bound forwarded
// attempts and fail them over to a new leader (*cluster.Node).
type leaderForwarder interface {
	Forward(ctx context.Context, idempotent bool, send cluster.ForwardFunc) (cluster.ForwardStats, error)
}

// relayTo sends fwd to the agent at addr once and returns its answer.
func (p *peers) relayTo(ctx context.Context, addr string, fwd *transportpb.Request) (*transportpb.Response, error) {
	c, err := p.conn(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", cluster.ErrNotLeader, err)
	}
	resp, err := transport.RoundTrip(ctx, c, fwd, p.s.cfg.HandlerTimeout)
	if err != nil {
		if c.Context().Err() != nil {
			p.drop(addr, c)
		}
		return nil, fmt.Errorf("%w: relay to leader at %s: %v", cluster.ErrUnknownOutcome, addr, err)
	}
	return resp, nil
}

// forwarder coalesces the reports a follower receives (latest per server)
// and sends them to the leader every ForwardInterval, packed into
// ReportBatch frames on one long-lived unidirectional stream.
type forwarder struct {
	s       *Server
	mu      sync.Mutex
	pending map[string]pendingReport
	// kick wakes run when pending goes from empty to non-empty.
	kick chan struct{}
	// owned by run
	addr   string
	stream *quic.SendStream
	conn   *quic.Conn
}

type pendingReport struct {
	r   *transportpb.LoadReport
	got time.Time
}

// forwardWriteTimeout bounds one write of forwarded reports.
const forwardWriteTimeout = 200 * time.Millisecond

func newForwarder(s *Server) *forwarder {
	return &forwarder{s: s, pending: map[string]pendingReport{}, kick: make(chan struct{}, 1)}
}

// add queues r for the leader unless this agent leads.
func (f *forwarder) add(r *transportpb.LoadReport, got time.Time) {
	if f.s.cfg.Backend.IsLeader() {
		return
	}
	f.mu.Lock()
	first := len(f.pending) == 0
	if cur, ok := f.pending[r.GetServerId()]; !ok || loadview.Newer(r, cur.r) {
		f.pending[r.GetServerId()] = pendingReport{r: r, got: got}
	}
	f.mu.Unlock()
	if first {
		select {
		case f.kick <- struct{}{}:
		default:
		}
	}
}

// run flushes pending reports at most once per ForwardInterval: at once
// when the previous flush is older than that (a lone report goes out
// without waiting), otherwise at the interval's end, so that under load
// every frame packs all the servers heard from in one interval.
func (f *forwarder) run() {
	defer f.s.wg.Done()
	prune := time.NewTicker(max(f.s.cfg.ViewRetention/10, time.Second))
	defer prune.Stop()
	defer f.reset()
	var last time.Time
	for {
		select {
		case <-f.s.ctx.Done():
			return
		case <-prune.C:
			if n := f.s.cfg.View.Prune(time.Now().Add(-f.s.cfg.ViewRetention)); n > 0 {
				f.s.log.Info("dropped load view entries of servers silent for long", "servers", n, "retention", f.s.cfg.ViewRetention)
			}
			continue
		case <-f.kick:
		}
		if wait := time.Until(last.Add(f.s.cfg.ForwardInterval)); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-f.s.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		last = time.Now()
		f.flush()
	}
}

func (f *forwarder) take() map[string]pendingReport {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pending) == 0 {
		return nil
	}
	p := f.pending
	f.pending = make(map[string]pendingReport, len(p))
	return p
}

func (f *forwarder) flush() {
	batch := f.take()
	if batch == nil {
		return
	}
	dropped := f.s.m.Forwarded.WithLabelValues("dropped")
	if f.s.cfg.Backend.IsLeader() {
		return // already in our own view
	}
	addr, err := f.s.peers.leaderAddr()
	if err != nil {
		dropped.Add(float64(len(batch)))
		return
	}
	if err := f.ensureStream(addr); err != nil {
		f.s.log.Debug("cannot forward reports to leader", "leader", addr, "err", err)
		dropped.Add(float64(len(batch)))
		return
	}
	now := time.Now()
	msg := &transportpb.ReportBatch{FromNode: f.s.cfg.Backend.ID(), Reports: make([]*transportpb.ForwardedReport, 0, min(len(batch), forwardChunk))}
	send := func() error {
		if len(msg.Reports) == 0 {
			return nil
		}
		// A paused or dying leader stops acknowledging, and a quic-go
		// stream write then blocks: give up quickly and drop the batch
		// (reports are ephemeral; the next ones go to whoever leads then).
		// A long wait here starved the new leader's view for a whole
		// failure-detection window after a leader change.
		_ = f.stream.SetWriteDeadline(time.Now().Add(forwardWriteTimeout))
		err := transport.WriteFrame(f.stream, msg)
		if err == nil {
			f.s.m.Forwarded.WithLabelValues("sent").Add(float64(len(msg.Reports)))
		} else {
			dropped.Add(float64(len(msg.Reports)))
		}
		msg.Reports = msg.Reports[:0]
		return err
	}
	for _, p := range batch {
		age := now.Sub(p.got).Milliseconds()
		if age < 0 {
			age = 0
		}
		msg.Reports = append(msg.Reports, &transportpb.ForwardedReport{Report: p.r, AgeMs: uint32(age)})
		if len(msg.Reports) >= forwardChunk {
			if err := send(); err != nil {
				f.fail()
				return
			}
		}
	}
	if err := send(); err != nil {
		f.s.log.Debug("forward reports to leader failed", "leader", addr, "err", err)
		f.fail()
	}
}

// fail drops the stream and its connection after a failed write: the peer
// may be a dead process whose connection still looks open (until its idle
// timeout), and the next flush must dial afresh rather than reuse it.
func (f *forwarder) fail() {
	addr, c := f.addr, f.conn
	f.reset()
	if c != nil {
		f.s.peers.drop(addr, c)
	}
}

func (f *forwarder) ensureStream(addr string) error {
	if f.stream != nil && f.addr == addr && f.conn.Context().Err() == nil {
		return nil
	}
	f.reset()
	ctx, cancel := context.WithTimeout(f.s.ctx, 2*dialTimeout)
	defer cancel()
	c, err := f.s.peers.conn(ctx, addr)
	if err != nil {
		return err
	}
	st, err := c.OpenUniStreamSync(ctx)
	if err != nil {
		f.s.peers.drop(addr, c)
		return fmt.Errorf("open report stream: %w", err)
	}
	f.addr, f.conn, f.stream = addr, c, st
	return nil
}

func (f *forwarder) reset() {
	if f.stream != nil {
		f.stream.CancelWrite(0)
	}
	f.addr, f.conn, f.stream = "", nil, nil
}
