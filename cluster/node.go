// Package cluster runs one Switchyard allocator node: hashicorp/raft over TCP
// with raft-boltdb/v2 log and stable stores and a file snapshot store, the
// bootstrap/join protocol that lets every node start with the same command
// line, and the leader's decision loop that batches allocations into shared
// log entries. See DESIGN.md for the concurrency story.
package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// PeerInfo, MemberStatus and Status are the wire types the HTTP API
// answers with (package api), named here for the node's callers.
type (
	PeerInfo     = api.PeerInfo
	MemberStatus = api.MemberStatus
	Status       = api.Status
)

// PeerClient is how a node reaches other agents before it is part of a
// cluster (and to announce itself after). The HTTP API client implements it.
type PeerClient interface {
	// Info asks the agent at httpAddr who it is.
	Info(ctx context.Context, httpAddr string) (PeerInfo, error)
	// Join asks the agent at httpAddr (which forwards to its leader) to add
	// m as a voter and record its addresses.
	Join(ctx context.Context, httpAddr string, m *fsmpb.Member) error
}

// StreamLayer carries raft RPCs; see raft.StreamLayer.
type StreamLayer = raft.StreamLayer

// Node is one allocator. Create it with Open; all methods are safe for
// concurrent use.
type Node struct {
	// restoring holds a token while a user restore runs (Restore: one at
	// a time, since the state machine takes any snapshot meanwhile).
	restoring chan struct{}
	cfg       Config
	log       *slog.Logger
	fsm       *fsm.FSM
	raft      *raft.Raft
	store     *raftboltdb.BoltStore
	trans     *raft.NetworkTransport

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// leader is non-nil while this node is the leader and has passed its
	// barrier, i.e. while it may decide.
	leader atomic.Pointer[leaderState]
	// leaderHooks run on the leader once it is ready (the agent uses it to
	// start failure detection). Set before Open returns, never changed.
	hooksMu     sync.Mutex
	leaderHooks []func(ctx context.Context)

	m *metrics
	// clock is the log-time guard (clock.go).
	clock *logClock

	// leaderCh is closed and replaced on every raft leader observation
	// (LeaderChange, forward.go).
	leaderChMu sync.Mutex
	leaderCh   chan struct{}

	shutdownOnce sync.Once
	shutdownErr  error

	// idMu guards id, the data dir's node.json as last written.
	idMu       sync.Mutex
	id         identity
	noTransfer atomic.Bool

	// earlyFrom is the term of the silent or dead leader this node last
	// started an early election against (failover.go); its peers read it
	// so as not to compete with that election.
	earlyFrom atomic.Uint64
}

// identity is persisted in the data dir so a dir cannot be reused by
// another node or cluster by accident.
type identity struct {
	NodeID    string `json:"node_id"`
	ClusterID string `json:"cluster_id,omitempty"`
	// Joining is set when the node starts without raft state and cleared
	// once a leader has let it in (announceLoop): until then it asks to
	// join even when a snapshot it was sent lists it, across restarts.
	// Absent in data dirs written before it existed: such a node is in.
	Joining bool `json:"joining,omitempty"`
}

// Open starts a node. It creates the data dir if needed, refuses a data dir
// that belongs to another node id, and returns once raft is running; the
// node then bootstraps or joins in the background (see bootstrap.go).
func Open(ctx context.Context, cfg Config) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	id, err := readIdentity(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if id.NodeID != "" && id.NodeID != cfg.ID {
		return nil, fmt.Errorf("%w: %s was created by node %q (cluster %q), not %q", ErrDataDirMismatch, cfg.DataDir, id.NodeID, id.ClusterID, cfg.ID)
	}
	if id.NodeID == "" {
		id.NodeID = cfg.ID
		if err := writeIdentity(cfg.DataDir, id); err != nil {
			return nil, err
		}
	}
	if id.ClusterID != "" && len(cfg.Join) > 0 {
		if err := checkPeersCluster(ctx, cfg, id.ClusterID); err != nil {
			return nil, err
		}
	}

	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.ID), fsm: fsm.New(), m: newMetrics(), leaderCh: make(chan struct{}),
		restoring: make(chan struct{}, 1)}
	n.clock = newLogClock(cfg.WallClock, cfg.ClockTolerance, n.log, n.m)
	n.fsm.SetOnApply(func(_ uint64, stamp int64) { n.clock.observe(stamp) })
	n.ctx, n.cancel = context.WithCancel(context.Background())

	hlog := raftLogger("raft", n.log)
	n.store, err = raftboltdb.NewBoltStore(filepath.Join(cfg.DataDir, "raft.db"))
	if err != nil {
		return nil, fmt.Errorf("open raft log %s: %w", filepath.Join(cfg.DataDir, "raft.db"), err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hlog)
	if err != nil {
		n.store.Close()
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	// MaxRPCsInFlight 1 turns raft's pipelined replication off. With it on
	// (the default of 2), a follower that answers one AppendEntries with
	// Success=false while another is in flight (a failed disk write, say)
	// deadlocks the leader's pipeline to it: the decoder has returned, the
	// sender blocks handing over the next request, and heartbeats keep the
	// follower from ever timing out, so it never receives another entry
	// (hashicorp/raft#612; grafana/pyroscope#5518 turned pipelining off for
	// the same reason). The chaos suite hit it: a follower healed from a full
	// disk stayed at applied index 0. Without pipelining, replication sends
	// every pending entry (up to MaxAppendEntries) per round trip and backs
	// off on errors; the decision loop batches many commands per entry.
	tcfg := &raft.NetworkTransportConfig{MaxPool: 3, Timeout: 10 * time.Second, Logger: hlog, MaxRPCsInFlight: 1}
	if cfg.RaftLayer != nil {
		tcfg.Stream = cfg.RaftLayer
		n.trans = raft.NewNetworkTransportWithConfig(tcfg)
	} else {
		adv, rerr := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
		if rerr != nil {
			n.store.Close()
			return nil, fmt.Errorf("%w: raft address %q: %v", ErrBadConfig, cfg.RaftAddr, rerr)
		}
		n.trans, err = raft.NewTCPTransportWithConfig(cfg.RaftAddr, adv, tcfg)
		if err != nil {
			n.store.Close()
			return nil, fmt.Errorf("listen on raft address %s: %w", cfg.RaftAddr, err)
		}
	}

	hasState, err := raft.HasExistingState(n.store, n.store, snaps)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("inspect raft state: %w", err)
	}
	if !hasState && !id.Joining {
		id.Joining = true
		if err := writeIdentity(cfg.DataDir, id); err != nil {
			n.closeStores()
			return nil, err
		}
	}
	n.id = id

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.Logger = hlog
	notify := make(chan bool, 16)
	rc.NotifyCh = notify

	n.raft, err = raft.NewRaft(rc, n.fsm, n.store, n.store, snaps, n.trans)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("start raft: %w", err)
	}

	n.wg.Add(4)
	go n.watchLeader()
	if !cfg.DisableFastFailover {
		n.wg.Add(1)
		go n.deadLeaderLoop()
	}
	go n.leadershipLoop(notify)
	go n.announceLoop(id.Joining)
	go n.identityLoop()
	if !hasState {
		n.wg.Add(1)
		go n.bootstrapLoop()
	}
	n.log.Info("node started", "raft_addr", cfg.RaftAddr, "http_addr", cfg.HTTPAddr, "existing_state", hasState)
	return n, nil
}

func (n *Node) closeStores() {
	if n.trans != nil {
		n.trans.Close()
	}
	if n.store != nil {
		n.store.Close()
	}
}

// OnLeader registers fn to run (in its own goroutine) every time this node
// becomes a ready leader; ctx is cancelled when leadership ends.
func (n *Node) OnLeader(fn func(ctx context.Context)) {
	n.hooksMu.Lock()
	n.leaderHooks = append(n.leaderHooks, fn)
	n.hooksMu.Unlock()
}

// Shutdown stops the node. If it is the leader it first hands leadership to
// another voter (bounded by ctx), so the cluster does not wait for an
// election timeout. Safe to call more than once.
func (n *Node) Shutdown(ctx context.Context) error {
	n.shutdownOnce.Do(func() {
		if !n.noTransfer.Load() && n.raft.State() == raft.Leader && len(n.voters()) > 1 {
			done := make(chan error, 1)
			go func() { done <- n.raft.LeadershipTransfer().Error() }()
			select {
			case err := <-done:
				if err != nil {
					n.log.Warn("leadership transfer before shutdown failed", "err", err)
				} else {
					n.log.Info("leadership transferred before shutdown")
				}
			case <-ctx.Done():
				n.log.Warn("leadership transfer before shutdown timed out")
			}
		}
		n.cancel()
		n.shutdownErr = n.raft.Shutdown().Error()
		n.wg.Wait()
		n.closeStores()
	})
	return n.shutdownErr
}

// Kill makes the next Shutdown skip the leadership transfer, so stopping
// the node looks to its peers like a crash (they notice by missing
// heartbeats). For tests.
func (n *Node) Kill() { n.noTransfer.Store(true) }

// FSM exposes the local replica for reads. Reads are as of this node's last
// applied entry; call Barrier first (on the leader) for a linearizable read.
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// ID is this node's id.
func (n *Node) ID() string { return n.cfg.ID }

// Config returns the effective configuration.
func (n *Node) Config() Config { return n.cfg }

// IsLeader reports whether this node is the leader and ready to decide.
func (n *Node) IsLeader() bool { return n.leader.Load() != nil }

// Leader returns the current leader's id and its member record (addresses)
// when known. ok is false when no leader is known.
func (n *Node) Leader() (id string, m *fsmpb.Member, ok bool) {
	_, lid := n.raft.LeaderWithID()
	if lid == "" {
		return "", nil, false
	}
	m, _ = n.fsm.Member(string(lid))
	return string(lid), m, true
}

// HasState reports whether this node has raft state (is or was part of a
// cluster).
func (n *Node) HasState() bool { return n.raft.LastIndex() > 0 }

// Info is what this node answers to a bootstrapping or joining peer, and
// to a voter asking about a silent leader (failover.go).
func (n *Node) Info() PeerInfo {
	lid, _, _ := n.Leader()
	idx, term := n.lastLog()
	state := n.raft.State()
	p := PeerInfo{ID: n.cfg.ID, RaftAddr: n.cfg.RaftAddr, HTTPAddr: n.cfg.HTTPAddr,
		ClusterID: n.fsm.ClusterID(), LeaderID: lid, HasState: n.HasState(), LastIndex: idx, LastLogTerm: term,
		State: state.String(), Term: n.raft.CurrentTerm(), EarlyElectionTerm: n.earlyFrom.Load()}
	if last := n.raft.LastContact(); state != raft.Leader && !last.IsZero() {
		p.LeaderSilentMs = max(time.Since(last).Milliseconds(), 1)
	}
	return p
}

// Status reports this node's raft state and membership.
func (n *Node) Status() Status {
	lid, lm, _ := n.Leader()
	hash, applied := n.fsm.HashAt()
	st := Status{
		ID: n.cfg.ID, State: n.raft.State().String(), Leader: lid, ClusterID: n.fsm.ClusterID(),
		Term: n.raft.CurrentTerm(), LastIndex: n.raft.LastIndex(), CommitIndex: n.raft.CommitIndex(),
		AppliedIndex: applied, StateHash: hash, Members: n.Members(),
		ForwardTimeoutMs: n.ForwardTimeout().Milliseconds(),
	}
	if lm != nil {
		st.LeaderHTTP = lm.HttpAddr
	}
	if off, ok := n.clock.Offset(); ok {
		st.ClockOffsetMs = &off
	}
	return st
}

// Members lists the raft configuration joined with the member table.
func (n *Node) Members() []MemberStatus {
	_, lid := n.raft.LeaderWithID()
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil
	}
	out := []MemberStatus{}
	for _, s := range f.Configuration().Servers {
		ms := MemberStatus{ID: string(s.ID), RaftAddr: string(s.Address), Suffrage: s.Suffrage.String(), Leader: s.ID == lid, Features: []string{}}
		if m, ok := n.fsm.Member(string(s.ID)); ok {
			ms.HTTPAddr, ms.QUICAddr = m.HttpAddr, m.QuicAddr
			ms.Features = append(ms.Features, m.GetFeatures()...)
		}
		out = append(out, ms)
	}
	return out
}

// IsPeer reports whether id is a server of the raft configuration this
// node knows (voter or not). It reads raft's latest configuration, without
// waiting on raft's loop, and holds from the first bootstrap on (before
// the members' records reach the state machine).
func (n *Node) IsPeer(id string) bool {
	return slices.ContainsFunc(n.peers(), func(s raft.Server) bool { return string(s.ID) == id })
}

// peers lists the servers of raft's latest configuration.
func (n *Node) peers() []raft.Server {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	return f.Configuration().Servers
}

func (n *Node) voters() []raft.Server {
	var out []raft.Server
	for _, s := range n.peers() {
		if s.Suffrage == raft.Voter {
			out = append(out, s)
		}
	}
	return out
}

// VerifyLeader confirms, with a round of heartbeats, that this node is
// still the leader, so a local read after it is linearizable. Must run on
// the leader.
func (n *Node) VerifyLeader(ctx context.Context) error {
	if n.leader.Load() == nil {
		return ErrNotLeader
	}
	return n.wait(ctx, n.raft.VerifyLeader())
}

// wait waits for a raft future with our own deadline (raft futures can hang
// after a leader dies under load, hashicorp/raft#498) and maps raft's
// errors onto ours.
func (n *Node) wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	t := time.NewTimer(n.cfg.ApplyTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return mapRaftErr(err)
	case <-t.C:
		return ErrUnknownOutcome
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrUnknownOutcome, ctx.Err())
	case <-n.ctx.Done():
		return ErrShutdown
	}
}

func mapRaftErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return ErrNotLeader
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %v", ErrLeadershipLost, err)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrShutdown
	}
	return err
}

// AddVoter adds (or re-addresses) a voter and records its addresses in the
// member table. Must run on the leader; idempotent.
func (n *Node) AddVoter(ctx context.Context, m *fsmpb.Member) error {
	if n.leader.Load() == nil {
		return ErrNotLeader
	}
	if m.GetId() == "" {
		return fmt.Errorf("%w: member id is required", fsm.ErrInvalid)
	}
	if err := fsm.CheckText("member id", m.GetId(), fsm.MaxIDLen); err != nil {
		return err
	}
	for _, a := range []struct {
		what, addr string
		required   bool
	}{{"member raft address", m.GetRaftAddr(), true}, {"member HTTP address", m.GetHttpAddr(), false}, {"member QUIC address", m.GetQuicAddr(), false}} {
		if a.addr == "" && !a.required {
			continue
		}
		if err := fsm.CheckText(a.what, a.addr, fsm.MaxAddressLen); err != nil {
			return err
		}
		if err := checkHostPort(a.what, a.addr, a.required); err != nil {
			return fmt.Errorf("%w: %v", fsm.ErrInvalid, err)
		}
	}
	if len(m.GetFeatures()) > MaxFeatures {
		return fmt.Errorf("%w: member %s lists %d features, the limit is %d", fsm.ErrInvalid, m.GetId(), len(m.GetFeatures()), MaxFeatures)
	}
	for _, f := range m.GetFeatures() {
		if err := fsm.CheckText("member feature", f, MaxFeatureLen); err != nil {
			return err
		}
	}
	voters := n.voters()
	if !slices.ContainsFunc(voters, func(s raft.Server) bool { return string(s.ID) == m.Id && string(s.Address) == m.RaftAddr }) {
		// A new voter must apply the log as the others do: refuse a
		// release that lacks a feature the cluster uses (it would skip
		// those entries and diverge).
		for _, f := range Features() {
			if !slices.Contains(m.GetFeatures(), f) && n.featureOn(f) {
				return fmt.Errorf("%w: member %s does not list feature %q, which this cluster uses: run a release that has it", fsm.ErrInvalid, m.GetId(), f)
			}
		}
	}
	present := false
	for _, s := range voters {
		if string(s.ID) == m.Id && string(s.Address) == m.RaftAddr {
			present = true
			continue
		}
		if string(s.Address) == m.RaftAddr && string(s.ID) != m.Id {
			n.log.Warn("removing stale voter that held the joining node's address", "stale", s.ID, "addr", s.Address)
			if err := n.wait(ctx, n.raft.RemoveServer(s.ID, 0, 0)); err != nil {
				return err
			}
		}
	}
	if !present {
		if err := n.wait(ctx, n.raft.AddVoter(raft.ServerID(m.Id), raft.ServerAddress(m.RaftAddr), 0, 0)); err != nil {
			return err
		}
		n.log.Info("voter added", "id", m.Id, "raft_addr", m.RaftAddr)
	}
	cur, ok := n.fsm.Member(m.Id)
	if ok && sameMember(cur, m) {
		return nil
	}
	_, err := n.Submit(ctx, &fsmpb.Command{Cmd: &fsmpb.Command_SetMember{SetMember: m}})
	return err
}

// RemovePeer removes a voter and its member record. Must run on the leader.
func (n *Node) RemovePeer(ctx context.Context, id string) error {
	if n.leader.Load() == nil {
		return ErrNotLeader
	}
	found := false
	for _, s := range n.voters() {
		if string(s.ID) == id {
			found = true
		}
	}
	if !found {
		if _, ok := n.fsm.Member(id); !ok {
			return fmt.Errorf("%w: %q is not a member of this cluster", fsm.ErrNotFound, id)
		}
	} else if err := n.wait(ctx, n.raft.RemoveServer(raft.ServerID(id), 0, 0)); err != nil {
		return err
	}
	_, err := n.Submit(ctx, &fsmpb.Command{Cmd: &fsmpb.Command_RemoveMember{RemoveMember: id}})
	return err
}

// TransferLeadership hands leadership to id, or to the most up-to-date
// voter when id is empty. Must run on the leader.
func (n *Node) TransferLeadership(ctx context.Context, id string) error {
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	if id == "" {
		return transferErr(n.wait(ctx, n.raft.LeadershipTransfer()))
	}
	if id == n.cfg.ID {
		return fmt.Errorf("%w: %s leads already: name another voter", fsm.ErrInvalid, id)
	}
	for _, s := range n.voters() {
		if string(s.ID) == id {
			return transferErr(n.wait(ctx, n.raft.LeadershipTransferToServer(s.ID, s.Address)))
		}
	}
	return fmt.Errorf("%w: %q is not a voter", fsm.ErrNotFound, id)
}

// transferErr maps the errors raft reports for a leadership transfer that
// did not complete (a timeout, a TimeoutNow that did not reach the
// target: unexported, plain errors) to ErrLeadershipLost, retryable, so
// that they are answered 503 rather than as an internal error. The
// mapped errors pass unchanged.
func transferErr(err error) error {
	if err == nil || errors.Is(err, ErrNotLeader) || errors.Is(err, ErrLeadershipLost) ||
		errors.Is(err, ErrUnknownOutcome) || errors.Is(err, ErrShutdown) {
		return err
	}
	return fmt.Errorf("%w: leadership transfer did not complete: %v", ErrLeadershipLost, err)
}

// Snapshot returns the whole replicated state, current as of a barrier.
// Must run on the leader.
func (n *Node) Snapshot(ctx context.Context) (*fsmpb.State, error) {
	if n.leader.Load() == nil {
		return nil, ErrNotLeader
	}
	if err := n.wait(ctx, n.raft.Barrier(n.cfg.ApplyTimeout)); err != nil {
		return nil, err
	}
	return n.fsm.Export(), nil
}

// restoreGap is how far past the log's end a user restore is installed
// (see Restore): the indexes in between are never used. It leaves room
// for any number of entries appended while the restore waits in raft's
// queue (65,536 did not: followers would refuse the restore for good),
// and for 4 billion restores before the index overflows.
const restoreGap = 1 << 32

// Restore replaces the whole cluster's state with st (a saved snapshot),
// through raft's user restore so every replica installs it. A snapshot of
// another cluster is refused unless adopt is true, in which case it is
// restamped with this cluster's id. Must run on the leader.
func (n *Node) Restore(ctx context.Context, st *fsmpb.State, adopt bool) error {
	if n.leader.Load() == nil {
		return ErrNotLeader
	}
	if err := fsm.ValidateState(st); err != nil {
		return err
	}
	own := n.fsm.ClusterID()
	if st.GetClusterId() != own {
		if !adopt {
			return fmt.Errorf("%w: snapshot is of cluster %q, this is %q", fsm.ErrClusterMismatch, st.GetClusterId(), own)
		}
		st.ClusterId = own
	}
	// Raft installs a user restore at max(meta.Index, its last index)+1,
	// and every state machine refuses a snapshot taken before the index it
	// has applied (fsm.FSM.Restore; its applied index may be ahead of raft's
	// after an earlier release restored a backup unstamped): the state is
	// stamped, and raft told to install it, restoreGap past both, so that
	// the followers take it even when entries are appended while it waits
	// in raft's queue. This node's state machine takes it whatever its
	// index (raft panics if the leader's refuses a user restore), so
	// restores run one at a time.
	select {
	case n.restoring <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("another snapshot restore is under way: %w", ctx.Err())
	}
	mark := max(n.raft.LastIndex(), n.fsm.AppliedIndex()) + restoreGap
	st.AppliedIndex = mark + 1
	var buf bytes.Buffer
	if err := fsm.WriteState(&buf, st); err != nil {
		<-n.restoring
		return err
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: int64(buf.Len()), Index: mark}
	done := make(chan error, 1)
	allow := n.fsm.AcceptRestore()
	go func() {
		defer func() { allow(); <-n.restoring }()
		done <- n.raft.Restore(meta, &buf, n.cfg.ApplyTimeout)
	}()
	select {
	case err := <-done:
		return mapRaftErr(err)
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrUnknownOutcome, ctx.Err())
	}
}

func readIdentity(dir string) (identity, error) {
	var id identity
	b, err := os.ReadFile(filepath.Join(dir, "node.json"))
	if errors.Is(err, os.ErrNotExist) {
		return id, nil
	}
	if err != nil {
		return id, fmt.Errorf("read data dir identity: %w", err)
	}
	if err := json.Unmarshal(b, &id); err != nil {
		return id, fmt.Errorf("%w: %s/node.json is corrupt: %v", ErrDataDirMismatch, dir, err)
	}
	return id, nil
}

func writeIdentity(dir string, id identity) error {
	b, _ := json.Marshal(id)
	tmp := filepath.Join(dir, "node.json.tmp")
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return fmt.Errorf("write data dir identity: %w", err)
	}
	return os.Rename(tmp, filepath.Join(dir, "node.json"))
}

// updateIdentity changes the data dir's node.json with change (under
// idMu, so that the loops that write it do not undo each other).
func (n *Node) updateIdentity(change func(*identity)) error {
	n.idMu.Lock()
	defer n.idMu.Unlock()
	next := n.id
	change(&next)
	if next == n.id {
		return nil
	}
	if err := writeIdentity(n.cfg.DataDir, next); err != nil {
		return err
	}
	n.id = next
	return nil
}

// identityLoop stamps the cluster id into the data dir once it is known.
func (n *Node) identityLoop() {
	defer n.wg.Done()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	tried := ""
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		cid := n.fsm.ClusterID()
		if cid == "" || cid == tried {
			continue
		}
		tried = cid
		err := n.updateIdentity(func(id *identity) {
			if id.ClusterID != "" && id.ClusterID != cid {
				n.log.Error("cluster id changed under this data dir", "was", id.ClusterID, "now", cid)
			}
			id.ClusterID = cid
		})
		if err != nil {
			n.log.Error("persist identity", "err", err)
		}
	}
}

// checkPeersCluster refuses to start when a reachable peer belongs to a
// different cluster than the one recorded in our data dir.
func checkPeersCluster(ctx context.Context, cfg Config, own string) error {
	for _, addr := range cfg.Join {
		if addr == cfg.HTTPAddr {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		info, err := cfg.Peers.Info(pctx, addr)
		cancel()
		if err != nil || info.ClusterID == "" || info.ID == cfg.ID {
			continue
		}
		if info.ClusterID != own {
			return fmt.Errorf("%w: %s holds state of cluster %q but peer %s (%s) is in cluster %q", ErrDataDirMismatch, cfg.DataDir, own, info.ID, addr, info.ClusterID)
		}
	}
	return nil
}
