package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// WatchOptions selects what Client.Watch follows.
type WatchOptions struct {
	// Kinds limits the stream: servers, allocations, policy, intents (all
	// when empty).
	Kinds []string
	// Since resumes after this synced index; nil starts with a full copy
	// (a reset event, every object, then synced).
	Since *uint64
	// IdleTimeout: a stream silent this long (heartbeats come every 5 s)
	// is taken for dead and reopened. Default 20 s.
	IdleTimeout time.Duration
}

// Watch follows GET /v1/watch, calling fn for every event, until ctx ends
// or fn returns an error (Watch then returns it). A broken stream — an
// agent gone, a stream cut off for reading slowly, an agent shutting
// down — is reopened on the next address from the last synced index, so
// fn sees no gap; an index the agent no longer remembers (410 compacted)
// restarts with a full copy, announced by a reset event.
func (c *Client) Watch(ctx context.Context, o WatchOptions, fn func(WatchEvent) error) error {
	if len(c.addrs) == 0 {
		return ErrNoAddress
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 20 * time.Second
	}
	hc := &http.Client{Transport: c.hc.Transport} // no overall timeout: the stream is long-lived
	since := o.Since
	backoff := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		addr := c.addrs[attempt%len(c.addrs)]
		got, err := c.watchOnce(ctx, hc, addr, o, &since, fn)
		if err == nil || errors.Is(err, ErrWatchStopped) || ctx.Err() != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		var fnErr *watchFnError
		if errors.As(err, &fnErr) {
			return fnErr.err
		}
		var ae *APIError
		if errors.As(err, &ae) && ae.Body.Code == "compacted" {
			since = nil // start over from a full copy
			continue
		}
		if errors.As(err, &ae) && !ae.Body.Retryable && ae.Status < 500 {
			return err
		}
		if got {
			backoff = 50 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff/2 + rand.N(backoff/2+1)):
		}
		if backoff < 2*time.Second {
			backoff *= 2
		}
	}
}

// watchFnError carries fn's own error out of watchOnce.
type watchFnError struct{ err error }

func (e *watchFnError) Error() string { return e.err.Error() }

// watchOnce reads one stream; since advances with every synced event. got
// reports whether any event arrived.
func (c *Client) watchOnce(ctx context.Context, hc *http.Client, addr string, o WatchOptions, since **uint64, fn func(WatchEvent) error) (got bool, err error) {
	q := url.Values{}
	if *since != nil {
		q.Set("since", strconv.FormatUint(**since, 10))
	}
	if len(o.Kinds) > 0 {
		q.Set("kinds", strings.Join(o.Kinds, ","))
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, c.scheme+"://"+addr+"/v1/watch?"+q.Encode(), nil)
	if err != nil {
		return false, err
	}
	tok := c.token
	if !c.tokenSet {
		tok = os.Getenv(TokenEnv)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		ae := &APIError{Status: resp.StatusCode}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(b, &ae.Body) != nil || ae.Body.Error == "" {
			ae.Body.Error = fmt.Sprintf("GET /v1/watch: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
		}
		return false, ae
	}
	// A silent stream (a partitioned agent sends no RST) is cut after
	// IdleTimeout; every line re-arms the timer.
	idle := time.AfterFunc(o.IdleTimeout, cancel)
	defer idle.Stop()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	inReset := false
	for sc.Scan() {
		idle.Reset(o.IdleTimeout)
		var ev WatchEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return got, fmt.Errorf("watch stream from %s: %w", addr, err)
		}
		got = true
		switch ev.Kind {
		case WatchError:
			return got, fmt.Errorf("watch stream from %s ended: %s (%s)", addr, ev.Error, ev.Code)
		case WatchReset:
			inReset = true
		case WatchSynced:
			inReset = false
			idx := ev.Index
			*since = &idx
		}
		if err := fn(ev); err != nil {
			return got, &watchFnError{err}
		}
	}
	if inReset {
		*since = nil // an incomplete copy: start over
	}
	if err := sc.Err(); err != nil {
		return got, fmt.Errorf("watch stream from %s: %w", addr, err)
	}
	return got, fmt.Errorf("watch stream from %s closed", addr)
}
