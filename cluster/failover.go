package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
)

// Fast failover after a leader's process died.
//
// A raft follower starts an election once it has not heard from the
// leader for a heartbeat timeout, checked on a timer that fires every
// [HT, 2HT). With pre-vote, a candidate only wins once a majority of the
// others have also given up on the old leader (a follower that still
// believes in a leader rejects votes), and a candidate whose pre-vote
// failed waits a whole election timeout before it tries again. After a
// SIGKILL of the leader the cluster therefore waits for the slower
// followers' timers: measured here with the 150 ms defaults, p50 354 ms and
// p99 647 ms from the kill to the next acknowledged allocation.
//
// When the leader's process is gone, its host answers a connection to the
// raft port with a reset (ECONNREFUSED). That is proof the leader is not
// merely slow or paused (a stopped process's listening socket still
// completes handshakes) nor partitioned away (that looks like a timeout).
// So every follower watches. Once the leader has been silent for a third
// of the heartbeat timeout, it dials the leader's raft address. On
// ECONNREFUSED it asks the other survivors where their logs end (their
// /v1/internal/info), since under load one follower often trails the
// other by a thousand entries and could not win. The survivor with the
// most up-to-date log (ties: the lowest id) sends itself raft's
// TimeoutNow RPC, the message a leader uses to hand over leadership: it
// becomes a candidate at once and asks for votes flagged as a leadership
// transfer, which the others grant although they still believe in the
// dead leader. Votes still require a newer term and a log at least as up
// to date as the voter's, so raft's election safety holds; only the
// stickiness that protects a live leader from disruption is bypassed, and
// only with proof that it is not live. Every other survivor leaves it to
// that one; if it fails, raft's own timers elect as before.
//
// One attempt per node per silence: a node does not try again until it
// hears from a leader. A leader that still accepts connections is probed
// again every HT/3 while it stays silent (a process can take a moment to
// exit). A node that has seen a newer term than the dead
// leader's (another node's vote request) gives that election
// fastFailoverGrace before it steps in.
const (
	fastFailoverPoll  = 5 * time.Millisecond
	fastFailoverGrace = 50 * time.Millisecond
	fastFailoverDial  = 50 * time.Millisecond
	fastFailoverAsk   = 100 * time.Millisecond
)

// deadLeaderLoop is the fast-failover watcher described above. It runs on
// every node until shutdown.
func (n *Node) deadLeaderLoop() {
	defer n.wg.Done()
	t := time.NewTicker(fastFailoverPoll)
	defer t.Stop()
	base := n.cfg.HeartbeatTimeout / 3
	var (
		lastAddr   raft.ServerAddress // the last leader this node followed
		lastID     raft.ServerID
		leaderTerm uint64    // the term it led in, as this node saw it
		term       uint64    // the current term, and since when
		termAt     time.Time //
		probedAt   time.Time // last probe of the silent leader's port
		acted      bool      // left the election to another or kicked this silence
		ledTerm    uint64    // the term this node led in, while it leads
	)
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		if cur := n.raft.CurrentTerm(); cur != term {
			term, termAt = cur, time.Now()
		}
		state := n.raft.State()
		if state == raft.Leader {
			ledTerm = term
			continue
		}
		if ledTerm != 0 {
			n.reclaimAfterStepDown(ledTerm)
			ledTerm = 0
		}
		if state != raft.Follower {
			continue
		}
		if addr, id := n.raft.LeaderWithID(); addr != "" {
			lastAddr, lastID, leaderTerm = addr, id, term
		}
		stale := time.Since(n.raft.LastContact())
		if stale < base {
			acted = false // a leader (old or new) is talking to us
			continue
		}
		if acted || lastAddr == "" || lastID == raft.ServerID(n.cfg.ID) {
			continue
		}
		if term != leaderTerm && time.Since(termAt) < fastFailoverGrace {
			continue
		}
		if time.Since(probedAt) < base {
			continue
		}
		probedAt = time.Now()
		if !refused(n.ctx, string(lastAddr)) {
			continue // alive (slow, paused, overloaded) or still exiting: probe again later
		}
		acted = true
		best, why := n.bestSuccessor(lastID)
		if best != n.cfg.ID {
			n.log.Info("leader's raft port refuses connections: its process is gone; leaving the election to the survivor with the newest log",
				"leader", lastID, "successor", best, "why", why)
			continue
		}
		if err := n.kickElection(); err != nil {
			n.log.Warn("fast failover: could not start an election", "err", err)
			continue
		}
		n.m.fastFailovers.Inc()
		n.log.Info("leader's raft port refuses connections: its process is gone; starting an election now",
			"leader", lastID, "addr", lastAddr, "silent_for", stale.Round(time.Millisecond), "why", why)
	}
}

// lastLog is where this node's raft log ends: its last index and the term
// of that entry.
func (n *Node) lastLog() (index, term uint64) {
	index = n.raft.LastIndex()
	if v, err := strconv.ParseUint(n.raft.Stats()["last_log_term"], 10, 64); err == nil {
		term = v
	}
	return index, term
}

// bestSuccessor picks, among the voters other than the dead leader, the
// one whose log is the most up to date (last term, then last index; ties
// go to the lowest id), asking the others over HTTP. Unreachable voters
// cannot be chosen. It returns the id and a short explanation for logs.
func (n *Node) bestSuccessor(dead raft.ServerID) (string, string) {
	voters := n.voters()
	if !slices.ContainsFunc(voters, func(s raft.Server) bool { return string(s.ID) == n.cfg.ID }) {
		return "", "this node is not a voter"
	}
	idx, term := n.lastLog()
	best := PeerInfo{ID: n.cfg.ID, LastIndex: idx, LastLogTerm: term}
	if n.cfg.Peers == nil {
		return best.ID, "no peer client"
	}
	type answer struct {
		info PeerInfo
		err  error
	}
	ctx, cancel := context.WithTimeout(n.ctx, fastFailoverAsk)
	defer cancel()
	var asked []chan answer
	for _, s := range voters {
		if s.ID == dead || string(s.ID) == n.cfg.ID {
			continue
		}
		m, ok := n.fsm.Member(string(s.ID))
		if !ok || m.GetHttpAddr() == "" {
			continue
		}
		ch := make(chan answer, 1)
		asked = append(asked, ch)
		go func(addr string) {
			info, err := n.cfg.Peers.Info(ctx, addr)
			ch <- answer{info, err}
		}(m.GetHttpAddr())
	}
	why := fmt.Sprintf("own log ends at %d (term %d)", idx, term)
	for _, ch := range asked {
		a := <-ch
		if a.err != nil {
			continue
		}
		why += fmt.Sprintf("; %s at %d (term %d)", a.info.ID, a.info.LastIndex, a.info.LastLogTerm)
		if newerLog(a.info, best) {
			best = a.info
		}
	}
	return best.ID, why
}

// newerLog reports whether a's log is more up to date than b's in raft's
// sense, ties broken by the lower id.
func newerLog(a, b PeerInfo) bool {
	if a.LastLogTerm != b.LastLogTerm {
		return a.LastLogTerm > b.LastLogTerm
	}
	if a.LastIndex != b.LastIndex {
		return a.LastIndex > b.LastIndex
	}
	return a.ID < b.ID
}

// kickElection sends this node raft's TimeoutNow RPC through its own
// transport: raft then starts an election at once, as the target of a
// leadership transfer does.
func (n *Node) kickElection() error {
	self := raft.ServerAddress(n.trans.LocalAddr())
	if n.cfg.RaftAddr != "" {
		self = raft.ServerAddress(n.cfg.RaftAddr)
	}
	id := raft.ServerID(n.cfg.ID)
	req := &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{
		ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: n.trans.EncodePeer(id, self),
	}}
	return n.trans.TimeoutNow(id, self, req, &raft.TimeoutNowResponse{})
}

// refused reports whether a TCP connection to addr is actively refused
// (nothing listens there: the process is gone). Timeouts and other
// errors are not proof and report false.
func refused(ctx context.Context, addr string) bool {
	d := net.Dialer{Timeout: fastFailoverDial}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// Reclaiming leadership after a lease step-down.
//
// A raft leader steps down when it has not heard from a quorum for its
// lease (LeaderLeaseTimeout). On a starved machine (a loaded CI host, the
// race detector) that happens to a healthy leader: a heartbeat round trip
// needs four goroutine wake-ups, each of which was measured to take up to
// ~380 ms there, so the leader's view of its followers ages past the lease
// while the followers still hear it and keep it as their leader. Left to
// raft, the step-down silences the leader, so every follower's heartbeat
// timeout now starts from the same instant: they campaign together, the
// deposed leader (whose log is the newest, it was just appending) refuses
// their pre-votes, the other two split their votes, and each failed round
// costs an election timeout. The in-process cluster went 12–14 s without
// a leader that way.
//
// The deposed leader is the one node every other voter will vote for: it
// is the leader they still follow (raft grants a vote to the known leader)
// and no log is newer than its own. So right after a lease step-down, if
// nothing has happened since (same term, no other leader, still a
// follower), it starts an election at once with the same TimeoutNow fast
// failover uses. One round trip later it leads again. Votes still check
// term and log, so safety is raft's; a leader cut off by a real partition
// only spends one term on a vote nobody receives, then waits for raft's
// timers with pre-vote like any follower.

// reclaimAfterStepDown runs (from deadLeaderLoop, within a poll interval)
// when this node stopped leading; ledTerm is the term it led in. It starts
// an election at once when that was a lease step-down (see above).
func (n *Node) reclaimAfterStepDown(ledTerm uint64) {
	// Look twice, a poll interval apart: raft sets the follower state a
	// moment before the newer term that deposed it.
	for look := 0; look < 2; look++ {
		if look > 0 {
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(fastFailoverPoll):
			}
		}
		if n.ctx.Err() != nil || n.raft.CurrentTerm() != ledTerm || n.raft.State() != raft.Follower {
			return // shutting down, a newer term, or our own candidacy: raft is electing already
		}
		if addr, _ := n.raft.LeaderWithID(); addr != "" {
			return
		}
	}
	voters := n.voters()
	if len(voters) < 2 || !slices.ContainsFunc(voters, func(s raft.Server) bool { return string(s.ID) == n.cfg.ID }) {
		return
	}
	if err := n.kickElection(); err != nil {
		n.log.Warn("could not start an election after a lease step-down", "err", err)
		return
	}
	n.m.reclaims.Inc()
	n.log.Info("stepped down because the lease ran out (no quorum heard within it) and no other leader took over: starting an election at once",
		"term", ledTerm, "lease", n.cfg.LeaderLeaseTimeout)
}
