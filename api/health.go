package api

// Live is the body of GET /v1/health/live.
type Live struct {
	Status string `json:"status"`
	Node   string `json:"node"`
	// UptimeMs is how long this handler has been serving.
	UptimeMs int64 `json:"uptime_ms"`
}

// Readiness is the body of GET /v1/health/ready.
type Readiness struct {
	Ready        bool   `json:"ready"`
	Node         string `json:"node"`
	State        string `json:"state"`
	Leader       string `json:"leader"`
	Member       bool   `json:"member"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	Lag          uint64 `json:"lag"`
	MaxLag       uint64 `json:"max_lag"`
	ShuttingDown bool   `json:"shutting_down"`
	// Reasons says why the node is not ready (empty when it is).
	Reasons []string `json:"reasons"`
}

// NodeStats is the body of GET /v1/stats: this node's raft status and the
// counters the dashboard turns into rates.
type NodeStats struct {
	Status Status `json:"status"`
	// Allocations counts allocation answers decided while this node led,
	// by outcome (granted, duplicate, refused, unknown).
	Allocations map[string]float64 `json:"allocations"`
	// Datagrams counts QUIC datagrams received by this node, by result.
	Datagrams map[string]float64 `json:"datagrams"`
	// Leaderships is how often this node became a ready leader.
	Leaderships float64 `json:"leaderships"`
	// MarkedDown counts servers this node's failure detector marked down.
	MarkedDown float64 `json:"marked_down"`
	// CommitCount and CommitSumSeconds are the commit-time histogram's
	// count and sum (entries this node proposed as leader).
	CommitCount      uint64  `json:"commit_count"`
	CommitSumSeconds float64 `json:"commit_sum_seconds"`
	ShuttingDown     bool    `json:"shutting_down"`
	UnixMs           int64   `json:"unix_ms"`
}

// MemberOverview is one member in GET /v1/overview.
type MemberOverview struct {
	ID       string `json:"id"`
	HTTPAddr string `json:"http_addr"`
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
	// Reachable is false when its stats could not be fetched; Error says
	// why.
	Reachable bool       `json:"reachable"`
	Error     string     `json:"error,omitempty"`
	Stats     *NodeStats `json:"stats,omitempty"`
}

// Overview is the body of GET /v1/overview.
type Overview struct {
	// Node is the answering agent; Leader the leader it knows ("" when it
	// knows none).
	Node    string           `json:"node"`
	Leader  string           `json:"leader"`
	Members []MemberOverview `json:"members"`
	UnixMs  int64            `json:"unix_ms"`
}
