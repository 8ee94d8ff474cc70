package cluster

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// bootstrapLoop runs on a node that started without raft state. Every node
// of a new cluster may be started with the same command line:
//
//   - If any --join peer already has state (is in a cluster), this node
//     does nothing here: announceLoop asks that cluster's leader to add it.
//   - Otherwise it probes the --join peers until exactly BootstrapExpect
//     distinct fresh nodes (itself included) answer, then bootstraps raft
//     with that set. Every one of them computes the same sorted set and
//     bootstraps with the same configuration, which hashicorp/raft permits;
//     the first election then picks one leader.
//
// Seeing more fresh nodes than expected is an operator error (two clusters
// could form): it is logged and the node keeps waiting.
func (n *Node) bootstrapLoop() {
	defer n.wg.Done()
	if n.cfg.BootstrapExpect == 0 {
		return
	}
	t := time.NewTicker(300 * time.Millisecond)
	defer t.Stop()
	warned := false
	for {
		if n.HasState() {
			return
		}
		self := raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(n.cfg.ID), Address: raft.ServerAddress(n.cfg.RaftAddr)}
		fresh := map[string]raft.Server{n.cfg.ID: self}
		existing := false
		for _, addr := range n.cfg.Join {
			if addr == n.cfg.HTTPAddr {
				continue
			}
			ctx, cancel := context.WithTimeout(n.ctx, time.Second)
			info, err := n.cfg.Peers.Info(ctx, addr)
			cancel()
			if err != nil || info.ID == n.cfg.ID {
				continue
			}
			if info.HasState || info.LeaderID != "" || info.ClusterID != "" {
				existing = true
				break
			}
			fresh[info.ID] = raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(info.ID), Address: raft.ServerAddress(info.RaftAddr)}
		}
		if existing {
			n.log.Info("found an existing cluster; joining it instead of bootstrapping")
			return
		}
		switch {
		case len(fresh) == n.cfg.BootstrapExpect:
			servers := make([]raft.Server, 0, len(fresh))
			for _, s := range fresh {
				servers = append(servers, s)
			}
			slices.SortFunc(servers, func(a, b raft.Server) int { return strings.Compare(string(a.ID), string(b.ID)) })
			err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
			if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
				n.log.Error("bootstrap failed", "err", err)
			} else {
				n.log.Info("bootstrapped cluster", "voters", len(servers))
				return
			}
		case len(fresh) > n.cfg.BootstrapExpect && !warned:
			warned = true
			n.log.Error("more fresh nodes answered than --bootstrap-expect; not bootstrapping", "found", len(fresh), "expect", n.cfg.BootstrapExpect)
		}
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// selfMember is this node's entry in the member table as it should be.
func (n *Node) selfMember() *fsmpb.Member {
	self := &fsmpb.Member{Id: n.cfg.ID, RaftAddr: n.cfg.RaftAddr, HttpAddr: n.cfg.HTTPAddr, QuicAddr: n.cfg.QUICAddr, Features: n.cfg.Features}
	if self.Features == nil {
		self.Features = Features()
	}
	return self
}

// recordSelf, on the leader, writes this node's own member entry (and
// makes it a voter at these addresses), within the apply timeout. A
// failure that is not retryable is logged.
func (n *Node) recordSelf(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	err := n.AddVoter(ctx, n.selfMember())
	if err != nil && !Retryable(err) {
		n.log.Warn("record own member entry", "err", err)
	}
	return err
}

// announceLoop makes sure this node's addresses are in the member table and
// that it is a voter: the leader records itself; a follower, or a fresh node
// that found an existing cluster, asks through any known agent (requests
// are forwarded to the leader). It keeps checking, so an address change
// after a restart is picked up too.
//
// A node that started without state (joining: recorded in the data dir
// until a leader lets it in, so a restart keeps it) asks once even when
// its state machine already lists it: what it holds may be a snapshot sent
// by a leader that had just removed it (the removal's last replication
// reaching the wiped node as it restarted), whose configuration and
// member table still name it. Believing that, it would never ask and
// never be let in. A node that was let in does not ask again while
// listed, so a member an operator removed stays removed until it is wiped.
func (n *Node) announceLoop(joining bool) {
	defer n.wg.Done()
	admitted := !joining
	admit := func() {
		if admitted {
			return
		}
		if err := n.updateIdentity(func(id *identity) { id.Joining = false }); err != nil {
			n.log.Warn("record in the data dir that this node was let in", "err", err)
			return // asked again at the next tick, and recorded then
		}
		admitted = true
	}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	self := n.selfMember()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		if cur, ok := n.fsm.Member(n.cfg.ID); ok && sameMember(cur, self) && admitted {
			continue
		}
		if n.IsLeader() {
			if n.recordSelf(n.ctx) == nil {
				admit()
			}
			continue
		}
		if n.cfg.Peers == nil {
			continue
		}
		targets := []string{}
		if _, lm, ok := n.Leader(); ok && lm != nil && lm.HttpAddr != "" {
			targets = append(targets, lm.HttpAddr)
		}
		for _, j := range n.cfg.Join {
			if j != n.cfg.HTTPAddr {
				targets = append(targets, j)
			}
		}
		for _, addr := range targets {
			if n.IsLeader() {
				break // elected meanwhile: establish records the entry itself
			}
			ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
			err := n.cfg.Peers.Join(ctx, addr, self)
			if errors.Is(err, fsm.ErrInvalid) {
				// A leader of an older release refuses the features
				// field it does not know: be a voter at these addresses
				// without it (the features are recorded once a leader
				// of this release runs).
				bare := proto.Clone(self).(*fsmpb.Member)
				bare.Features = nil
				err = n.cfg.Peers.Join(ctx, addr, bare)
			}
			cancel()
			if err == nil {
				admit()
				break
			}
			n.log.Debug("join attempt failed", "via", addr, "err", err)
		}
	}
}
