package media

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/switchyard/switchyard/mediatoken"
)

// redirectGrace is how long a redirected viewer counts against a cascade
// before it shows up in the target's viewer count.
const redirectGrace = 10 * time.Second

// cascade is a room forwarded from this node (the origin) to a target
// node the cluster allocated. Its mutable fields are guarded by Node.mu.
type cascade struct {
	room     string
	alloc    Allocation
	base     string // target base URL
	resource string // absolute URL of the WHIP resource on the target
	sess     *session
	viewers  int         // last polled from the target
	pending  []time.Time // redirects not yet seen in viewers
	busyAt   time.Time   // last time it had viewers or pending redirects
	closed   bool
	stop     chan struct{}
	stopOnce sync.Once
}

func (c *cascade) whepURL() string { return c.base + "/whep/" + url.PathEscape(c.room) }

// redirect returns the WHEP URL of a cascade of room with room for one
// more viewer, creating a cascade (cluster allocation + server-to-server
// connection) if there is none.
func (n *Node) redirect(ctx context.Context, room string) (string, error) {
	if u, ok := n.pickCascade(room); ok {
		return u, nil
	}
	lk := n.cascadeLock(room)
	lk.Lock()
	defer lk.Unlock()
	if u, ok := n.pickCascade(room); ok { // someone else just made one
		return u, nil
	}
	c, err := n.openCascade(ctx, room)
	if err != nil {
		return "", fmt.Errorf("%w: room %s: cascade: %w", ErrFull, room, err)
	}
	if u, ok := n.pickCascade(room); ok {
		return u, nil
	}
	return "", fmt.Errorf("%w: new cascade to %s for %s has no room", ErrFull, c.alloc.Server, room)
}

// pickCascade counts one more redirect on a live cascade of room with
// spare units.
func (n *Node) pickCascade(room string) (string, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := time.Now()
	for _, c := range n.cascades[room] {
		c.prune(now)
		if !c.closed && int64(c.viewers+len(c.pending)) < c.alloc.Units {
			c.pending = append(c.pending, now)
			c.busyAt = now
			return c.whepURL(), true
		}
	}
	return "", false
}

func (c *cascade) prune(now time.Time) {
	for len(c.pending) > 0 && now.Sub(c.pending[0]) > redirectGrace {
		c.pending = c.pending[1:]
	}
}

// lostTargetMemory is how long a cascade target that was lost is avoided.
const lostTargetMemory = time.Minute

// avoidTarget reports whether server must not be a cascade target: this
// node itself, or a target lost less than lostTargetMemory ago.
func (n *Node) avoidTarget(server string) bool {
	if server == n.cfg.ID {
		return true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	at, ok := n.lost[server]
	return ok && time.Since(at) < lostTargetMemory
}

// allocateTarget asks the cluster for CascadeUnits for room on another
// server. The cluster neither excludes the requester nor knows at once
// that a target died, so an allocation that lands on this node or on a
// recently lost target is held (it makes that server look fuller) and the
// request retried; held ones are released before returning.
func (n *Node) allocateTarget(ctx context.Context, room string) (Allocation, error) {
	var self []Allocation
	defer func() {
		for _, a := range self {
			if err := n.cl.Release(context.WithoutCancel(ctx), a.ID); err != nil {
				n.log.Warn("release self allocation", "alloc", a.ID, "err", err)
			}
		}
	}()
	for try := 0; try < 4; try++ {
		a, err := n.cl.Allocate(ctx, AllocRequest{RequestID: "cascade-" + n.cfg.ID + "-" + newID(), Room: room, Units: n.cfg.CascadeUnits, Requester: n.cfg.ID, Region: n.cfg.Region})
		if err != nil {
			return a, err
		}
		if !n.avoidTarget(a.Server) {
			return a, nil
		}
		self = append(self, a)
	}
	return Allocation{}, errors.New("the cluster only offers this node itself or lost targets")
}

// openCascade allocates a target and forwards room to it over a WHIP
// session opened by this node.
func (n *Node) openCascade(ctx context.Context, room string) (*cascade, error) {
	n.mu.Lock()
	rm := n.rooms[room]
	var tracks []*pubTrack
	if rm != nil {
		tracks = append(tracks, rm.tracks...)
	}
	n.mu.Unlock()
	if rm == nil || len(tracks) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrUnknownRoom, room)
	}
	a, err := n.allocateTarget(ctx, room)
	if err != nil {
		return nil, err
	}
	release := func() {
		if err := n.cl.Release(context.WithoutCancel(ctx), a.ID); err != nil {
			n.log.Warn("release allocation", "alloc", a.ID, "err", err)
		}
	}
	base := ""
	for _, ad := range a.Addresses {
		if strings.HasPrefix(ad, "http://") || strings.HasPrefix(ad, "https://") {
			base = strings.TrimSuffix(ad, "/")
			break
		}
	}
	if base == "" {
		release()
		return nil, fmt.Errorf("target %s registered no http(s) address (got %v)", a.Server, a.Addresses)
	}
	c := &cascade{room: room, alloc: a, base: base, busyAt: time.Now(), stop: make(chan struct{})}
	if err := n.dialCascade(ctx, c, rm, tracks); err != nil {
		release()
		return nil, err
	}
	n.mu.Lock()
	select {
	case <-rm.ended:
		n.mu.Unlock()
		n.closeCascade(ctx, c, "room ended while cascading")
		return nil, fmt.Errorf("%w: %s ended", ErrUnknownRoom, room)
	default:
	}
	n.cascades[room] = append(n.cascades[room], c)
	n.mu.Unlock()
	n.log.Info("cascade opened", "room", room, "target", a.Server, "alloc", a.ID, "units", a.Units)
	n.goBackground(func() { n.monitorCascade(c) })
	return c, nil
}

// dialCascade opens the server-to-server connection: a WHIP publish of the
// room's tracks to the target.
func (n *Node) dialCascade(ctx context.Context, c *cascade, rm *room, tracks []*pubTrack) error {
	pc, err := n.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return fmt.Errorf("new peer connection: %w", err)
	}
	sent, err := n.addFanout(rm, pc, tracks, nil, true)
	if err != nil {
		_ = pc.Close()
		return fmt.Errorf("add tracks: %w", err)
	}
	offer, err := n.localDescription(ctx, pc, true)
	if err != nil {
		_ = pc.Close()
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.whipURL(c), strings.NewReader(offer))
	if err != nil {
		_ = pc.Close()
		return err
	}
	req.Header.Set("Content-Type", "application/sdp")
	req.Header.Set(AllocationHeader, c.alloc.ID)
	if tok := n.mint(c.room, mediatoken.Publish, c.alloc.ID, time.Minute); tok != "" { // tokens.go
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := n.hc.Do(req)
	if err != nil {
		_ = pc.Close()
		return fmt.Errorf("WHIP to %s: %w", c.alloc.Server, err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxOfferBytes))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		_ = pc.Close()
		return fmt.Errorf("WHIP to %s: HTTP %d: %s", c.alloc.Server, resp.StatusCode, bytes.TrimSpace(body))
	}
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil {
		_ = pc.Close()
		return fmt.Errorf("WHIP to %s: bad Location: %w", c.alloc.Server, err)
	}
	c.resource = loc.String()
	s := newSession(kindCascadeOut, rm, pc, n.cfg.Costs.CascadeOut)
	s.tracks = sent
	c.sess = s
	n.mu.Lock()
	n.used += s.units
	n.sessions[s.id] = s
	rm.outs[s.id] = s
	n.mu.Unlock()
	n.watch(s)
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		n.closeSession(s, "bad WHIP answer")
		n.deleteResource(c.resource)
		return fmt.Errorf("WHIP answer from %s: %w", c.alloc.Server, err)
	}
	return nil
}

func (n *Node) whipURL(c *cascade) string { return c.base + "/whip/" + url.PathEscape(c.room) }

func (n *Node) deleteResource(u string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, u, nil)
	if err != nil {
		return
	}
	if resp, err := n.hc.Do(req); err == nil {
		resp.Body.Close()
	}
}

// monitorCascade polls the target's room; it closes the cascade when it
// has been idle for CascadeIdle, and re-cascades when the target is lost
// (connection failed or three failed polls in a row).
func (n *Node) monitorCascade(c *cascade) {
	t := time.NewTicker(n.cfg.CascadePoll)
	defer t.Stop()
	fails := 0
	for {
		select {
		case <-c.stop:
			return
		case <-n.ctx.Done():
			return
		case <-c.sess.done:
			n.targetLost(c, "server-to-server connection ended")
			return
		case <-t.C:
		}
		ri, err := n.pollTarget(c)
		if err != nil || !ri.Exists {
			fails++
			if fails >= 3 {
				n.targetLost(c, fmt.Sprintf("target unreachable or room gone: %v", err))
				return
			}
			continue
		}
		fails = 0
		now := time.Now()
		n.mu.Lock()
		if d := ri.Viewers - c.viewers; d > 0 {
			c.pending = c.pending[min(d, len(c.pending)):]
		}
		c.viewers = ri.Viewers
		c.prune(now)
		if c.viewers > 0 || len(c.pending) > 0 {
			c.busyAt = now
		}
		idle := now.Sub(c.busyAt) >= n.cfg.CascadeIdle
		n.mu.Unlock()
		if idle {
			n.closeCascade(n.ctx, c, "idle")
			return
		}
	}
}

func (n *Node) pollTarget(c *cascade) (RoomInfo, error) {
	var ri RoomInfo
	ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/rooms/"+url.PathEscape(c.room), nil)
	if err != nil {
		return ri, err
	}
	resp, err := n.hc.Do(req)
	if err != nil {
		return ri, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ri, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return ri, json.NewDecoder(resp.Body).Decode(&ri)
}

// targetLost closes a cascade whose target is gone and, if the room still
// has its publisher here, opens a new one (the viewers that were on the
// target come back to this node and get redirected to it).
func (n *Node) targetLost(c *cascade, reason string) {
	if !n.closeCascade(n.ctx, c, "target lost: "+reason) {
		return // closed on purpose meanwhile
	}
	n.mu.Lock()
	n.lost[c.alloc.Server] = time.Now()
	_, live := n.rooms[c.room]
	stop := n.closed || n.draining
	n.mu.Unlock()
	if !live || stop {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
	defer cancel()
	lk := n.cascadeLock(c.room)
	lk.Lock()
	defer lk.Unlock()
	for {
		_, err := n.openCascade(ctx, c.room)
		if err == nil || errors.Is(err, ErrUnknownRoom) {
			return
		}
		n.log.Warn("re-cascade failed", "room", c.room, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (n *Node) cascadeLock(room string) *sync.Mutex {
	n.mu.Lock()
	defer n.mu.Unlock()
	lk := n.cascading[room]
	if lk == nil {
		lk = &sync.Mutex{}
		n.cascading[room] = lk
	}
	return lk
}

// closeCascade ends a cascade once: stops its monitor, closes the
// server-to-server session, deletes the target's WHIP resource and
// releases the allocation (bounded by ctx). It reports whether this call
// closed it.
func (n *Node) closeCascade(ctx context.Context, c *cascade, reason string) bool {
	n.mu.Lock()
	if c.closed {
		n.mu.Unlock()
		return false
	}
	c.closed = true
	l := n.cascades[c.room]
	for i, x := range l {
		if x == c {
			l = append(l[:i:i], l[i+1:]...)
			break
		}
	}
	if len(l) == 0 {
		delete(n.cascades, c.room)
	} else {
		n.cascades[c.room] = l
	}
	n.mu.Unlock()
	c.stopOnce.Do(func() { close(c.stop) })
	n.log.Info("cascade closed", "room", c.room, "target", c.alloc.Server, "alloc", c.alloc.ID, "reason", reason)
	if c.sess != nil {
		n.closeSession(c.sess, "cascade closed: "+reason)
	}
	n.deleteResource(c.resource)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := n.cl.Release(rctx, c.alloc.ID); err != nil {
		n.log.Warn("release cascade allocation", "alloc", c.alloc.ID, "err", err)
	}
	return true
}
