package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// Forwarding a request from a follower to the leader.
//
// A follower used to hand a write to the leader and wait for the answer as
// long as its HTTP client allowed (30 s). A leader that froze (SIGSTOP, a
// hung VM, a long GC pause, a cut cable) still holds the connection open,
// so the request stayed parked on it while raft elected a successor within
// a few hundred milliseconds, and the client spent its whole timeout on
// that one attempt.
//
// Forward bounds each attempt by ForwardTimeout (two heartbeat timeouts,
// an election timeout and 100 ms: by then a silent leader has been
// replaced) and watches raft's leader observations. When another node
// becomes the leader, the attempt is abandoned and the same request (same
// request id: the state machine grants a request id once) is sent to the
// new leader. When the deadline passes and the leader is still the same,
// it is given more time only if raft still hears from it (a busy leader
// is slow, not gone); otherwise the follower waits up to two more windows
// for a successor (an election with one failed round, and the new
// leader's barrier) and answers a retryable error if none appears. A
// request that is not idempotent is re-sent only when the previous attempt
// certainly did not reach the leader.

// ForwardTimeout is the deadline of one forwarded attempt for the given
// raft timing: 2×heartbeat timeout + election timeout + 100 ms.
func ForwardTimeout(heartbeat, election time.Duration) time.Duration {
	return 2*heartbeat + election + 100*time.Millisecond
}

// ForwardTimeout is the deadline of one forwarded attempt with this node's
// raft timing (see the package function).
func (n *Node) ForwardTimeout() time.Duration {
	return ForwardTimeout(n.cfg.HeartbeatTimeout, n.cfg.ElectionTimeout)
}

// maxForwardAttempts bounds the re-sends of one forwarded request.
const maxForwardAttempts = 6

// ForwardFunc sends a request to the leader (leaderID, with its member
// record m) and reads its answer, bounded by ctx. It returns nil once it
// has an answer to relay (the caller keeps it), an error wrapping
// ErrNotLeader or ErrNoLeader when the target refused the request without
// proposing it (it is not, or no longer, the leader), or another error
// when the answer did not arrive (the leader may have received it).
type ForwardFunc func(ctx context.Context, leaderID string, m *fsmpb.Member) error

// ForwardStats describes one forwarded request, for logs and tests.
type ForwardStats struct {
	// Attempts is how many times the request was sent.
	Attempts int
	// Leaders lists the leader each attempt went to.
	Leaders []string
	// Unanswered: an attempt before the last went unanswered after it may
	// have reached its leader. A momentary refusal in the final answer
	// then does not settle the request (errcode.Unsettled).
	Unanswered bool
}

// Forward sends a request to the leader with send and re-sends it to a new
// leader when leadership moves or the leader goes silent (see above).
// idempotent says whether a request that may have reached a leader can be
// sent again. Errors are retryable cluster sentinels (ErrNoLeader,
// ErrNotLeader, ErrUnknownOutcome) or ctx's.
func (n *Node) Forward(ctx context.Context, idempotent bool, send ForwardFunc) (ForwardStats, error) {
	var (
		st   ForwardStats
		last error
	)
	window := n.ForwardTimeout()
	hb := n.cfg.HeartbeatTimeout
	for {
		change := n.LeaderChange()
		lid, m, ok := n.Leader()
		if !ok || !n.usable(lid, m) {
			// No leader known, or we are about to lead (not ready yet), or
			// its addresses are not known yet: wait for news. A request that
			// ends up "forwarded" to this node, once it leads, is served by
			// its own handler.
			if err := n.awaitLeader(ctx, change, 2*window, "", false); err != nil {
				if lid == n.cfg.ID {
					return st, fmt.Errorf("%w: this node was elected and is not ready yet: %v", ErrNotLeader, err)
				}
				return st, fmt.Errorf("%w: %v", ErrNoLeader, err)
			}
			continue
		}
		if st.Attempts >= maxForwardAttempts {
			if errors.Is(last, ErrNotLeader) || errors.Is(last, ErrNoLeader) {
				return st, fmt.Errorf("%w: request refused by %d leaders in turn (%v): %v", ErrNotLeader, st.Attempts, st.Leaders, last)
			}
			return st, fmt.Errorf("%w: request sent to the leader %d times without an answer (leaders %v): %v", ErrUnknownOutcome, st.Attempts, st.Leaders, last)
		}
		st.Attempts++
		st.Leaders = append(st.Leaders, lid)
		moved, err := n.forwardOnce(ctx, change, window, hb, lid, m, idempotent, send)
		last = err
		switch {
		case err == nil:
			return st, nil
		case ctx.Err() != nil:
			return st, fmt.Errorf("%w: forward to leader %s: %w", ErrUnknownOutcome, lid, ctx.Err())
		case errors.Is(err, ErrNotLeader) || errors.Is(err, ErrNoLeader):
			// Refused without proposing: safe to send anywhere. Give another
			// node a moment to take over; the same leader may only not be
			// ready yet (attempts are bounded).
			if !moved {
				_ = n.awaitLeader(ctx, change, window/4, lid, false)
			}
			continue
		}
		// The attempt may have reached the leader.
		st.Unanswered = true
		if !idempotent {
			return st, fmt.Errorf("%w: forward to leader %s: %v", ErrUnknownOutcome, lid, err)
		}
		if !moved {
			if werr := n.awaitLeader(ctx, change, 2*window, lid, true); werr != nil {
				return st, fmt.Errorf("%w: leader %s did not answer within %v and no other leader was elected: %v", ErrUnknownOutcome, lid, 3*window, err)
			}
		}
		n.log.Info("re-forwarding a request to the new leader", "previous_leader", lid, "attempt", st.Attempts+1, "err", err)
	}
}

// errLeaderSilent ends an attempt whose leader stopped talking to raft.
var errLeaderSilent = errors.New("leader silent: no raft contact and no answer within the forward window")

// forwardOnce runs one attempt. moved reports whether leadership moved
// (a leader change was observed) while it ran; an idempotent request's
// attempt is abandoned at once then. Any other request waits for its
// answer: the move may be its own doing (a leadership transfer).
func (n *Node) forwardOnce(ctx context.Context, change <-chan struct{}, window, hb time.Duration, lid string, m *fsmpb.Member, idempotent bool, send ForwardFunc) (moved bool, err error) {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- send(actx, lid, m) }()
	t := time.NewTimer(window)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			return false, err
		case <-change:
			if cur, _, ok := n.Leader(); !idempotent || (ok && cur == lid) {
				change = n.LeaderChange() // the same leader again, or not ours to abandon
				continue
			}
			cancel()
			<-done
			return true, fmt.Errorf("leadership moved away from %s", lid)
		case <-t.C:
			if time.Since(n.raft.LastContact()) < hb {
				t.Reset(window) // raft still hears from it: slow, not gone
				continue
			}
			cancel()
			<-done
			return false, errLeaderSilent
		}
	}
}

// awaitLeader waits up to d for a leader this node can forward to (known
// addresses, not this node) other than prev, or, with backOK, for prev to
// be heard from again; change (taken before prev was read) wakes it at once on a leader
// observation.
func (n *Node) awaitLeader(ctx context.Context, change <-chan struct{}, d time.Duration, prev string, backOK bool) error {
	t := time.NewTimer(d)
	defer t.Stop()
	poll := time.NewTicker(25 * time.Millisecond)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return fmt.Errorf("no new leader within %v", d)
		case <-change:
			change = n.LeaderChange()
		case <-poll.C:
		}
		lid, m, ok := n.Leader()
		if ok && n.usable(lid, m) && (lid != prev || (backOK && time.Since(n.raft.LastContact()) < n.cfg.HeartbeatTimeout/2)) {
			return nil // a new leader, or the silent one talks again (a pause it survived)
		}
	}
}

// usable reports whether a request can be forwarded to leader lid: its
// addresses are known and, if it is this node (elected while the request
// waited), it is ready to serve.
func (n *Node) usable(lid string, m *fsmpb.Member) bool {
	return m != nil && (m.GetHttpAddr() != "" || m.GetQuicAddr() != "") && (lid != n.cfg.ID || n.IsLeader())
}

// LeaderChange returns a channel that is closed the next time raft
// observes a leader change (including to "no leader").
func (n *Node) LeaderChange() <-chan struct{} {
	n.leaderChMu.Lock()
	defer n.leaderChMu.Unlock()
	return n.leaderCh
}

// watchLeader turns raft's leader observations into LeaderChange
// notifications until shutdown.
func (n *Node) watchLeader() {
	defer n.wg.Done()
	obs := make(chan raft.Observation, 16)
	o := raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(o)
	defer n.raft.DeregisterObserver(o)
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-obs:
			n.leaderChMu.Lock()
			close(n.leaderCh)
			n.leaderCh = make(chan struct{})
			n.leaderChMu.Unlock()
		}
	}
}
