package media

import (
	"sync"
	"time"

	"github.com/pion/webrtc/v4"
)

type sessionKind int

const (
	kindPublisher  sessionKind = iota // WHIP client or an incoming cascade
	kindViewer                        // WHEP client
	kindCascadeOut                    // this node publishing a room to a cascade target
)

func (k sessionKind) String() string {
	return [...]string{"publisher", "viewer", "cascade-out"}[k]
}

// session is one peer connection of the node.
type session struct {
	id      string
	kind    sessionKind
	room    *room
	pc      *webrtc.PeerConnection
	units   int64
	allocID string // publisher fed by a cascade: the allocation it materializes
	tracks  int    // viewer or cascade: the tracks sent to it

	connectedOnce sync.Once
	connected     chan struct{}
	closeOnce     sync.Once
	done          chan struct{}
}

func newSession(kind sessionKind, r *room, pc *webrtc.PeerConnection, units int64) *session {
	return &session{id: newID(), kind: kind, room: r, pc: pc, units: units, connected: make(chan struct{}), done: make(chan struct{})}
}

// watch ties the session's life to its peer connection: it is closed when
// ICE/DTLS fails or the connection closes, and when it has not connected
// within the node's ConnectTimeout (a peer that never completes ICE).
// Precondition: s is registered in n.sessions with its units counted.
func (n *Node) watch(s *session) {
	s.pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			s.connectedOnce.Do(func() { close(s.connected) })
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			go n.closeSession(s, "peer connection "+st.String())
		}
	})
	// The state may have changed before the handler was set.
	switch s.pc.ConnectionState() {
	case webrtc.PeerConnectionStateConnected:
		s.connectedOnce.Do(func() { close(s.connected) })
	case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
		go n.closeSession(s, "peer connection "+s.pc.ConnectionState().String())
	}
	n.goBackground(func() {
		t := time.NewTimer(n.cfg.ConnectTimeout)
		defer t.Stop()
		select {
		case <-s.connected:
		case <-s.done:
		case <-n.ctx.Done():
		case <-t.C:
			n.closeSession(s, "did not connect within "+n.cfg.ConnectTimeout.String())
		}
	})
}

// closeSession ends s once: forgets it, frees its units, closes its peer
// connection, and, for a publisher, ends its room (viewers and cascades).
func (n *Node) closeSession(s *session, reason string) {
	s.closeOnce.Do(func() {
		n.mu.Lock()
		delete(n.sessions, s.id)
		n.used -= s.units
		var ended []*session
		var cascades []*cascade
		r := s.room
		if r != nil {
			switch s.kind {
			case kindViewer:
				delete(r.viewers, s.id)
			case kindCascadeOut:
				delete(r.outs, s.id)
			case kindPublisher:
				if n.rooms[r.name] == r {
					delete(n.rooms, r.name)
				}
				r.close()
				for _, v := range r.viewers {
					ended = append(ended, v)
				}
				for _, v := range r.outs {
					ended = append(ended, v)
				}
				cascades = n.cascades[r.name]
				delete(n.cascading, r.name) // a later room of that name gets a new lock
			}
		}
		close(s.done)
		close(n.sessChange)
		n.sessChange = make(chan struct{})
		n.mu.Unlock()
		n.log.Info("session closed", "id", s.id, "kind", s.kind, "room", roomName(r), "reason", reason)
		_ = s.pc.Close()
		// Cascades first: closing one marks it closed before its
		// server-to-server session ends, so its monitor does not take the
		// end for a lost target.
		for _, c := range cascades {
			n.closeCascade(n.ctx, c, "room ended")
		}
		for _, e := range ended {
			n.closeSession(e, "room "+r.name+" ended")
		}
	})
}

func roomName(r *room) string {
	if r == nil {
		return ""
	}
	return r.name
}
