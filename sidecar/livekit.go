package sidecar

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/errcode"
)

// LiveKitConfig configures the LiveKit adapter.
type LiveKitConfig struct {
	// URL is the server's URL as clients use it (ws://host:7880 or
	// wss://...); the RoomService (Twirp) API is reached on the same host
	// over http(s).
	URL string
	// APIKey and APISecret sign the RoomService requests' access tokens.
	APIKey, APISecret string
	// EmptyTimeout is the empty_timeout (seconds) of rooms the sidecar
	// creates (default 300, LiveKit's own default).
	EmptyTimeout int
	// MetricsURL, when set, is the server's Prometheus endpoint
	// (http://host:port/metrics; `prometheus: port:` in livekit.yaml).
	// Polls then read its packet byte counters for the server's bitrates,
	// which the RoomService API does not give, and the process start time
	// that tells a restarted LiveKit apart even between two polls, within
	// MetricsTimeout (default 250 ms) of each poll.
	MetricsURL     string
	MetricsTimeout time.Duration
	// Logger gets the metrics endpoint's failures (at most one line a
	// minute); nil discards them.
	Logger *slog.Logger
	// Client sends the requests (default: 2 s timeout, no proxy).
	Client *http.Client
}

// LiveKit drives one LiveKit server through its RoomService Twirp API
// (JSON), signing each request with a short-lived HS256 access token made
// from the API key and secret. LiveKit creates rooms on join and closes
// empty ones itself; the sidecar creates placed rooms ahead (CreateRoom is
// idempotent) so the empty timeout applies. LiveKit has no switch to
// refuse new sessions: on drain, the cluster just places no new rooms
// there and existing ones finish.
type LiveKit struct {
	cfg LiveKitConfig
	api string // http(s)://host:port
	hc  *http.Client

	mu   sync.Mutex
	last byteCount // the packet byte counters at the last good reading
	// instance is the LiveKit process's start time at the last reading
	// that gave one (Unix seconds as LiveKit prints them; empty before).
	instance string
	// warnedAt and startWarnedAt are when a metrics failure, and a
	// reading without a usable start time, were last logged.
	warnedAt, startWarnedAt time.Time
}

// maxSubscribedTracks bounds a believable subscribed-tracks figure.
const maxSubscribedTracks = 1 << 24

// byteCount is a reading of LiveKit's packet byte counters.
type byteCount struct {
	in, out float64
	at      time.Time
}

// NewLiveKit returns the adapter for one LiveKit server.
func NewLiveKit(cfg LiveKitConfig) (*LiveKit, error) {
	api := cfg.URL
	switch {
	case strings.HasPrefix(api, "ws://"):
		api = "http://" + strings.TrimPrefix(api, "ws://")
	case strings.HasPrefix(api, "wss://"):
		api = "https://" + strings.TrimPrefix(api, "wss://")
	case strings.HasPrefix(api, "http://"), strings.HasPrefix(api, "https://"):
	default:
		return nil, fmt.Errorf("%w: livekit URL %q must be ws(s):// or http(s)://host:port", errcode.ErrInvalid, cfg.URL)
	}
	if cfg.APIKey == "" || cfg.APISecret == "" {
		return nil, fmt.Errorf("%w: livekit API key and secret are required", errcode.ErrInvalid)
	}
	if cfg.MetricsURL != "" && !strings.HasPrefix(cfg.MetricsURL, "http://") && !strings.HasPrefix(cfg.MetricsURL, "https://") {
		return nil, fmt.Errorf("%w: livekit metrics URL %q must be http(s)://host:port/metrics", errcode.ErrInvalid, cfg.MetricsURL)
	}
	if cfg.EmptyTimeout <= 0 {
		cfg.EmptyTimeout = 300
	}
	if cfg.MetricsTimeout <= 0 {
		cfg.MetricsTimeout = 250 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	hc := cfg.Client
	if hc == nil {
		hc = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil,
			DialContext: (&net.Dialer{Timeout: time.Second}).DialContext, MaxIdleConnsPerHost: 4}}
	}
	return &LiveKit{cfg: cfg, api: strings.TrimRight(api, "/"), hc: hc}, nil
}

// Kind implements SFU.
func (l *LiveKit) Kind() string { return api.SFULiveKit }

// Addresses implements SFU: the URL clients connect to.
func (l *LiveKit) Addresses() []string { return []string{l.cfg.URL} }

// token makes a RoomService access token (HS256 JWT) valid for a minute.
func (l *LiveKit) token(now time.Time) string {
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	claims, _ := json.Marshal(map[string]any{
		"iss": l.cfg.APIKey, "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Minute).Unix(),
		"video": map[string]any{"roomList": true, "roomCreate": true, "roomAdmin": true},
	})
	msg := head + "." + enc.EncodeToString(claims)
	m := hmac.New(sha256.New, []byte(l.cfg.APISecret))
	m.Write([]byte(msg))
	return msg + "." + enc.EncodeToString(m.Sum(nil))
}

// twirp calls one RoomService method.
func (l *LiveKit) twirp(ctx context.Context, method string, in, out any) error {
	body, _ := json.Marshal(in)
	url := l.api + "/twirp/livekit.RoomService/" + method
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+l.token(time.Now()))
	resp, err := l.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w: livekit %s: %v", ErrUnavailable, method, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJanusAnswer))
	if err != nil {
		return fmt.Errorf("%w: livekit %s: %v", ErrUnavailable, method, err)
	}
	if resp.StatusCode != http.StatusOK {
		var te struct {
			Code string `json:"code"`
			Msg  string `json:"msg"`
		}
		if json.Unmarshal(b, &te) != nil || te.Code == "" {
			if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
				// LiveKit refuses a bad token in plain text.
				return &twirpError{code: "unauthenticated", err: fmt.Errorf("%w: livekit %s: HTTP %d (wrong API key or secret?)", ErrRefused, method, resp.StatusCode)}
			}
			return fmt.Errorf("%w: livekit %s answered HTTP %d %q", ErrBadAnswer, method, resp.StatusCode, truncate(b))
		}
		return &twirpError{code: te.Code, err: fmt.Errorf("%w: livekit %s: %s: %s", ErrRefused, method, te.Code, te.Msg)}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%w: livekit %s: %v", ErrBadAnswer, method, err)
	}
	return nil
}

// twirpError carries a Twirp error code ("not_found", "unauthenticated").
type twirpError struct {
	code string
	err  error
}

func (e *twirpError) Error() string { return e.err.Error() }
func (e *twirpError) Unwrap() error { return e.err }

// Poll implements SFU with ListRooms (participant and publisher counts).
// With the metrics endpoint it also reads the server's bitrates and
// subscribed tracks, and tells the LiveKit process by its start time
// (Status.Instance): a LiveKit restarted between two polls is then a new
// instance. Without the endpoint, or until it gives a start time, the
// instance is empty and a restart is seen only when a poll finds LiveKit
// not answering.
func (l *LiveKit) Poll(ctx context.Context) (Status, error) {
	var out struct {
		Rooms []struct {
			Name         string `json:"name"`
			Participants int64  `json:"num_participants"`
			Publishers   int64  `json:"num_publishers"`
		} `json:"rooms"`
	}
	if err := l.twirp(ctx, "ListRooms", map[string]any{}, &out); err != nil {
		return Status{}, err
	}
	var st Status
	for _, r := range out.Rooms {
		st.Rooms = append(st.Rooms, RoomStatus{Name: r.Name, Participants: r.Participants, Publishers: r.Publishers})
	}
	if l.cfg.MetricsURL != "" {
		// The rooms stand without the bitrates: a metrics endpoint that
		// fails or is slow leaves them at 0 for this poll and costs it at
		// most MetricsTimeout.
		mctx, cancel := context.WithTimeout(ctx, l.cfg.MetricsTimeout)
		m := l.metrics(mctx, time.Now())
		cancel()
		st.IngressBps, st.EgressBps, st.SubscribedTracks = m.ingressBps, m.egressBps, m.subscribed
		if m.err != nil {
			l.warn(&l.warnedAt, "livekit metrics unreadable: bitrates reported as 0", m.err)
		}
		switch {
		case m.startErr == nil:
			l.mu.Lock()
			l.instance = strconv.FormatFloat(m.start, 'f', -1, 64)
			l.mu.Unlock()
		case !m.failed:
			// The endpoint answered, without a usable start time (its
			// failures are the line above's).
			l.warn(&l.startWarnedAt, "livekit metrics give no process start time: a LiveKit restart between two polls keeps its incarnation", m.startErr)
		}
	}
	// The last start time read: a reading that failed says nothing of a
	// restart (the next good one will).
	l.mu.Lock()
	st.Instance = l.instance
	l.mu.Unlock()
	return st, nil
}

// warn logs a metrics failure, at most once a minute per *at (the time of
// the last line).
func (l *LiveKit) warn(at *time.Time, msg string, err error) {
	l.mu.Lock()
	now := time.Now()
	quiet := now.Sub(*at) < time.Minute
	if !quiet {
		*at = now
	}
	l.mu.Unlock()
	if !quiet {
		l.cfg.Logger.Warn(msg, "url", l.cfg.MetricsURL, "err", err)
	}
}

// CheckMetrics reads the metrics endpoint once (the bitrates are 0 until
// the next reading); an error says why it cannot be used for the
// bitrates, or to tell LiveKit processes apart (no process start time).
func (l *LiveKit) CheckMetrics(ctx context.Context) error {
	m := l.metrics(ctx, time.Now())
	if m.failed {
		return m.err // one reason for both
	}
	return errors.Join(m.err, m.startErr)
}

// liveKitMetrics is what one reading of the metrics endpoint gives a
// poll. err says why the bitrates and subscribed tracks are 0, startErr
// why the start time is; failed, that the endpoint gave nothing (err and
// startErr are then the same).
type liveKitMetrics struct {
	ingressBps, egressBps, subscribed int64
	err                               error
	start                             float64 // Unix seconds
	startErr                          error
	failed                            bool
}

// metrics reads the Prometheus endpoint (parseLiveKitMetrics). The
// bitrates are the bits per second since the last good reading of the
// packet byte counters (0 on the first, after a counter reset, or for a
// figure above maxBytesPerSecond). A reading with unusable byte counters
// is not kept: the next rate spans both intervals.
func (l *LiveKit) metrics(ctx context.Context, now time.Time) liveKitMetrics {
	fail := func(err error) liveKitMetrics { return liveKitMetrics{err: err, startErr: err, failed: true} }
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.cfg.MetricsURL, nil)
	if err != nil {
		return fail(err)
	}
	resp, err := l.hc.Do(req)
	if err != nil {
		return fail(fmt.Errorf("%w: livekit metrics: %v", ErrUnavailable, err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fail(fmt.Errorf("%w: livekit metrics answered HTTP %d", ErrBadAnswer, resp.StatusCode))
	}
	rd, err := parseLiveKitMetrics(resp.Body)
	if err != nil {
		if ctx.Err() != nil {
			// Cut off by the poll's bound, not a bad answer.
			err = fmt.Errorf("%w: livekit metrics: %v", ErrUnavailable, err)
		}
		return fail(err)
	}
	m := liveKitMetrics{start: rd.start, startErr: rd.startErr, err: rd.bytesErr}
	if rd.bytesErr != nil {
		return m
	}
	m.subscribed = rd.subscribed
	cur := byteCount{in: rd.in, out: rd.out, at: now}
	l.mu.Lock()
	prev := l.last
	l.last = cur
	l.mu.Unlock()
	dt := cur.at.Sub(prev.at).Seconds()
	if prev.at.IsZero() || dt <= 0 {
		return m
	}
	rate := func(now, before float64) int64 {
		bps := (now - before) / dt
		if bps < 0 || bps > maxBytesPerSecond {
			return 0
		}
		return int64(8 * bps)
	}
	m.ingressBps, m.egressBps = rate(cur.in, prev.in), rate(cur.out, prev.out)
	return m
}

// EnsureRoom implements SFU with CreateRoom (idempotent in LiveKit).
func (l *LiveKit) EnsureRoom(ctx context.Context, r RoomRef) error {
	var out map[string]any
	err := l.twirp(ctx, "CreateRoom", map[string]any{"name": r.Name, "empty_timeout": l.cfg.EmptyTimeout}, &out)
	var te *twirpError
	if errors.As(err, &te) {
		switch te.code {
		case "invalid_argument", "malformed", "out_of_range", "failed_precondition":
			return fmt.Errorf("%w: %w", ErrRoomRefused, err)
		}
	}
	return err
}

// CloseRoom implements SFU with DeleteRoom (a room already gone is fine).
func (l *LiveKit) CloseRoom(ctx context.Context, r RoomRef) error {
	var out map[string]any
	err := l.twirp(ctx, "DeleteRoom", map[string]any{"room": r.Name}, &out)
	var te *twirpError
	if errors.As(err, &te) && te.code == "not_found" {
		return nil
	}
	return err
}

// SetAcceptNew implements SFU: LiveKit cannot refuse new sessions.
func (l *LiveKit) SetAcceptNew(context.Context, bool) error {
	return fmt.Errorf("%w: livekit has no switch for new sessions", ErrUnsupported)
}
