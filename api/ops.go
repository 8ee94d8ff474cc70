package api

import (
	"net/http"
	"strings"
)

// Resendable reports whether the request method path (a query string is
// ignored) may be sent again when its outcome is unknown. The Go SDK's
// retries and an agent's forwarding to the leader both follow it: a
// request that is not resendable is retried only when it certainly
// changed nothing (the connection was refused, or an agent answered that
// there is no leader to run it).
func Resendable(method, path string) bool {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if method != http.MethodPost {
		return true
	}
	// Every other request is idempotent (allocations carry request ids, the
	// rest have set semantics). These are not:
	switch path {
	case "/v1/operator/transfer-leader", // a second transfer could move leadership twice
		"/v1/acl/bootstrap",     // a resent bootstrap that the first one beat is refused, and the first secret lost
		"/v1/acl/tokens",        // a resent create mints a second token
		"/v1/media/keys/rotate": // a resent rotation evicts the key that tokens in use are signed with
		return false
	}
	return true
}
