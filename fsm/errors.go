package fsm

import (
	"errors"
	"fmt"
)

// Sentinel errors returned by the state machine. Every error a command can
// produce wraps exactly one of these; Code and FromCode translate them to the
// stable string codes that travel in log results, HTTP bodies and QUIC
// responses, so callers on every transport can test them with errors.Is.
var (
	// ErrInvalid means the command itself is malformed (empty ids, zero or
	// negative units, ...). Retrying it unchanged fails again.
	ErrInvalid = errors.New("invalid argument")
	// ErrNotFound means the named server or allocation does not exist.
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
	// ErrUnsupportedVersion means a log entry or snapshot was written by a
	// schema generation this binary does not know.
	ErrUnsupportedVersion = errors.New("unsupported encoding version")
	// ErrClusterMismatch means state from another cluster was offered.
	ErrClusterMismatch = errors.New("cluster id mismatch")
	// ErrVersionMismatch means a conditional change (policy if_version,
	// intent if_state) found the state moved on; read again and retry.
	ErrVersionMismatch = errors.New("version mismatch")
	// ErrACLBootstrapped means ACLs were bootstrapped before; a second
	// bootstrap is refused.
	ErrACLBootstrapped = errors.New("ACLs already bootstrapped")
)

// codeTable lists every sentinel with its wire code. A function, not a
// package variable, so nothing can mutate the table.
func codeTable() []codedSentinel {
	return []codedSentinel{
		{"invalid_argument", ErrInvalid},
		{"not_found", ErrNotFound},
		{"insufficient_capacity", ErrCapacity},
		{"server_not_active", ErrServerNotActive},
		{"server_busy", ErrServerBusy},
		{"request_id_reused", ErrRequestIDReused},
		{"unsupported_version", ErrUnsupportedVersion},
		{"cluster_mismatch", ErrClusterMismatch},
		{"version_mismatch", ErrVersionMismatch},
		{"acl_bootstrapped", ErrACLBootstrapped},
	}
}

// codedSentinel pairs a sentinel with its wire code.
type codedSentinel struct {
	code string
	err  error
}

// Code returns the stable code of the sentinel err wraps, or "" when it wraps
// none of this package's sentinels.
func Code(err error) string {
	for _, c := range codeTable() {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return ""
}

// FromCode rebuilds an error from a code and message so that errors.Is works
// on the receiving side. An unknown code yields a plain error with msg.
func FromCode(code, msg string) error {
	for _, c := range codeTable() {
		if c.code == code {
			if msg == "" || msg == c.err.Error() {
				return c.err
			}
			return &codedError{sentinel: c.err, msg: msg}
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

// errorf formats a message and wraps sentinel, keeping the message readable
// ("insufficient capacity: ...").
func errorf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}
