package cluster

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// shiftedClock is a wall clock that a test can jump.
type shiftedClock struct{ off atomic.Int64 }

func (s *shiftedClock) now() time.Time { return time.Now().Add(time.Duration(s.off.Load())) }

func TestLogClockGuardsJumps(t *testing.T) {
	const tol = time.Second
	cases := []struct {
		name      string
		jump      time.Duration
		guarded   bool
		offsetMin time.Duration // reported offset after observing the leader's own stamps
	}{
		{"no jump", 0, false, 0},
		{"within tolerance", 500 * time.Millisecond, false, 0},
		{"forward ten days", 240 * time.Hour, true, 240*time.Hour - tol},
		{"backward ten days", -240 * time.Hour, true, -240 * time.Hour},
		{"backward a minute", -time.Minute, true, -time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := &shiftedClock{}
			m := newMetrics()
			c := newLogClock(w.now, tol, slog.New(slog.NewTextHandler(io.Discard, nil)), m)
			// A follower applies fresh entries stamped by a leader whose clock
			// agrees with its own: they become the reference.
			for range 3 {
				c.observe(time.Now().UnixMilli())
			}
			if off, ok := c.Offset(); !ok || abs(off) > 100 {
				t.Fatalf("offset before the jump = %d (known %v), want ≈ 0", off, ok)
			}
			w.off.Store(int64(tc.jump))
			time.Sleep(20 * time.Millisecond) // some monotonic time passes
			real := time.Now().UnixMilli()
			got := c.now() // this node is now the leader
			if tc.guarded {
				// The stamp follows the log (monotonic since the reference),
				// slewed at most 1 % of the elapsed time toward the wall clock.
				if d := got - real; abs(d) > 100 {
					t.Fatalf("guarded stamp is %d ms off the real time (jump %v)", d, tc.jump)
				}
				if testutil.ToFloat64(m.guardedStamps) != 1 {
					t.Fatalf("guarded stamps = %v, want 1", testutil.ToFloat64(m.guardedStamps))
				}
			} else {
				if d := got - w.now().UnixMilli(); abs(d) > 50 {
					t.Fatalf("stamp %d ms off this node's wall clock, want the wall clock", d)
				}
				if testutil.ToFloat64(m.guardedStamps) != 0 {
					t.Fatal("stamp guarded within the tolerance")
				}
			}
			// Observing its own stamps, the node reports its offset (the
			// minimum over two windows: roll both past the pre-jump entries).
			c.mu.Lock()
			c.window = 0
			c.mu.Unlock()
			c.observe(got)
			c.observe(got)
			off, _ := c.Offset()
			if tc.guarded && (off < tc.offsetMin.Milliseconds() || abs(off) > abs(tc.jump.Milliseconds())+100) {
				t.Fatalf("offset after the jump = %d ms, want about %v", off, tc.jump)
			}
			if !tc.guarded && abs(off) > tol.Milliseconds() {
				t.Fatalf("offset %d ms beyond tolerance without a jump", off)
			}
			// Undo the jump: stamps are the wall clock again.
			w.off.Store(0)
			if d := c.now() - time.Now().UnixMilli(); abs(d) > 50 {
				t.Fatalf("after the jump is undone the stamp is %d ms off the wall clock", d)
			}
		})
	}
}

// A node that started with a wrong clock and never saw an agreeing entry
// stamps that clock (its reference is its own start), and followers
// report the offset; if its clock then steps, it is still guarded.
func TestLogClockStartReference(t *testing.T) {
	w := &shiftedClock{}
	w.off.Store(int64(time.Hour))
	c := newLogClock(w.now, time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)), newMetrics())
	if _, ok := c.Offset(); ok {
		t.Fatal("offset known before any entry")
	}
	if d := c.now() - w.now().UnixMilli(); abs(d) > 50 {
		t.Fatalf("stamp %d ms off the wall clock without a reference", d)
	}
	follower := newLogClock(time.Now, time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)), newMetrics())
	follower.observe(c.now())
	if off, _ := follower.Offset(); off > -time.Hour.Milliseconds()+100 {
		t.Fatalf("follower offset %d ms, want about -1h", off)
	}
	// A lagging node (its entries never agree with its clock) whose clock
	// steps while it runs: guarded against its own start.
	lagging := &shiftedClock{}
	lc := newLogClock(lagging.now, time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)), newMetrics())
	lc.observe(time.Now().Add(-5 * time.Second).UnixMilli()) // 5 s behind: not a reference
	lagging.off.Store(int64(240 * time.Hour))
	if stamp, guarded, _ := lc.estimate(); !guarded || abs(stamp-time.Now().UnixMilli()) > 100 {
		t.Fatalf("lagging node after a +240h step: stamp %d ms off real time, guarded %v", stamp-time.Now().UnixMilli(), guarded)
	}
}

// Slewing: a guarded stamp moves toward the wall clock by at most 1 % of
// the time since the reference.
func TestLogClockSlew(t *testing.T) {
	w := &shiftedClock{}
	c := newLogClock(w.now, 10*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)), newMetrics())
	ref := time.Now().UnixMilli()
	c.observe(ref)
	// Pretend the reference is 100 s old: the slew allows 1 s.
	c.mu.Lock()
	c.refAt = c.refAt.Add(-100 * time.Second)
	c.refMs -= 100_000
	c.mu.Unlock()
	w.off.Store(int64(time.Hour))
	d := c.now() - time.Now().UnixMilli()
	if d < 900 || d > 1100 {
		t.Fatalf("slewed stamp is %d ms ahead, want ≈ 1000 (1 %% of 100 s)", d)
	}
}

// fakeTime is a settable clock for both the wall and monotonic readings.
type fakeTime struct{ t time.Time }

func (f *fakeTime) now() time.Time { return f.t }

// Skew is reported from completed windows that agree: entries replayed
// while catching up after a restart are old (large offsets that shrink
// window by window) and must not be reported; a steady offset must.
func TestLogClockSkewReport(t *testing.T) {
	ft := &fakeTime{t: time.Unix(1_700_000_000, 0)}
	c := newLogClock(ft.now, time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)), newMetrics())
	c.mono = ft.now
	// feed applies, in each 1 s window, ten entries whose stamps are lag
	// behind this node's clock (lag(w) for window w).
	feed := func(windows int, lag func(w int) time.Duration) {
		for w := range windows {
			for i := range 10 {
				ft.t = ft.t.Add(100 * time.Millisecond)
				c.observe(ft.t.Add(-lag(w)).UnixMilli() - int64(i))
			}
		}
	}
	steps := []struct {
		name    string
		windows int
		lag     func(w int) time.Duration
		skewed  bool
	}{
		{"in sync", 3, func(int) time.Duration { return 5 * time.Millisecond }, false},
		{"catching up after 8 s down", 4, func(w int) time.Duration { return time.Duration(8-2*w) * time.Second }, false},
		{"caught up", 3, func(int) time.Duration { return 5 * time.Millisecond }, false},
		{"clock stepped 1 h ahead", 3, func(int) time.Duration { return time.Hour }, true},
		{"stepped back", 3, func(int) time.Duration { return 0 }, false},
		{"clock 10 s behind", 3, func(int) time.Duration { return -10 * time.Second }, true},
	}
	for _, st := range steps {
		// Decisions are made as windows complete: after three windows of a
		// step, its first two are decided on.
		feed(st.windows, st.lag)
		c.mu.Lock()
		got := c.skewed
		c.mu.Unlock()
		if got != st.skewed {
			t.Fatalf("%s: skewed = %v, want %v", st.name, got, st.skewed)
		}
	}
}

// TestLogClockSkewReportedAgainWhenItMoves: a clock already reported as
// skewed that is stepped again (here from 1 h ahead to 1 h behind, with
// no agreeing window between) is reported again, with its new offset.
func TestLogClockSkewReportedAgainWhenItMoves(t *testing.T) {
	ft := &fakeTime{t: time.Unix(1_700_000_000, 0)}
	var logs bytes.Buffer
	c := newLogClock(ft.now, time.Second, slog.New(slog.NewTextHandler(&logs, nil)), newMetrics())
	c.mono = ft.now
	feed := func(windows int, lag time.Duration) {
		for range windows * 10 {
			ft.t = ft.t.Add(100 * time.Millisecond)
			c.observe(ft.t.Add(-lag).UnixMilli())
		}
	}
	reports := func() int { return strings.Count(logs.String(), "clock skew: ") }
	feed(3, 5*time.Millisecond)
	feed(3, time.Hour)
	if n := reports(); n != 1 {
		t.Fatalf("%d skew reports after a step of 1 h, want 1", n)
	}
	feed(3, time.Hour)
	if n := reports(); n != 1 {
		t.Fatalf("%d skew reports while the offset stays, want 1", n)
	}
	feed(3, -time.Hour)
	if n := reports(); n != 2 {
		t.Fatalf("%d skew reports after a second step, want 2:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "offset_ms=-3600") {
		t.Fatalf("the second report does not give the new offset:\n%s", logs.String())
	}
}
