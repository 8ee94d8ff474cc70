package media

import "context"

// Cluster is what a media node needs from the allocator cluster. The HTTP
// adapter (NewHTTPCluster) implements it today; the QUIC client of the
// transport package is meant to be a drop-in replacement.
//
// Every blocking method takes a context and must return once it ends.
// Implementations must be safe for concurrent use.
type Cluster interface {
	// Register registers (or re-registers, same id) this node.
	Register(ctx context.Context, s ServerInfo) error
	// Allocate asks the cluster for units for a room on some server.
	// req.RequestID makes it idempotent: a retry with the same id returns
	// the same allocation. The answer carries the target's registered
	// addresses (the media node registers its base URL).
	Allocate(ctx context.Context, req AllocRequest) (Allocation, error)
	// Release ends an allocation (by allocation id). Releasing an ended
	// or unknown allocation is not an error worth retrying.
	Release(ctx context.Context, allocID string) error
	// Drain marks this node draining: the cluster places nothing new on it.
	Drain(ctx context.Context) error
	// Deregister removes this node; it must hold no active allocations.
	Deregister(ctx context.Context) error
	// State returns this node's state as the cluster sees it ("active",
	// "draining", "down", ...), so a drain ordered by an operator
	// (switchyard server drain) reaches the node.
	State(ctx context.Context) (string, error)
	// Report hands over the latest load figures. Best effort: it must not
	// block, and may drop reports.
	Report(l Load)
}

// ServerInfo is what a node registers.
type ServerInfo struct {
	ID        string
	Addresses []string // base URLs, e.g. "http://10.0.0.5:8080"
	Region    string
	Capacity  int64 // units
}

// AllocRequest asks for units for a room.
type AllocRequest struct {
	RequestID string
	Room      string
	Units     int64
	Requester string // this node's id
	Region    string
}

// Allocation is a granted allocation and where its server can be reached.
type Allocation struct {
	ID        string
	Server    string
	Units     int64
	Addresses []string // the target server's registered addresses
}

// Load is one load report, measured, not estimated. Its JSON form (GET
// /v1/load) uses snake_case keys.
type Load struct {
	Server     string   `json:"server"`
	Seq        uint64   `json:"seq"`
	CPU        float64  `json:"cpu"`               // fraction of one core used by this process since the last report (may exceed 1 on several cores)
	Cores      int      `json:"cores"`             // runtime.NumCPU, to normalise CPU
	IngressBps int64    `json:"ingress_bps"`       // RTP bytes received, as bits per second
	EgressBps  int64    `json:"egress_bps"`        // RTP bytes sent (retransmissions included), as bits per second
	Peers      int64    `json:"peers"`             // open peer connections (publishers, viewers, cascades)
	Tracks     int64    `json:"tracks"`            // published tracks across rooms
	Subscribed int64    `json:"subscribed_tracks"` // tracks sent to viewers and cascades (each copy once)
	Rooms      []string `json:"rooms,omitempty"`
	UsedUnits  int64    `json:"used_units"`               // units used by sessions (see CostModel)
	Capacity   int64    `json:"capacity"`                 // units
	Allocs     []string `json:"allocation_ids,omitempty"` // ids of allocations this node hosts (cascades into it)
	Draining   bool     `json:"draining"`
}
