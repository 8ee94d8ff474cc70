package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/placement"
)

// AllocateRequest asks for units for a room.
type AllocateRequest struct {
	RequestID string
	Room      string
	Units     int64
	Requester string
	Region    string
	// Server pins the allocation to one server.
	Server string
	// TTL, when positive, makes the allocation expire on its own.
	TTL time.Duration
	// SFU, when set, limits the choice to servers of that SFU kind
	// (fsm.ServerSFU); room placement uses it.
	SFU string
}

// LoadSource supplies the leader's soft view of media-server load (the
// agent implements it from QUIC load reports). It must be cheap and must not
// block: it is called from the decision loop once per server per batch.
type LoadSource interface {
	// Load returns the latest load of server id, or ok=false without one.
	Load(id string) (l placement.Load, ok bool)
}

// op is one request queued for the decision loop: either a ready command or
// an allocation still to be placed.
type op struct {
	cmd   *fsmpb.Command
	alloc *AllocateRequest
	// refusal, with alloc, is a decision already made elsewhere (a parked
	// request whose provisioning failed): the loop refuses the request
	// with it (committing the refusal where it commits refusals).
	refusal error
	// token is the id of the ACL token that authorized the request ("" for
	// none): its commands carry it for Apply to re-check (WithACLToken).
	token string
	done  chan opResult // buffered(1)
}

type opResult struct {
	res   *fsmpb.Result
	index uint64 // the log index the op's entry was committed at, if any
	err   error
}

// leaderState lives for one leadership term, from the barrier until
// leadership is lost.
//
// The decision loop (run) is the only goroutine that decides. Its job, in
// the spirit of Nomad's plan applier:
//
//  1. Block for one queued op, then drain whatever else is queued (up to
//     MaxBatch) without waiting: under load the queue fills while the
//     previous entry is being committed, so entries grow with load and the
//     fsync cost is shared.
//  2. Read the FSM's committed view (servers and their used units) together
//     with the highest sequence number of our own entries it has applied.
//     Every in-flight batch with a higher sequence number is proposed but
//     not yet applied; its reservations are added on top of the committed
//     view. Decisions therefore assume that earlier in-flight batches
//     succeed, so a burst cannot over-commit a server, and since the
//     applied view and our own sequence number are read atomically nothing
//     is counted twice or missed.
//  3. Place each allocation (placement.Pick), reserving its units in the
//     working view so later ops of the same batch see them; answer refusals
//     at once without touching the log; answer repeated request ids from
//     the FSM (already committed) or by attaching to the in-flight op.
//  4. Propose one entry with all commands and hand its future to a waiter
//     goroutine; go back to 1 without waiting for the commit. At most
//     maxInflight entries are outstanding, which bounds memory and lets
//     the queue (and so the next batch) grow while raft is busy.
//
// Apply re-checks every hard limit, so even a wrong view here could only
// cause a refusal, never an over-commit.
type leaderState struct {
	n      *Node
	origin string
	ctx    context.Context
	cancel context.CancelFunc
	queue  chan *op
	wg     sync.WaitGroup
	sem    chan struct{}

	// Owned by the decision loop.
	seq      uint64
	inflight []inflightBatch
	pc       policyCache // compiled policy (provision.go)
	pix      leaderIndex // placement index (index.go)
	// staged is a policy proposed in batch stagedSeq and not yet applied.
	staged    *placement.Policy
	stagedSeq uint64

	// prov parks requests no server fits while a server is provisioned
	// (provision.go); nil without a provisioner.
	prov *provisioner

	// Which refusals are committed (refusals.go), and when that was last
	// checked; owned by the decision loop.
	refusals   refusalCommits
	refusalsAt time.Time
	// tokensInApply: FeatureACLInApply was seen on (decide.go).
	tokensInApply bool

	mu      sync.Mutex
	waiters map[string][]chan opResult // request id -> callers waiting on an in-flight decision
}

type inflightBatch struct {
	seq      uint64
	reserved map[string]int64
	rooms    map[string]map[string]int64 // room -> server -> units placed
}

const maxInflight = 32

func newLeaderState(n *Node) *leaderState {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	ls := &leaderState{
		n:       n,
		origin:  n.cfg.ID + "/" + hex.EncodeToString(b),
		queue:   make(chan *op, 4*n.cfg.MaxBatch),
		sem:     make(chan struct{}, maxInflight),
		waiters: map[string][]chan opResult{},
	}
	ls.ctx, ls.cancel = context.WithCancel(n.ctx)
	if n.cfg.Provisioner != nil {
		ls.prov = newProvisioner(ls, n.cfg.Provisioner)
	}
	return ls
}

// leadershipLoop reacts to raft leadership changes: on gaining leadership
// it runs a barrier (so the FSM holds every committed entry) before it
// serves; on losing it, it stops the decision loop and fails queued ops
// as retryable. If establishing fails while raft still says we lead (a
// barrier that timed out on a loaded machine, say), it tries again every
// establishRetry: a leader that never became ready would refuse every
// request until the next election.
func (n *Node) leadershipLoop(notify <-chan bool) {
	defer n.wg.Done()
	var cur *leaderState
	stop := func() {
		if cur == nil {
			return
		}
		n.leader.Store(nil)
		cur.cancel()
		cur.wg.Wait()
		cur = nil
	}
	defer stop()
	leading := false
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	attempt := func() {
		cur = newLeaderState(n)
		if err := n.establish(cur); err != nil {
			n.log.Warn("could not establish leadership; retrying", "err", err)
			cur.cancel()
			cur.wg.Wait()
			cur = nil
			retry.Reset(establishRetry)
		}
	}
	for {
		select {
		case <-n.ctx.Done():
			return
		case isLeader := <-notify:
			stop()
			retry.Stop()
			leading = isLeader
			if !isLeader {
				n.log.Info("lost leadership")
				continue
			}
			attempt()
		case <-retry.C:
			if leading && cur == nil && n.raft.State() == raft.Leader {
				attempt()
			}
		}
	}
}

// establishRetry is how long a leader waits before trying again to become
// ready after a failed barrier.
const establishRetry = 100 * time.Millisecond

// establish runs the barrier, starts the decision loop and the leader's
// housekeeping, and publishes ls as the serving leader.
func (n *Node) establish(ls *leaderState) error {
	start := time.Now()
	if err := n.wait(ls.ctx, n.raft.Barrier(n.cfg.ApplyTimeout)); err != nil {
		return fmt.Errorf("barrier: %w", err)
	}
	ls.wg.Add(2)
	go ls.run()
	go ls.housekeeping()
	if ls.prov != nil { // provisioning and retirement
		ls.wg.Add(1)
		go ls.prov.loop()
	}
	n.leader.Store(ls)
	n.m.leaderships.Inc()
	if cur, ok := n.fsm.Member(n.cfg.ID); !ok || !sameMember(cur, n.selfMember()) {
		// A leader elected before its member entry was recorded cannot be
		// forwarded to (followers find its HTTP address there), and its
		// announceLoop may be busy asking a dead leader: record it now.
		ls.wg.Add(1)
		go func() {
			defer ls.wg.Done()
			_ = n.recordSelf(ls.ctx) // logged there; announceLoop retries
		}()
	}
	n.log.Info("leadership established", "barrier", time.Since(start), "applied_index", n.fsm.AppliedIndex())
	if n.fsm.ClusterID() == "" {
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		go func() {
			ctx, cancel := context.WithTimeout(ls.ctx, n.cfg.ApplyTimeout)
			defer cancel()
			if _, err := n.Submit(ctx, &fsmpb.Command{Cmd: &fsmpb.Command_InitCluster{InitCluster: hex.EncodeToString(b)}}); err != nil {
				n.log.Warn("stamp cluster id", "err", err)
			}
		}()
	}
	n.hooksMu.Lock()
	hooks := append([]func(context.Context){}, n.leaderHooks...)
	n.hooksMu.Unlock()
	for _, h := range hooks {
		ls.wg.Add(1)
		go func() { defer ls.wg.Done(); h(ls.ctx) }()
	}
	return nil
}

// housekeeping commits expiry on the leader's guarded clock (clock.go).
func (ls *leaderState) housekeeping() {
	defer ls.wg.Done()
	t := time.NewTicker(ls.n.cfg.ExpireInterval)
	defer t.Stop()
	for {
		select {
		case <-ls.ctx.Done():
			return
		case <-t.C:
		}
		if now, _, _ := ls.n.clock.estimate(); !ls.n.fsm.ExpiryDue(now) {
			continue
		}
		ctx, cancel := context.WithTimeout(ls.ctx, ls.n.cfg.ApplyTimeout)
		if _, err := ls.n.Submit(ctx, &fsmpb.Command{Cmd: &fsmpb.Command_Expire{Expire: true}}); err != nil {
			ls.n.log.Warn("expire allocations", "err", err)
		}
		cancel()
	}
}
