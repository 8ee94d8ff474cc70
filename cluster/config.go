package cluster

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/switchyard/switchyard/provision"
)

// Config configures one allocator node.
type Config struct {
	// ID is this node's stable name (raft server id).
	ID string
	// DataDir holds the raft log (bolt), stable store and snapshots.
	DataDir string
	// RaftAddr is the TCP address raft listens on and advertises.
	RaftAddr string
	// HTTPAddr and QUICAddr are advertised to other nodes (stored in the
	// FSM's member table) so they can forward requests here.
	HTTPAddr string
	QUICAddr string
	// Features are what this node announces in its member entry; nil
	// means Features(). An empty list makes the node look like a release
	// without them, so the leader uses none (tests of mixed releases).
	Features []string
	// BootstrapExpect is the number of nodes that bootstrap a new cluster
	// together. 0 means "only join an existing cluster".
	BootstrapExpect int
	// Join lists other agents' HTTP addresses (it may include our own).
	Join []string

	// Raft timing. Zero values take the LAN defaults below.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration
	TrailingLogs       uint64
	// DisableFastFailover turns off the early elections of failover.go
	// (after the leader's process is gone, after a silent leader, and
	// the lease-step-down reclaim): only raft's timers apply.
	DisableFastFailover bool
	// DisableSilentFailover turns off only the early election after a
	// majority of voters found the leader silent for a heartbeat timeout.
	DisableSilentFailover bool

	// ApplyTimeout bounds how long a caller waits for its commit; past it
	// the outcome is reported unknown (retryable).
	ApplyTimeout time.Duration
	// MaxBatch caps the commands packed into one log entry.
	MaxBatch int
	// ExpireInterval is how often the leader checks for expired
	// allocations and old tombstones.
	ExpireInterval time.Duration

	Logger *slog.Logger
	// Peers is how this node talks to other agents during bootstrap and
	// join. Required when Join is non-empty.
	Peers PeerClient
	// Loads, when set, supplies the soft load view the leader scores with.
	Loads LoadSource
	// Provisioner, when set, lets the leader start a media server when no
	// server fits a request and retire idle provisioned ones (see
	// provision.go). Nil disables both.
	Provisioner provision.Provider
	// WallClock is this node's wall clock; nil means time.Now. Chaos tests
	// shift it to emulate a clock jump on one node (clock.go).
	WallClock func() time.Time
	// ClockTolerance is how far a node's wall clock may disagree with the
	// time stamped into the log before it is reported and, on the leader,
	// guarded against (clock.go). Zero means DefaultClockTolerance.
	ClockTolerance time.Duration
	// RaftLayer, when set, carries raft traffic (e.g. over mutual TLS).
	// Nil means plain TCP on RaftAddr.
	RaftLayer StreamLayer
}

// LAN defaults: measured on this project's 2-core machines, 150 ms
// heartbeat/election timeouts elect a new leader in 0.2–0.6 s with no
// spurious elections at full load (see ../shared/design.md). The leader
// lease equals the heartbeat timeout (raft allows no more): a shorter
// lease makes a leader whose heartbeat answers are merely late (a starved
// scheduler) step down before any follower would have given up on it,
// which turns a hiccup into an election (failover.go).
const (
	DefaultHeartbeatTimeout   = 150 * time.Millisecond
	DefaultElectionTimeout    = 150 * time.Millisecond
	DefaultLeaderLeaseTimeout = DefaultHeartbeatTimeout
	DefaultCommitTimeout      = 10 * time.Millisecond
	DefaultSnapshotThreshold  = 4096
	DefaultSnapshotInterval   = 30 * time.Second
	DefaultTrailingLogs       = 4096
	DefaultApplyTimeout       = 5 * time.Second
	DefaultMaxBatch           = 1024
	DefaultExpireInterval     = time.Second
	DefaultClockTolerance     = time.Second
)

// withDefaults returns c with zero fields filled, or an error naming the
// first invalid field.
func (c Config) withDefaults() (Config, error) {
	if c.ID == "" {
		return c, fmt.Errorf("%w: node id is required (--id)", ErrBadConfig)
	}
	if c.DataDir == "" {
		return c, fmt.Errorf("%w: data dir is required (--data-dir)", ErrBadConfig)
	}
	if err := checkHostPort("raft address", c.RaftAddr, true); err != nil {
		return c, err
	}
	if err := checkHostPort("http address", c.HTTPAddr, false); err != nil {
		return c, err
	}
	if c.QUICAddr != "" {
		if err := checkHostPort("quic address", c.QUICAddr, false); err != nil {
			return c, err
		}
	}
	for _, j := range c.Join {
		if err := checkHostPort("join address", j, true); err != nil {
			return c, err
		}
	}
	if c.BootstrapExpect < 0 {
		return c, fmt.Errorf("%w: bootstrap-expect must not be negative", ErrBadConfig)
	}
	if c.BootstrapExpect > 1 && len(c.Join) == 0 {
		return c, fmt.Errorf("%w: bootstrap-expect %d needs --join with the other agents' HTTP addresses", ErrBadConfig, c.BootstrapExpect)
	}
	if len(c.Join) > 0 && c.Peers == nil {
		return c, fmt.Errorf("%w: join needs a peer client", ErrBadConfig)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.HeartbeatTimeout, DefaultHeartbeatTimeout)
	def(&c.ElectionTimeout, DefaultElectionTimeout)
	def(&c.LeaderLeaseTimeout, DefaultLeaderLeaseTimeout)
	def(&c.CommitTimeout, DefaultCommitTimeout)
	def(&c.SnapshotInterval, DefaultSnapshotInterval)
	def(&c.ApplyTimeout, DefaultApplyTimeout)
	def(&c.ExpireInterval, DefaultExpireInterval)
	if c.ClockTolerance < 0 {
		return c, fmt.Errorf("%w: clock tolerance must not be negative", ErrBadConfig)
	}
	def(&c.ClockTolerance, DefaultClockTolerance)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = DefaultSnapshotThreshold
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = DefaultTrailingLogs
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		return c, fmt.Errorf("%w: leader lease timeout %v must not exceed heartbeat timeout %v", ErrBadConfig, c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// checkHostPort validates "host:port". needHost requires a non-empty host
// (an address others can dial).
func checkHostPort(what, addr string, needHost bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: %s %q: %v", ErrBadConfig, what, addr, err)
	}
	if port == "" {
		return fmt.Errorf("%w: %s %q has no port", ErrBadConfig, what, addr)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("%w: %s %q: bad port: %v", ErrBadConfig, what, addr, err)
	}
	if needHost && (host == "" || host == "0.0.0.0" || host == "::") {
		return fmt.Errorf("%w: %s %q must name a host others can reach, not an unspecified address", ErrBadConfig, what, addr)
	}
	return nil
}
