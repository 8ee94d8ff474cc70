// Package errcode is the one table of the error codes Switchyard answers
// with: the sentinel errors of the state machine, the cluster layer and
// authorization, each with its stable wire code, whether a client may send
// the same request again, and the HTTP status it travels with.
//
// Servers (fsm, cluster, acl and the HTTP and QUIC front ends) and clients
// (the Go SDK, the media node's QUIC client) share it, so a refusal keeps
// its meaning across the wire: errors.Is(err, errcode.ErrCapacity) holds on
// the client for a refusal the leader's state machine produced. The package
// imports only the standard library; clients linking it link nothing of the
// server.
package errcode

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// The sentinels. Every refusal wraps exactly one of them; Code names it on
// the wire and FromCode rebuilds it on the other side.
var (
	// ErrInvalid means the request itself is malformed (empty ids, zero or
	// negative units, a value over its cap, malformed JSON, ...). Retrying
	// it unchanged fails again.
	ErrInvalid = errors.New("invalid argument")
	// ErrNotFound means the named server, allocation, room or token does
	// not exist.
	ErrNotFound = errors.New("not found")
	// ErrCapacity means no server (or not the named one) has the free units
	// the request needs.
	ErrCapacity = errors.New("insufficient capacity")
	// ErrServerNotActive means the server is draining or down.
	ErrServerNotActive = errors.New("server not active")
	// ErrServerBusy means the server still hosts active allocations.
	ErrServerBusy = errors.New("server has active allocations")
	// ErrRequestIDReused means a request id was sent again with different
	// parameters; the earlier allocation is kept.
	ErrRequestIDReused = errors.New("request id reused with different parameters")
	// ErrUnsupportedVersion means a log entry, snapshot or request was
	// written by a schema generation this binary does not know.
	ErrUnsupportedVersion = errors.New("unsupported encoding version")
	// ErrClusterMismatch means state from another cluster was offered.
	ErrClusterMismatch = errors.New("cluster id mismatch")
	// ErrVersionMismatch means a conditional change (policy if_version,
	// intent if_state) found the state moved on; read again and retry.
	ErrVersionMismatch = errors.New("version mismatch")
	// ErrACLBootstrapped means ACLs were bootstrapped before; a second
	// bootstrap is refused.
	ErrACLBootstrapped = errors.New("ACLs already bootstrapped")

	// ErrNotLeader means the answering node is not the leader; the request
	// was not proposed. Retryable anywhere.
	ErrNotLeader = errors.New("not the leader")
	// ErrNoLeader means no leader is known right now (election in progress
	// or no quorum). Retryable.
	ErrNoLeader = errors.New("no leader")
	// ErrLeadershipLost means leadership was lost while the request was in
	// flight: it may or may not have been committed. Retry with the same
	// request id.
	ErrLeadershipLost = errors.New("leadership lost while committing")
	// ErrUnknownOutcome means the commit did not finish within the
	// deadline, or the answer was lost; it may still commit. Retry with the
	// same request id.
	ErrUnknownOutcome = errors.New("outcome unknown: commit did not finish in time")
	// ErrShutdown means the node is shutting down. Retryable elsewhere.
	ErrShutdown = errors.New("node is shutting down")

	// ErrUnauthenticated means no valid credential came with the request
	// (none, malformed, unknown, expired or revoked).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied means the credential is valid but its role may
	// not do this.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrRateLimited means the caller sent more requests than its rate
	// allows. Not marked retryable, so clients do not retry at once; a
	// caller may send again after a pause.
	ErrRateLimited = errors.New("rate limited")
)

// Entry is one row of the table.
type Entry struct {
	// Err is the sentinel.
	Err error
	// Code is its stable wire code.
	Code string
	// Retryable: the same request (same request id) may be sent again,
	// to any agent, and may succeed.
	Retryable bool
	// HTTPStatus is the status the HTTP API answers it with.
	HTTPStatus int
	// Momentary: a refusal that depends on the state at the moment it was
	// decided (free capacity, a server's state). Another copy of the same
	// request, decided at another moment, may be granted, so such a
	// refusal is final only when no earlier copy may still reach the
	// leader (see Unsettled).
	Momentary bool
}

// Table returns every sentinel with its code, retry hint and HTTP status.
// A function, not a package variable, so nothing can change the table.
func Table() []Entry {
	return []Entry{
		{ErrInvalid, "invalid_argument", false, http.StatusBadRequest, false},
		{ErrNotFound, "not_found", false, http.StatusNotFound, false},
		{ErrCapacity, "insufficient_capacity", false, http.StatusConflict, true},
		{ErrServerNotActive, "server_not_active", false, http.StatusConflict, true},
		{ErrServerBusy, "server_busy", false, http.StatusConflict, false},
		{ErrRequestIDReused, "request_id_reused", false, http.StatusConflict, false},
		{ErrUnsupportedVersion, "unsupported_version", false, http.StatusBadRequest, false},
		{ErrClusterMismatch, "cluster_mismatch", false, http.StatusConflict, false},
		{ErrVersionMismatch, "version_mismatch", false, http.StatusConflict, false},
		{ErrACLBootstrapped, "acl_bootstrapped", false, http.StatusConflict, false},
		{ErrNotLeader, "not_leader", true, http.StatusServiceUnavailable, false},
		{ErrNoLeader, "no_leader", true, http.StatusServiceUnavailable, false},
		{ErrLeadershipLost, "leadership_lost", true, http.StatusServiceUnavailable, false},
		{ErrUnknownOutcome, "unknown_outcome", true, http.StatusServiceUnavailable, false},
		{ErrShutdown, "shutdown", true, http.StatusServiceUnavailable, false},
		{ErrUnauthenticated, "unauthenticated", false, http.StatusUnauthorized, false},
		{ErrPermissionDenied, "permission_denied", false, http.StatusForbidden, false},
		{ErrRateLimited, "rate_limited", false, http.StatusTooManyRequests, false},
	}
}

// Momentary reports whether code is a momentary refusal (see Entry).
func Momentary(code string) bool {
	for _, c := range Table() {
		if c.Code == code {
			return c.Momentary
		}
	}
	return false
}

// OutcomeUnknown reports whether code says that the request may or may
// not have been applied (unknown_outcome, leadership_lost): a copy of it
// may still be acted on.
func OutcomeUnknown(code string) bool {
	return code == "unknown_outcome" || code == "leadership_lost"
}

// Unsettling reports whether a refusal with code, after an earlier
// attempt of the same request went unanswered, must be answered as
// Unsettled: it is momentary and was not committed (Committed).
func Unsettling(code string, committed bool) bool {
	return Momentary(code) && !committed
}

// Unsettled is the answer to give instead of the momentary refusal msg
// when an earlier attempt of the same request went unanswered (it timed
// out, or its connection failed after it was sent): that copy may still
// reach the leader (late packets of a partition that heals, say) and be
// granted, so the refusal does not settle the request. The caller learns
// the outcome by sending the request again with the same request id.
func Unsettled(msg string) error {
	return fmt.Errorf("%w: refused (%s), but an earlier attempt of this request went unanswered and may still be granted; send it again with the same request id to learn the outcome", ErrUnknownOutcome, msg)
}

// Committed marks err, a momentary refusal, as committed by the leader
// under its request id (fsm.Refusal): every copy of the request gets the
// same answer, so it settles the request even after an unanswered
// attempt. The wire carries the mark (the HTTP error's `committed`, the
// QUIC response's `committed`).
func Committed(err error) error { return &committedError{err} }

type committedError struct{ error }

func (e *committedError) Unwrap() error { return e.error }

// IsCommitted reports whether err carries Committed's mark.
func IsCommitted(err error) bool {
	var c *committedError
	return errors.As(err, &c)
}

// Internal is the code of an error that wraps no sentinel: a bug or an
// unexpected failure, logged by the server.
const Internal = "internal"

// Lookup returns the table entry of the sentinel err wraps. A context
// deadline or cancellation is an unknown outcome (the request may have
// been proposed). ok is false when err wraps nothing known.
func Lookup(err error) (e Entry, ok bool) {
	if err == nil {
		return Entry{}, false
	}
	for _, c := range Table() {
		if errors.Is(err, c.Err) {
			return c, true
		}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return Lookup(ErrUnknownOutcome)
	}
	return Entry{}, false
}

// Code returns the stable code of the sentinel err wraps, or "" when it
// wraps none (and is no context error).
func Code(err error) string {
	e, _ := Lookup(err)
	return e.Code
}

// Retryable reports whether err means "send the same request again, maybe
// elsewhere, with the same request id".
func Retryable(err error) bool {
	e, _ := Lookup(err)
	return e.Retryable
}

// HTTPStatus is the HTTP status of err: its entry's, or 500 for an error
// that wraps no sentinel.
func HTTPStatus(err error) int {
	if e, ok := Lookup(err); ok {
		return e.HTTPStatus
	}
	return http.StatusInternalServerError
}

// FromCode rebuilds an error from a code and message so that errors.Is
// works on the receiving side. An unknown code yields a plain error with
// msg.
func FromCode(code, msg string) error {
	for _, c := range Table() {
		if c.Code == code {
			if msg == "" || msg == c.Err.Error() {
				return c.Err
			}
			return &codedError{sentinel: c.Err, msg: msg}
		}
	}
	if msg == "" {
		msg = code
	}
	return errors.New(msg)
}

// codedError carries a full message while still matching its sentinel.
type codedError struct {
	sentinel error
	msg      string
}

func (e *codedError) Error() string { return e.msg }
func (e *codedError) Unwrap() error { return e.sentinel }
