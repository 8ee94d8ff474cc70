package sidecar_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/sidecar"
	"github.com/switchyard/switchyard/transport"
)

// fakeSFU is an SFU in memory for driving the sidecar's loop: the test
// sets its rooms' participants, makes it stop answering, and holds
// EnsureRoom or CloseRoom until it lets them go.
type fakeSFU struct {
	mu    sync.Mutex
	rooms map[string]*sidecar.RoomStatus
	dead  bool
	// dieOnDrain: being told to refuse new sessions (a drain starting)
	// kills it.
	dieOnDrain bool
	// holdEnsure and holdClose, when set, hold EnsureRoom and CloseRoom
	// until they are closed (or the call's context ends).
	holdEnsure, holdClose chan struct{}
	held                  int // EnsureRoom and CloseRoom calls being held now
	polls, failedPolls    int
	ensured, closed       map[string]int  // calls per room
	refuse                map[string]bool // rooms EnsureRoom refuses (ErrRefused)
	// instance is the Status.Instance its polls give; restart makes it a
	// new one.
	instance string
}

func newFakeSFU() *fakeSFU {
	return &fakeSFU{rooms: map[string]*sidecar.RoomStatus{}, ensured: map[string]int{}, closed: map[string]int{}, instance: "fake-1"}
}

// restart makes it a new process named instance, which has lost its
// rooms, between two polls.
func (f *fakeSFU) restart(instance string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.instance = instance
	f.rooms = map[string]*sidecar.RoomStatus{}
}

func (f *fakeSFU) Kind() string        { return api.SFULiveKit }
func (f *fakeSFU) Addresses() []string { return []string{"ws://fake-sfu.invalid:7880"} }

func (f *fakeSFU) Poll(ctx context.Context) (sidecar.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dead {
		f.failedPolls++
		return sidecar.Status{}, fmt.Errorf("%w: fake SFU is dead", sidecar.ErrUnavailable)
	}
	f.polls++
	st := sidecar.Status{Instance: f.instance}
	for _, r := range f.rooms {
		st.Rooms = append(st.Rooms, *r)
	}
	return st, nil
}

// hold waits until gate is closed or ctx ends, counting the call as held
// meanwhile.
func (f *fakeSFU) hold(ctx context.Context, gate chan struct{}) error {
	if gate == nil {
		return nil
	}
	f.mu.Lock()
	f.held++
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.held--
		f.mu.Unlock()
	}()
	select {
	case <-gate:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", sidecar.ErrUnavailable, ctx.Err())
	}
}

func (f *fakeSFU) EnsureRoom(ctx context.Context, r sidecar.RoomRef) error {
	f.mu.Lock()
	f.ensured[r.Name]++
	gate, dead := f.holdEnsure, f.dead
	f.mu.Unlock()
	if dead {
		return sidecar.ErrUnavailable
	}
	if err := f.hold(ctx, gate); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuse[r.Name] {
		return fmt.Errorf("%w: fake SFU refuses room %q", sidecar.ErrRoomRefused, r.Name)
	}
	if f.rooms[r.Name] == nil {
		f.rooms[r.Name] = &sidecar.RoomStatus{Name: r.Name}
	}
	return nil
}

func (f *fakeSFU) CloseRoom(ctx context.Context, r sidecar.RoomRef) error {
	f.mu.Lock()
	f.closed[r.Name]++
	gate, dead := f.holdClose, f.dead
	f.mu.Unlock()
	if dead {
		return sidecar.ErrUnavailable
	}
	if err := f.hold(ctx, gate); err != nil {
		return err
	}
	f.mu.Lock()
	delete(f.rooms, r.Name)
	f.mu.Unlock()
	return nil
}

func (f *fakeSFU) SetAcceptNew(ctx context.Context, accept bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !accept && f.dieOnDrain {
		f.dead = true
	}
	if f.dead {
		return sidecar.ErrUnavailable
	}
	return nil
}

// setParticipants puts n participants into room (which must exist).
func (f *fakeSFU) setParticipants(t *testing.T, room string, n int64) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.rooms[room]
	if r == nil {
		t.Fatalf("fake SFU has no room %s", room)
	}
	r.Participants, r.Publishers = n, min(n, 1)
}

// removeRoom ends room on the SFU's side (as LiveKit closes an empty room).
func (f *fakeSFU) removeRoom(room string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.rooms, room)
}

// read returns what fn reads of f under its lock.
func read[T any](f *fakeSFU, fn func(f *fakeSFU) T) T {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fn(f)
}

// runFake runs a sidecar for f against c until the test ends; edit, if
// set, changes its config first.
func runFake(t *testing.T, c *testcluster.Cluster, id string, f *fakeSFU, edit func(*sidecar.Config)) *sidecarRun {
	t.Helper()
	cfg := sidecar.Config{
		ID: id, Capacity: 10, SFU: f, QUICAddrs: c.QUICAddrs(), TLS: c.Identity(id).ClientConfig(transport.ALPN),
		HTTPAddrs: c.Addrs(), Token: c.MediaToken(id), Interval: 100 * time.Millisecond, StatePoll: 200 * time.Millisecond,
		RoomEmptyTimeout: time.Minute, Logger: testcluster.Logger(t),
	}
	if edit != nil {
		edit(&cfg)
	}
	return runConfig(t, cfg)
}

// serverLoad is server id's last load report as the cluster has it.
func serverLoad(ctx context.Context, cl *api.Client, id string) (*api.ServerLoad, error) {
	srvs, err := cl.ServersWithLoad(ctx, false)
	if err != nil {
		return nil, err
	}
	for _, s := range srvs {
		if s.ID == id {
			if s.Load == nil {
				return nil, fmt.Errorf("%s has no load yet", id)
			}
			return s.Load, nil
		}
	}
	return nil, fmt.Errorf("%s not listed", id)
}

// placeOnFake waits for server id to be active and places room on it
// (the only server of its kind), then waits until the fake SFU holds the
// room and the sidecar's reports list its allocation.
func placeOnFake(t *testing.T, ctx context.Context, cl *api.Client, id, room string) api.Room {
	t.Helper()
	var r api.Room
	testcluster.Eventually(t, 60*time.Second, func() error {
		s, err := cl.Server(ctx, id, false)
		if err != nil {
			return err
		}
		if s.State != "active" {
			return fmt.Errorf("%s is %s", id, s.State)
		}
		r, err = cl.PlaceRoom(ctx, room, api.PlaceRoomRequest{SFU: api.SFULiveKit})
		return err
	})
	if r.Server != id {
		t.Fatalf("placed on %s, not %s", r.Server, id)
	}
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := cl.WaitRoomReady(rctx, r); err != nil {
		t.Fatal(err)
	}
	return r
}

// makeBusy puts 2 participants into room on f and waits until the
// cluster has a report of server id that counts them: every poll from
// then on sees them, so a drain begun after it cannot take the room for
// empty.
func makeBusy(t *testing.T, ctx context.Context, cl *api.Client, f *fakeSFU, id, room string) {
	t.Helper()
	f.setParticipants(t, room, 2)
	testcluster.Eventually(t, 60*time.Second, func() error {
		l, err := serverLoad(ctx, cl, id)
		if err != nil {
			return err
		}
		if l.Peers != 2 {
			return fmt.Errorf("load %+v", l)
		}
		return nil
	})
}

// waitDrained waits up to d for the sidecar's Run to return after a
// drain, and fails the test unless it returned nil.
func waitDrained(t *testing.T, r *sidecarRun, d time.Duration, what string) {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("%s: the drained sidecar's Run returned %v", what, err)
		}
	case <-time.After(d):
		t.Fatalf("%s: the sidecar's Run did not return within %v", what, d)
	}
}

// checkDrainedAway fails the test unless server is deregistered, room no
// longer placed and closed on f.
func checkDrainedAway(t *testing.T, ctx context.Context, cl *api.Client, f *fakeSFU, server, room string) {
	t.Helper()
	if _, err := cl.Server(ctx, server, false); !errors.Is(err, errcode.ErrNotFound) {
		t.Fatalf("drained server still registered: %v", err)
	}
	if _, err := cl.Room(ctx, room); !errors.Is(err, errcode.ErrNotFound) {
		t.Fatalf("room still placed: %v", err)
	}
	if n := read(f, func(f *fakeSFU) int { return f.closed[room] }); n == 0 {
		t.Fatal("the drained room was not closed on the SFU")
	}
}

// An SFU slow to create or to close a room does not hold up the load
// reports: while EnsureRoom and then CloseRoom hang, reports keep
// reaching the cluster and the server stays active, and only one
// reconciliation is in flight (the room is created once).
func TestSidecarReportsWhileSFUSlow(t *testing.T) {
	c := testcluster.New(t, 1)
	cl := c.Client()
	ctx := testcluster.Context(t, 3*time.Minute)
	f := newFakeSFU()
	f.holdEnsure, f.holdClose = make(chan struct{}), make(chan struct{})
	// EnsureRoom may hang far beyond the test's deadlines: a step that
	// waited for it would send nothing meanwhile.
	run := runFake(t, c, "slow", f, func(cfg *sidecar.Config) { cfg.SFUTimeout = 2 * time.Minute })
	testcluster.Eventually(t, 60*time.Second, func() error {
		s, err := cl.Server(ctx, "slow", false)
		if err != nil {
			return err
		}
		if s.State != "active" {
			return fmt.Errorf("slow is %s", s.State)
		}
		return nil
	})
	room, err := cl.PlaceRoom(ctx, "slow-room", api.PlaceRoomRequest{SFU: api.SFULiveKit})
	if err != nil || room.Server != "slow" {
		t.Fatalf("placement: %+v %v", room, err)
	}

	// countReports waits until, while the call held now is still held,
	// the sidecar sent 5 more reports and the cluster received 5 more
	// (report sequence numbers).
	countReports := func(what string) {
		t.Helper()
		testcluster.Eventually(t, 60*time.Second, func() error {
			if n := read(f, func(f *fakeSFU) int { return f.held }); n != 1 {
				return fmt.Errorf("%d calls held, want 1", n)
			}
			return nil
		})
		sent := run.sc.Reports()
		l, err := serverLoad(ctx, cl, "slow")
		if err != nil {
			t.Fatal(err)
		}
		seq := l.Seq
		testcluster.Eventually(t, 60*time.Second, func() error {
			l, err := serverLoad(ctx, cl, "slow")
			if err != nil {
				return err
			}
			if n := run.sc.Reports(); n < sent+5 || l.Seq < seq+5 {
				return fmt.Errorf("while %s is held: %d reports sent (%d before), cluster at seq %d (%d before)", what, n, sent, l.Seq, seq)
			}
			return nil
		})
		if n := read(f, func(f *fakeSFU) int { return f.held }); n != 1 {
			t.Fatalf("%s was let go (%d calls held) before the reports were counted", what, n)
		}
		if s, err := cl.Server(ctx, "slow", false); err != nil || s.State != "active" {
			t.Fatalf("while %s is held the server is %+v %v", what, s, err)
		}
	}

	countReports("EnsureRoom")
	if n := read(f, func(f *fakeSFU) int { return f.ensured["slow-room"] }); n != 1 {
		t.Fatalf("EnsureRoom called %d times for one room while the first call was held", n)
	}
	close(f.holdEnsure)
	// Created: the reports list the room's allocation as hosted.
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := cl.WaitRoomReady(rctx, room); err != nil {
		t.Fatal(err)
	}

	// The room ends on the SFU: closing it (best effort) hangs, and the
	// reports go on meanwhile.
	f.removeRoom("slow-room")
	countReports("CloseRoom")
	close(f.holdClose)
	testcluster.Eventually(t, 60*time.Second, func() error {
		if _, err := cl.Room(ctx, "slow-room"); !errors.Is(err, errcode.ErrNotFound) {
			return fmt.Errorf("room still placed: %v", err)
		}
		return nil
	})
}

// A server draining when its SFU dies is still deregistered: not while
// nothing can be known of its rooms, but once the drain timed out. The
// sidecar sends no report meanwhile.
func TestSidecarDrainSFUDead(t *testing.T) {
	c := testcluster.New(t, 1)
	cl := c.Client()
	ctx := testcluster.Context(t, 3*time.Minute)
	f := newFakeSFU()
	f.dieOnDrain = true
	const drainTimeout = 4 * time.Second
	run := runFake(t, c, "dies", f, func(cfg *sidecar.Config) { cfg.DrainTimeout = drainTimeout })
	placeOnFake(t, ctx, cl, "dies", "busy")
	makeBusy(t, ctx, cl, f, "dies", "busy")

	start := time.Now()
	if err := run.sc.Drain(ctx); err != nil { // the SFU dies as it is told to refuse new sessions
		t.Fatal(err)
	}
	if !read(f, func(f *fakeSFU) bool { return f.dead }) {
		t.Fatal("the fake SFU did not die on the drain")
	}
	// No reports while the SFU does not answer.
	testcluster.Eventually(t, 60*time.Second, func() error {
		if n := read(f, func(f *fakeSFU) int { return f.failedPolls }); n < 1 {
			return fmt.Errorf("%d failed polls", n)
		}
		return nil
	})
	sent := run.sc.Reports()
	testcluster.Eventually(t, 60*time.Second, func() error {
		select {
		case err := <-run.done:
			run.done <- err // for the cleanup
			t.Fatalf("the sidecar finished its drain %v after it began, before its timeout %v, with its SFU dead: %v", time.Since(start), drainTimeout, err)
		default:
		}
		if n := read(f, func(f *fakeSFU) int { return f.failedPolls }); n < 4 {
			return fmt.Errorf("%d failed polls", n)
		}
		return nil
	})
	if n := run.sc.Reports(); n != sent {
		t.Fatalf("%d reports sent while the SFU was dead", n-sent)
	}

	waitDrained(t, run, drainTimeout+60*time.Second, "drain with the SFU dead")
	if d := time.Since(start); d < drainTimeout {
		t.Fatalf("deregistered %v after the drain began, before its timeout %v: the dead SFU's rooms were taken for empty", d, drainTimeout)
	}
	if _, err := cl.Server(ctx, "dies", false); !errors.Is(err, errcode.ErrNotFound) {
		t.Fatalf("drained server still registered: %v", err)
	}
	if rs, err := cl.Rooms(ctx, "dies", false); err != nil || len(rs) != 0 {
		t.Fatalf("rooms left on the drained server: %+v %v", rs, err)
	}
}

// A drain waits while a room has participants and deregisters the server
// once the last one left, long before the drain's timeout; the room is
// released and closed on the SFU.
func TestSidecarDrainLastRoomEnds(t *testing.T) {
	c := testcluster.New(t, 1)
	cl := c.Client()
	ctx := testcluster.Context(t, 3*time.Minute)
	f := newFakeSFU()
	run := runFake(t, c, "ends", f, nil) // the default drain timeout: 10 min
	placeOnFake(t, ctx, cl, "ends", "busy")
	makeBusy(t, ctx, cl, f, "ends", "busy")

	if err := run.sc.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	// Several polls see the busy room: the drain holds.
	polls := read(f, func(f *fakeSFU) int { return f.polls })
	testcluster.Eventually(t, 60*time.Second, func() error {
		if n := read(f, func(f *fakeSFU) int { return f.polls }); n < polls+5 {
			return fmt.Errorf("%d polls since the drain began", n-polls)
		}
		return nil
	})
	select {
	case err := <-run.done:
		run.done <- err // for the cleanup
		t.Fatalf("the sidecar finished its drain with a busy room: %v", err)
	default:
	}
	if s, err := cl.Server(ctx, "ends", false); err != nil || s.State != "draining" {
		t.Fatalf("server while its room is busy: %+v %v", s, err)
	}

	f.setParticipants(t, "busy", 0)
	waitDrained(t, run, 60*time.Second, "drain after the last room emptied")
	checkDrainedAway(t, ctx, cl, f, "ends", "busy")
}

// A drain whose room never empties deregisters the server at the drain's
// timeout, not before; the room is released and closed on the SFU.
func TestSidecarDrainTimeout(t *testing.T) {
	c := testcluster.New(t, 1)
	cl := c.Client()
	ctx := testcluster.Context(t, 3*time.Minute)
	f := newFakeSFU()
	const drainTimeout = 3 * time.Second
	run := runFake(t, c, "stays", f, func(cfg *sidecar.Config) { cfg.DrainTimeout = drainTimeout })
	placeOnFake(t, ctx, cl, "stays", "busy")
	makeBusy(t, ctx, cl, f, "stays", "busy")

	start := time.Now()
	if err := run.sc.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, run, drainTimeout+60*time.Second, "drain with a room that never ends")
	if d := time.Since(start); d < drainTimeout {
		t.Fatalf("deregistered %v after the drain began, before its timeout %v, with a busy room", d, drainTimeout)
	}
	checkDrainedAway(t, ctx, cl, f, "stays", "busy")
}

// A room the SFU refuses to create: its placement is given up at once
// (not at the idle timeout), the cluster keeps the room vacated with the
// SFU's reason, and the application's wait for the room ends with
// ErrRoomNotReady saying why; another room on the same server is
// unaffected.
func TestSidecarReleasesARoomTheSFURefuses(t *testing.T) {
	c := testcluster.New(t, 1)
	cl := c.Client()
	ctx := testcluster.Context(t, 3*time.Minute)
	f := newFakeSFU()
	f.refuse = map[string]bool{"bad name": true}
	runFake(t, c, "picky", f, func(cfg *sidecar.Config) { cfg.RoomIdleTimeout = time.Hour })
	placeOnFake(t, ctx, cl, "picky", "good")
	r, err := cl.PlaceRoom(ctx, "bad name", api.PlaceRoomRequest{SFU: api.SFULiveKit})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err = cl.WaitRoomReady(wctx, r)
	if !errors.Is(err, api.ErrRoomNotReady) || !strings.Contains(err.Error(), `fake SFU refuses room "bad name"`) || wctx.Err() != nil {
		t.Fatalf("waiting for a room the SFU refuses: %v (wait's context: %v), want ErrRoomNotReady with the SFU's reason", err, wctx.Err())
	}
	if got, err := cl.Room(ctx, "bad name"); err != nil || got.Server != "" || !strings.Contains(got.VacatedReason, "refuses room") {
		t.Fatalf("the refused room: %+v %v, want it vacated with the SFU's reason", got, err)
	}
	if _, err := cl.Room(ctx, "good"); err != nil {
		t.Fatalf("the other room: %v", err)
	}
}

// An SFU whose process the adapter cannot tell at first (LiveKit before
// its metrics answer: no instance) keeps its incarnation when the
// instance becomes known; a new instance after that is a restart between
// two polls: a new incarnation, and the placed room created again on the
// new process.
func TestSidecarInstanceLearntThenRestarted(t *testing.T) {
	c := testcluster.New(t, 1)
	cl := c.Client()
	ctx := testcluster.Context(t, 3*time.Minute)
	f := newFakeSFU()
	f.instance = ""
	run := runFake(t, c, "learner", f, nil)
	placeOnFake(t, ctx, cl, "learner", "kept")
	first, err := cl.Server(ctx, "learner", false)
	if err != nil {
		t.Fatal(err)
	}
	// Known from now on: the same process, no new registration. Three
	// polls after the change, the sidecar has acted on it.
	f.mu.Lock()
	f.instance = "lk-1"
	seen := f.polls
	f.mu.Unlock()
	testcluster.Eventually(t, 30*time.Second, func() error {
		if n := read(f, func(f *fakeSFU) int { return f.polls }); n < seen+3 {
			return fmt.Errorf("%d polls since the instance became known", n-seen)
		}
		return nil
	})
	if s, err := cl.Server(ctx, "learner", false); err != nil || s.Incarnation != first.Incarnation || run.sc.Incarnation() != first.Incarnation {
		t.Fatalf("after the instance became known: %+v %v (sidecar at %d), want incarnation %d", s, err, run.sc.Incarnation(), first.Incarnation)
	}
	if n := read(f, func(f *fakeSFU) int { return f.ensured["kept"] }); n != 1 {
		t.Fatalf("room created %d times, want once", n)
	}
	// A new process between two polls.
	f.restart("lk-2")
	testcluster.Eventually(t, 30*time.Second, func() error {
		s, err := cl.Server(ctx, "learner", false)
		if err != nil {
			return err
		}
		if s.State != "active" || s.Incarnation <= first.Incarnation {
			return fmt.Errorf("%s at incarnation %d (was %d)", s.State, s.Incarnation, first.Incarnation)
		}
		if !read(f, func(f *fakeSFU) bool { return f.rooms["kept"] != nil }) {
			return errors.New("the room is not created on the new process")
		}
		return nil
	})
	if n := read(f, func(f *fakeSFU) int { return f.failedPolls }); n != 0 {
		t.Fatalf("%d polls failed", n)
	}
	if r, err := cl.Room(ctx, "kept"); err != nil || r.Server != "learner" {
		t.Fatalf("the room after the restart: %+v %v", r, err)
	}
}
