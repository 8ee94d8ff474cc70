package sidecar

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/errcode"
)

// JanusConfig configures the Janus adapter.
type JanusConfig struct {
	// URL is Janus' HTTP API (e.g. http://10.0.0.5:8088/janus): the sidecar
	// talks to it, and it is the URL clients are given unless PublicURL is
	// set.
	URL string
	// PublicURL is the HTTP API URL clients are given (default URL).
	PublicURL string
	// WSURL is Janus' WebSocket API URL, registered as a second address
	// when set (clients get it as urls.ws).
	WSURL string
	// AdminURL is Janus' admin API (e.g. http://127.0.0.1:7088/admin) and
	// AdminSecret its secret; used to turn new sessions off on drain and
	// to read each room's subscribers and bitrates (handle_info).
	AdminURL    string
	AdminSecret string
	// Publishers is max_publishers of the VideoRooms the sidecar creates
	// (default 16).
	Publishers int
	// Client sends the requests (default: 2 s timeout, no proxy).
	Client *http.Client
}

// Janus drives one Janus instance's VideoRoom plugin over its HTTP API.
// It keeps one Janus session with one VideoRoom handle; a session that
// Janus no longer knows (458: the process restarted) is replaced, and the
// new session id becomes the instance, so the sidecar re-registers under a
// new incarnation. It is safe for concurrent use.
type Janus struct {
	cfg JanusConfig
	hc  *http.Client
	// making is a one-slot lock held while a session and handle are made,
	// so that callers finding none at once (a poll and a room being
	// created) make one between them.
	making chan struct{}

	mu      sync.Mutex
	session uint64
	handle  uint64
}

// NewJanus returns the adapter for one Janus instance.
func NewJanus(cfg JanusConfig) (*Janus, error) {
	if !strings.HasPrefix(cfg.URL, "http://") && !strings.HasPrefix(cfg.URL, "https://") {
		return nil, fmt.Errorf("%w: janus URL %q must be http(s)://host:port/janus", errcode.ErrInvalid, cfg.URL)
	}
	cfg.URL = strings.TrimRight(cfg.URL, "/")
	if cfg.PublicURL == "" {
		cfg.PublicURL = cfg.URL
	}
	if cfg.Publishers <= 0 {
		cfg.Publishers = 16
	}
	hc := cfg.Client
	if hc == nil {
		hc = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil,
			DialContext: (&net.Dialer{Timeout: time.Second}).DialContext, MaxIdleConnsPerHost: 4}}
	}
	return &Janus{cfg: cfg, hc: hc, making: make(chan struct{}, 1)}, nil
}

// Kind implements SFU.
func (j *Janus) Kind() string { return api.SFUJanus }

// Addresses implements SFU: the HTTP API URL, then the WebSocket URL.
func (j *Janus) Addresses() []string {
	out := []string{j.cfg.PublicURL}
	if j.cfg.WSURL != "" {
		out = append(out, j.cfg.WSURL)
	}
	return out
}

// janusError is an error Janus answered.
type janusError struct {
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

// Janus' "no such session" and "no such handle" codes.
const (
	janusNoSuchSession = 458
	janusNoSuchHandle  = 459
)

// maxJanusAnswer bounds an answer's size.
const maxJanusAnswer = 4 << 20

func transaction() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// post sends one Janus request and decodes the answer into out. Janus
// errors come back as *codeError wrapping ErrRefused.
func (j *Janus) post(ctx context.Context, url string, req map[string]any, out any) error {
	req["transaction"] = transaction()
	body, _ := json.Marshal(req)
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := j.hc.Do(hr)
	if err != nil {
		return fmt.Errorf("%w: janus %s: %v", ErrUnavailable, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJanusAnswer))
	if err != nil {
		return fmt.Errorf("%w: janus %s: %v", ErrUnavailable, url, err)
	}
	var head struct {
		Janus string      `json:"janus"`
		Error *janusError `json:"error"`
	}
	if err := json.Unmarshal(b, &head); err != nil || head.Janus == "" {
		return fmt.Errorf("%w: janus %s answered HTTP %d %q", ErrBadAnswer, url, resp.StatusCode, truncate(b))
	}
	if head.Janus == "error" {
		e := head.Error
		if e == nil {
			e = &janusError{Reason: "error without details"}
		}
		return &codeError{code: e.Code, err: fmt.Errorf("%w: janus %s: %d %s", ErrRefused, url, e.Code, e.Reason)}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%w: janus %s: %v", ErrBadAnswer, url, err)
		}
	}
	return nil
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// codeError carries Janus' error code.
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }
func (e *codeError) Unwrap() error { return e.err }

func janusCode(err error) int {
	var ce *codeError
	if errors.As(err, &ce) {
		return ce.code
	}
	return 0
}

// ensureHandle returns the session and VideoRoom handle, creating them
// when there are none.
func (j *Janus) ensureHandle(ctx context.Context) (uint64, uint64, error) {
	j.mu.Lock()
	s, h := j.session, j.handle
	j.mu.Unlock()
	if s != 0 && h != 0 {
		return s, h, nil
	}
	select {
	case j.making <- struct{}{}:
	case <-ctx.Done():
		return 0, 0, fmt.Errorf("%w: janus session: %v", ErrUnavailable, ctx.Err())
	}
	defer func() { <-j.making }()
	j.mu.Lock()
	s, h = j.session, j.handle
	j.mu.Unlock()
	if s != 0 && h != 0 {
		return s, h, nil // made by the caller that held the lock
	}
	var created struct {
		Data struct {
			ID uint64 `json:"id"`
		} `json:"data"`
	}
	if s == 0 {
		if err := j.post(ctx, j.cfg.URL, map[string]any{"janus": "create"}, &created); err != nil {
			return 0, 0, err
		}
		s = created.Data.ID
		if s != 0 {
			// Kept, so that an attach that fails is tried again on this
			// session instead of leaving it behind for a new one.
			j.mu.Lock()
			j.session = s
			j.mu.Unlock()
		}
	}
	if err := j.post(ctx, j.cfg.URL+"/"+strconv.FormatUint(s, 10), map[string]any{"janus": "attach", "plugin": "janus.plugin.videoroom"}, &created); err != nil {
		if janusCode(err) == janusNoSuchSession {
			j.reset(s)
		}
		return 0, 0, err
	}
	h = created.Data.ID
	if s == 0 || h == 0 {
		return 0, 0, fmt.Errorf("%w: janus gave session %d handle %d", ErrBadAnswer, s, h)
	}
	j.mu.Lock()
	j.session, j.handle = s, h
	j.mu.Unlock()
	return s, h, nil
}

// reset forgets session s (which Janus no longer knows) and its handle,
// unless another caller has replaced it already.
func (j *Janus) reset(s uint64) {
	j.mu.Lock()
	if j.session == s {
		j.session, j.handle = 0, 0
	}
	j.mu.Unlock()
}

// videoroom sends one VideoRoom request and returns the plugin's data.
// Plugin errors (error_code) wrap ErrRefused.
func (j *Janus) videoroom(ctx context.Context, body map[string]any) (map[string]json.RawMessage, error) {
	d, _, err := j.videoroomOn(ctx, body)
	return d, err
}

// videoroomOn is videoroom, also returning the Janus session the answer
// came on (what identifies the Janus process: another caller may reset
// the shared session meanwhile).
func (j *Janus) videoroomOn(ctx context.Context, body map[string]any) (map[string]json.RawMessage, uint64, error) {
	for attempt := 0; ; attempt++ {
		s, h, err := j.ensureHandle(ctx)
		if err != nil {
			return nil, 0, err
		}
		var out struct {
			Plugindata struct {
				Data map[string]json.RawMessage `json:"data"`
			} `json:"plugindata"`
		}
		err = j.post(ctx, fmt.Sprintf("%s/%d/%d", j.cfg.URL, s, h), map[string]any{"janus": "message", "body": body}, &out)
		if c := janusCode(err); (c == janusNoSuchSession || c == janusNoSuchHandle) && attempt == 0 {
			j.reset(s) // Janus restarted (or forgot us): a new session
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		d := out.Plugindata.Data
		if d == nil {
			return nil, 0, fmt.Errorf("%w: videoroom answer without plugin data", ErrBadAnswer)
		}
		if raw, ok := d["error_code"]; ok {
			var msg string
			_ = json.Unmarshal(d["error"], &msg)
			code, _ := strconv.Atoi(string(raw))
			return d, s, &codeError{code: code, err: fmt.Errorf("%w: videoroom %v: %s", ErrRefused, body["request"], msg)}
		}
		return d, s, nil
	}
}

// Poll implements SFU: the VideoRoom list with participant counts, and
// per occupied room its publishers.
func (j *Janus) Poll(ctx context.Context) (Status, error) {
	d, session, err := j.videoroomOn(ctx, map[string]any{"request": "list"})
	if err != nil {
		return Status{}, err
	}
	var list []struct {
		Room         json.Number `json:"room"`
		Description  string      `json:"description"`
		Participants int64       `json:"num_participants"`
	}
	if err := json.Unmarshal(d["list"], &list); err != nil {
		return Status{}, fmt.Errorf("%w: videoroom list: %v", ErrBadAnswer, err)
	}
	st := Status{Instance: strconv.FormatUint(session, 10)}
	for _, r := range list {
		n, _ := strconv.ParseUint(r.Room.String(), 10, 64)
		rs := RoomStatus{Name: r.Description, Number: n, Participants: r.Participants}
		if r.Participants > 0 {
			pd, err := j.videoroom(ctx, map[string]any{"request": "listparticipants", "room": n})
			if err == nil {
				var ps []struct {
					Publisher bool `json:"publisher"`
				}
				_ = json.Unmarshal(pd["participants"], &ps)
				for _, p := range ps {
					if p.Publisher {
						rs.Publishers++
					}
				}
			}
		}
		st.Rooms = append(st.Rooms, rs)
	}
	if j.cfg.AdminURL != "" {
		// Subscribers and bitrates are in the admin API only; without it
		// (or while it fails) they stay zero and the poll still counts.
		if stats, err := j.handleStats(ctx); err == nil {
			for i := range st.Rooms {
				rs := stats[st.Rooms[i].Number]
				st.Rooms[i].Subscribers, st.Rooms[i].SubscribedTracks = rs.subscribers, rs.subscribedTracks
				st.Rooms[i].IngressBps, st.Rooms[i].EgressBps = rs.ingressBps, rs.egressBps
			}
		}
	}
	return st, nil
}

// MaxStatHandles bounds the handles whose statistics one poll reads from
// the admin API (a request each): an instance with more reports the
// subscribers and bitrates of the first MaxStatHandles only.
const MaxStatHandles = 256

// maxBytesPerSecond bounds the bytes_lastsec of a medium the sidecar
// takes from Janus (1 TiB/s); a negative or larger figure is ignored, so
// the sums cannot overflow.
const maxBytesPerSecond = 1 << 40

// roomStats is what the admin API tells of one VideoRoom's handles.
type roomStats struct {
	subscribers, subscribedTracks, ingressBps, egressBps int64
}

// handleInfo is the part of an admin API handle_info answer the sidecar
// reads: the VideoRoom handle's room and role, and per medium the bytes
// of the last second Janus counted each way.
type handleInfo struct {
	Info struct {
		Plugin         string `json:"plugin"`
		PluginSpecific struct {
			Room json.Number `json:"room"`
			Type string      `json:"type"`
		} `json:"plugin_specific"`
		WebRTC struct {
			Media map[string]struct {
				Type  string `json:"type"` // audio, video or data
				Stats struct {
					In struct {
						BytesLastSec int64 `json:"bytes_lastsec"`
					} `json:"in"`
					Out struct {
						BytesLastSec int64 `json:"bytes_lastsec"`
					} `json:"out"`
				} `json:"stats"`
			} `json:"media"`
		} `json:"webrtc"`
	} `json:"info"`
}

// handleStats reads every VideoRoom handle (at most MaxStatHandles)
// through the admin API and sums, per room number, the subscribers and
// the bits per second received from and sent to the room's peers. A
// session or handle that ends while it is read is skipped.
func (j *Janus) handleStats(ctx context.Context) (map[uint64]roomStats, error) {
	admin := func(path, req string, out any) error {
		return j.post(ctx, j.cfg.AdminURL+path, map[string]any{"janus": req, "admin_secret": j.cfg.AdminSecret}, out)
	}
	var sessions struct {
		Sessions []json.Number `json:"sessions"`
	}
	if err := admin("", "list_sessions", &sessions); err != nil {
		return nil, err
	}
	out := map[uint64]roomStats{}
	read := 0
	for _, s := range sessions.Sessions {
		var handles struct {
			Handles []json.Number `json:"handles"`
		}
		if err := admin("/"+s.String(), "list_handles", &handles); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			continue
		}
		for _, h := range handles.Handles {
			if read == MaxStatHandles {
				return out, nil
			}
			read++
			var hi handleInfo
			if err := admin("/"+s.String()+"/"+h.String(), "handle_info", &hi); err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				continue
			}
			room, err := strconv.ParseUint(hi.Info.PluginSpecific.Room.String(), 10, 64)
			if hi.Info.Plugin != "janus.plugin.videoroom" || err != nil {
				continue
			}
			rs := out[room]
			subscriber := hi.Info.PluginSpecific.Type == "subscriber"
			if subscriber {
				rs.subscribers++
			}
			for _, m := range hi.Info.WebRTC.Media {
				if subscriber && (m.Type == "audio" || m.Type == "video") {
					rs.subscribedTracks++
				}
				if in := m.Stats.In.BytesLastSec; in >= 0 && in <= maxBytesPerSecond {
					rs.ingressBps += 8 * in
				}
				if o := m.Stats.Out.BytesLastSec; o >= 0 && o <= maxBytesPerSecond {
					rs.egressBps += 8 * o
				}
			}
			out[room] = rs
		}
	}
	return out, nil
}

// EnsureRoom implements SFU: creates VideoRoom r.Number (described by the
// room's name) unless it exists.
func (j *Janus) EnsureRoom(ctx context.Context, r RoomRef) error {
	if r.Number == 0 {
		return fmt.Errorf("%w: room %s has no number", errcode.ErrInvalid, r.Name)
	}
	_, err := j.videoroom(ctx, map[string]any{"request": "create", "room": r.Number, "description": r.Name,
		"publishers": j.cfg.Publishers, "permanent": false})
	switch janusCode(err) {
	case 427: // already exists
		return nil
	case 429, 430: // missing or invalid element: this room's request
		return fmt.Errorf("%w: %w", ErrRoomRefused, err)
	}
	return err
}

// CloseRoom implements SFU: destroys the VideoRoom.
func (j *Janus) CloseRoom(ctx context.Context, r RoomRef) error {
	_, err := j.videoroom(ctx, map[string]any{"request": "destroy", "room": r.Number, "permanent": false})
	if janusCode(err) == 426 { // no such room
		return nil
	}
	return err
}

// SetAcceptNew implements SFU with the admin API's accept_new_sessions.
func (j *Janus) SetAcceptNew(ctx context.Context, accept bool) error {
	if j.cfg.AdminURL == "" {
		return fmt.Errorf("%w: no --janus-admin-url given", ErrUnsupported)
	}
	return j.post(ctx, j.cfg.AdminURL, map[string]any{"janus": "accept_new_sessions", "accept": accept, "admin_secret": j.cfg.AdminSecret}, nil)
}

// AcceptingNewSessions reads the admin API's info ("accepting-new-sessions").
func (j *Janus) AcceptingNewSessions(ctx context.Context) (bool, error) {
	if j.cfg.AdminURL == "" {
		return false, fmt.Errorf("%w: no --janus-admin-url given", ErrUnsupported)
	}
	var info map[string]any
	if err := j.post(ctx, j.cfg.AdminURL, map[string]any{"janus": "info", "admin_secret": j.cfg.AdminSecret}, &info); err != nil {
		return false, err
	}
	v, ok := info["accepting-new-sessions"].(bool)
	if !ok {
		return false, fmt.Errorf("%w: admin info without accepting-new-sessions", ErrBadAnswer)
	}
	return v, nil
}

// CheckAdmin verifies the admin URL and secret (a wrong secret fails with
// ErrRefused), so the sidecar refuses to start rather than fail its first
// drain.
func (j *Janus) CheckAdmin(ctx context.Context) error {
	if j.cfg.AdminURL == "" {
		return fmt.Errorf("%w: no --janus-admin-url given", ErrUnsupported)
	}
	// info answers without the secret; get_status needs it.
	return j.post(ctx, j.cfg.AdminURL, map[string]any{"janus": "get_status", "admin_secret": j.cfg.AdminSecret}, nil)
}
