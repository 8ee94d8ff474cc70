package cluster

import (
	"log/slog"
	"sync"
	"time"
)

// The cluster's time is the time the leader writes into each log entry
// (the FSM never reads a clock). Allocation TTLs and the retention of
// released request ids are measured in it, so a leader whose wall clock
// jumps would expire live allocations (forward) or stop expiring anything
// (backward), and a request id purged early could be granted twice.
//
// logClock guards against that and reports it:
//
//   - Every node observes the stamp of every entry it applies. The
//     difference "my wall clock − stamp" is at least the clock offset
//     between this node and the leader that stamped it (plus the commit
//     latency, and more for old entries replayed at catch-up), so its
//     minimum over the last two windows is this node's clock offset
//     against the log. It is reported in /v1/status (clock_offset_ms), as
//     a gauge, and logged when it crosses the tolerance.
//   - A stamp that agrees with this node's wall clock within the
//     tolerance becomes the reference: (stamp, monotonic time of the
//     observation). From it, "reference + monotonic time since" is what the
//     log's time should read now, whatever the wall clock did since.
//   - The leader stamps its wall clock when it agrees with that estimate
//     within the tolerance. Otherwise it stamps the estimate, moved toward
//     its wall clock by at most maxSlew of the time elapsed since the
//     reference (as ntpd slews rather than steps), and says so. The
//     cluster's time then never jumps when one node's wall clock does.
//
// Before any entry agrees with its clock, a node's reference is its own
// wall clock when it started: a step of the wall clock while it runs is
// still caught (wall time elapsed ≠ monotonic time elapsed), but a node
// that started with a wrong clock stamps it; the other nodes then report
// the offset.
type logClock struct {
	wall   func() time.Time
	mono   func() time.Time // monotonic readings; time.Now except in tests
	tol    time.Duration
	window time.Duration
	log    *slog.Logger
	m      *metrics

	mu      sync.Mutex
	hasRef  bool
	refMs   int64     // last stamp that agreed with this node's wall clock
	refAt   time.Time // when it was observed (monotonic reading)
	winAt   time.Time // start of the current observation window
	cur     offsetMin // minimum offset in the current window
	prev    offsetMin // in the last completed one
	older   offsetMin // and in the one before
	skewed  bool      // last reported offset was beyond the tolerance
	skewMs  int64     // and that offset, while skewed
	guarded bool      // the leader's last stamp was the estimate, not its wall clock
}

// maxSlew is how fast the guarded leader's stamps move toward its wall
// clock: 1 % of elapsed time, so TTLs run at most 1 % fast or slow while
// a leader's clock disagrees with the log.
const maxSlew = 0.01

type offsetMin struct {
	ok bool
	ms int64
}

func (o *offsetMin) add(ms int64) {
	if !o.ok || ms < o.ms {
		o.ok, o.ms = true, ms
	}
}

func newLogClock(wall func() time.Time, tol time.Duration, log *slog.Logger, m *metrics) *logClock {
	if wall == nil {
		wall = time.Now
	}
	c := &logClock{wall: wall, mono: time.Now, tol: tol, window: time.Second, log: log, m: m}
	// Until an entry agrees with it, the reference is this node's own wall
	// clock at start: a node whose apply lags the log by more than the
	// tolerance (catching up, overloaded) never sees an agreeing entry, and
	// must still notice its wall clock stepping while it runs.
	c.hasRef, c.refMs, c.refAt = true, wall().UnixMilli(), c.mono()
	return c
}

// observe records the stamp of an entry this node just applied. It runs
// on raft's apply goroutine, after the FSM's lock is released.
//
// Skew is decided when a window completes, from completed windows only:
// it starts when the last two windows' minima are both beyond the
// tolerance and agree with each other within it, and ends when the last
// window's minimum is within it. Entries applied while catching up after a
// restart are old, so their offsets are large but shrink from one window
// to the next as the node catches up: they are never reported as skew.
func (c *logClock) observe(stampMs int64) {
	if stampMs == 0 {
		return // entries written by tools without a leader's time
	}
	mono := c.mono()
	off := c.wall().UnixMilli() - stampMs
	tol := c.tol.Milliseconds()
	c.mu.Lock()
	if abs(off) <= tol {
		c.hasRef, c.refMs, c.refAt = true, stampMs, mono
	}
	report := false
	if c.winAt.IsZero() || mono.Sub(c.winAt) >= c.window {
		c.older, c.prev, c.cur, c.winAt = c.prev, c.cur, offsetMin{}, mono
		skewed, steady := c.skewed, false
		switch {
		case c.prev.ok && abs(c.prev.ms) <= tol:
			skewed = false
		case c.prev.ok && c.older.ok && abs(c.prev.ms) > tol && abs(c.prev.ms-c.older.ms) <= tol:
			skewed, steady = true, true
		}
		// A skewed clock that settles at another offset (stepped again) is
		// reported again, with the new offset.
		moved := skewed && c.skewed && steady && abs(c.prev.ms-c.skewMs) > tol
		report, c.skewed = skewed != c.skewed || moved, skewed
		if report && skewed {
			c.skewMs = c.prev.ms
		}
	}
	c.cur.add(off)
	est, _ := c.offsetLocked()
	skewed, window := c.skewed, c.prev.ms
	c.mu.Unlock()
	c.m.clockOffset.Set(float64(est) / 1000)
	switch {
	case report && skewed:
		c.log.Warn("clock skew: this node's wall clock disagrees with the time the leader stamps into the log (steadily, so not a catch-up); check NTP on this node and on the leader, or whether this node applies entries late",
			"offset_ms", window, "tolerance", c.tol)
	case report:
		c.log.Info("clock skew over: this node's wall clock agrees with the log again", "offset_ms", window)
	}
}

// offsetLocked is the minimum observed offset over the current and
// previous windows. c.mu must be held.
func (c *logClock) offsetLocked() (int64, bool) {
	o := c.prev
	if c.cur.ok {
		o.add(c.cur.ms)
	}
	return o.ms, o.ok
}

// Offset is this node's wall clock minus the log's time, in milliseconds
// (positive: this node is ahead), and whether any entry was observed.
func (c *logClock) Offset() (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offsetLocked()
}

// now is the time the leader stamps into the next log entry, in Unix
// milliseconds: its wall clock when that agrees with the log, the guarded
// estimate otherwise (see the type's comment). It logs when guarding
// starts and stops and counts guarded stamps. Must run on the leader.
func (c *logClock) now() int64 {
	stamp, guard, d := c.estimate()
	c.mu.Lock()
	report := guard != c.guarded
	c.guarded = guard
	c.mu.Unlock()
	if guard {
		c.m.guardedStamps.Inc()
	}
	switch {
	case report && guard:
		c.log.Warn("clock jump: the leader's wall clock disagrees with the log's time; stamping the log's time (monotonic since the last agreeing entry) and slewing 1 % toward the wall clock",
			"wall_minus_log_ms", d, "tolerance", c.tol)
	case report:
		c.log.Info("clock jump over: stamping the wall clock again", "wall_minus_log_ms", d)
	}
	return stamp
}

// estimate is now without side effects: the stamp, whether it is guarded,
// and the wall clock minus the log's estimated time (ms).
func (c *logClock) estimate() (stamp int64, guarded bool, wallMinusLog int64) {
	w := c.wall().UnixMilli()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.hasRef {
		return w, false, 0
	}
	el := time.Since(c.refAt)
	est := c.refMs + el.Milliseconds()
	d := w - est
	if abs(d) <= c.tol.Milliseconds() {
		return w, false, d
	}
	lim := int64(maxSlew * float64(el.Milliseconds()))
	return est + max(-lim, min(lim, d)), true, d
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}
