package loadview

import (
	"context"
	"log/slog"
	"time"
)

// CheckForTest exposes one detection pass to the external tests.
func CheckForTest(d *Detector) func(ctx context.Context, now, start time.Time, window time.Duration) {
	return func(ctx context.Context, now, start time.Time, window time.Duration) {
		d.check(ctx, now, start, window, slog.Default())
	}
}
