// Package media is Switchyard's media node: a selective forwarding unit
// (SFU) on pion/webrtc with WHIP ingest (RFC 9725) and WHEP playback, that
// registers with the allocator cluster, reports its load, and spreads a room
// that outgrows it onto a server the cluster allocates ("cascade").
//
// HTTP surface of a Node (all under its base URL):
//
//	POST   /whip/{room}        SDP offer (application/sdp) → 201, Location, SDP answer
//	POST   /whep/{room}        same for a viewer; 307 to another node's WHEP URL when full
//	DELETE /resource/{id}      ends a WHIP or WHEP session
//	GET    /v1/rooms/{room}    RoomInfo (JSON): used by an origin to watch its cascades
//	GET    /v1/load            the node's current Load (JSON)
//	GET    /                   the demo page (publish camera/microphone, watch a room)
//
// Rooms are per node: a room exists while it has a publisher (a WHIP
// client or an origin's cascade). Viewers are admitted while the node has
// free units (see CostModel); a viewer arriving at a full node is
// redirected to a cascade target. Only host ICE candidates are used (no
// STUN/TURN): the node must be reachable directly on its configured IPs.
package media

import "errors"

// Sentinel errors. Handlers map them to HTTP status codes; callers test
// them with errors.Is.
var (
	// ErrBadOffer: the SDP offer is malformed or not an offer.
	ErrBadOffer = errors.New("bad SDP offer")
	// ErrUnsupportedCodec: a media section offers no codec this node forwards.
	ErrUnsupportedCodec = errors.New("unsupported codec")
	// ErrUnknownRoom: no publisher in that room on this node.
	ErrUnknownRoom = errors.New("unknown room")
	// ErrRoomTaken: the room already has a publisher on this node.
	ErrRoomTaken = errors.New("room already has a publisher")
	// ErrFull: no free unit and no cascade target could be had.
	ErrFull = errors.New("no free capacity")
	// ErrDraining: the node is draining and takes no new sessions.
	ErrDraining = errors.New("node is draining")
	// ErrNoTracks: the room's publisher has not produced media in time.
	ErrNoTracks = errors.New("room has no media yet")
	// ErrClosed: the node has been closed.
	ErrClosed = errors.New("node closed")
)
