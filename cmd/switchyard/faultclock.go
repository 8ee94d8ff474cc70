package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// faultClock is the agent's wall clock shifted by the duration written in
// a file (--fault-clock-file), re-read every 100 ms. It is a fault
// injection hook: a static Go binary ignores faketime and CLOCK_REALTIME
// cannot be namespaced, so this is how the chaos suite jumps one running
// node's wall clock. Only what the agent stamps and compares with wall time
// is shifted (the leader's log time, clock-skew reports); timers and
// timeouts keep using the monotonic clock, as they would through a real
// wall-clock step.
type faultClock struct {
	path string
	off  atomic.Int64
	log  *slog.Logger
}

// readClockOffset parses the file's content: a Go duration ("240h",
// "-1h30m"); an empty or missing file means no offset.
func readClockOffset(path string) (time.Duration, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a duration such as 240h or -90s", path, s)
	}
	return d, nil
}

func newFaultClock(ctx context.Context, path string, log *slog.Logger) (*faultClock, error) {
	c := &faultClock{path: path, log: log}
	d, err := readClockOffset(path)
	if err != nil {
		return nil, err
	}
	c.set(d)
	go c.watch(ctx)
	return c, nil
}

func (c *faultClock) set(d time.Duration) {
	if old := time.Duration(c.off.Swap(int64(d))); old != d {
		c.log.Warn("fault injection: wall clock shifted", "offset", d, "file", c.path)
	}
}

func (c *faultClock) watch(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d, err := readClockOffset(c.path)
		if err != nil {
			if err.Error() != lastErr {
				c.log.Error("fault clock file unreadable; keeping the current offset", "err", err)
				lastErr = err.Error()
			}
			continue
		}
		lastErr = ""
		c.set(d)
	}
}

// Now is the shifted wall clock (it keeps time.Now's monotonic reading).
func (c *faultClock) Now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }
