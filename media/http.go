package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Handler returns the node's HTTP handler (see the package doc).
func (n *Node) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /whip/{room}", n.handleWHIP)
	mux.HandleFunc("POST /whep/{room}", n.handleWHEP)
	mux.HandleFunc("DELETE /resource/{id}", n.handleDelete)
	mux.HandleFunc("GET /v1/rooms/{room}", n.handleRoomInfo)
	mux.HandleFunc("GET /v1/load", n.handleLoad)
	mux.HandleFunc("GET /{$}", serveDemo)
	return cors(mux)
}

// cors lets the demo page (and browsers following a redirect to another
// node) call WHIP/WHEP across origins.
func cors(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Expose-Headers", "Location")
		if r.Method == http.MethodOptions {
			w.Header().Set("Access-Control-Allow-Methods", "POST, DELETE, PATCH, GET, OPTIONS")
			w.Header().Set("Access-Control-Allow-Headers", "Content-Type, Authorization")
			w.Header().Set("Accept-Post", "application/sdp")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// readOffer checks the content type and reads a bounded SDP body.
func readOffer(r *http.Request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(strings.ToLower(ct), "application/sdp") {
		return nil, fmt.Errorf("%w: Content-Type must be application/sdp, got %q", ErrBadOffer, ct)
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxOfferBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading body: %v", ErrBadOffer, err)
	}
	if len(b) > maxOfferBytes {
		return nil, fmt.Errorf("%w: offer larger than %d bytes", ErrBadOffer, maxOfferBytes)
	}
	return b, nil
}

// httpError answers err with the status its sentinel maps to and the
// reason as plain text.
func httpError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrBadOffer):
		code = http.StatusBadRequest
	case errors.Is(err, ErrUnsupportedCodec):
		code = http.StatusNotAcceptable
	case errors.Is(err, ErrUnknownRoom):
		code = http.StatusNotFound
	case errors.Is(err, ErrRoomTaken):
		code = http.StatusConflict
	case errors.Is(err, ErrFull), errors.Is(err, ErrDraining), errors.Is(err, ErrNoTracks), errors.Is(err, ErrClosed):
		code = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "2")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		code = http.StatusServiceUnavailable
	}
	http.Error(w, err.Error(), code)
}

// answerSDP writes 201 Created with the resource location and the answer.
func answerSDP(w http.ResponseWriter, id, sdp string) {
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Location", "/resource/"+id)
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, sdp)
}

func (n *Node) handleDelete(w http.ResponseWriter, r *http.Request) {
	n.mu.Lock()
	s := n.sessions[r.PathValue("id")]
	n.mu.Unlock()
	if s == nil || s.kind == kindCascadeOut {
		http.Error(w, "no such session", http.StatusNotFound)
		return
	}
	n.closeSession(s, "deleted by client")
	w.WriteHeader(http.StatusOK)
}

// RoomInfo describes a room on a node (GET /v1/rooms/{room}).
type RoomInfo struct {
	Room      string `json:"room"`
	Exists    bool   `json:"exists"`
	Tracks    int    `json:"tracks"`
	Viewers   int    `json:"viewers"`
	FreeUnits int64  `json:"free_units"`
}

func (n *Node) roomInfo(name string) RoomInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	ri := RoomInfo{Room: name, FreeUnits: n.cfg.Capacity - n.used}
	if rm := n.rooms[name]; rm != nil {
		ri.Exists, ri.Tracks, ri.Viewers = true, len(rm.tracks), len(rm.viewers)
	}
	return ri
}

func (n *Node) handleRoomInfo(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(n.roomInfo(r.PathValue("room")))
}

func (n *Node) handleLoad(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(n.currentLoad())
}
