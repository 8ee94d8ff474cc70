package cluster

import (
	"errors"

	"github.com/switchyard/switchyard/errcode"
)

// Sentinel errors of the cluster layer (the first five are errcode's,
// named here for the cluster's callers). ErrNotLeader, ErrLeadershipLost and
// ErrUnknownOutcome are retryable: the caller may send the same request
// again (with the same request id) to any node, and the FSM's idempotency
// makes that safe. Everything else is final for the request as sent.
var (
	// ErrNotLeader means this node is not the leader; the request was not
	// proposed. Transports forward such requests to the leader.
	ErrNotLeader = errcode.ErrNotLeader
	// ErrNoLeader means no leader is known right now (election in progress
	// or no quorum).
	ErrNoLeader = errcode.ErrNoLeader
	// ErrLeadershipLost means leadership was lost while the request was in
	// flight: it may or may not have been committed.
	ErrLeadershipLost = errcode.ErrLeadershipLost
	// ErrUnknownOutcome means the commit did not finish within the deadline;
	// it may still commit. Retry with the same request id.
	ErrUnknownOutcome = errcode.ErrUnknownOutcome
	// ErrShutdown means the node is shutting down.
	ErrShutdown = errcode.ErrShutdown
	// ErrDataDirMismatch means the data dir belongs to another node or
	// another cluster.
	ErrDataDirMismatch = errors.New("data dir belongs to another node or cluster")
	// ErrBadConfig means the node configuration is invalid.
	ErrBadConfig = errors.New("invalid configuration")
)

// Retryable reports whether err means "try again, maybe elsewhere, with the
// same request id".
func Retryable(err error) bool {
	return errors.Is(err, ErrNotLeader) || errors.Is(err, ErrNoLeader) ||
		errors.Is(err, ErrLeadershipLost) || errors.Is(err, ErrUnknownOutcome) ||
		errors.Is(err, ErrShutdown)
}
