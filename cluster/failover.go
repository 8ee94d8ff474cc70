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
// One attempt per node per silence (this rule or the silent-leader rule
// below, whichever acts or defers to another first): a node does not try
// again until it hears from a leader. Either rule re-checks, after asking
// its peers, that nothing changed meanwhile (no vote granted, no newer
// term, no other leader). A leader that still accepts connections is probed
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

// deadLeaderLoop is the fast-failover watcher described above; it also
// runs the silent-leader rule and the lease-step-down reclaim below. It
// runs on every node until shutdown.
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
		askAt      time.Time // when to ask the other voters about the silence next
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
			askAt = time.Time{}
			continue
		}
		if acted || lastAddr == "" || lastID == raft.ServerID(n.cfg.ID) {
			continue
		}
		if term != leaderTerm && time.Since(termAt) < fastFailoverGrace {
			continue
		}
		if !n.cfg.DisableSilentFailover && stale >= n.cfg.HeartbeatTimeout && !time.Now().Before(askAt) {
			t0, c0 := n.raft.CurrentTerm(), n.raft.LastContact()
			v := n.judgeSilence(lastID, leaderTerm, stale)
			askAt = time.Now().Add(v.recheck)
			if v.majority && v.best != "" {
				acted = true
				if v.best != n.cfg.ID {
					n.log.Info("leader silent to a majority of voters for a heartbeat timeout; leaving the election to another",
						"leader", lastID, "successor", v.best, "why", v.why)
					continue
				}
				// The answers took a while: start only if nothing changed
				// meanwhile (no vote, no candidacy, no word from a leader).
				if !n.unchangedSince(t0, c0, lastID) {
					continue
				}
				if err := n.kickEarly(leaderTerm); err != nil {
					n.log.Warn("silent leader: could not start an election", "err", err)
					continue
				}
				n.m.silentFailovers.Inc()
				n.log.Info("leader silent to a majority of voters for a heartbeat timeout; starting an election now",
					"leader", lastID, "silent_for", stale.Round(time.Millisecond), "why", v.why)
				continue
			}
		}
		if time.Since(probedAt) < base {
			continue
		}
		probedAt = time.Now()
		if !refused(n.ctx, string(lastAddr)) {
			continue // alive (slow, paused, overloaded) or still exiting: probe again later
		}
		acted = true
		t0, c0 := n.raft.CurrentTerm(), n.raft.LastContact()
		best, why := n.bestSuccessor(lastID)
		if best != n.cfg.ID {
			n.log.Info("leader's raft port refuses connections: its process is gone; leaving the election to the survivor with the newest log",
				"leader", lastID, "successor", best, "why", why)
			continue
		}
		if !n.unchangedSince(t0, c0, lastID) {
			continue // voted, campaigned or heard from a leader while it asked
		}
		if err := n.kickEarly(leaderTerm); err != nil {
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

// askVoters asks every other voter for its PeerInfo over HTTP, within
// fastFailoverAsk, and returns the answers of those that answered and the
// number of voters. It does not wait for dead (the silent leader): its
// answer is included only if it came before the others'.
func (n *Node) askVoters(dead raft.ServerID) ([]PeerInfo, int) {
	voters := n.voters()
	if n.cfg.Peers == nil {
		return nil, len(voters)
	}
	type answer struct {
		info PeerInfo
		err  error
		dead bool
	}
	ctx, cancel := context.WithTimeout(n.ctx, fastFailoverAsk)
	defer cancel()
	ch := make(chan answer, len(voters))
	waiting := 0
	for _, s := range voters {
		if string(s.ID) == n.cfg.ID {
			continue
		}
		m, ok := n.fsm.Member(string(s.ID))
		if !ok || m.GetHttpAddr() == "" {
			continue
		}
		isDead := s.ID == dead
		if !isDead {
			waiting++
		}
		go func(addr string) {
			info, err := n.cfg.Peers.Info(ctx, addr)
			ch <- answer{info, err, isDead}
		}(m.GetHttpAddr())
	}
	var infos []PeerInfo
	for waiting > 0 {
		a := <-ch
		if !a.dead {
			waiting--
		}
		if a.err == nil {
			infos = append(infos, a.info)
		}
	}
	return infos, len(voters)
}

// isVoter reports whether this node is a voter.
func (n *Node) isVoter() bool {
	return slices.ContainsFunc(n.voters(), func(s raft.Server) bool { return string(s.ID) == n.cfg.ID })
}

// bestSuccessor picks, among the voters other than the dead leader, the
// one whose log is the most up to date (last term, then last index; ties
// go to the lowest id), asking the others over HTTP. Unreachable voters
// cannot be chosen. It returns the id and a short explanation for logs.
func (n *Node) bestSuccessor(dead raft.ServerID) (string, string) {
	if !n.isVoter() {
		return "", "this node is not a voter"
	}
	idx, term := n.lastLog()
	best := PeerInfo{ID: n.cfg.ID, LastIndex: idx, LastLogTerm: term}
	infos, _ := n.askVoters(dead)
	why := fmt.Sprintf("own log ends at %d (term %d)", idx, term)
	for _, a := range infos {
		if a.ID == string(dead) {
			continue
		}
		why += fmt.Sprintf("; %s at %d (term %d)", a.ID, a.LastIndex, a.LastLogTerm)
		if newerLog(a, best) {
			best = a
		}
	}
	return best.ID, why
}

// Early elections after a leader fell silent.
//
// A paused leader (SIGSTOP, a hung VM, a long GC) and one cut off by the
// network leave its port either accepting connections or timing out, so
// the refused-connection proof above never comes. Raft then waits for the
// followers' own timers: each checks its last contact on a timer that
// fires every [HT, 2HT), and with pre-vote a candidate only wins once a
// majority has also given up on the leader, so the election starts when
// the second follower's timer happens to fire, up to ~3 HT after the
// leader's last word, and a candidate that went first and was refused
// waits a further election timeout.
//
// Raft's own condition for giving up on a leader is that a follower has
// not heard from it for a heartbeat timeout. Once a follower has been
// silent that long, it asks the other voters (GET /v1/internal/info) how
// long they have been without their leader. When a majority of the voters
// (itself included) reports at least a heartbeat timeout of silence from
// the same leader (or already has none), the survivor with the newest log
// (ties: the lowest id) starts the election at once with TimeoutNow, as
// after a death, once it has checked that nothing changed while it asked.
// Nobody does when any voter reports a newer term, another leader, or
// that it started such an election itself (an election is under way), or
// when the silent leader itself answered the question before the other
// voters did (it runs; a best-effort check, since its answer is not
// waited for). Standing back, it asks again every HT and keeps probing
// the leader's port. A leader silent to a majority for a heartbeat timeout has
// lost its lease (the lease is at most the heartbeat timeout), so it would
// step down on its own when it runs again; a leader that still reaches a
// majority is never contested: its followers report a recent contact.
// Voters that do not answer, and answers without a silence (earlier
// releases), do not count. A follower whose peers are close to a
// heartbeat timeout asks again just after they reach it, otherwise every
// HT; a follower that left the election to another does not act again
// during that silence (raft's timers remain if the other does not act).
// --raft-silent-failover=false turns this rule off.

// silenceVerdict is what a follower concludes from the other voters'
// answers about a silent leader.
type silenceVerdict struct {
	majority bool          // a majority of voters has been silent for a heartbeat timeout
	best     string        // who should start the election ("": stand back and ask again)
	recheck  time.Duration // when to ask again
	why      string        // a short explanation for logs
}

// judgeSilence asks the other voters about the silence of leader dead,
// which this node has not heard from for stale (≥ the heartbeat timeout).
func (n *Node) judgeSilence(dead raft.ServerID, leaderTerm uint64, stale time.Duration) silenceVerdict {
	if !n.isVoter() {
		return silenceVerdict{recheck: n.cfg.HeartbeatTimeout}
	}
	idx, term := n.lastLog()
	self := PeerInfo{ID: n.cfg.ID, LastIndex: idx, LastLogTerm: term, State: raft.Follower.String(), Term: n.raft.CurrentTerm(),
		LeaderID: string(dead), LeaderSilentMs: stale.Milliseconds()}
	others, voters := n.askVoters(dead)
	return weighSilence(self, others, voters, string(dead), leaderTerm, n.cfg.HeartbeatTimeout)
}

// weighSilence is judgeSilence's rule (see above) on the answers: self is
// this node (a silent follower; Term its current term), others the answers
// of the other voters (the silent leader's included if it answered),
// voters their number including the silent leader and self, leaderTerm
// the term the silent leader led in.
func weighSilence(self PeerInfo, others []PeerInfo, voters int, dead string, leaderTerm uint64, ht time.Duration) silenceVerdict {
	v := silenceVerdict{recheck: ht}
	v.why = fmt.Sprintf("own log ends at %d (term %d), silent %d ms", self.LastIndex, self.LastLogTerm, self.LeaderSilentMs)
	// An election is under way, or the cluster moved on, when any voter
	// (this one included) is in a newer term, started an early election
	// against this leader, or follows another leader. A vote granted
	// resets a voter's silence, so this is checked on every answer.
	moved := self.Term > leaderTerm
	leaderAnswered := false
	count := 1 // silent voters, this one included
	best := self
	var newestCandidate *PeerInfo
	for i, p := range others {
		v.why += fmt.Sprintf("; %s %s in term %d, log at %d (term %d), silent %d ms", p.ID, p.State, p.Term, p.LastIndex, p.LastLogTerm, p.LeaderSilentMs)
		if p.ID == dead {
			leaderAnswered = true
			continue
		}
		if p.Term > leaderTerm || p.EarlyElectionTerm == leaderTerm || (p.LeaderID != "" && p.LeaderID != dead) {
			moved = true // still counted below if silent: the verdict stands back
		}
		if p.LeaderID != "" && p.LeaderID != dead {
			continue
		}
		silence := time.Duration(p.LeaderSilentMs) * time.Millisecond
		if silence < ht {
			if left := ht - silence; p.LeaderSilentMs > 0 && left <= ht/2 {
				v.recheck = min(v.recheck, left+2*time.Millisecond)
			}
			continue
		}
		count++
		switch {
		case p.State == raft.Candidate.String():
			// A candidate in the leader's term is in raft's pre-vote,
			// which followers still attached to the leader refuse; it
			// does not start the early election itself.
			if newestCandidate == nil || newerLog(p, *newestCandidate) {
				newestCandidate = &others[i]
			}
		case p.State == raft.Follower.String() && newerLog(p, best):
			best = p
		}
	}
	v.recheck = max(v.recheck, fastFailoverPoll)
	if count*2 <= voters {
		return v
	}
	v.majority = true
	v.best = best.ID
	switch c := newestCandidate; {
	case moved:
		v.best = ""
		v.why += "; an election is under way or another leader is known"
	case leaderAnswered:
		// It runs and serves HTTP: paused no longer, or cut off from
		// raft only. Its lease has run out; it steps down and reclaims
		// on its own, or raft's timers elect.
		v.best = ""
		v.why += "; the leader still answers"
	case c != nil && (c.LastLogTerm > best.LastLogTerm || (c.LastLogTerm == best.LastLogTerm && c.LastIndex > best.LastIndex)):
		v.best = "" // no follower could win against the candidate's newer log
	}
	return v
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

// kickEarly starts an early election against the leader of term
// leaderTerm (kickElection). It first records that for the peers that ask
// (PeerInfo.EarlyElectionTerm) and withdraws the record if the start
// failed.
func (n *Node) kickEarly(leaderTerm uint64) error {
	prev := n.earlyFrom.Swap(leaderTerm)
	if err := n.kickElection(); err != nil {
		n.earlyFrom.CompareAndSwap(leaderTerm, prev)
		return err
	}
	return nil
}

// unchangedSince reports whether this node is still a follower in term
// term that has had no contact since lastContact (no heartbeat, no vote
// granted) and knows no leader other than leader.
func (n *Node) unchangedSince(term uint64, lastContact time.Time, leader raft.ServerID) bool {
	if n.raft.State() != raft.Follower || n.raft.CurrentTerm() != term || n.raft.LastContact().After(lastContact) {
		return false
	}
	_, id := n.raft.LeaderWithID()
	return id == "" || id == leader
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
// follower, and no voter that answers within fastFailoverAsk reports a
// newer term or another leader: a leader thawed after a pause must not
// depose its successor), it starts an election at once with the same TimeoutNow fast
// failover uses, and one vote round trip later it leads again. First it
// asks the other voters (a loopback or LAN round trip, up to
// fastFailoverAsk when one is starved too): a leader thawed after a pause
// steps down on its lease before it hears of the successor elected
// meanwhile, and reclaiming would depose that successor. Votes still check
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
	// A leader that was paused (SIGSTOP, a hung VM) steps down on its
	// lease the moment it runs again, before it has heard of the term the
	// others elected in meanwhile: reclaiming would depose that new
	// leader. Ask first; any voter in a newer term, following another
	// leader or starting an early election against this one means the
	// cluster moved on.
	others, _ := n.askVoters("")
	for _, p := range others {
		if p.Term > ledTerm || p.EarlyElectionTerm == ledTerm || (p.LeaderID != "" && p.LeaderID != n.cfg.ID) {
			n.log.Info("stepped down because the lease ran out, and the cluster has moved on: not reclaiming",
				"term", ledTerm, "peer", p.ID, "peer_term", p.Term, "peer_leader", p.LeaderID)
			return
		}
	}
	if n.ctx.Err() != nil || n.raft.CurrentTerm() != ledTerm || n.raft.State() != raft.Follower {
		return
	}
	if err := n.kickEarly(ledTerm); err != nil {
		n.log.Warn("could not start an election after a lease step-down", "err", err)
		return
	}
	n.m.reclaims.Inc()
	n.log.Info("stepped down because the lease ran out (no quorum heard within it) and no other leader took over: starting an election at once",
		"term", ledTerm, "lease", n.cfg.LeaderLeaseTimeout)
}
