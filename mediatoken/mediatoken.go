// Package mediatoken mints and verifies the short-lived tokens WHIP and WHEP
// clients present to media nodes (Authorization: Bearer, RFC 9725 section
// 4.5). A token is a compact JWT (HS256) scoped to one room and one action
// (publish or play), signed with a key the cluster keeps in its replicated
// state and hands to media nodes, so any media node verifies it without a
// round trip. A keyring holds the current key and the one before it:
// rotating adds a key, and tokens signed with the previous one keep
// working until they expire.
package mediatoken

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Actions a token allows.
const (
	Publish = "publish"
	Play    = "play"
)

// Sentinel errors.
var (
	// ErrMissing means no token was presented: HTTP 401.
	ErrMissing = errors.New("media token required")
	// ErrInvalid means the token is malformed, signed with an unknown key,
	// or expired: HTTP 401.
	ErrInvalid = errors.New("invalid media token")
	// ErrScope means the token is valid but for another room or action:
	// HTTP 403.
	ErrScope = errors.New("media token does not cover this request")
	// ErrUnknownKey means the token names a key the keyring does not hold
	// (one rotated in since the keyring was last loaded, or none at all).
	// It wraps ErrInvalid.
	ErrUnknownKey = fmt.Errorf("%w: unknown key", ErrInvalid)
)

// Leeway absorbs clock skew between the minting agent and the media node.
const Leeway = 5 * time.Second

// MaxTokenLen bounds what is parsed.
const MaxTokenLen = 4096

// Key is one signing key.
type Key struct {
	ID     string `json:"kid"`
	Secret []byte `json:"secret"`
}

// Claims are what a token says.
type Claims struct {
	Room   string `json:"room"`
	Action string `json:"act"`
	// Alloc, on a cascade's publish token, is the cluster allocation the
	// cascade materializes on the target.
	Alloc     string `json:"alloc,omitempty"`
	ExpiresAt int64  `json:"exp"`
	IssuedAt  int64  `json:"iat"`
}

var b64 = base64.RawURLEncoding

// Mint signs c with k.
func Mint(k Key, c Claims) (string, error) {
	if k.ID == "" || len(k.Secret) < 16 {
		return "", fmt.Errorf("%w: signing key missing or too short", ErrInvalid)
	}
	h, _ := json.Marshal(map[string]string{"alg": "HS256", "typ": "JWT", "kid": k.ID})
	p, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signing := b64.EncodeToString(h) + "." + b64.EncodeToString(p)
	return signing + "." + b64.EncodeToString(sign(k.Secret, signing)), nil
}

func sign(secret []byte, s string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(s))
	return m.Sum(nil)
}

// Keyring holds the verification keys; safe for concurrent use.
type Keyring struct {
	mu     sync.RWMutex
	keys   map[string][]byte
	newest Key
}

// Set replaces the keys (oldest first: the last one signs).
func (r *Keyring) Set(keys []Key) {
	m := make(map[string][]byte, len(keys))
	for _, k := range keys {
		m[k.ID] = k.Secret
	}
	r.mu.Lock()
	r.keys = m
	r.newest = Key{}
	if len(keys) > 0 {
		r.newest = keys[len(keys)-1]
	}
	r.mu.Unlock()
}

// Signer returns the newest key.
func (r *Keyring) Signer() (Key, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.newest, r.newest.ID != ""
}

// Len is the number of keys held.
func (r *Keyring) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.keys)
}

// Verify checks tok and returns its claims. It does not check the scope.
func (r *Keyring) Verify(tok string, now time.Time) (Claims, error) {
	var c Claims
	if tok == "" {
		return c, ErrMissing
	}
	if len(tok) > MaxTokenLen {
		return c, fmt.Errorf("%w: too long", ErrInvalid)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return c, fmt.Errorf("%w: not a compact JWT", ErrInvalid)
	}
	hb, err := b64.DecodeString(parts[0])
	if err != nil {
		return c, fmt.Errorf("%w: header: %v", ErrInvalid, err)
	}
	var h struct {
		Alg, Kid string
	}
	if err := json.Unmarshal(hb, &h); err != nil || h.Alg != "HS256" {
		return c, fmt.Errorf("%w: header must name alg HS256", ErrInvalid)
	}
	r.mu.RLock()
	secret, ok := r.keys[h.Kid]
	r.mu.RUnlock()
	if !ok {
		return c, fmt.Errorf("%w %q", ErrUnknownKey, h.Kid)
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, sign(secret, parts[0]+"."+parts[1])) {
		return c, fmt.Errorf("%w: bad signature", ErrInvalid)
	}
	pb, err := b64.DecodeString(parts[1])
	if err != nil || json.Unmarshal(pb, &c) != nil {
		return Claims{}, fmt.Errorf("%w: claims", ErrInvalid)
	}
	if now.Add(-Leeway).Unix() >= c.ExpiresAt {
		return Claims{}, fmt.Errorf("%w: expired", ErrInvalid)
	}
	return c, nil
}

// Check verifies tok and that it allows action on room.
func (r *Keyring) Check(tok, room, action string, now time.Time) (Claims, error) {
	c, err := r.Verify(tok, now)
	if err != nil {
		return c, err
	}
	if c.Room != room || c.Action != action {
		return c, fmt.Errorf("%w: token is for %s of room %q, not %s of %q", ErrScope, c.Action, c.Room, action, room)
	}
	return c, nil
}

// FromRequest extracts a bearer token from an Authorization header value
// (the scheme is case-insensitive, RFC 9110), or else from an
// access_token query value (redirected WHEP viewers).
func FromRequest(authorization, query string) string {
	if scheme, s, ok := strings.Cut(authorization, " "); ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(s)
	}
	return query
}
