// Package acl decides who may do what. One authorization table maps every
// operation to the permission it needs, and one function, Authorize, checks a
// principal (a bearer token from the replicated ACL table, or a certificate
// identity) against it. The HTTP API and the QUIC listener both call it, so
// a rule is written once.
//
// Tokens are 128-bit random secrets; the replicated state keeps only their
// SHA-256 (fast hashing is enough for secrets of that entropy), so neither
// the raft log nor snapshots hold a usable credential.
package acl

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// Sentinel errors of authorization.
var (
	// ErrUnauthenticated means no valid credential came with the request
	// (none, malformed, unknown, expired or revoked): HTTP 401.
	ErrUnauthenticated = errcode.ErrUnauthenticated
	// ErrPermissionDenied means the credential is valid but its role may
	// not do this: HTTP 403.
	ErrPermissionDenied = errcode.ErrPermissionDenied
	// ErrUnknownToken means no token has this secret (never created, or
	// revoked). It wraps ErrUnauthenticated. A follower that has not yet
	// applied a new token's entry lets the leader decide.
	ErrUnknownToken = fmt.Errorf("%w: unknown or revoked token", ErrUnauthenticated)
)

// Perm is what an operation needs.
type Perm int

// Permissions, from least to most powerful (a role holds a set, not a level).
const (
	// PermNone: anyone, even without a credential (probes, health).
	PermNone Perm = iota
	// PermRead: status, lists, metrics.
	PermRead
	// PermAllocate: allocate and release.
	PermAllocate
	// PermServer: register, drain, deregister and report for a media
	// server. A media certificate holds it for its own server id only.
	PermServer
	// PermMediaKeys: read the WHIP/WHEP signing keys, which every media
	// server verifies tokens with (it acts on no particular server).
	PermMediaKeys
	// PermOperator: everything else (members, leadership, policy,
	// snapshots, ACL tokens).
	PermOperator
)

func (p Perm) String() string {
	switch p {
	case PermNone:
		return "none"
	case PermRead:
		return "read"
	case PermAllocate:
		return "allocate"
	case PermServer:
		return "server"
	case PermMediaKeys:
		return "media keys"
	case PermOperator:
		return "operator"
	}
	return fmt.Sprintf("perm(%d)", int(p))
}

// Principal roles beyond the token roles: a certificate of an agent.
const RoleAgent = "agent"

// rolePerms is the authorization table: what each role may do.
func rolePerms(role string) []Perm {
	switch role {
	case fsm.RoleOperator:
		return []Perm{PermRead, PermAllocate, PermServer, PermMediaKeys, PermOperator}
	case RoleAgent:
		// An agent certificate never acts as a media server: what a
		// follower forwards for a media certificate is authorized as that
		// certificate (the HTTP API's forwarded principal).
		return []Perm{PermRead, PermAllocate, PermOperator}
	case fsm.RoleAllocator:
		return []Perm{PermRead, PermAllocate}
	case fsm.RoleReader:
		return []Perm{PermRead}
	case fsm.RoleMedia:
		// Media nodes read the member table, register and report, and
		// allocate/release cascade targets.
		return []Perm{PermRead, PermAllocate, PermServer, PermMediaKeys}
	}
	return nil
}

// Principal is who sent a request.
type Principal struct {
	// Kind is "token", "cert" or "anonymous".
	Kind string
	// Role is the token's or certificate's role ("" when anonymous).
	Role string
	// ID is the token id or the certificate name.
	ID string
	// Description is the token's description.
	Description string
	// Server, when set, is the only media server id this principal may
	// act as (a media certificate names its server).
	Server string
}

// Anonymous is the principal of a request without credentials.
var Anonymous = Principal{Kind: "anonymous"}

// String names the principal for logs and error messages (never a
// secret). Names come from certificates and tokens that clients present,
// so every field is escaped by logName: a name cannot end the line or
// forge the rest of it.
func (p Principal) String() string {
	switch p.Kind {
	case "token":
		return fmt.Sprintf("token %s (%s, %q)", logName(p.ID), logName(p.Role), p.Description)
	case "cert":
		return fmt.Sprintf("certificate %s (%s)", logName(p.ID), logName(p.Role))
	}
	return "anonymous"
}

// logName returns s unchanged when it is a plain name (valid UTF-8,
// printable, no spaces, quotes or backslashes), and otherwise as a Go
// quoted string, whose escapes (\n, \x1b, \u202e, ...) keep control
// characters, line breaks, invalid UTF-8 and invisible formatting out of
// the output. Quoting names that hold a space, a quote or a backslash too
// keeps an escaped name from passing for a plain one.
func logName(s string) string {
	if s == "" || !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if !strconv.IsPrint(r) || r == ' ' || r == '"' || r == '\\' {
			return strconv.Quote(s)
		}
	}
	return s
}

// Authorize reports whether p may perform an operation needing perm. For
// PermServer, server is the media server id the operation targets ("" when
// it targets none). It returns nil, or an error wrapping
// ErrUnauthenticated or ErrPermissionDenied with a message saying why.
func Authorize(p Principal, perm Perm, server string) error {
	if perm == PermNone {
		return nil
	}
	if p.Kind == "anonymous" || p.Kind == "" {
		return fmt.Errorf("%w: this operation needs a token (Authorization: Bearer <secret>, --token or SWITCHYARD_TOKEN)", ErrUnauthenticated)
	}
	held := false
	for _, q := range rolePerms(p.Role) {
		held = held || q == perm
	}
	if !held {
		return fmt.Errorf("%w: %s may not perform %s operations", ErrPermissionDenied, p, perm)
	}
	if perm == PermServer && p.Server != "" && server != p.Server {
		return fmt.Errorf("%w: %s may act only as media server %q, not %q", ErrPermissionDenied, p, p.Server, server)
	}
	return nil
}

// Leeway is how far past its expiry a token is still accepted, to absorb
// clock skew between the node that created it and the one checking it.
// Apply allows the same (fsm.TokenLeewayMs) when it re-checks the token of
// a command.
const Leeway = fsm.TokenLeewayMs * time.Millisecond

// MaxSecretLen bounds what is even looked at in an Authorization header.
const MaxSecretLen = 256

// HashSecret returns the hex SHA-256 stored for secret.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// NewSecret returns a fresh token id and secret (both random, 128 bits).
func NewSecret() (id, secret string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("token randomness: %w", err)
	}
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32], "sy_" + h[32:], nil
}

// ParseBearer extracts the secret from an Authorization header value. An
// empty header yields ("", nil); anything that is not "Bearer <secret>"
// with a sane secret is ErrUnauthenticated.
func ParseBearer(h string) (string, error) {
	if h == "" {
		return "", nil
	}
	if len(h) > MaxSecretLen+len("Bearer ") {
		return "", fmt.Errorf("%w: Authorization header too long", ErrUnauthenticated)
	}
	scheme, secret, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", fmt.Errorf("%w: Authorization header must be \"Bearer <secret>\"", ErrUnauthenticated)
	}
	secret = strings.TrimSpace(secret)
	if secret == "" {
		return "", fmt.Errorf("%w: empty bearer token", ErrUnauthenticated)
	}
	for i := 0; i < len(secret); i++ {
		if secret[i] < 0x21 || secret[i] > 0x7e {
			return "", fmt.Errorf("%w: bearer token has characters outside printable ASCII", ErrUnauthenticated)
		}
	}
	return secret, nil
}

// TokenSource looks tokens up by secret hash (the FSM implements it).
type TokenSource interface {
	ACLTokenByHash(hash string) (*fsmpb.AclToken, bool)
}

// Resolve turns a secret into its principal: unknown, revoked or expired
// (beyond Leeway at now) secrets are ErrUnauthenticated.
func Resolve(src TokenSource, secret string, now time.Time) (Principal, error) {
	hash := HashSecret(secret)
	t, ok := src.ACLTokenByHash(hash)
	if !ok || subtle.ConstantTimeCompare([]byte(t.GetSecretHash()), []byte(hash)) != 1 {
		return Anonymous, ErrUnknownToken
	}
	if exp := t.GetExpiresAtUnixMs(); exp > 0 && now.Add(-Leeway).UnixMilli() >= exp {
		return Anonymous, fmt.Errorf("%w: token %s expired at %s", ErrUnauthenticated, t.GetId(), time.UnixMilli(exp).UTC().Format(time.RFC3339))
	}
	p := Principal{Kind: "token", Role: t.GetRole(), ID: t.GetId(), Description: t.GetDescription()}
	if t.GetRole() == fsm.RoleMedia {
		p.Server = t.GetServer() // "" (an unbound token): any server
	}
	return p, nil
}
