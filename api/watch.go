package api

// Watch event kinds.
const (
	WatchReset      = "reset"      // a full copy follows (objects, then synced); forget what you had
	WatchSynced     = "synced"     // the state is complete as of index: resume from here
	WatchServer     = "server"     // a media server changed (op upsert/delete)
	WatchAllocation = "allocation" // an allocation changed
	WatchPolicy     = "policy"     // the placement policy changed
	WatchIntent     = "intent"     // a provisioning intent changed
	WatchRoom       = "room"       // a placed room changed
	WatchHeartbeat  = "heartbeat"  // nothing changed; index is the last synced one
	WatchError      = "error"      // the stream ends; resume from the last synced index
)

// WatchEvent is one line of GET /v1/watch (newline-delimited JSON, or the
// data of a Server-Sent Event with Accept: text/event-stream).
type WatchEvent struct {
	Index      uint64      `json:"index"`
	Kind       string      `json:"kind"`
	Op         string      `json:"op,omitempty"` // upsert or delete
	ID         string      `json:"id,omitempty"`
	Server     *Server     `json:"server,omitempty"`
	Allocation *Allocation `json:"allocation,omitempty"`
	Policy     *Policy     `json:"policy,omitempty"`
	Intent     *Intent     `json:"intent,omitempty"`
	Room       *Room       `json:"room,omitempty"`
	Code       string      `json:"code,omitempty"`
	Error      string      `json:"error,omitempty"`
}
