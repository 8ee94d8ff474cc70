package loadview

import (
	"context"
	"log/slog"
	"time"
)

// CheckForTest exposes one detection pass to the external tests, as if
// the detector had been running all along (every pass a window needs ran).
func CheckForTest(d *Detector) func(ctx context.Context, now, start time.Time, window time.Duration) {
	return func(ctx context.Context, now, start time.Time, window time.Duration) {
		d.check(ctx, now, start, window, now, slog.Default())
	}
}

// PassesForTest exposes the passes Run makes: each call is one pass at
// now, counted as Run counts them (a window needs need passes).
func PassesForTest(d *Detector, need int) func(ctx context.Context, now, start time.Time, window time.Duration) {
	p := newPassClock(need)
	return func(ctx context.Context, now, start time.Time, window time.Duration) {
		d.check(ctx, now, start, window, p.pass(now), slog.Default())
	}
}
