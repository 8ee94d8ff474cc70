package media

import (
	"context"
	"fmt"
	"net/http"

	"github.com/pion/webrtc/v4"

	"github.com/switchyard/switchyard/mediatoken"
)

// AllocationHeader carries, on an origin's cascade WHIP request, the id of
// the cluster allocation the cascade materializes on the target.
const AllocationHeader = "X-Switchyard-Allocation"

func (n *Node) handleWHIP(w http.ResponseWriter, r *http.Request) {
	claims, ok := n.authorize(w, r, mediatoken.Publish) // tokens.go
	if !ok {
		return
	}
	allocID := r.Header.Get(AllocationHeader)
	if n.cfg.Tokens != nil {
		allocID = claims.Alloc // only a signed allocation id is believed
	}
	offer, err := readOffer(r)
	if err != nil {
		httpError(w, err)
		return
	}
	s, answer, err := n.Publish(r.Context(), r.PathValue("room"), offer, allocID)
	if err != nil {
		httpError(w, err)
		return
	}
	answerSDP(w, s, answer)
}

// Publish makes the offerer the publisher of room on this node and returns
// the session id and SDP answer (ICE gathering complete: no trickle).
// allocID, if set, is the cluster allocation this publication materializes
// (an origin's cascade). Errors wrap the package sentinels.
func (n *Node) Publish(ctx context.Context, name string, offer []byte, allocID string) (string, string, error) {
	info, err := checkOffer(offer)
	offer = bundleLone(offer)
	if err != nil {
		return "", "", err
	}
	if info.sending == 0 {
		return "", "", fmt.Errorf("%w: a WHIP offer must send audio or video", ErrBadOffer)
	}
	n.mu.Lock()
	switch {
	case n.closed:
		err = ErrClosed
	case n.draining:
		err = ErrDraining
	case n.rooms[name] != nil:
		err = fmt.Errorf("%w: %s", ErrRoomTaken, name)
	case n.used+n.cfg.Costs.Publisher > n.cfg.Capacity:
		err = fmt.Errorf("%w: %d of %d units used", ErrFull, n.used, n.cfg.Capacity)
	}
	if err != nil {
		n.mu.Unlock()
		return "", "", err
	}
	rm := newRoom(name, info.sending)
	n.rooms[name] = rm // reserve the name while negotiating
	n.used += n.cfg.Costs.Publisher
	n.mu.Unlock()

	pc, err := n.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		n.unreserveRoom(rm)
		return "", "", fmt.Errorf("new peer connection: %w", err)
	}
	s := newSession(kindPublisher, rm, pc, n.cfg.Costs.Publisher)
	s.allocID = allocID
	n.mu.Lock()
	rm.pub = s
	n.mu.Unlock()
	pc.OnTrack(func(t *webrtc.TrackRemote, _ *webrtc.RTPReceiver) { n.onTrack(s, t) })
	answer, err := n.negotiate(ctx, pc, offer)
	if err != nil {
		_ = pc.Close()
		n.unreserveRoom(rm)
		return "", "", err
	}
	n.mu.Lock()
	n.sessions[s.id] = s
	n.mu.Unlock()
	n.watch(s)
	n.log.Info("publisher joined", "room", name, "session", s.id, "tracks", info.sending, "alloc", allocID)
	return s.id, answer, nil
}

func (n *Node) unreserveRoom(rm *room) {
	n.mu.Lock()
	if n.rooms[rm.name] == rm {
		delete(n.rooms, rm.name)
	}
	n.used -= n.cfg.Costs.Publisher
	n.mu.Unlock()
	rm.close()
}

// negotiate applies a remote offer and returns the local answer once ICE
// gathering is complete (host candidates only, so this is quick).
func (n *Node) negotiate(ctx context.Context, pc *webrtc.PeerConnection, offer []byte) (string, error) {
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(offer)}); err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	return n.localDescription(ctx, pc, false)
}

// localDescription creates an answer (or an offer), sets it and waits for
// ICE gathering to complete.
func (n *Node) localDescription(ctx context.Context, pc *webrtc.PeerConnection, offer bool) (string, error) {
	var desc webrtc.SessionDescription
	var err error
	if offer {
		desc, err = pc.CreateOffer(nil)
	} else {
		desc, err = pc.CreateAnswer(nil)
	}
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(desc); err != nil {
		return "", fmt.Errorf("set local description: %w", err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return "", fmt.Errorf("ICE gathering: %w", ctx.Err())
	}
	return pc.LocalDescription().SDP, nil
}
