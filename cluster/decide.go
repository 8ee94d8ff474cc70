package cluster

import (
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/placement"
	"google.golang.org/protobuf/proto"
)

// The decision loop: one goroutine per leader term drains the request
// queue, places every request of the batch against the committed view plus
// the reservations in flight (see leaderState), proposes one log entry and
// moves on; completions are answered as raft applies them. The policy it
// places with is re-read from the FSM at the start of every batch
// (policyCache recompiles only when its version changes), so a `policy set`
// is in force for every decision made after the leader applied it.

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
	var commitRefusals refusalCommits // refusals.go: read once per batch
	if needView {
		ls.pix.setPolicy(pol)
		batchRooms = map[string]map[string]int64{}
		commitRefusals = ls.commitRefusals()
	}

	// Commands carry the ACL token that authorized them, for Apply to
	// re-check, once every voter does so (features.go).
	withTokens := false
	for _, o := range batch {
		if o.token != "" {
			withTokens = ls.commandTokens()
			break
		}
	}
	tokenOf := func(o *op) string {
		if withTokens {
			return o.token
		}
		return ""
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
			if t := tokenOf(o); t != "" {
				o.cmd.AclTokenId = t
			}
			cmds = append(cmds, o.cmd)
			dones = append(dones, o.done)
			reqIDs = append(reqIDs, "")
			continue
		}
		r := o.alloc
		// Already committed, granted or refused: answer from the FSM (the
		// barrier made it current).
		a, rf := n.fsm.Outcome(r.RequestID)
		if a != nil {
			res := &fsmpb.Result{Allocation: a, Duplicate: true}
			if a.Room != r.Room || a.Units != r.Units {
				res.ErrorCode = errcode.Code(fsm.ErrRequestIDReused)
				res.ErrorMessage = fmt.Sprintf("%v: request id %q already allocated %s (room %q, %d units)", fsm.ErrRequestIDReused, r.RequestID, a.Id, a.Room, a.Units)
			}
			n.m.countAllocation(opResult{res: res})
			o.done <- opResult{res: res}
			continue
		}
		if rf != nil { // the same refusal (refusals.go)
			res := &fsmpb.Result{ErrorCode: rf.ErrorCode, ErrorMessage: rf.ErrorMessage, Duplicate: true, RefusalCommitted: true}
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
		id, err := "", o.refusal
		if err == nil {
			id, err = ls.pick(pol, r) // rooms.go: an SFU kind narrows the choice
		}
		if err != nil {
			if o.refusal == nil && ls.parkForProvisioning(o, err) { // wait for a new server
				continue
			}
			code := errcode.Code(err)
			if !commitRefusals.commits(r, err) {
				n.m.allocations.WithLabelValues("refused").Inc()
				o.done <- opResult{res: &fsmpb.Result{ErrorCode: code, ErrorMessage: err.Error()}}
				continue
			}
			ls.mu.Lock()
			ls.waiters[r.RequestID] = nil
			ls.mu.Unlock()
			cmds = append(cmds, &fsmpb.Command{AclTokenId: tokenOf(o), Cmd: &fsmpb.Command_RefuseAllocation{RefuseAllocation: &fsmpb.Refusal{
				RequestId: r.RequestID, ErrorCode: code, ErrorMessage: fsm.RefusalMessage(err.Error()),
			}}})
			dones = append(dones, o.done)
			reqIDs = append(reqIDs, r.RequestID)
			continue
		}
		ls.pix.reserve(id, r.Room, r.Units)
		noteHosting(batchRooms, r.Room, id, r.Units)
		reserved[id] += r.Units
		ls.mu.Lock()
		ls.waiters[r.RequestID] = nil
		ls.mu.Unlock()
		cmds = append(cmds, &fsmpb.Command{AclTokenId: tokenOf(o), Cmd: &fsmpb.Command_Allocate{Allocate: &fsmpb.AllocateDecision{
			RequestId: r.RequestID, Room: r.Room, Requester: r.Requester, Server: id, Units: r.Units, TtlMs: r.TTL.Milliseconds(),
			RecordRefusal: commitRefusals.momentary,
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
		ls.finish(dones, reqIDs, 0, nil, fmt.Errorf("encode entry: %w", err))
		return
	}
	ls.inflight = append(ls.inflight, inflightBatch{seq: ls.seq, reserved: reserved, rooms: batchRooms})
	select {
	case ls.sem <- struct{}{}:
	case <-ls.ctx.Done():
		ls.finish(dones, reqIDs, 0, nil, ErrNotLeader)
		return
	}
	n.m.entryCmds.Observe(float64(len(cmds)))
	f := n.raft.Apply(data, n.cfg.ApplyTimeout)
	ls.wg.Add(1)
	go ls.await(f, dones, reqIDs)
}

// commandTokens reports whether commands carry their ACL token
// (FeatureACLInApply). Once on it stays on for the term (a voter without
// the feature can no longer join: AddVoter); until then it is read again
// for every batch that has a token, so that a revocation is exact from the
// moment the last voter lists the feature (not a recheck interval later).
// That read is a round trip to raft's loop per such batch, paid only while
// some voter's member entry lacks the feature (a rolling upgrade). Owned
// by the decision loop.
func (ls *leaderState) commandTokens() bool {
	if !ls.tokensInApply {
		ls.tokensInApply = ls.n.featureOn(FeatureACLInApply)
	}
	return ls.tokensInApply
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
		ls.finish(dones, reqIDs, 0, nil, err)
		return
	}
	switch r := f.Response().(type) {
	case []*fsmpb.Result:
		ls.finish(dones, reqIDs, f.Index(), r, nil)
	case error:
		ls.finish(dones, reqIDs, 0, nil, r)
	default:
		ls.finish(dones, reqIDs, 0, nil, fmt.Errorf("unexpected apply response %T", r))
	}
}

// finish answers every caller of one entry (committed at log index, 0
// when it was not), and every duplicate that attached to one of its
// allocations.
func (ls *leaderState) finish(dones []chan opResult, reqIDs []string, index uint64, results []*fsmpb.Result, err error) {
	for i, d := range dones {
		r := opResult{err: err}
		if err == nil {
			r.index = index
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

// policyCache holds the compiled policy of one version. Owned by the
// decision loop.
type policyCache struct {
	version uint64
	pol     *placement.Policy
}

// currentPolicy returns the policy in force for the next decision: one
// this leader proposed and that is not applied yet (applied is the highest
// of our sequence numbers the FSM has applied), else the committed one,
// compiled. A stored policy that no longer compiles (written by another
// binary) falls back to the default strategy, loudly.
func (ls *leaderState) currentPolicy(applied uint64) *placement.Policy {
	if ls.staged != nil {
		if applied < ls.stagedSeq {
			return ls.staged
		}
		ls.staged = nil
	}
	p := ls.n.fsm.Policy()
	if ls.pc.pol != nil && ls.pc.version == p.GetVersion() {
		return ls.pc.pol
	}
	pol, err := placement.Compile(p)
	if err != nil {
		ls.n.log.Error("committed policy does not compile; placing with the default strategy", "version", p.GetVersion(), "err", err)
		pol = placement.MustCompile(&fsmpb.Policy{Strategy: fsm.DefaultStrategy})
	}
	ls.pc = policyCache{version: p.GetVersion(), pol: pol}
	return pol
}

// stagePolicy checks a set_policy command in the decision loop. A policy
// that does not compile, or a conditional change while another change is
// still in flight or the version moved, is answered at once and never
// proposed; otherwise the compiled policy is returned for the decisions
// that follow it.
func (ls *leaderState) stagePolicy(o *op, sp *fsmpb.Policy) (*placement.Policy, bool) {
	np, err := placement.Compile(sp)
	if err == nil && sp.GetIfVersion() != 0 && (ls.staged != nil || sp.GetIfVersion() != ls.n.fsm.Policy().GetVersion()) {
		err = fmt.Errorf("%w: policy version %d is no longer current", fsm.ErrVersionMismatch, sp.GetIfVersion())
	}
	if err != nil {
		o.done <- opResult{res: &fsmpb.Result{ErrorCode: errcode.Code(err), ErrorMessage: err.Error()}}
		return nil, false
	}
	ls.staged = np
	return np, true
}

// placementRequest builds the placement request for r: the requester's
// region and zone come from its registry entry when the request names
// none, and Hosting, when the policy reads it, from the room's committed
// allocations plus the decisions still in flight (so a burst for one room
// stays together under room-affinity).
func (ls *leaderState) placementRequest(r *AllocateRequest) placement.Request {
	pr := placement.Request{ID: r.RequestID, Room: r.Room, Units: r.Units, Region: r.Region, Requester: r.Requester, Server: r.Server}
	if r.Requester != "" {
		if reg, zone, ok := ls.n.fsm.ServerDetails(r.Requester); ok && (pr.Region == "" || pr.Region == reg) {
			pr.Region, pr.Zone = reg, zone
		}
	}
	if ls.pix.needsHosting() {
		pr.Hosting = ls.hostingOf(r.Room)
	}
	return pr
}

// noteHosting records a decision of this batch in the room view.
func noteHosting(hosting map[string]map[string]int64, room, server string, units int64) {
	if hosting == nil {
		return
	}
	m := hosting[room]
	if m == nil {
		m = map[string]int64{}
		hosting[room] = m
	}
	m[server] += units
}
