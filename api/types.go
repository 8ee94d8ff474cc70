package api

// Allocation is the JSON form of an allocation. Every field is always
// present (empty or 0 when unset): the fields are a contract.
type Allocation struct {
	ID              string `json:"id"`
	RequestID       string `json:"request_id"`
	Room            string `json:"room"`
	Requester       string `json:"requester"`
	Server          string `json:"server"`
	Units           int64  `json:"units"`
	State           string `json:"state"`
	CreatedAtUnixMs int64  `json:"created_at_unix_ms"`
	ExpiresAtUnixMs int64  `json:"expires_at_unix_ms"`
	EndedAtUnixMs   int64  `json:"ended_at_unix_ms"`
	// Duplicate is set on an allocate answer when the request id had been
	// granted before and this is that earlier allocation.
	Duplicate bool `json:"duplicate,omitempty"`
}

// AllocateRequest is the body of POST /v1/allocations.
type AllocateRequest struct {
	RequestID string `json:"request_id"`
	Room      string `json:"room"`
	Units     int64  `json:"units"`
	Requester string `json:"requester,omitempty"`
	Region    string `json:"region,omitempty"`
	Server    string `json:"server,omitempty"`
	TTLMs     int64  `json:"ttl_ms,omitempty"`
}

// Server is the JSON form of a media server.
type Server struct {
	ID                   string            `json:"id"`
	Addresses            []string          `json:"addresses"`
	Region               string            `json:"region"`
	Zone                 string            `json:"zone"`
	Labels               map[string]string `json:"labels"`
	Capacity             int64             `json:"capacity"`
	Used                 int64             `json:"used"`
	Free                 int64             `json:"free"`
	State                string            `json:"state"`
	Incarnation          uint64            `json:"incarnation"`
	RegisteredAtUnixMs   int64             `json:"registered_at_unix_ms"`
	StateChangedAtUnixMs int64             `json:"state_changed_at_unix_ms"`
}

// RegisterServerRequest is the body of POST /v1/servers.
type RegisterServerRequest struct {
	ID          string            `json:"id"`
	Addresses   []string          `json:"addresses,omitempty"`
	Region      string            `json:"region,omitempty"`
	Zone        string            `json:"zone,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Capacity    int64             `json:"capacity"`
	Incarnation uint64            `json:"incarnation,omitempty"`
}

// Member is the body of POST /v1/members (join).
type Member struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr,omitempty"`
	QUICAddr string `json:"quic_addr,omitempty"`
	// Features lists what the member's binary understands (see the
	// README's rolling-upgrade section); absent from older members.
	Features []string `json:"features,omitempty"`
}

// TransferRequest is the body of POST /v1/operator/transfer-leader.
type TransferRequest struct {
	ID string `json:"id,omitempty"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error     string `json:"error"`
	Code      string `json:"code"`
	Retryable bool   `json:"retryable"`
	Leader    string `json:"leader,omitempty"`
	// Committed: the refusal was committed under the request id, so every
	// copy of the request gets it; it settles the request even after an
	// attempt that went unanswered.
	Committed bool `json:"committed,omitempty"`
}

// PeerInfo is what an agent tells a node that is bootstrapping or joining,
// and the other voters after a leader fell silent (GET /v1/internal/info).
type PeerInfo struct {
	ID        string `json:"id"`
	RaftAddr  string `json:"raft_addr"`
	HTTPAddr  string `json:"http_addr"`
	ClusterID string `json:"cluster_id"`
	LeaderID  string `json:"leader"`
	HasState  bool   `json:"has_state"`
	// LastIndex and LastLogTerm locate the end of this node's raft log:
	// after a leader died, the survivors compare them to let the most up
	// to date one start the election (failover.go).
	LastIndex   uint64 `json:"last_index,omitempty"`
	LastLogTerm uint64 `json:"last_log_term,omitempty"`
	// State is this node's raft state (Follower, Candidate, Leader) and
	// Term its current term.
	State string `json:"state,omitempty"`
	Term  uint64 `json:"term,omitempty"`
	// LeaderSilentMs is how long ago raft last had contact with a leader
	// or candidate (a heartbeat, an append, a vote it granted; stepping
	// down as leader resets it too), in milliseconds; absent on a leader
	// and on a node that never had any.
	// Survivors of a silent leader compare it (cluster/failover.go).
	LeaderSilentMs int64 `json:"leader_silent_ms,omitempty"`
	// EarlyElectionTerm is the term of the leader this node last started
	// an early election against (a dead or silent leader), if any.
	EarlyElectionTerm uint64 `json:"early_election_term,omitempty"`
}

// MemberStatus is one voter as seen by this node.
type MemberStatus struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr"`
	QUICAddr string `json:"quic_addr"`
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
	// Features lists what the member's binary understands; the cluster
	// uses a feature once every voter lists it.
	Features []string `json:"features"`
}

// Status summarises this node's view of the cluster.
type Status struct {
	ID          string `json:"id"`
	State       string `json:"state"`
	Leader      string `json:"leader"`
	LeaderHTTP  string `json:"leader_http"`
	ClusterID   string `json:"cluster_id"`
	Term        uint64 `json:"term"`
	LastIndex   uint64 `json:"last_index"`
	CommitIndex uint64 `json:"commit_index"`
	// AppliedIndex is the last log entry applied to this node's state
	// machine, and StateHash the hash of that state: read together, so
	// nodes reporting the same applied index must report the same hash.
	AppliedIndex uint64         `json:"applied_index"`
	StateHash    string         `json:"state_hash"`
	Members      []MemberStatus `json:"members"`
	// ClockOffsetMs is this node's wall clock minus the time the leader
	// stamps into the log (minimum over recently applied entries; positive:
	// ahead); absent before any entry was applied. Beyond the clock
	// tolerance it is logged, and a leader stamps the log's time instead.
	ClockOffsetMs *int64 `json:"clock_offset_ms,omitempty"`
	// ForwardTimeoutMs is how long this node gives one forwarded attempt
	// before it fails the request over to a new leader (the agent's cluster package).
	ForwardTimeoutMs int64 `json:"forward_timeout_ms"`
}

// ServerLoad is the load a media server last reported, as the answering
// agent holds it (soft state: each agent has the reports it received or
// was forwarded).
type ServerLoad struct {
	Incarnation         uint64   `json:"incarnation"`
	Seq                 uint64   `json:"seq"`
	CPU                 float64  `json:"cpu"`
	IngressBps          int64    `json:"ingress_bps"`
	EgressBps           int64    `json:"egress_bps"`
	Peers               int64    `json:"peers"`
	Tracks              int64    `json:"tracks"`
	SubscribedTracks    int64    `json:"subscribed_tracks"`
	Rooms               []string `json:"rooms,omitempty"`
	AllocationIDs       []string `json:"allocation_ids,omitempty"`
	FreeUnits           int64    `json:"free_units"`
	Truncated           bool     `json:"truncated,omitempty"`
	UnmaterializedUnits int64    `json:"unmaterialized_units"`
}

// ServerWithLoad is an entry of GET /v1/servers: the server, its last
// reported load (null before the first report) and that report's age in
// ms (null likewise).
type ServerWithLoad struct {
	Server
	Load      *ServerLoad `json:"load"`
	LoadAgeMs *int64      `json:"load_age_ms"`
}
