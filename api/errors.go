package api

import "errors"

// The SDK's own errors (answers of an agent are *APIError, whose Body.Code
// names the refusal). Test with errors.Is.
var (
	// ErrNoAddress means the client was given no agent address.
	ErrNoAddress = errors.New("no agent address given (--addr)")
	// ErrRoomNotReady means a placed room was not reported by its server
	// before the caller gave up.
	ErrRoomNotReady = errors.New("room not ready on its server")
	// ErrWatchStopped is returned by Watch when fn asked it to stop.
	ErrWatchStopped = errors.New("watch stopped")
	// ErrCursorStuck means a list answered a page whose next cursor does
	// not move past the one asked for: following it would never end.
	ErrCursorStuck = errors.New("list cursor did not advance")
	// ErrFilterIgnored means an agent answered a filtered list with items
	// the filter excludes: a release that does not know the filter.
	ErrFilterIgnored = errors.New("the agent ignored the list filter (an older release?)")
)
