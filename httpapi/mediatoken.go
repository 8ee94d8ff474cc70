package httpapi

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/mediatoken"
)

func (s *Handler) registerMediaTokenRoutes() {
	s.handle("POST /v1/media/tokens", s.mintMediaToken, true)
	s.handle("GET /v1/media/keys", s.mediaKeys, false)
	s.handle("POST /v1/media/keys/rotate", s.rotateMediaKey, true)
}

func (s *Handler) addMediaKey(r *http.Request) error {
	var id [8]byte
	secret := make([]byte, 32)
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	return s.b.AddMediaKey(r.Context(), &fsmpb.MediaKey{Id: hex.EncodeToString(id[:]), Secret: secret})
}

func (s *Handler) rotateMediaKey(w http.ResponseWriter, r *http.Request) {
	if err := s.addMediaKey(r); err != nil {
		s.fail(w, err)
		return
	}
	keys := s.st.MediaKeys()
	s.log.Info("media key rotated", "kid", keys[len(keys)-1].GetId())
	writeJSON(w, 200, map[string]any{"kid": keys[len(keys)-1].GetId(), "keys": len(keys)})
}

// mediaKeys hands the keys to media nodes (PermServer: media credentials
// and operators; agent certificates once every voter names forwarded
// certificates, see cluster.FeatureForwardedPrincipal).
func (s *Handler) mediaKeys(w http.ResponseWriter, r *http.Request) {
	out := []mediatoken.Key{}
	for _, k := range s.st.MediaKeys() {
		out = append(out, mediatoken.Key{ID: k.GetId(), Secret: k.GetSecret()})
	}
	writeJSON(w, 200, out)
}

// mintMediaToken signs a WHIP/WHEP token with the newest key (creating the
// first key on first use).
func (s *Handler) mintMediaToken(w http.ResponseWriter, r *http.Request) {
	var req api.MintRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, err)
		return
	}
	if req.Action != mediatoken.Publish && req.Action != mediatoken.Play {
		s.fail(w, fmt.Errorf("%w: action must be publish or play", fsm.ErrInvalid))
		return
	}
	if req.Room == "" {
		s.fail(w, fmt.Errorf("%w: room is required", fsm.ErrInvalid))
		return
	}
	if err := fsm.CheckText("room", req.Room, fsm.MaxRoomLen); err != nil {
		s.fail(w, err)
		return
	}
	ttl := api.DefaultMediaTokenTTL
	if req.TTLMs < 0 || req.TTLMs > api.MaxMediaTokenTTL.Milliseconds() {
		s.fail(w, fmt.Errorf("%w: ttl_ms must be between 1 and %d", fsm.ErrInvalid, api.MaxMediaTokenTTL.Milliseconds()))
		return
	}
	if req.TTLMs > 0 {
		ttl = time.Duration(req.TTLMs) * time.Millisecond
	}
	keys := s.st.MediaKeys()
	if len(keys) == 0 {
		if err := s.addMediaKey(r); err != nil {
			s.fail(w, err)
			return
		}
		keys = s.st.MediaKeys()
	}
	k := keys[len(keys)-1]
	now := time.Now()
	exp := now.Add(ttl)
	tok, err := mediatoken.Mint(mediatoken.Key{ID: k.GetId(), Secret: k.GetSecret()},
		mediatoken.Claims{Room: req.Room, Action: req.Action, ExpiresAt: exp.Unix(), IssuedAt: now.Unix()})
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, 200, api.MintedToken{Token: tok, Room: req.Room, Action: req.Action, ExpiresAtUnixMs: exp.Unix() * 1000})
}
