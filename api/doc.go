// Package api is the Go SDK of Switchyard's HTTP admin API (JSON, versioned
// under /v1): the client and the wire types. Any agent serves every path:
// reads are answered by the leader (linearizable) unless ?stale=true, and
// writes reaching a follower are forwarded to the leader. Field names are
// snake_case and are a contract: add, never rename.
//
// The package links nothing of the server (no raft, no bolt; a test keeps
// it so): an application, the media node and the sidecars import it alone.
// The server side is package httpapi.
//
// Guarantees: Allocate with a request id is idempotent (the same id returns
// the same allocation, Duplicate set on the repeats), so the client retries
// retryable refusals (errcode.Retryable: no leader, leadership lost, unknown
// outcome) on the next agent with capped backoff, each attempt bounded by
// AttemptTimeout, until the caller's context ends. Refusals come back as
// *APIError, which unwraps to the errcode sentinels:
//
//	a, err := c.Allocate(ctx, api.AllocateRequest{RequestID: id, Room: "lobby", Units: 1})
//	if errors.Is(err, errcode.ErrCapacity) { ... }
//
// Concurrent Allocate calls on one Client are coalesced into
// POST /v1/allocations/batch requests (at most MaxBatch each), so one
// process can drive thousands of allocations per second over a handful of
// connections.
//
// Lists (servers, allocations, rooms, ACL tokens) are read a page at a
// time: the ...Page methods read one page (PageOptions: Limit, After) and
// answer its Items, the list's Total and the NextCursor; Pages iterates
// over the pages and All collects them. Page says what a cursor
// guarantees while the list changes. The older calls (Servers,
// Allocations, Rooms, ACLTokens) read the whole list in one answer.
package api
