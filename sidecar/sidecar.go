// Package sidecar makes a third-party SFU (Janus, and others through the
// SFU interface) a first-class server of a Switchyard cluster. One Sidecar
// runs beside one SFU instance and:
//
//   - registers it over QUIC (transport.Client) with its connect URLs as
//     addresses and an SFU-kind label, under a new incarnation whenever the
//     SFU process is seen to (re)start;
//   - polls the SFU every Interval and reports its load as a QUIC datagram
//     right after each answered poll (rooms, participants, published and
//     subscribed tracks, bitrates where the SFU exposes them, the SFU
//     process's CPU), and stops reporting while the SFU does not answer,
//     so the cluster marks the server down in its usual failure window;
//   - materializes the rooms the cluster placed on it (creating them on the
//     SFU where the SFU needs that, e.g. a Janus VideoRoom), lists them in
//     its reports, and releases a room's placement when the room has ended
//     on the SFU (it had participants and stayed empty for RoomEmptyTimeout,
//     or nobody joined within RoomIdleTimeout, or it vanished). This
//     reconciliation runs beside the poll loop, one at a time, so an SFU
//     slow to create or close rooms does not hold up the load reports;
//   - carries out a drain (switchyard server drain, or Drain): the SFU is
//     told to refuse new sessions where it can, and once the last room is
//     empty (or DrainTimeout passed, which alone counts while the SFU does
//     not answer) the placements are released and the server is
//     deregistered; Run then returns.
package sidecar

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/transport"
)

// Sentinel errors of SFU adapters.
var (
	// ErrUnavailable means the SFU did not answer (connection refused,
	// timeout): it is treated as down.
	ErrUnavailable = errors.New("sfu not answering")
	// ErrRefused means the SFU answered with an error (a wrong admin
	// secret, a room it will not create, ...).
	ErrRefused = errors.New("sfu refused the request")
	// ErrBadAnswer means the SFU answered something that is not its API's
	// answer (garbage, an unexpected shape).
	ErrBadAnswer = errors.New("sfu answered garbage")
	// ErrUnsupported means the SFU has no way to do what was asked.
	ErrUnsupported = errors.New("not supported by this sfu")
	// ErrRoomRefused means the SFU will not create this room (its name or
	// number is invalid there), as opposed to a failure that a retry may
	// cure. It wraps ErrRefused.
	ErrRoomRefused = fmt.Errorf("%w: the room is not acceptable to it", ErrRefused)
)

// RoomRef names a placed room on an SFU: by name and by the number the
// cluster gave it (Janus' VideoRoom is addressed by number).
type RoomRef struct {
	Name   string
	Number uint64
}

// RoomStatus is one room as the SFU reports it.
type RoomStatus struct {
	Name         string
	Number       uint64
	Participants int64
	Publishers   int64
	// Subscribers, SubscribedTracks, IngressBps and EgressBps are zero
	// where the SFU does not expose them per room (Janus: only through its
	// admin API). SubscribedTracks counts each subscriber's copy of a
	// track once.
	Subscribers      int64
	SubscribedTracks int64
	IngressBps       int64
	EgressBps        int64
}

// Status is one poll of the SFU.
type Status struct {
	// Instance identifies the running SFU process; a change means it
	// restarted (and lost its rooms). Empty while the adapter cannot tell
	// (LiveKit without its metrics endpoint): the first instance after
	// that is taken for the process already registered, not a restart.
	Instance string
	Rooms    []RoomStatus
	// IngressBps and EgressBps are the server's bitrates where the SFU
	// counts them for the whole server only (LiveKit's metrics); they add
	// to the rooms'.
	IngressBps, EgressBps int64
	// SubscribedTracks is the server's subscribed tracks where the SFU
	// counts them for the whole server only (LiveKit's metrics); it adds
	// to the rooms'.
	SubscribedTracks int64
}

// SFU is one SFU instance as the sidecar drives it. Every method must
// return once ctx ends. Poll runs while EnsureRoom or CloseRoom may be
// running (rooms are reconciled beside the poll loop), so an SFU must be
// safe for concurrent use.
type SFU interface {
	// Kind is the SFU kind (api.SFUJanus, api.SFULiveKit).
	Kind() string
	// Addresses are the connect URLs registered for the server (the first
	// is the URL clients are given).
	Addresses() []string
	// Poll reads the SFU's rooms; an error wrapping ErrUnavailable means
	// the SFU is not answering.
	Poll(ctx context.Context) (Status, error)
	// EnsureRoom creates the room on the SFU if it needs creating.
	EnsureRoom(ctx context.Context, r RoomRef) error
	// CloseRoom removes an ended room from the SFU (no-op where rooms end
	// on their own).
	CloseRoom(ctx context.Context, r RoomRef) error
	// SetAcceptNew turns new sessions on or off (ErrUnsupported where the
	// SFU cannot).
	SetAcceptNew(ctx context.Context, accept bool) error
}

// Config configures a Sidecar. Zero durations take the defaults noted.
type Config struct {
	ID       string
	Region   string
	Zone     string
	Capacity int64
	SFU      SFU
	// QUICAddrs are the agents' QUIC addresses; TLS a client certificate
	// of the cluster CA (pki.Identity.ClientConfig(transport.ALPN)).
	QUICAddrs []string
	TLS       *tls.Config
	// HTTPAddrs are the agents' HTTP API addresses (room list, own state,
	// room release, deregistration).
	HTTPAddrs []string
	// Token, when set, is the ACL token those calls carry (a media token
	// bound to ID). Empty: SWITCHYARD_TOKEN if set; over HTTPS the TLS
	// certificate authenticates the sidecar without one.
	Token string
	// Interval is the poll and report period. Default 500 ms.
	Interval time.Duration
	// SFUTimeout bounds one poll of the SFU. Default Interval, at least
	// 1 s (a loaded SFU answering a little late must not look dead; one
	// that hangs still misses the cluster's 2 s failure window).
	SFUTimeout time.Duration
	// StatePoll is how often the sidecar reads its server's state (to see
	// an operator's drain). Default 1 s.
	StatePoll time.Duration
	// RoomEmptyTimeout: a room that had participants and has been empty
	// this long has ended. Default 10 s.
	RoomEmptyTimeout time.Duration
	// RoomIdleTimeout: a placed room nobody joined this long is released.
	// Default 5 min.
	RoomIdleTimeout time.Duration
	// DrainTimeout bounds a drain. Default 10 min.
	DrainTimeout time.Duration
	// PID, when non-zero, is the SFU process whose CPU is reported.
	PID int
	// PIDFile, when set, names a file holding the SFU's process id (a
	// service manager's PID file), read at every report so that the CPU
	// of a restarted SFU is reported too; it takes precedence over PID.
	PIDFile string
	Logger  *slog.Logger
}

func (c *Config) setDefaults() error {
	switch {
	case c.ID == "":
		return fmt.Errorf("%w: sidecar: server id is required", errcode.ErrInvalid)
	case c.Capacity <= 0:
		return fmt.Errorf("%w: sidecar: capacity must be positive, got %d", errcode.ErrInvalid, c.Capacity)
	case c.SFU == nil:
		return fmt.Errorf("%w: sidecar: no SFU", errcode.ErrInvalid)
	case len(c.QUICAddrs) == 0 || c.TLS == nil:
		return fmt.Errorf("%w: sidecar: QUIC addresses and a TLS client certificate are required", errcode.ErrInvalid)
	case len(c.HTTPAddrs) == 0:
		return fmt.Errorf("%w: sidecar: agent HTTP addresses are required", errcode.ErrInvalid)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Interval, 500*time.Millisecond)
	def(&c.SFUTimeout, max(c.Interval, time.Second))
	def(&c.StatePoll, time.Second)
	def(&c.RoomEmptyTimeout, 10*time.Second)
	def(&c.RoomIdleTimeout, 5*time.Minute)
	def(&c.DrainTimeout, 10*time.Minute)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// roomTrack is what the sidecar remembers of one placement on its SFU.
// allocID, number and placedAt are set when it is made and never change
// (load reports read them under Sidecar.mu); the other fields belong to
// the reconciliation, which runs one at a time.
type roomTrack struct {
	allocID    string
	number     uint64 // the room's number (Janus), 0 if it has none
	placedAt   int64  // when the cluster placed it, Unix ms
	firstSeen  time.Time
	created    bool // EnsureRoom succeeded
	seen       bool // the SFU listed it, or it was created
	joined     bool // had participants
	emptySince time.Time
}

// Sidecar runs beside one SFU. Create it with New, then Run it.
type Sidecar struct {
	cfg Config
	log *slog.Logger
	q   *transport.Client
	h   *api.Client
	cpu *cpuMeter

	mu          sync.Mutex
	incarnation uint64
	registered  bool
	healthy     bool
	instance    string
	rooms       map[string]*roomTrack
	draining    bool
	drainStart  time.Time
	lastState   time.Time
	reports     uint64
	polls       uint64
	// recCancel and recDone belong to the reconciliation in flight (nil
	// while none runs): cancelling it makes it end soon, recDone is closed
	// once it has.
	recCancel context.CancelFunc
	recDone   chan struct{}
}

// New builds a sidecar and starts its QUIC client (which connects in the
// background).
func New(cfg Config) (*Sidecar, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	q, err := transport.NewClient(transport.ClientConfig{Addrs: cfg.QUICAddrs, TLS: cfg.TLS, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	s := &Sidecar{cfg: cfg, log: cfg.Logger.With("component", "sidecar", "server", cfg.ID, "sfu", cfg.SFU.Kind()),
		q: q, h: api.NewClient(cfg.HTTPAddrs...).PresentCertificate(cfg.TLS), rooms: map[string]*roomTrack{}}
	if cfg.Token != "" {
		s.h.WithToken(cfg.Token)
	}
	if cfg.PID > 0 || cfg.PIDFile != "" {
		s.cpu = newCPUMeter(cfg.PID, cfg.PIDFile)
	}
	return s, nil
}

// Close stops the QUIC client (reports stop).
func (s *Sidecar) Close() error { return s.q.Close() }

// Reports counts the load reports sent.
func (s *Sidecar) Reports() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reports
}

// Incarnation is the incarnation the SFU is registered under (0 before
// the first registration).
func (s *Sidecar) Incarnation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.incarnation
}

// Drain marks the server draining in the cluster; Run then carries the
// drain out and returns once the server is deregistered.
func (s *Sidecar) Drain(ctx context.Context) error {
	if _, err := s.q.Drain(ctx); err != nil {
		return fmt.Errorf("drain %s: %w", s.cfg.ID, err)
	}
	s.startDrain(ctx)
	return nil
}

// Run polls, reports and reconciles until ctx ends (reports stop; the
// cluster marks the server down unless it was drained) or a drain has
// deregistered the server (nil).
func (s *Sidecar) Run(ctx context.Context) error {
	defer s.stopReconcile()
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		done, err := s.step(ctx)
		if done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// step is one poll: SFU status, registration, load report, drain, and
// the start of a reconciliation of the placed rooms (which runs beside the
// following polls, so that the report of every answered poll goes out at
// once however long the SFU takes to create or close rooms).
func (s *Sidecar) step(ctx context.Context) (bool, error) {
	// A reconciliation takes a room it created that the poll does not list
	// for ended, so it must be given a poll that started after the rooms
	// it created exist: one that began while no reconciliation ran (only
	// step starts them, so none can start during the poll).
	s.mu.Lock()
	idle := s.recDone == nil
	s.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, s.cfg.SFUTimeout)
	st, err := s.cfg.SFU.Poll(pctx)
	cancel()
	if err != nil {
		s.mu.Lock()
		was, first := s.healthy, !s.registered && s.polls == 0
		s.healthy = false
		s.polls++
		s.mu.Unlock()
		switch {
		case was:
			s.log.Warn("SFU stopped answering; load reports stop until it is back", "err", err)
		case first:
			s.log.Warn("SFU not answering yet; not registering it", "err", err)
		}
		// No report, so the cluster marks the server down; a drain still
		// ends at its timeout.
		return s.drainStep(ctx, nil)
	}
	s.mu.Lock()
	s.polls++
	s.mu.Unlock()
	if err := s.ensureRegistered(ctx, st); err != nil {
		s.log.Warn("register", "err", err)
		return s.drainStep(ctx, &st)
	}
	if err := s.q.Report(s.load(st)); err == nil {
		s.mu.Lock()
		s.reports++
		s.mu.Unlock()
	}
	done, err := s.drainStep(ctx, &st)
	if !done && idle {
		s.startReconcile(ctx, st)
	}
	return done, err
}

// load is the load report of poll st: the SFU's figures, and the placed
// rooms as the reconciliation tracks them, newest first (a report too
// large for a datagram keeps the first ones). A placement's allocation is
// listed as hosted while the SFU lists its room.
func (s *Sidecar) load(st Status) transport.Load {
	l := transport.Load{FreeUnits: s.cfg.Capacity, IngressBps: st.IngressBps, EgressBps: st.EgressBps, SubscribedTracks: st.SubscribedTracks}
	byName := map[string]bool{}
	byNum := map[uint64]bool{}
	for _, r := range st.Rooms {
		l.Peers += r.Participants + r.Subscribers
		l.Tracks += r.Publishers
		l.IngressBps += r.IngressBps
		l.EgressBps += r.EgressBps
		l.SubscribedTracks += r.SubscribedTracks
		if r.Name != "" {
			byName[r.Name] = true
		}
		if r.Number != 0 {
			byNum[r.Number] = true
		}
	}
	type placed struct {
		name, allocID string
		number        uint64
		at            int64
	}
	var rooms []placed
	s.mu.Lock()
	for name, tr := range s.rooms {
		rooms = append(rooms, placed{name: name, allocID: tr.allocID, number: tr.number, at: tr.placedAt})
	}
	s.mu.Unlock()
	slices.SortFunc(rooms, func(a, b placed) int {
		if c := cmp.Compare(b.at, a.at); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	tracked := map[string]bool{}
	for _, r := range rooms {
		tracked[r.name] = true
		l.Rooms = append(l.Rooms, r.name)
		if byName[r.name] || r.number != 0 && byNum[r.number] {
			l.AllocationIDs = append(l.AllocationIDs, r.allocID)
		}
	}
	for _, r := range st.Rooms {
		if r.Name != "" && !tracked[r.Name] {
			l.Rooms = append(l.Rooms, r.Name)
		}
	}
	if s.cpu != nil {
		l.CPU = s.cpu.sample()
	}
	return l
}

// startReconcile reconciles the placed rooms with poll st in a goroutine
// of its own; stopReconcile ends it.
func (s *Sidecar) startReconcile(ctx context.Context, st Status) {
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	s.mu.Lock()
	s.recCancel, s.recDone = cancel, done
	s.mu.Unlock()
	go func() {
		defer close(done)
		s.reconcile(rctx, st)
		cancel()
		s.mu.Lock()
		s.recCancel, s.recDone = nil, nil
		s.mu.Unlock()
	}()
}

// stopReconcile cancels the reconciliation in flight, if any, and waits
// until it has ended.
func (s *Sidecar) stopReconcile() {
	s.mu.Lock()
	cancel, done := s.recCancel, s.recDone
	s.mu.Unlock()
	if done == nil {
		return
	}
	cancel()
	<-done
}

// ensureRegistered registers the SFU when it first answers, after it came
// back, and when it restarted (a new instance), each time under a new
// incarnation.
func (s *Sidecar) ensureRegistered(ctx context.Context, st Status) error {
	s.mu.Lock()
	// An instance seen after an unknown one (LiveKit's metrics answering
	// for the first time) names the process registered, not a new one.
	learnt := s.instance == "" && st.Instance != ""
	restarted := s.registered && !learnt && st.Instance != s.instance
	need := !s.registered || !s.healthy || restarted
	if !need && learnt {
		s.instance = st.Instance
	}
	inc := s.incarnation
	s.mu.Unlock()
	if !need {
		if learnt {
			s.log.Info("SFU process known", "instance", st.Instance)
		}
		return nil
	}
	if restarted {
		// A reconciliation in flight works from the old process's rooms:
		// end it before the rooms are forgotten below, or it would track
		// them again.
		s.stopReconcile()
	}
	if n := uint64(time.Now().UnixNano()); n > inc {
		inc = n
	} else {
		inc++
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := s.q.Register(rctx, transport.ServerInfo{
		ID: s.cfg.ID, Addresses: s.cfg.SFU.Addresses(), Region: s.cfg.Region, Zone: s.cfg.Zone,
		Labels: map[string]string{api.SFULabel: s.cfg.SFU.Kind()}, Capacity: s.cfg.Capacity, Incarnation: inc,
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.incarnation, s.registered, s.healthy, s.instance = inc, true, true, st.Instance
	if restarted {
		s.rooms = map[string]*roomTrack{} // the SFU lost its rooms
	}
	draining := s.draining
	s.mu.Unlock()
	s.log.Info("SFU registered", "incarnation", inc, "instance", st.Instance, "addresses", s.cfg.SFU.Addresses())
	if draining {
		// A re-registration makes the server active again: drain it again.
		if _, err := s.q.Drain(rctx); err != nil {
			return err
		}
		_ = s.cfg.SFU.SetAcceptNew(rctx, false)
	}
	return nil
}

// reconcile matches the cluster's placements on this server with the SFU's
// rooms in poll st: it creates placed rooms on the SFU and releases ended
// ones, and tracks the placements for the load reports. It runs beside the
// poll loop, one at a time (startReconcile).
func (s *Sidecar) reconcile(ctx context.Context, st Status) {
	byName := map[string]RoomStatus{}
	byNum := map[uint64]RoomStatus{}
	for _, r := range st.Rooms {
		if r.Name != "" {
			byName[r.Name] = r
		}
		if r.Number != 0 {
			byNum[r.Number] = r
		}
	}
	rctx, cancel := context.WithTimeout(ctx, 2*s.cfg.Interval+time.Second)
	placed, err := s.h.Rooms(rctx, s.cfg.ID, true)
	cancel()
	if err != nil {
		s.log.Debug("read placements", "err", err)
		return
	}
	now := time.Now()
	seen := map[string]bool{}
	for _, p := range placed {
		if ctx.Err() != nil {
			return
		}
		ref := RoomRef{Name: p.Room, Number: roomNumber(p)}
		seen[p.Room] = true
		s.mu.Lock()
		tr := s.rooms[p.Room]
		if tr == nil || tr.allocID != p.AllocationID {
			tr = &roomTrack{allocID: p.AllocationID, number: ref.Number, placedAt: p.PlacedAtUnixMs, firstSeen: now}
			s.rooms[p.Room] = tr
		}
		s.mu.Unlock()
		rs, present := byName[p.Room]
		if !present && ref.Number != 0 {
			rs, present = byNum[ref.Number]
		}
		switch {
		case present:
			tr.seen = true
			if rs.Participants > 0 || rs.Subscribers > 0 {
				tr.joined, tr.emptySince = true, time.Time{}
				continue
			}
			if tr.joined {
				if tr.emptySince.IsZero() {
					tr.emptySince = now
				}
				if now.Sub(tr.emptySince) >= s.cfg.RoomEmptyTimeout {
					s.endRoom(ctx, ref, "empty since "+tr.emptySince.Format(time.RFC3339))
				}
				continue
			}
		case tr.seen:
			s.endRoom(ctx, ref, "gone from the SFU")
			continue
		case !tr.created:
			cctx, ccancel := context.WithTimeout(ctx, s.cfg.SFUTimeout+time.Second)
			err := s.cfg.SFU.EnsureRoom(cctx, ref)
			ccancel()
			if errors.Is(err, ErrRoomRefused) {
				// The SFU will not have this room (its name, say): free the
				// placement now rather than at the idle timeout, so the
				// application's wait for it ends.
				s.log.Warn("the SFU refused the room; giving up its placement", "room", p.Room, "err", err)
				s.vacateRoom(ctx, ref, p.AllocationID, "the SFU refused to create it: "+err.Error())
				continue
			}
			if err != nil {
				s.log.Warn("create room on the SFU", "room", p.Room, "err", err)
			} else {
				// Created (synchronously): from now on, a room the SFU
				// does not list has ended.
				tr.created, tr.seen = true, true
			}
		}
		if !tr.joined && now.Sub(tr.firstSeen) >= s.cfg.RoomIdleTimeout {
			s.endRoom(ctx, ref, "nobody joined")
		}
	}
	s.mu.Lock()
	for name := range s.rooms {
		if !seen[name] {
			delete(s.rooms, name)
		}
	}
	s.mu.Unlock()
}

// roomNumber reads the room number the placement carries (urls.room).
func roomNumber(p api.Room) uint64 {
	switch v := p.URLs["room"].(type) {
	case float64:
		return uint64(v)
	case string:
		n, _ := strconv.ParseUint(v, 10, 64)
		return n
	}
	return 0
}

// endRoom closes an ended room on the SFU and releases its placement.
func (s *Sidecar) endRoom(ctx context.Context, r RoomRef, why string) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.cfg.SFU.CloseRoom(cctx, r); err != nil && !errors.Is(err, ErrUnsupported) {
		s.log.Warn("close ended room on the SFU", "room", r.Name, "err", err)
	}
	if _, err := s.h.ReleaseRoom(cctx, r.Name); err != nil {
		s.log.Warn("release ended room", "room", r.Name, "err", err)
		return
	}
	s.mu.Lock()
	delete(s.rooms, r.Name)
	s.mu.Unlock()
	s.log.Info("room ended; placement released", "room", r.Name, "why", why)
}

// vacateRoom gives up a room the SFU will not have (its placement
// allocID): the placement ends but the cluster keeps the room's record
// with why, for the application to see (api.Client.WaitRoomReady, room
// get). An agent that cannot (a release without the vacate route) gets
// the room released instead, as before.
func (s *Sidecar) vacateRoom(ctx context.Context, r RoomRef, allocID, why string) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// The cluster takes a printable reason of bounded length; the SFU's
	// error text may hold anything.
	why = strings.Map(func(c rune) rune {
		if !unicode.IsPrint(c) {
			return ' '
		}
		return c
	}, strings.ToValidUTF8(why, "?"))
	for len(why) > api.MaxReasonLen {
		_, size := utf8.DecodeLastRuneInString(why)
		why = why[:len(why)-size]
	}
	_, err := s.h.VacateRoom(cctx, r.Name, s.cfg.ID, allocID, why)
	switch {
	case err == nil, errors.Is(err, errcode.ErrVersionMismatch):
		// Given up, or no longer this placement: nothing left to do here.
	default:
		// Also not_found: an agent without the route answers so, and
		// releasing a room that is not placed changes nothing.
		s.log.Warn("give up refused room; releasing it instead", "room", r.Name, "err", err)
		s.endRoom(ctx, r, why)
		return
	}
	s.mu.Lock()
	delete(s.rooms, r.Name)
	s.mu.Unlock()
	s.log.Info("room given up; the cluster keeps it vacated", "room", r.Name, "why", why)
}

// startDrain begins carrying out a drain: the SFU refuses new sessions.
func (s *Sidecar) startDrain(ctx context.Context) {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		return
	}
	s.draining, s.drainStart = true, time.Now()
	s.mu.Unlock()
	s.log.Info("draining: the SFU takes no new sessions; waiting for its rooms to end", "timeout", s.cfg.DrainTimeout)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.cfg.SFU.SetAcceptNew(cctx, false); err != nil {
		if errors.Is(err, ErrUnsupported) {
			s.log.Info("the SFU cannot refuse new sessions; the cluster places no new rooms on it")
		} else {
			s.log.Warn("tell the SFU to refuse new sessions", "err", err)
		}
	}
}

// drainStep watches the server's state and finishes a drain once the
// SFU's rooms in poll st are empty or the drain timed out. st is nil when
// the SFU did not answer: whether its rooms are empty is then unknown, so
// only the timeout ends the drain (and the state is not watched: the
// cluster marks the server down, and it registers again once the SFU
// answers).
func (s *Sidecar) drainStep(ctx context.Context, st *Status) (bool, error) {
	s.mu.Lock()
	draining, start, pollDue := s.draining, s.drainStart, time.Since(s.lastState) >= s.cfg.StatePoll
	if pollDue && st != nil && !draining {
		s.lastState = time.Now()
	}
	s.mu.Unlock()
	if !draining {
		if !pollDue || st == nil {
			return false, nil
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		srv, err := s.serverState(sctx)
		cancel()
		switch {
		case errors.Is(err, errcode.ErrNotFound) || err == nil && srv == "down":
			// Marked down (reports lost on the way, say) or removed while
			// the SFU answers: register again under a new incarnation.
			s.log.Warn("the cluster lost this server; registering again", "state", srv, "err", err)
			s.mu.Lock()
			s.registered = false
			s.mu.Unlock()
		case err == nil && srv == "draining":
			s.startDrain(ctx)
		}
		return false, nil
	}
	timedOut := time.Since(start) >= s.cfg.DrainTimeout
	why := "its rooms are empty"
	switch {
	case timedOut:
		why = "the drain timed out"
	case st == nil:
		return false, nil
	default:
		for _, r := range st.Rooms {
			if r.Participants+r.Subscribers > 0 {
				return false, nil
			}
		}
	}
	// Nothing is to be created or ended on the SFU any more: the drain
	// releases every placement itself.
	s.stopReconcile()
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rooms, err := s.h.Rooms(dctx, s.cfg.ID, false)
	if err != nil {
		s.log.Warn("drain: list rooms", "err", err)
		return false, nil
	}
	for _, r := range rooms {
		if _, err := s.h.ReleaseRoom(dctx, r.Room); err != nil {
			s.log.Warn("drain: release room", "room", r.Room, "err", err)
			return false, nil
		}
		if st != nil {
			// Best effort: the room's participants have left (or the
			// drain timed out); remove it from the SFU too, each within
			// the SFU's bound.
			cctx, ccancel := context.WithTimeout(dctx, s.cfg.SFUTimeout)
			_ = s.cfg.SFU.CloseRoom(cctx, RoomRef{Name: r.Room, Number: roomNumber(r)})
			ccancel()
		}
	}
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	if err := s.h.DeregisterServer(rctx, s.cfg.ID); err != nil {
		s.log.Warn("drain: deregister", "err", err)
		return false, nil
	}
	s.log.Info("drained and deregistered", "why", why, "sfu_answering", st != nil, "took", time.Since(start).Round(time.Millisecond))
	return true, nil
}

// serverState is this server's state in the cluster (stale read).
func (s *Sidecar) serverState(ctx context.Context) (string, error) {
	v, err := s.h.Server(ctx, s.cfg.ID, true)
	if err != nil {
		return "", err
	}
	return v.State, nil
}
