package api

import (
	"time"
)

// MintRequest is the body of POST /v1/media/tokens.
type MintRequest struct {
	Room string `json:"room"`
	// Action is publish or play.
	Action string `json:"action"`
	// TTLMs is the token's life (default 10 minutes, at most a day).
	TTLMs int64 `json:"ttl_ms,omitempty"`
}

// MintedToken is the answer to a mint.
type MintedToken struct {
	Token           string `json:"token"`
	Room            string `json:"room"`
	Action          string `json:"action"`
	ExpiresAtUnixMs int64  `json:"expires_at_unix_ms"`
}

// Media token lifetimes.
const (
	DefaultMediaTokenTTL = 10 * time.Minute
	MaxMediaTokenTTL     = 24 * time.Hour
)
