package media

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/switchyard/switchyard/mediatoken"
)

func (n *Node) handleWHEP(w http.ResponseWriter, r *http.Request) {
	if _, ok := n.authorize(w, r, mediatoken.Play); !ok { // tokens.go
		return
	}
	offer, err := readOffer(r)
	if err != nil {
		httpError(w, err)
		return
	}
	id, answer, redirect, err := n.View(r.Context(), r.PathValue("room"), offer)
	switch {
	case err != nil:
		httpError(w, err)
	case redirect != "":
		w.Header().Set("Location", n.withAccessToken(redirect, r.PathValue("room")))
		w.WriteHeader(http.StatusTemporaryRedirect)
	default:
		answerSDP(w, id, answer)
	}
}

// View adds the offerer as a viewer of room. It returns the session id and
// SDP answer, or, when this node has no free unit, the absolute WHEP URL
// of a cascade target to redirect the viewer to (creating the cascade if
// needed). It waits up to TrackWait for the room's tracks. Errors wrap the
// package sentinels.
func (n *Node) View(ctx context.Context, name string, offer []byte) (id, answer, redirect string, err error) {
	info, err := checkOffer(offer)
	offer = bundleLone(offer)
	if err != nil {
		return "", "", "", err
	}
	n.mu.Lock()
	rm := n.rooms[name]
	draining := n.draining
	switch {
	case n.closed:
		err = ErrClosed
	case rm == nil:
		err = fmt.Errorf("%w: %q has no publisher on %s", ErrUnknownRoom, name, n.cfg.ID)
	}
	n.mu.Unlock()
	if err != nil {
		return "", "", "", err
	}
	if draining {
		// No new session lands here; an existing cascade may still take it.
		if u, ok := n.pickCascade(name); ok {
			return "", "", u, nil
		}
		return "", "", "", ErrDraining
	}
	t := time.NewTimer(n.cfg.TrackWait)
	defer t.Stop()
	select {
	case <-rm.ready:
	case <-rm.ended:
		return "", "", "", fmt.Errorf("%w: %q ended", ErrUnknownRoom, name)
	case <-t.C:
		return "", "", "", fmt.Errorf("%w: %q after %v", ErrNoTracks, name, n.cfg.TrackWait)
	case <-ctx.Done():
		return "", "", "", ctx.Err()
	}

	cost := n.cfg.Costs.Viewer
	n.mu.Lock()
	tracks := append([]*pubTrack(nil), rm.tracks...)
	full := n.used+cost > n.cfg.Capacity
	if !full {
		n.used += cost
	}
	n.mu.Unlock()
	accept, err := matchTracks(info, tracks)
	if err == nil && full {
		redirect, err = n.redirect(ctx, name)
	}
	if err != nil || full {
		if !full {
			n.releaseUnits(cost)
		}
		return "", "", redirect, err
	}

	id, answer, err = n.addViewer(ctx, rm, offer, tracks, accept, cost)
	if err != nil {
		n.releaseUnits(cost)
		return "", "", "", err
	}
	return id, answer, "", nil
}

func (n *Node) releaseUnits(u int64) {
	n.mu.Lock()
	n.used -= u
	n.mu.Unlock()
}

// matchTracks decides which of the room's tracks the viewer gets: those
// whose kind it offered to receive; a kind offered without the room's
// codec is an error.
func matchTracks(info offerInfo, tracks []*pubTrack) (func(*pubTrack) bool, error) {
	ok := map[*pubTrack]bool{}
	for _, t := range tracks {
		kind, mime := t.remote.Kind().String(), t.remote.Codec().MimeType
		if info.codecs[kind] == nil {
			continue
		}
		if !info.accepts(kind, mime) {
			return nil, fmt.Errorf("%w: the room publishes %s, the offer does not accept it", ErrUnsupportedCodec, mime)
		}
		ok[t] = true
	}
	if len(ok) == 0 {
		return nil, fmt.Errorf("%w: the offer receives none of the room's tracks", ErrUnsupportedCodec)
	}
	return func(t *pubTrack) bool { return ok[t] }, nil
}

// addViewer negotiates a viewer's peer connection (cost units already
// taken) and registers the session.
func (n *Node) addViewer(ctx context.Context, rm *room, offer []byte, tracks []*pubTrack, accept func(*pubTrack) bool, cost int64) (string, string, error) {
	pc, err := n.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", "", fmt.Errorf("new peer connection: %w", err)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(offer)}); err != nil {
		_ = pc.Close()
		return "", "", fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	sent, err := n.addFanout(rm, pc, tracks, accept, false)
	if err != nil {
		_ = pc.Close()
		return "", "", fmt.Errorf("add tracks: %w", err)
	}
	answer, err := n.localDescription(ctx, pc, false)
	if err != nil {
		_ = pc.Close()
		return "", "", err
	}
	s := newSession(kindViewer, rm, pc, cost)
	s.tracks = sent
	n.mu.Lock()
	select {
	case <-rm.ended:
		n.mu.Unlock()
		_ = pc.Close()
		return "", "", fmt.Errorf("%w: %q ended", ErrUnknownRoom, rm.name)
	default:
	}
	rm.viewers[s.id] = s
	n.sessions[s.id] = s
	n.mu.Unlock()
	n.watch(s)
	n.log.Info("viewer joined", "room", rm.name, "session", s.id)
	return s.id, answer, nil
}
