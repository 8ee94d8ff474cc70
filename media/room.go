package media

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// room is one published stream on this node: a publisher's tracks, fanned
// out to viewers and outgoing cascades. Its maps are guarded by Node.mu.
type room struct {
	name     string
	pub      *session // set once, under Node.mu
	expected int      // tracks the publisher announced in its offer
	tracks   []*pubTrack
	ready    chan struct{} // closed once all expected tracks arrived
	ended    chan struct{} // closed when the publisher is gone
	viewers  map[string]*session
	outs     map[string]*session // cascade-out sessions
	readyOne sync.Once
	endOnce  sync.Once
}

func newRoom(name string, expected int) *room {
	return &room{name: name, expected: expected, ready: make(chan struct{}), ended: make(chan struct{}),
		viewers: map[string]*session{}, outs: map[string]*session{}}
}

func (r *room) close() { r.endOnce.Do(func() { close(r.ended) }) }

// pubTrack is one published track and its fan-out track.
type pubTrack struct {
	remote  *webrtc.TrackRemote
	local   *webrtc.TrackLocalStaticRTP
	lastPLI atomic.Int64 // unix nanos of the last key frame request sent upstream
}

// minPLIInterval rate-limits key frame requests sent to a publisher.
const minPLIInterval = 300 * time.Millisecond

// onTrack registers a publisher's incoming track and forwards its RTP to
// the room's fan-out track until the publisher goes away.
func (n *Node) onTrack(s *session, remote *webrtc.TrackRemote) {
	r := s.room
	local, err := webrtc.NewTrackLocalStaticRTP(remote.Codec().RTPCodecCapability, remote.Kind().String(), "switchyard-"+r.name)
	if err != nil {
		n.log.Warn("fan-out track", "room", r.name, "err", err)
		return
	}
	t := &pubTrack{remote: remote, local: local}
	n.mu.Lock()
	r.tracks = append(r.tracks, t)
	if len(r.tracks) >= r.expected {
		r.readyOne.Do(func() { close(r.ready) })
	}
	n.mu.Unlock()
	n.log.Info("track published", "room", r.name, "kind", remote.Kind(), "codec", remote.Codec().MimeType)
	for {
		pkt, _, err := remote.ReadRTP()
		if err != nil {
			return // publisher closed
		}
		// Header extension ids and values (mid, rid, abs-send-time, TWCC
		// sequence numbers) belong to the publisher's session: a viewer
		// that negotiated the same id for mid would misroute the packet.
		// Drop them; each sender adds what its own session negotiated.
		pkt.Header.Extension = false
		pkt.Header.Extensions = nil
		if err := local.WriteRTP(pkt); err != nil && !errors.Is(err, io.ErrClosedPipe) {
			n.log.Debug("forward", "room", r.name, "err", err)
		}
	}
}

// requestKeyframe asks the room's publisher for a key frame on t (rate
// limited). Viewers' PLI/FIR end up here, so do cascade targets'.
func (n *Node) requestKeyframe(r *room, t *pubTrack) {
	if t.remote.Kind() != webrtc.RTPCodecTypeVideo {
		return
	}
	now := time.Now().UnixNano()
	last := t.lastPLI.Load()
	if now-last < int64(minPLIInterval) || !t.lastPLI.CompareAndSwap(last, now) {
		return
	}
	n.mu.Lock()
	pub := r.pub
	n.mu.Unlock()
	if pub != nil {
		_ = pub.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(t.remote.SSRC())}})
	}
}

// readRTCP drains a sender's RTCP (which also runs pion's interceptors:
// NACKs are answered by the NACK responder) and forwards key frame
// requests upstream. It returns when the sender is closed.
func (n *Node) readRTCP(r *room, t *pubTrack, sender *webrtc.RTPSender) {
	for {
		pkts, _, err := sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, p := range pkts {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				n.requestKeyframe(r, t)
			}
		}
	}
}

// addFanout adds the room's tracks (the kinds the remote side can receive,
// if accept is set) to pc and starts their RTCP readers.
func (n *Node) addFanout(r *room, pc *webrtc.PeerConnection, tracks []*pubTrack, accept func(*pubTrack) bool, sendOnly bool) (int, error) {
	added := 0
	for _, t := range tracks {
		if accept != nil && !accept(t) {
			continue
		}
		var sender *webrtc.RTPSender
		var err error
		if sendOnly {
			var tr *webrtc.RTPTransceiver
			tr, err = pc.AddTransceiverFromTrack(t.local, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
			if err == nil {
				sender = tr.Sender()
			}
		} else {
			sender, err = pc.AddTrack(t.local)
		}
		if err != nil {
			return added, err
		}
		added++
		go n.readRTCP(r, t, sender)
		n.requestKeyframe(r, t)
	}
	return added, nil
}
