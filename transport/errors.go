package transport

import "errors"

// Sentinel errors of the package.
//
// Decoding: every error DecodeDatagram and the frame readers return wraps
// exactly one of ErrTruncated, ErrOversized, ErrWrongVersion,
// ErrUnknownType or ErrMalformed, so receivers can count drops by reason
// (see Reason).
//
// Client: refusals by the cluster come back as *Error (unwrapping to the
// fsm and cluster sentinels); the client's own conditions are below.
var (
	// ErrTruncated means the input ended before a whole message.
	ErrTruncated = errors.New("truncated message")
	// ErrOversized means the input is larger than the protocol allows.
	ErrOversized = errors.New("message too large")
	// ErrWrongVersion means the input is of a protocol generation this
	// binary does not speak.
	ErrWrongVersion = errors.New("unsupported protocol version")
	// ErrUnknownType means a datagram type byte this binary does not know.
	ErrUnknownType = errors.New("unknown message type")
	// ErrMalformed means the bytes do not decode, or decode to a message
	// that breaks the protocol's rules (e.g. no server id, seq 0).
	ErrMalformed = errors.New("malformed message")

	// ErrNotRegistered means Report or Drain was called before Register
	// succeeded.
	ErrNotRegistered = errors.New("media server not registered yet")
	// ErrClosed means the client (or server) was closed.
	ErrClosed = errors.New("client closed")
	// ErrNoConnection means no allocator could be reached right now.
	ErrNoConnection = errors.New("no connection to any allocator")
)
