package fsm

import (
	"fmt"

	"github.com/switchyard/switchyard/errcode"
)

// Sentinel errors returned by the state machine: the errcode package's,
// named here so state-machine code and its callers read naturally. Every
// error a command can produce wraps exactly one of them; errcode.Code and
// errcode.FromCode translate them to the stable string codes that travel in
// log results, HTTP bodies and QUIC responses.
var (
	// ErrInvalid means the command itself is malformed (empty ids, zero or
	// negative units, ...). Retrying it unchanged fails again.
	ErrInvalid = errcode.ErrInvalid
	// ErrNotFound means the named server or allocation does not exist.
	ErrNotFound = errcode.ErrNotFound
	// ErrCapacity means no server (or not the named one) has the free units
	// the request needs.
	ErrCapacity = errcode.ErrCapacity
	// ErrServerNotActive means the server is draining or down.
	ErrServerNotActive = errcode.ErrServerNotActive
	// ErrServerBusy means the server still hosts active allocations.
	ErrServerBusy = errcode.ErrServerBusy
	// ErrRequestIDReused means a request id was sent again with different
	// parameters; the earlier allocation is kept.
	ErrRequestIDReused = errcode.ErrRequestIDReused
	// ErrUnsupportedVersion means a log entry or snapshot was written by a
	// schema generation this binary does not know.
	ErrUnsupportedVersion = errcode.ErrUnsupportedVersion
	// ErrClusterMismatch means state from another cluster was offered.
	ErrClusterMismatch = errcode.ErrClusterMismatch
	// ErrVersionMismatch means a conditional change (policy if_version,
	// intent if_state) found the state moved on; read again and retry.
	ErrVersionMismatch = errcode.ErrVersionMismatch
	// ErrACLBootstrapped means ACLs were bootstrapped before; a second
	// bootstrap is refused.
	ErrACLBootstrapped = errcode.ErrACLBootstrapped
	// ErrUnauthenticated means the ACL token that authorized a command
	// was revoked, or expired, before the command was applied.
	ErrUnauthenticated = errcode.ErrUnauthenticated
)

// errorf formats a message and wraps sentinel, keeping the message readable
// ("insufficient capacity: ...").
func errorf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}
