package quicapi

import (
	"context"
	"fmt"
	"math"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/loadview"
	"github.com/switchyard/switchyard/transport"
	"github.com/switchyard/switchyard/transport/transportpb"
)

// peers holds this agent's outgoing QUIC connections to other agents (to
// the leader for relayed requests, to every agent for shared reports),
// dialled from the listener's own UDP socket.
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

// conn returns a live connection to addr, dialling one if needed. With
// followLeader (a relayed request), the dial is abandoned as soon as addr
// stops being the leader's address.
func (p *peers) conn(ctx context.Context, addr string, followLeader bool) (*quic.Conn, error) {
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
		return nil, fmt.Errorf("resolve agent quic address %s: %w", addr, err)
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	if followLeader {
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
	}
	c, err := p.s.tr.Dial(dctx, ua, p.s.clientTLS(), p.s.quicConfig())
	if err != nil {
		return nil, fmt.Errorf("dial agent at %s: %w", addr, err)
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
	if st.Unanswered && errcode.Unsettling(resp.GetErrorCode(), resp.GetCommitted()) {
		// An earlier attempt went unanswered and may still be granted:
		// the refusal does not settle the request.
		return nil, errcode.Unsettled(resp.GetErrorMessage())
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
	c, err := p.conn(ctx, addr, true)
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

// forwarder shares the reports this agent's own media nodes send (latest
// per server) with every other agent of the cluster, the leader included,
// at most once per ForwardInterval, packed into ReportBatch frames on one
// long-lived unidirectional stream per agent. So every agent, not only the
// leader, holds the whole fleet's latest reports, and a new leader places
// on fresh load from its first decision instead of waiting for reports to
// find it. Shared reports are never shared again (readReports offers them
// to the view only), so a report crosses at most one agent-to-agent hop.
type forwarder struct {
	s       *Server
	mu      sync.Mutex
	pending map[string]pendingReport
	// kick wakes run when pending goes from empty to non-empty.
	kick chan struct{}
	// owned by run: the sender of each other agent, by QUIC address
	out map[string]*agentSender
}

type pendingReport struct {
	r   *transportpb.LoadReport
	got time.Time
}

// forwardWriteTimeout bounds one write of shared reports.
const forwardWriteTimeout = 200 * time.Millisecond

func newForwarder(s *Server) *forwarder {
	return &forwarder{s: s, pending: map[string]pendingReport{}, kick: make(chan struct{}, 1), out: map[string]*agentSender{}}
}

// add queues r, which a media node connected to this agent sent, for the
// other agents.
func (f *forwarder) add(r *transportpb.LoadReport, got time.Time) {
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
	defer f.stopAll()
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

// targets lists the QUIC addresses of every other agent, the leader first
// (its sender is handed the batch first).
func (f *forwarder) targets() []string {
	self := f.s.cfg.Backend.ID()
	lead, _ := f.s.peers.leaderAddr()
	out := []string{}
	if lead != "" {
		out = append(out, lead)
	}
	for _, m := range f.s.cfg.State.Members() {
		if a := m.GetQuicAddr(); m.GetId() != self && a != "" && a != lead {
			out = append(out, a)
		}
	}
	return out
}

// flush hands the pending reports to the sender of every other agent and
// returns at once: no agent is waited for.
func (f *forwarder) flush() {
	batch := f.take()
	if batch == nil {
		return
	}
	targets := f.targets()
	for addr, a := range f.out {
		if !slices.Contains(targets, addr) {
			a.stop() // no longer a member
			delete(f.out, addr)
		}
	}
	for _, addr := range targets {
		a := f.out[addr]
		if a == nil {
			a = f.startSender(addr)
			f.out[addr] = a
		}
		a.enqueue(batch)
	}
}

// stopAll stops every sender (run's goroutine, at shutdown).
func (f *forwarder) stopAll() {
	for addr, a := range f.out {
		a.stop()
		delete(f.out, addr)
	}
}

// agentSender carries shared reports to one agent on its own goroutine, so
// that a dead or paused agent (a dial that runs into its timeout, a write
// that blocks until forwardWriteTimeout) delays the reports to nobody
// else. Reports handed to it while it is busy are merged, latest per
// server, and go out with its next write: a slow agent gets fewer, fuller
// frames, never an older report in place of a newer one.
type agentSender struct {
	f      *forwarder
	addr   string
	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{}

	mu    sync.Mutex
	queue map[string]pendingReport
	// owned says queue is this sender's own map; otherwise it is a batch
	// shared with the other senders, copied before it is merged into.
	owned bool

	// owned by the sender's goroutine
	conn   *quic.Conn
	stream *quic.SendStream
}

func (f *forwarder) startSender(addr string) *agentSender {
	a := &agentSender{f: f, addr: addr, wake: make(chan struct{}, 1)}
	a.ctx, a.cancel = context.WithCancel(f.s.ctx)
	f.s.wg.Add(1)
	go a.run()
	return a
}

func (a *agentSender) stop() { a.cancel() }

// enqueue merges batch into the reports waiting for this agent and wakes
// the sender. batch is shared with the other senders and never modified:
// an idle sender (the usual case) takes it as it is.
func (a *agentSender) enqueue(batch map[string]pendingReport) {
	a.mu.Lock()
	switch {
	case len(a.queue) == 0:
		a.queue, a.owned = batch, false
	default:
		if !a.owned {
			q := make(map[string]pendingReport, len(a.queue)+len(batch))
			for id, p := range a.queue {
				q[id] = p
			}
			a.queue, a.owned = q, true
		}
		for id, p := range batch {
			if cur, ok := a.queue[id]; !ok || loadview.Newer(p.r, cur.r) {
				a.queue[id] = p
			}
		}
	}
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *agentSender) take() map[string]pendingReport {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.queue) == 0 {
		return nil
	}
	q := a.queue
	a.queue, a.owned = nil, false
	return q
}

func (a *agentSender) run() {
	defer a.f.s.wg.Done()
	defer a.closeStream()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-a.wake:
		}
		if batch := a.take(); batch != nil {
			a.send(batch)
		}
	}
}

// send writes batch to the agent, opening a stream when there is none or
// its connection died. After a failure the stream and the connection are
// dropped: the peer may be a dead process whose connection still looks
// open until its idle timeout, and the next send must dial afresh rather
// than reuse it. Reports that could not be sent are dropped (reports are
// ephemeral: newer ones follow).
func (a *agentSender) send(batch map[string]pendingReport) {
	m := a.f.s.m.Forwarded
	if a.stream == nil || a.conn.Context().Err() != nil {
		a.closeStream()
		if err := a.open(); err != nil {
			a.f.s.log.Debug("cannot share reports", "agent", a.addr, "err", err)
			m.WithLabelValues("dropped").Add(float64(len(batch)))
			return
		}
	}
	// Ages are taken now, after any wait for a dial: the receiver dates
	// each report by when it reached this agent, not by when it arrived.
	now := time.Now()
	msg := &transportpb.ReportBatch{FromNode: a.f.s.cfg.Backend.ID(), Reports: make([]*transportpb.ForwardedReport, 0, min(len(batch), forwardChunk))}
	left := len(batch)
	write := func() bool {
		// A paused or dying agent stops acknowledging, and a quic-go
		// stream write then blocks: give up quickly.
		_ = a.stream.SetWriteDeadline(time.Now().Add(forwardWriteTimeout))
		if err := transport.WriteFrame(a.stream, msg); err != nil {
			a.f.s.log.Debug("share reports failed", "agent", a.addr, "err", err)
			m.WithLabelValues("dropped").Add(float64(left))
			c := a.conn
			a.closeStream()
			a.f.s.peers.drop(a.addr, c)
			return false
		}
		m.WithLabelValues("sent").Add(float64(len(msg.Reports)))
		left -= len(msg.Reports)
		msg.Reports = msg.Reports[:0]
		return true
	}
	for _, p := range batch {
		age := now.Sub(p.got).Milliseconds()
		if age < 0 {
			age = 0
		}
		msg.Reports = append(msg.Reports, &transportpb.ForwardedReport{Report: p.r, AgeMs: uint32(min(age, math.MaxUint32))})
		if len(msg.Reports) >= forwardChunk && !write() {
			return
		}
	}
	if len(msg.Reports) > 0 {
		write()
	}
}

func (a *agentSender) open() error {
	ctx, cancel := context.WithTimeout(a.ctx, 2*dialTimeout)
	defer cancel()
	c, err := a.f.s.peers.conn(ctx, a.addr, false)
	if err != nil {
		return err
	}
	st, err := c.OpenUniStreamSync(ctx)
	if err != nil {
		a.f.s.peers.drop(a.addr, c)
		return fmt.Errorf("open report stream: %w", err)
	}
	a.conn, a.stream = c, st
	return nil
}

func (a *agentSender) closeStream() {
	if a.stream != nil {
		a.stream.CancelWrite(0)
	}
	a.conn, a.stream = nil, nil
}
