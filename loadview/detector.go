package loadview

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// DefaultWindow is the failure-detection window: with media nodes reporting
// every 500 ms, four reports in a row must be lost before a server is
// marked down.
const DefaultWindow = 2 * time.Second

// Committer is what the detector needs from the leader: marking a server
// down (conditional on the incarnation it saw) and re-registering one that
// came back on a new incarnation. *cluster.Node implements it.
type Committer interface {
	SetServerState(ctx context.Context, id string, state fsmpb.ServerState, ifIncarnation uint64) (*fsmpb.Server, error)
	RegisterServer(ctx context.Context, s *fsmpb.Server) (*fsmpb.Server, error)
}

// ServerLister lists the registered servers. *fsm.FSM implements it.
type ServerLister interface {
	Servers() []*fsmpb.Server
}

// serverScanner is a ServerLister that can visit servers without copying
// them (*fsm.FSM): a pass over 100,000 servers then costs a few ms instead
// of cloning and sorting the whole registry every tick.
type serverScanner interface {
	EachServer(fn func(s *fsmpb.Server))
}

// watched is what a detection pass needs of one server.
type watched struct {
	id          string
	incarnation uint64
	state       fsmpb.ServerState
	changedAtMs int64
	used        int64
}

// watchedServers lists the servers with a non-zero incarnation.
func (d *Detector) watchedServers(buf []watched) []watched {
	add := func(s *fsmpb.Server) {
		if s.GetIncarnation() != 0 {
			buf = append(buf, watched{id: s.GetId(), incarnation: s.GetIncarnation(), state: s.GetState(),
				changedAtMs: s.GetStateChangedAtUnixMs(), used: s.GetUsedUnits()})
		}
	}
	if sc, ok := d.Servers.(serverScanner); ok {
		sc.EachServer(add)
		return buf
	}
	for _, s := range d.Servers.Servers() {
		add(s)
	}
	return buf
}

// Detector marks media servers down when the leader's load view has had no
// report from them for Window, and brings them back when a report with a
// newer incarnation arrives.
//
// Only servers with a non-zero incarnation are watched: a server declares
// an incarnation when a process (a media node) manages its lifecycle and
// reports load; servers registered by hand with incarnation 0 are managed
// by the operator and never marked down.
//
// Guarantees: a server is marked down only if no report of its current
// incarnation (or a newer one) was received for Window, measured from the
// latest of: its last report, its last state change, and the moment this
// leader took over (it waits one full window before it marks anything
// down), and only if the detector itself ran a window's worth of passes
// (Window/tick of them) during that silence. The down mark is conditional
// on the incarnation (SetServerState.if_incarnation), so a mark decided on
// stale data cannot override a fresh registration.
//
// The count of passes keeps the leader's own stalls out of the servers'
// silence. A leader process that got no CPU for a while (a starved machine,
// a stop-the-world pause, a frozen VM) received nothing meanwhile: the
// reports wait in its socket buffers and are stamped when it reads them.
// Measured by the wall clock alone, the stall would count as every
// server's silence, and the first pass after it (which may run before the
// queued reports are read) would mark servers down that never stopped
// reporting. With the count, a stall of any length is one pass, so a server is marked down
// only after it stayed silent while the detector was running, for about a
// window of running time. A leader that runs normally decides exactly as by
// the wall clock.
type Detector struct {
	View       *View
	Servers    ServerLister
	Node       Committer
	Window     time.Duration
	Log        *slog.Logger
	Now        func() time.Time
	MarkedDown prometheus.Counter // optional
	Revived    prometheus.Counter // optional
}

// Run watches until ctx ends. It is meant for cluster.Node.OnLeader: ctx
// ends when leadership does.
func (d *Detector) Run(ctx context.Context) {
	now := d.Now
	if now == nil {
		now = time.Now
	}
	window := d.Window
	if window <= 0 {
		window = DefaultWindow
	}
	log := d.Log
	if log == nil {
		log = slog.Default()
	}
	start := now()
	tick := window / 8
	if tick < 20*time.Millisecond {
		tick = 20 * time.Millisecond
	}
	passes := newPassClock(max(1, int(window/tick)))
	prev := start
	t := time.NewTicker(tick)
	defer t.Stop()
	log.Info("failure detector started", "window", window)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		at := now()
		if late := at.Sub(prev) - tick; late > window/4 {
			log.Info("failure detector pass ran late (this process was stalled); the stall does not count as the servers' silence",
				"late_by", late.Round(time.Millisecond), "window", window)
		}
		prev = at
		d.check(ctx, at, start, window, passes.pass(at), log)
	}
}

// passClock remembers when the detector's last passes ran.
type passClock struct {
	at []time.Time // ring of the last len(at) passes
	n  int         // passes so far
}

func newPassClock(need int) *passClock { return &passClock{at: make([]time.Time, need)} }

// pass records a pass at now and returns when the oldest of the last
// len(at) passes (this one included) ran: a server silent since before that
// time was silent for that many passes. While fewer passes have run it
// returns the zero time (nobody was silent long enough).
func (p *passClock) pass(now time.Time) time.Time {
	p.at[p.n%len(p.at)] = now
	p.n++
	if p.n < len(p.at) {
		return time.Time{}
	}
	return p.at[p.n%len(p.at)]
}

// check runs one detection pass. A server counts as silent only since
// before ranSince, when the oldest of the passes a window needs ran (see
// Detector). Its commands are submitted concurrently (the leader batches
// them into shared log entries, so a rack of servers going silent at once
// costs a few entries, not one round trip each) and the pass returns when
// all are answered.
func (d *Detector) check(ctx context.Context, now, start time.Time, window time.Duration, ranSince time.Time, log *slog.Logger) {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, 256)
	submit := func(commit func(ctx context.Context) error, c prometheus.Counter) {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d.submit(ctx, commit, c, log)
		}()
	}
	for _, s := range d.watchedServers(nil) {
		e, have := d.View.Get(s.id)
		changed := time.UnixMilli(s.changedAtMs)
		switch s.state {
		case fsmpb.ServerState_SERVER_STATE_ACTIVE, fsmpb.ServerState_SERVER_STATE_DRAINING:
			last := start
			if changed.After(last) {
				last = changed
			}
			if have && e.Incarnation >= s.incarnation && e.Received.After(last) {
				last = e.Received
			}
			if now.Sub(last) <= window || !last.Before(ranSince) {
				continue
			}
			log.Warn("media server stopped reporting; marking it down", "server", s.id, "incarnation", s.incarnation,
				"silent_for", now.Sub(last).Round(time.Millisecond), "window", window, "used_units", s.used)
			id, inc := s.id, s.incarnation
			submit(func(ctx context.Context) error {
				_, err := d.Node.SetServerState(ctx, id, fsmpb.ServerState_SERVER_STATE_DOWN, inc)
				return err
			}, d.MarkedDown)
		case fsmpb.ServerState_SERVER_STATE_DOWN:
			if !have || e.Incarnation <= s.incarnation || now.Sub(e.Received) > window {
				continue
			}
			log.Info("media server is back on a new incarnation", "server", s.id, "incarnation", e.Incarnation)
			c := d.server(s.id)
			if c == nil {
				continue
			}
			c.Incarnation = e.Incarnation
			submit(func(ctx context.Context) error {
				_, err := d.Node.RegisterServer(ctx, c)
				return err
			}, d.Revived)
		}
	}
}

// server returns a copy of the registry entry of id (nil when gone).
func (d *Detector) server(id string) *fsmpb.Server {
	if g, ok := d.Servers.(interface {
		Server(id string) (*fsmpb.Server, bool)
	}); ok {
		s, _ := g.Server(id)
		return s
	}
	for _, s := range d.Servers.Servers() {
		if s.GetId() == id {
			return proto.Clone(s).(*fsmpb.Server)
		}
	}
	return nil
}

func (d *Detector) submit(ctx context.Context, commit func(ctx context.Context) error, c prometheus.Counter, log *slog.Logger) {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := commit(sctx); err != nil {
		log.Info("failure detector command refused", "err", err)
		return
	}
	if c != nil {
		c.Inc()
	}
}
