package api

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/switchyard/switchyard/errcode"
)

// Room is the JSON form of a placed room. Its fields are a contract.
type Room struct {
	Room   string `json:"room"`
	Server string `json:"server"`
	// SFU is the server's kind: switchyard, livekit or janus.
	SFU string `json:"sfu"`
	// URLs tell clients where to connect: whip and whep for Switchyard's
	// media node; url (and ws, when the server registered a WebSocket
	// address) for the others, plus room (the VideoRoom number) for Janus.
	URLs           map[string]any `json:"urls"`
	AllocationID   string         `json:"allocation_id"`
	Moved          bool           `json:"moved"`
	PlacedAtUnixMs int64          `json:"placed_at_unix_ms"`
	// VacatedReason says why the room's server gave it up (its SFU
	// refused to create it); server is then empty. "" otherwise.
	VacatedReason string `json:"vacated_reason"`
}

// MaxReasonLen bounds VacateRoomRequest.Reason (bytes).
const MaxReasonLen = 256

// VacateRoomRequest is the body of POST /v1/rooms/{room}/vacate.
type VacateRoomRequest struct {
	// Server is the server giving the room up: the request applies only
	// while the room is on it.
	Server string `json:"server"`
	// AllocationID, when set, is the placement given up: the request
	// applies only while the room is still placed as it (a retry after the
	// room was placed anew changes nothing).
	AllocationID string `json:"allocation_id,omitempty"`
	// Reason is shown to whoever looks at the room (at most 256 bytes).
	Reason string `json:"reason"`
}

// The values of Room.SFU and of a server's "sfu" label (a test of the
// server keeps them equal to the state machine's kinds).
const (
	SFUSwitchyard = "switchyard"
	SFULiveKit    = "livekit"
	SFUJanus      = "janus"
)

// SFULabel is the server label that names a server's SFU kind (none:
// SFUSwitchyard).
const SFULabel = "sfu"

// PlaceRoomRequest is the body of POST /v1/rooms/{room}/placement. Every
// field is optional.
type PlaceRoomRequest struct {
	// Units to allocate for the room (default 1).
	Units int64 `json:"units,omitempty"`
	// Region preferred for a new placement.
	Region string `json:"region,omitempty"`
	// SFU limits the placement to servers of this kind.
	SFU string `json:"sfu,omitempty"`
}

// ReleaseRoomResult is the answer of DELETE /v1/rooms/{room}.
type ReleaseRoomResult struct {
	Room         string `json:"room"`
	Released     bool   `json:"released"`
	Server       string `json:"server,omitempty"`
	AllocationID string `json:"allocation_id,omitempty"`
}

// maxRoomName bounds room names (bytes).
const maxRoomName = 200

// ValidateRoomName refuses names no SFU can take: empty, too long, with
// slashes or control characters.
func ValidateRoomName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: room name is required", errcode.ErrInvalid)
	case len(name) > maxRoomName:
		return fmt.Errorf("%w: room name is %d bytes, at most %d allowed", errcode.ErrInvalid, len(name), maxRoomName)
	case strings.ContainsRune(name, '/') || strings.ContainsFunc(name, unicode.IsControl):
		return fmt.Errorf("%w: room name %q contains a slash or a control character", errcode.ErrInvalid, name)
	}
	return nil
}

// PlaceRoom places a room (or returns its standing placement). Retries
// are safe: the cluster derives the allocation's request id from the
// room's placement generation.
func (c *Client) PlaceRoom(ctx context.Context, room string, r PlaceRoomRequest) (Room, error) {
	var out Room
	return out, c.do(ctx, "POST", "/v1/rooms/"+url.PathEscape(room)+"/placement", mustJSON(r), &out)
}

// VacateRoom gives up a room's placement (allocationID, "" for whichever)
// on server, keeping the record vacated with reason (a sidecar whose SFU
// refused to create the room). It is refused with ErrVersionMismatch when
// the room is not on server, or no longer placed as allocationID.
func (c *Client) VacateRoom(ctx context.Context, room, server, allocationID, reason string) (Room, error) {
	var out Room
	return out, c.do(ctx, "POST", "/v1/rooms/"+url.PathEscape(room)+"/vacate",
		mustJSON(VacateRoomRequest{Server: server, AllocationID: allocationID, Reason: reason}), &out)
}

// Rooms lists placed rooms (all, or those on server).
func (c *Client) Rooms(ctx context.Context, server string, stale bool) ([]Room, error) {
	q := url.Values{}
	if server != "" {
		q.Set("server", server)
	}
	if stale {
		q.Set("stale", "true")
	}
	p := "/v1/rooms"
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	var out []Room
	return out, c.do(ctx, "GET", p, nil, &out)
}

// Room returns one placed room.
func (c *Client) Room(ctx context.Context, room string) (Room, error) {
	var out Room
	return out, c.do(ctx, "GET", "/v1/rooms/"+url.PathEscape(room), nil, &out)
}

// ReleaseRoom ends a room's placement; releasing a room that is not
// placed succeeds with Released false.
func (c *Client) ReleaseRoom(ctx context.Context, room string) (ReleaseRoomResult, error) {
	var out ReleaseRoomResult
	return out, c.do(ctx, "DELETE", "/v1/rooms/"+url.PathEscape(room), nil, &out)
}

// Server returns one registered server (stale: the contacted agent's
// replica).
func (c *Client) Server(ctx context.Context, id string, stale bool) (Server, error) {
	var out Server
	return out, c.do(ctx, "GET", "/v1/servers/"+url.PathEscape(id)+staleQuery(stale), nil, &out)
}

// WaitRoomReady waits until the room's server reports hosting its
// placement (the sidecar of a Janus or LiveKit server lists a room's
// allocation once the room exists on the SFU). Rooms on Switchyard's own
// media node are ready at once. It polls until ctx ends.
func (c *Client) WaitRoomReady(ctx context.Context, r Room) error {
	if r.SFU == SFUSwitchyard || r.Server == "" {
		return nil
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for i := 0; ; i++ {
		var s struct {
			Load *struct {
				AllocationIDs []string `json:"allocation_ids"`
			} `json:"load"`
		}
		err := c.do(ctx, "GET", "/v1/servers/"+url.PathEscape(r.Server), nil, &s)
		if err == nil && s.Load != nil && slices.Contains(s.Load.AllocationIDs, r.AllocationID) {
			return nil
		}
		if i%5 == 4 {
			// A placement released meanwhile (the SFU refused the room, or
			// the server went down) will never be reported: say so now.
			cur, err := c.Room(ctx, r.Room)
			if err == nil && cur.Server == "" && cur.AllocationID == r.AllocationID {
				why := cur.VacatedReason
				if why == "" {
					why = "the server is no longer up"
				}
				return fmt.Errorf("%w: room %s: its placement on %s (allocation %s) was given up: %s",
					ErrRoomNotReady, r.Room, r.Server, r.AllocationID, why)
			}
			if errors.Is(err, errcode.ErrNotFound) || err == nil && cur.AllocationID != r.AllocationID {
				return fmt.Errorf("%w: room %s: its placement on %s (allocation %s) was released (the SFU may have refused the room: see its sidecar's log)",
					ErrRoomNotReady, r.Room, r.Server, r.AllocationID)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: room %s on %s (allocation %s): %w", ErrRoomNotReady, r.Room, r.Server, r.AllocationID, ctx.Err())
		case <-t.C:
		}
	}
}
