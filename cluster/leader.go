package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/fsm"
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
	done  chan opResult // buffered(1)
}

type opResult struct {
	res *fsmpb.Result
	err error
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

// Submit commits one command through the leader's batching loop and
// returns its result. Must run on the leader (else ErrNotLeader). Errors
// from the FSM come back wrapping fsm sentinels; ErrLeadershipLost and
// ErrUnknownOutcome mean "maybe committed".
func (n *Node) Submit(ctx context.Context, cmd *fsmpb.Command) (*fsmpb.Result, error) {
	return n.enqueue(ctx, &op{cmd: cmd, done: make(chan opResult, 1)})
}

// Allocate places and commits an allocation. Must run on the leader. A
// request id seen before returns the allocation it already got (Result
// duplicate=true); concurrent duplicates share one decision.
func (n *Node) Allocate(ctx context.Context, req AllocateRequest) (*fsmpb.Allocation, bool, error) {
	if req.RequestID == "" {
		return nil, false, fmt.Errorf("%w: request id is required", fsm.ErrInvalid)
	}
	if err := fsm.ValidateRequest(req.Room, req.Units); err != nil {
		return nil, false, err
	}
	res, err := n.enqueue(ctx, &op{alloc: &req, done: make(chan opResult, 1)})
	if err != nil {
		return nil, false, err
	}
	return res.GetAllocation(), res.GetDuplicate(), nil
}

// Release ends an allocation (by allocation id or request id). Must run on
// the leader. Releasing an ended allocation succeeds and changes nothing.
func (n *Node) Release(ctx context.Context, id string) (*fsmpb.Allocation, error) {
	if id == "" {
		return nil, fmt.Errorf("%w: allocation id is required", fsm.ErrInvalid)
	}
	res, err := n.Submit(ctx, &fsmpb.Command{Cmd: &fsmpb.Command_Release{Release: &fsmpb.Release{Id: id}}})
	if err != nil {
		return nil, err
	}
	return res.GetAllocation(), nil
}

func (n *Node) enqueue(ctx context.Context, o *op) (*fsmpb.Result, error) {
	ls := n.leader.Load()
	if ls == nil {
		if _, _, ok := n.Leader(); !ok {
			return nil, ErrNoLeader
		}
		return nil, ErrNotLeader
	}
	select {
	case ls.queue <- o:
	case <-ls.ctx.Done():
		return nil, ErrNotLeader // not proposed: safe to retry elsewhere
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case r := <-o.done:
		if r.err != nil {
			return nil, r.err
		}
		if err := fsm.ResultError(r.res); err != nil {
			return r.res, err
		}
		return r.res, nil
	case <-ls.ctx.Done():
		select {
		case r := <-o.done:
			if r.err == nil {
				return r.res, fsm.ResultError(r.res)
			}
			return nil, r.err
		default:
			return nil, ErrLeadershipLost
		}
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrUnknownOutcome, ctx.Err())
	}
}

func (ls *leaderState) run() {
	defer ls.wg.Done()
	batch := make([]*op, 0, ls.n.cfg.MaxBatch)
	for {
		batch = batch[:0]
		select {
		case <-ls.ctx.Done():
			ls.failQueued()
			return
		case o := <-ls.queue:
			batch = append(batch, o)
		}
	drain:
		for len(batch) < ls.n.cfg.MaxBatch {
			select {
			case o := <-ls.queue:
				batch = append(batch, o)
			default:
				break drain
			}
		}
		ls.decideAndPropose(batch)
	}
}

// failQueued answers everything still queued when leadership ends. Those
// ops were never proposed, so ErrNotLeader (retry elsewhere) is exact.
func (ls *leaderState) failQueued() {
	for {
		select {
		case o := <-ls.queue:
			o.done <- opResult{err: ErrNotLeader}
		default:
			return
		}
	}
}

func (ls *leaderState) decideAndPropose(batch []*op) {
	n := ls.n
	needView := false
	for _, o := range batch {
		if o.alloc != nil {
			needView = true
			break
		}
	}
	// Bring the placement index up to date with what the FSM applied (and
	// drop our in-flight batches it has applied); index.go.
	applied := ls.sync()
	// The whole committed policy, read from the FSM every batch,
	// so a policy change is in force from the next decision on.
	pol := ls.currentPolicy(applied)
	staged := false
	var batchRooms map[string]map[string]int64
	if needView {
		ls.pix.setPolicy(pol)
		batchRooms = map[string]map[string]int64{}
	}

	cmds := make([]*fsmpb.Command, 0, len(batch))
	dones := make([]chan opResult, 0, len(batch))
	var reqIDs []string
	reserved := map[string]int64{}
	for _, o := range batch {
		if o.alloc == nil {
			// A policy change is in force for every decision
			// after it, even before its entry is applied (provision.go).
			if sp := o.cmd.GetSetPolicy(); sp != nil {
				np, ok := ls.stagePolicy(o, sp)
				if !ok {
					continue
				}
				pol, staged = np, true
				ls.pix.setPolicy(pol)
			}
			cmds = append(cmds, o.cmd)
			dones = append(dones, o.done)
			reqIDs = append(reqIDs, "")
			continue
		}
		r := o.alloc
		// Already committed: answer from the FSM (the barrier made it current).
		if a, ok := n.fsm.AllocationByRequest(r.RequestID); ok {
			res := &fsmpb.Result{Allocation: a, Duplicate: true}
			if a.Room != r.Room || a.Units != r.Units {
				res.ErrorCode = errcode.Code(fsm.ErrRequestIDReused)
				res.ErrorMessage = fmt.Sprintf("%v: request id %q already allocated %s (room %q, %d units)", fsm.ErrRequestIDReused, r.RequestID, a.Id, a.Room, a.Units)
			}
			n.m.countAllocation(opResult{res: res})
			o.done <- opResult{res: res}
			continue
		}
		// In flight: share that decision's outcome.
		ls.mu.Lock()
		if w, ok := ls.waiters[r.RequestID]; ok {
			ls.waiters[r.RequestID] = append(w, o.done)
			ls.mu.Unlock()
			continue
		}
		ls.mu.Unlock()
		id, err := ls.pick(pol, r) // rooms.go: an SFU kind narrows the choice
		if err != nil {
			if ls.parkForProvisioning(o, err) { // wait for a new server
				continue
			}
			n.m.allocations.WithLabelValues("refused").Inc()
			o.done <- opResult{res: &fsmpb.Result{ErrorCode: errcode.Code(err), ErrorMessage: err.Error()}}
			continue
		}
		ls.pix.reserve(id, r.Room, r.Units)
		noteHosting(batchRooms, r.Room, id, r.Units)
		reserved[id] += r.Units
		ls.mu.Lock()
		ls.waiters[r.RequestID] = nil
		ls.mu.Unlock()
		cmds = append(cmds, &fsmpb.Command{Cmd: &fsmpb.Command_Allocate{Allocate: &fsmpb.AllocateDecision{
			RequestId: r.RequestID, Room: r.Room, Requester: r.Requester, Server: id, Units: r.Units, TtlMs: r.TTL.Milliseconds(),
		}}})
		dones = append(dones, o.done)
		reqIDs = append(reqIDs, r.RequestID)
	}
	if len(cmds) == 0 {
		return
	}
	ls.seq++
	if staged {
		ls.stagedSeq = ls.seq
	}
	data, err := fsm.EncodeFrom(ls.origin, ls.seq, ls.n.clock.now(), cmds...)
	if err != nil {
		ls.pix.unreserve(reserved, batchRooms)
		ls.finish(dones, reqIDs, nil, fmt.Errorf("encode entry: %w", err))
		return
	}
	ls.inflight = append(ls.inflight, inflightBatch{seq: ls.seq, reserved: reserved, rooms: batchRooms})
	select {
	case ls.sem <- struct{}{}:
	case <-ls.ctx.Done():
		ls.finish(dones, reqIDs, nil, ErrNotLeader)
		return
	}
	n.m.entryCmds.Observe(float64(len(cmds)))
	f := n.raft.Apply(data, n.cfg.ApplyTimeout)
	ls.wg.Add(1)
	go ls.await(f, dones, reqIDs)
}

// await waits for one proposed entry with our own deadline and answers its
// callers. Raft futures can hang after a leader dies (hashicorp/raft#498);
// past ApplyTimeout the outcome is reported unknown and the waiter goroutine
// for the future is left to finish whenever raft resolves it.
func (ls *leaderState) await(f raft.ApplyFuture, dones []chan opResult, reqIDs []string) {
	defer ls.wg.Done()
	defer func() { <-ls.sem }()
	start := time.Now()
	defer func() { ls.n.m.commit.Observe(time.Since(start).Seconds()) }()
	ch := make(chan error, 1)
	go func() { ch <- f.Error() }()
	t := time.NewTimer(ls.n.cfg.ApplyTimeout)
	defer t.Stop()
	var err error
	select {
	case err = <-ch:
		err = mapRaftErr(err)
	case <-t.C:
		err = ErrUnknownOutcome
	case <-ls.ctx.Done():
		err = ErrLeadershipLost
	}
	if err != nil {
		ls.finish(dones, reqIDs, nil, err)
		return
	}
	switch r := f.Response().(type) {
	case []*fsmpb.Result:
		ls.finish(dones, reqIDs, r, nil)
	case error:
		ls.finish(dones, reqIDs, nil, r)
	default:
		ls.finish(dones, reqIDs, nil, fmt.Errorf("unexpected apply response %T", r))
	}
}

// finish answers every caller of one entry, and every duplicate that
// attached to one of its allocations.
func (ls *leaderState) finish(dones []chan opResult, reqIDs []string, results []*fsmpb.Result, err error) {
	for i, d := range dones {
		r := opResult{err: err}
		if err == nil {
			if i < len(results) {
				r.res = results[i]
			} else {
				r.err = fmt.Errorf("apply returned %d results for %d commands", len(results), len(dones))
			}
		}
		d <- r
		if reqIDs[i] == "" {
			continue
		}
		ls.n.m.countAllocation(r)
		ls.mu.Lock()
		extra := ls.waiters[reqIDs[i]]
		delete(ls.waiters, reqIDs[i])
		ls.mu.Unlock()
		for _, e := range extra {
			er := r
			if er.res != nil {
				c := proto.Clone(er.res).(*fsmpb.Result)
				c.Duplicate = true
				er.res = c
			}
			ls.n.m.countAllocation(er)
			e <- er
		}
	}
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
