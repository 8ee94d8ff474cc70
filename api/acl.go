package api

import (
	"time"
)

// ACLToken is a token as listed (never with its secret).
type ACLToken struct {
	ID              string `json:"id"`
	Role            string `json:"role"`
	Description     string `json:"description"`
	CreatedAtUnixMs int64  `json:"created_at_unix_ms"`
	ExpiresAtUnixMs int64  `json:"expires_at_unix_ms"`
	// Server is the only media server a media token acts as ("": any).
	Server string `json:"server"`
}

// ACLTokenSecret is the answer to bootstrap and token create: the only
// time the secret is shown.
type ACLTokenSecret struct {
	ID              string `json:"id"`
	Secret          string `json:"secret"`
	Role            string `json:"role"`
	Description     string `json:"description"`
	ExpiresAtUnixMs int64  `json:"expires_at_unix_ms"`
	// Server is the only media server a media token acts as ("": any).
	Server string `json:"server"`
}

// ACLRevocation is the answer to DELETE /v1/acl/tokens/{id}.
type ACLRevocation struct {
	Revoked string `json:"revoked"`
	// RevokedAtIndex is the log index of the revocation: no request made
	// with the token commits after it, and an agent refuses the token once
	// its applied index reaches it (GET /v1/health/ready shows it).
	RevokedAtIndex uint64 `json:"revoked_at_index"`
}

// CreateTokenRequest is the body of POST /v1/acl/tokens.
type CreateTokenRequest struct {
	Role        string `json:"role"`
	Description string `json:"description,omitempty"`
	// TTLMs bounds the token's life; 0 means it never expires.
	TTLMs int64 `json:"ttl_ms,omitempty"`
	// Server binds a media token to one media server id: it may register,
	// report, drain and deregister that server only. Empty: any server.
	Server string `json:"server,omitempty"`
}

// MaxTokenTTL is the longest --ttl a token may get.
const MaxTokenTTL = 10 * 365 * 24 * time.Hour
