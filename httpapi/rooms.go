package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

func (s *Handler) registerRoomRoutes() {
	s.handle("POST /v1/rooms/{room}/placement", s.placeRoom, true)
	s.handle("GET /v1/rooms", s.listRooms, false)
	s.handle("GET /v1/rooms/{room}", s.getRoom, false)
	s.handle("DELETE /v1/rooms/{room}", s.releaseRoom, true)
	s.handle("POST /v1/rooms/{room}/vacate", s.vacateRoom, true)
}

// RoomFromPB converts a room record to JSON, deriving its URLs from srv
// (nil when the server is gone).
func RoomFromPB(r *fsmpb.Room, srv *fsmpb.Server) api.Room {
	out := api.Room{Room: r.GetName(), Server: r.GetServer(), SFU: r.GetSfu(), AllocationID: r.GetAllocationId(),
		Moved: r.GetMoved(), PlacedAtUnixMs: r.GetPlacedAtUnixMs(), URLs: map[string]any{}, VacatedReason: r.GetVacatedReason()}
	if srv == nil || r.GetServer() == "" || len(srv.GetAddresses()) == 0 {
		return out
	}
	addrs := srv.GetAddresses()
	switch r.GetSfu() {
	case fsm.SFUSwitchyard:
		base := strings.TrimRight(addrs[0], "/")
		out.URLs["whip"] = base + "/whip/" + url.PathEscape(r.GetName())
		out.URLs["whep"] = base + "/whep/" + url.PathEscape(r.GetName())
	default:
		out.URLs["url"] = addrs[0]
		for _, a := range addrs[1:] {
			if strings.HasPrefix(a, "ws://") || strings.HasPrefix(a, "wss://") {
				out.URLs["ws"] = a
				break
			}
		}
		if r.GetSfu() == fsm.SFUJanus {
			out.URLs["room"] = r.GetNumber()
		}
	}
	return out
}

func (s *Handler) roomJSON(r *fsmpb.Room) api.Room {
	srv, _ := s.st.Server(r.GetServer())
	return RoomFromPB(r, srv)
}

// roomPlacementAttempts bounds how often a placement that lost a race
// against a concurrent placement of the same room is tried again.
const roomPlacementAttempts = 5

func (s *Handler) placeRoom(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("room")
	var req api.PlaceRoomRequest
	if r.ContentLength != 0 {
		if err := decode(w, r, &req); err != nil {
			s.fail(w, err)
			return
		}
	}
	room, placed, err := s.PlaceRoom(r.Context(), name, req)
	if err != nil {
		s.fail(w, err)
		return
	}
	code := http.StatusOK
	if placed {
		code = http.StatusCreated
	}
	writeJSON(w, code, s.roomJSON(room))
}

// PlaceRoom places room name (must run on the leader). While the room's
// server is registered, active (or a draining LiveKit: its rooms finish
// there) and holds the room's allocation, it returns
// that placement unchanged (placed false). Otherwise it allocates units on
// the server the live policy picks among servers of the wanted kind (the
// request id names the room's generation, so a retry after an unknown
// outcome gets the same allocation) and commits the room record,
// conditional on the generation it read.
func (s *Handler) PlaceRoom(ctx context.Context, name string, req api.PlaceRoomRequest) (*fsmpb.Room, bool, error) {
	if err := checkRoomName(name); err != nil {
		return nil, false, err
	}
	if err := fsm.CheckText("region", req.Region, fsm.MaxRegionLen); err != nil {
		return nil, false, err
	}
	if req.Units < 0 {
		return nil, false, fmt.Errorf("%w: units must be positive, got %d", fsm.ErrInvalid, req.Units)
	}
	if req.Units == 0 {
		req.Units = 1
	}
	if req.SFU != "" && !fsm.ValidSFU(req.SFU) {
		return nil, false, fmt.Errorf("%w: unknown SFU kind %q (want one of %s)", fsm.ErrInvalid, req.SFU, strings.Join(fsm.SFUKinds(), ", "))
	}
	f := s.st
	var lastErr error
	for range roomPlacementAttempts {
		cur, ok := f.Room(name)
		if ok && s.roomLive(cur) {
			if req.SFU != "" && cur.Sfu != req.SFU {
				return nil, false, fmt.Errorf("%w: room %s is placed on %s (%s), not on a %s server; release it first", fsm.ErrInvalid, name, cur.Server, cur.Sfu, req.SFU)
			}
			return cur, false, nil
		}
		if req.SFU != "" && !s.anySFU(req.SFU) {
			return nil, false, fmt.Errorf("%w: no %s server is registered", fsm.ErrCapacity, req.SFU)
		}
		gen := cur.GetGeneration()
		a, err := s.allocateRoom(ctx, name, gen, req)
		if err != nil {
			return nil, false, fmt.Errorf("place room %s: %w", name, err)
		}
		srv, ok := f.Server(a.GetServer())
		if !ok {
			lastErr = fmt.Errorf("%w: server %s left before room %s was placed on it", fsm.ErrNotFound, a.GetServer(), name)
			continue
		}
		placed, err := s.b.PlaceRoom(ctx, &fsmpb.PlaceRoom{
			Room: name, Server: a.GetServer(), AllocationId: a.GetId(), Sfu: fsm.ServerSFU(srv), IfGeneration: gen, Region: req.Region,
		})
		switch {
		case err == nil:
			return placed, true, nil
		case errors.Is(err, fsm.ErrVersionMismatch), errors.Is(err, fsm.ErrInvalid):
			// Another placement won, or the allocation ended under us
			// (its server went down): read again. An allocation no
			// record took is released so it holds no units.
			if now, ok := f.Room(name); !ok || now.AllocationId != a.GetId() {
				s.releaseOrphan(ctx, name, a.GetId())
			}
			lastErr = err
		case errors.Is(err, fsm.ErrUnauthenticated):
			// The caller's token was revoked between the allocation and the
			// room record: the allocation no record took is released.
			s.releaseOrphan(ctx, name, a.GetId())
			return nil, false, fmt.Errorf("place room %s: %w", name, err)
		default:
			return nil, false, fmt.Errorf("place room %s: %w", name, err)
		}
	}
	return nil, false, fmt.Errorf("place room %s: gave up after %d attempts: %w", name, roomPlacementAttempts, lastErr)
}

// releaseOrphan releases the allocation of a room placement that no room
// record took, so it holds no units. It is the cluster's own cleanup, not
// the caller's request: it runs without the caller's ACL token (which may
// be the one just revoked).
func (s *Handler) releaseOrphan(ctx context.Context, room, id string) {
	if _, err := s.b.Release(cluster.WithACLToken(ctx, ""), id); err != nil {
		s.log.Warn("release allocation of a lost room placement", "room", room, "allocation", id, "err", err)
	}
}

// allocateRoom allocates units for placement gen of a room. The request
// id is "room:<name>:<gen>"; when that id already names an ended
// allocation (the room was released and is placed again, so its
// generation restarted), the next id appends the ended allocation's id.
// The chain depends only on the replicated state, so a retry after an
// unknown outcome walks it to the same allocation.
func (s *Handler) allocateRoom(ctx context.Context, name string, gen uint64, req api.PlaceRoomRequest) (*fsmpb.Allocation, error) {
	id := fmt.Sprintf("room:%s:%d", name, gen)
	for range 16 {
		if prev, ok := s.st.AllocationByRequest(id); ok {
			active := prev.GetState() == fsmpb.AllocationState_ALLOCATION_STATE_ACTIVE
			if active && prev.GetUnits() != req.Units {
				// Left by an attempt that asked for other units and
				// never became the room's placement.
				if _, err := s.b.Release(ctx, prev.GetId()); err != nil {
					return nil, err
				}
				active = false
			}
			if !active {
				id += "~" + prev.GetId()
				continue
			}
		}
		a, _, err := s.b.Allocate(ctx, cluster.AllocateRequest{RequestID: id, Room: name, Units: req.Units, Region: req.Region, SFU: req.SFU})
		if err != nil {
			return nil, err
		}
		return a, nil
	}
	return nil, fmt.Errorf("%w: room %s: too many ended allocations under request id %s", fsm.ErrVersionMismatch, name, id)
}

// roomLive reports whether a room's placement still stands: its server is
// registered and active (or a draining LiveKit) and its allocation is
// active.
func (s *Handler) roomLive(r *fsmpb.Room) bool {
	if r.GetServer() == "" {
		return false
	}
	srv, ok := s.st.Server(r.GetServer())
	switch {
	case !ok:
		return false
	case srv.GetState() == fsmpb.ServerState_SERVER_STATE_ACTIVE:
	case srv.GetState() == fsmpb.ServerState_SERVER_STATE_DRAINING && fsm.ServerSFU(srv) == fsm.SFULiveKit:
		// A draining LiveKit places no new rooms but lets its rooms
		// finish, late joiners included (it still takes their
		// sessions): moving the room would split it. Janus, drained,
		// refuses new sessions, and Switchyard's node new viewers, so
		// their rooms move.
	default:
		return false
	}
	a, ok := s.st.Allocation(r.GetAllocationId())
	return ok && a.GetState() == fsmpb.AllocationState_ALLOCATION_STATE_ACTIVE
}

func (s *Handler) anySFU(kind string) bool {
	for _, k := range s.st.ServerSFUs() {
		if k == kind {
			return true
		}
	}
	return false
}

func (s *Handler) listRooms(w http.ResponseWriter, r *http.Request) {
	rooms, err := page(w, r, s.st.Rooms(r.URL.Query().Get("server")), (*fsmpb.Room).GetName)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSONList(w, rooms, func(v *fsmpb.Room) any { return s.roomJSON(v) })
}

func (s *Handler) getRoom(w http.ResponseWriter, r *http.Request) {
	v, ok := s.st.Room(r.PathValue("room"))
	if !ok {
		s.fail(w, fmt.Errorf("%w: room %q is not placed", fsm.ErrNotFound, r.PathValue("room")))
		return
	}
	writeJSON(w, 200, s.roomJSON(v))
}

func (s *Handler) releaseRoom(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("room")
	if err := checkPlacedRoomName(name); err != nil {
		s.fail(w, err)
		return
	}
	rm, err := s.b.ReleaseRoom(r.Context(), name)
	if err != nil {
		s.fail(w, err)
		return
	}
	out := api.ReleaseRoomResult{Room: name}
	if rm != nil {
		out.Released, out.Server, out.AllocationID = true, rm.GetServer(), rm.GetAllocationId()
	}
	writeJSON(w, 200, out)
}

// vacateRoom gives up a room's placement on the server the request names
// (a sidecar whose SFU refused the room), keeping the record vacated with
// the reason, so the application sees why (GET /v1/rooms/{room}).
func (s *Handler) vacateRoom(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("room")
	if err := checkPlacedRoomName(name); err != nil {
		s.fail(w, err)
		return
	}
	var req api.VacateRoomRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, err)
		return
	}
	if req.Server == "" || req.Reason == "" {
		s.fail(w, fmt.Errorf("%w: server and reason are required", fsm.ErrInvalid))
		return
	}
	if err := fsm.CheckText("server", req.Server, fsm.MaxIDLen); err != nil {
		s.fail(w, err)
		return
	}
	if err := fsm.CheckText("reason", req.Reason, fsm.MaxReasonLen); err != nil {
		s.fail(w, err)
		return
	}
	if req.AllocationID != "" {
		if err := fsm.CheckText("allocation_id", req.AllocationID, fsm.MaxIDLen); err != nil {
			s.fail(w, err)
			return
		}
	}
	rm, err := s.b.VacateRoom(r.Context(), name, req.Server, req.AllocationID, req.Reason)
	if err != nil {
		s.fail(w, err)
		return
	}
	if rm == nil {
		s.fail(w, fmt.Errorf("%w: room %q is not placed", fsm.ErrNotFound, name))
		return
	}
	writeJSON(w, 200, s.roomJSON(rm))
}

// checkPlacedRoomName is the check of a name that must already be placed
// (release, vacate): the SDK's rules and valid UTF-8, but not the
// printable rule, so that a room placed before that rule existed can
// still be released.
func checkPlacedRoomName(name string) error {
	if err := api.ValidateRoomName(name); err != nil {
		return err
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: room name is not valid UTF-8", fsm.ErrInvalid)
	}
	return nil
}

// checkRoomName applies the room name rules of the SDK
// (api.ValidateRoomName: 1-200 bytes, no slash) and the caps of every
// other text field (valid UTF-8, printable characters only).
func checkRoomName(name string) error {
	if err := api.ValidateRoomName(name); err != nil {
		return err
	}
	return fsm.CheckText("room name", name, fsm.MaxRoomLen)
}
