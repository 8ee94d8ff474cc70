package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/placement/policyspec"
	"github.com/switchyard/switchyard/provision"
)

// This file is the leader side of provisioning and retirement.
//
// Provisioning, exactly once. When no server fits and this node has a
// provisioner (Config.Provisioner), the decision loop parks the request
// (parkForProvisioning never blocks) and the provisioning loop:
//
//  1. attaches it to an open provision intent that lists its request id
//     (a retry, possibly after a leader change) or that a new server of the
//     policy's expected capacity can still satisfy; otherwise commits a new
//     intent (PENDING, with a server id chosen by Apply);
//  2. claims every PENDING intent by committing PENDING -> STARTED (with
//     if_state, so only one claim can ever succeed) and only then runs the
//     provider. A leader that dies after the claim leaves the intent
//     STARTED: the next leader never runs it again, it waits for the server
//     to register or for the intent's deadline, then marks it FAILED;
//  3. when the server registers under the intent's id, Apply marks the
//     intent DONE and the parked requests are queued again (placed like
//     any other request); when the intent fails or the request's deadline
//     passes, the request is answered with an ErrCapacity error naming the
//     intent and why.
//
// Retirement. Servers started by a provision intent that have held nothing
// for Provisioning.idle_retire_ms (measured by this leader since it took
// over, so a new leader waits a full window) are drained while more than
// min_pool of them are active, and handed to a deprovision intent, which
// runs the provider's Deprovision step exactly like (2) and then
// deregisters the server. A provisioned server left drained and empty (by a
// leader that died between the drain and the intent, or by an operator) is
// handed to the provider the same way once idle for the window.

// parkGrace is how long past the provisioning timeout a parked request
// waits for its intent to be marked failed before it is answered anyway.
const parkGrace = 2 * time.Second

// parked is one request waiting for a provisioned server.
type parked struct {
	ops      []*op
	req      AllocateRequest
	intent   string
	deadline time.Time
}

// provisioner is the leader's provisioning state for one term.
type provisioner struct {
	ls   *leaderState
	prov provision.Provider
	kick chan struct{}

	mu     sync.Mutex
	parked map[string]*parked // request id -> waiting request
	// retried holds requests re-queued after their intent completed (and
	// when); a second no-fit is answered, not parked again.
	retried map[string]time.Time
	running map[string]bool // intents whose provider call runs here

	// Owned by the loop.
	idleFrom map[string]time.Time // provisioned server -> idle since (soft)
}

func newProvisioner(ls *leaderState, p provision.Provider) *provisioner {
	return &provisioner{ls: ls, prov: p, kick: make(chan struct{}, 1), parked: map[string]*parked{},
		retried: map[string]time.Time{}, running: map[string]bool{}, idleFrom: map[string]time.Time{}}
}

// parkForProvisioning takes over an op whose placement failed with err,
// when provisioning could help. It never blocks (decision loop).
func (ls *leaderState) parkForProvisioning(o *op, err error) bool {
	pv := ls.prov
	r := o.alloc
	if pv == nil || r == nil || r.Server != "" || !errors.Is(err, fsm.ErrCapacity) {
		return false
	}
	pol := ls.n.fsm.Policy().GetProvisioning()
	if pol.GetDisabled() || r.Units > policyspec.ServerCapacity(pol) {
		return false
	}
	pv.mu.Lock()
	defer pv.mu.Unlock()
	if p, ok := pv.parked[r.RequestID]; ok {
		p.ops = append(p.ops, o)
		return true
	}
	if _, ok := pv.retried[r.RequestID]; ok {
		delete(pv.retried, r.RequestID)
		return false
	}
	// The intent's own deadline (same timeout) normally answers first, with
	// its reason; this one is the backstop so no request waits forever.
	pv.parked[r.RequestID] = &parked{ops: []*op{o}, req: *r,
		deadline: time.Now().Add(time.Duration(policyspec.TimeoutMs(pol))*time.Millisecond + parkGrace)}
	select {
	case pv.kick <- struct{}{}:
	default:
	}
	return true
}

// loop attaches, claims, answers and retires every 100 ms (or when kicked)
// for the leader's term; it answers every parked request when the term ends.
func (pv *provisioner) loop() {
	ls := pv.ls
	defer ls.wg.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ls.ctx.Done():
			pv.failAll(ErrNotLeader)
			return
		case <-pv.kick:
		case <-t.C:
		}
		pv.attach()
		pv.advance()
		pv.answer()
		pv.retire()
		ls.n.m.provisionerPasses.Inc()
	}
}

func (pv *provisioner) submit(cmd *fsmpb.Command) (*fsmpb.Result, error) {
	ctx, cancel := context.WithTimeout(pv.ls.ctx, pv.ls.n.cfg.ApplyTimeout)
	defer cancel()
	return pv.ls.n.Submit(ctx, cmd)
}

// attach gives every parked request without an intent one: the open intent
// that already lists it, one with room for it, or a new one.
func (pv *provisioner) attach() {
	pv.mu.Lock()
	var todo []*parked
	for _, p := range pv.parked {
		if p.intent == "" {
			todo = append(todo, p)
		}
	}
	pv.mu.Unlock()
	slices.SortFunc(todo, func(a, b *parked) int { return a.deadline.Compare(b.deadline) })
	capacity := policyspec.ServerCapacity(pv.ls.n.fsm.Policy().GetProvisioning())
	for _, p := range todo {
		id, err := pv.intentFor(p.req, capacity)
		if err != nil {
			pv.ls.n.log.Warn("provisioning intent", "request", p.req.RequestID, "err", err)
			if errors.Is(err, ErrNotLeader) || errors.Is(err, ErrLeadershipLost) || errors.Is(err, context.Canceled) {
				return
			}
			pv.resolve(p.req.RequestID, fmt.Errorf("%w: no server fits and provisioning could not start: %v", fsm.ErrCapacity, err))
			continue
		}
		pv.mu.Lock()
		p.intent = id
		pv.mu.Unlock()
	}
}

func (pv *provisioner) intentFor(r AllocateRequest, capacity int64) (string, error) {
	var share *fsmpb.ProvisionIntent
	for _, it := range pv.ls.n.fsm.Intents() {
		if it.Kind != fsmpb.IntentKind_INTENT_KIND_PROVISION || !open(it) {
			continue
		}
		if slices.Contains(it.RequestIds, r.RequestID) {
			return it.Id, nil // a retry of a request already waiting
		}
		if share == nil && it.Units+r.Units <= capacity && (r.Region == "" || it.Region == r.Region) {
			share = it
		}
	}
	if share != nil {
		_, err := pv.submit(&fsmpb.Command{Cmd: &fsmpb.Command_UpdateIntent{UpdateIntent: &fsmpb.UpdateIntent{
			Id: share.Id, AddRequestIds: []string{r.RequestID}, AddUnits: r.Units, AddRooms: []string{r.Room}}}})
		if err == nil {
			return share.Id, nil
		}
		if !errors.Is(err, fsm.ErrVersionMismatch) {
			return "", err
		}
		// It completed meanwhile: start a new one.
	}
	res, err := pv.submit(&fsmpb.Command{Cmd: &fsmpb.Command_CreateIntent{CreateIntent: &fsmpb.ProvisionIntent{
		Kind: fsmpb.IntentKind_INTENT_KIND_PROVISION, Units: r.Units, Region: r.Region,
		RequestIds: []string{r.RequestID}, Rooms: []string{r.Room}}}})
	if err != nil {
		return "", err
	}
	pv.ls.n.log.Info("provisioning intent committed", "intent", res.GetIntent().GetId(), "server", res.GetIntent().GetServerId(), "request", r.RequestID)
	return res.GetIntent().GetId(), nil
}

func open(it *fsmpb.ProvisionIntent) bool {
	return it.State == fsmpb.IntentState_INTENT_STATE_PENDING || it.State == fsmpb.IntentState_INTENT_STATE_STARTED
}

// advance claims and runs pending intents and fails overdue ones.
func (pv *provisioner) advance() {
	now := time.Now()
	for _, it := range pv.ls.n.fsm.Intents() {
		switch {
		case it.State == fsmpb.IntentState_INTENT_STATE_PENDING:
			pv.claimAndRun(it)
		case it.State == fsmpb.IntentState_INTENT_STATE_STARTED && !pv.isRunning(it.Id) && now.UnixMilli() > it.DeadlineUnixMs:
			why := fmt.Sprintf("server %s did not register within %v of the intent", it.ServerId, time.Duration(it.DeadlineUnixMs-it.CreatedAtUnixMs)*time.Millisecond)
			if it.Kind == fsmpb.IntentKind_INTENT_KIND_DEPROVISION {
				why = fmt.Sprintf("deprovisioning %s did not finish before the deadline", it.ServerId)
			}
			pv.setState(it.Id, fsmpb.IntentState_INTENT_STATE_FAILED, why)
		}
	}
}

func (pv *provisioner) isRunning(id string) bool {
	pv.mu.Lock()
	defer pv.mu.Unlock()
	return pv.running[id]
}

func (pv *provisioner) setState(id string, st fsmpb.IntentState, why string) {
	_, err := pv.submit(&fsmpb.Command{Cmd: &fsmpb.Command_UpdateIntent{UpdateIntent: &fsmpb.UpdateIntent{Id: id, State: st, Error: why}}})
	if err != nil && !errors.Is(err, fsm.ErrVersionMismatch) {
		pv.ls.n.log.Warn("update provisioning intent", "intent", id, "state", fsm.IntentStateName(st), "err", err)
	}
}

// claimAndRun commits PENDING -> STARTED and, only once that committed,
// runs the provider in the background.
func (pv *provisioner) claimAndRun(it *fsmpb.ProvisionIntent) {
	ls := pv.ls
	_, err := pv.submit(&fsmpb.Command{Cmd: &fsmpb.Command_UpdateIntent{UpdateIntent: &fsmpb.UpdateIntent{
		Id: it.Id, State: fsmpb.IntentState_INTENT_STATE_STARTED, IfState: fsmpb.IntentState_INTENT_STATE_PENDING, Owner: ls.origin}}})
	if err != nil {
		// Maybe committed (leadership lost, unknown outcome): never run on a
		// maybe. The next leader sees STARTED or PENDING and acts on that.
		ls.n.log.Warn("claim provisioning intent", "intent", it.Id, "err", err)
		return
	}
	spec := provision.Spec{IntentID: it.Id, ServerID: it.ServerId, Region: it.Region, Zone: it.Zone, Units: it.Units,
		Capacity: policyspec.ServerCapacity(ls.n.fsm.Policy().GetProvisioning()), RequestIDs: it.RequestIds, Rooms: it.Rooms}
	for _, m := range ls.n.fsm.Members() {
		if m.HttpAddr != "" {
			spec.Cluster = append(spec.Cluster, m.HttpAddr)
		}
	}
	pv.mu.Lock()
	pv.running[it.Id] = true
	pv.mu.Unlock()
	deadline := time.UnixMilli(it.DeadlineUnixMs)
	kind := it.Kind
	ls.wg.Add(1)
	go func() {
		defer ls.wg.Done()
		defer func() {
			pv.mu.Lock()
			delete(pv.running, spec.IntentID)
			pv.mu.Unlock()
		}()
		ctx, cancel := context.WithDeadline(ls.ctx, deadline)
		defer cancel()
		start := time.Now()
		var err error
		if kind == fsmpb.IntentKind_INTENT_KIND_DEPROVISION {
			err = pv.prov.Deprovision(ctx, spec)
			if err == nil {
				_, err = pv.submit(&fsmpb.Command{Cmd: &fsmpb.Command_DeregisterServer{DeregisterServer: &fsmpb.DeregisterServer{Id: spec.ServerID}}})
				if errors.Is(err, fsm.ErrNotFound) {
					err = nil
				}
			}
			if err == nil {
				pv.setState(spec.IntentID, fsmpb.IntentState_INTENT_STATE_DONE, "")
			}
		} else {
			err = pv.prov.Provision(ctx, spec)
		}
		if err != nil {
			if ls.ctx.Err() == nil {
				pv.setState(spec.IntentID, fsmpb.IntentState_INTENT_STATE_FAILED, err.Error())
			}
			ls.n.log.Warn("provider failed", "provider", pv.prov.Name(), "intent", spec.IntentID, "server", spec.ServerID, "err", err)
		} else {
			ls.n.log.Info("provider accepted", "provider", pv.prov.Name(), "intent", spec.IntentID, "kind", fsm.IntentKindName(kind), "server", spec.ServerID, "took", time.Since(start))
		}
		select {
		case pv.kick <- struct{}{}:
		default:
		}
	}()
}

// answer re-queues requests whose intent is done and fails those whose
// intent failed or whose own deadline passed.
func (pv *provisioner) answer() {
	now := time.Now()
	pv.mu.Lock()
	var ready []*parked
	var fail []struct {
		id  string
		err error
	}
	for rid, at := range pv.retried {
		if now.Sub(at) > time.Minute { // placed long ago, or gone
			delete(pv.retried, rid)
		}
	}
	for rid, p := range pv.parked {
		var it *fsmpb.ProvisionIntent
		if p.intent != "" {
			it, _ = pv.ls.n.fsm.Intent(p.intent)
		}
		switch {
		case it != nil && it.State == fsmpb.IntentState_INTENT_STATE_DONE:
			ready = append(ready, p)
			delete(pv.parked, rid)
			pv.retried[rid] = now
		case it != nil && it.State == fsmpb.IntentState_INTENT_STATE_FAILED:
			fail = append(fail, struct {
				id  string
				err error
			}{rid, fmt.Errorf("%w: no server fits and provisioning intent %s (server %s) failed: %s", fsm.ErrCapacity, it.Id, it.ServerId, it.Error)})
		case now.After(p.deadline):
			fail = append(fail, struct {
				id  string
				err error
			}{rid, fmt.Errorf("%w: no server fits and provisioning intent %q did not bring a server up in time", fsm.ErrCapacity, p.intent)})
		}
	}
	pv.mu.Unlock()
	for _, f := range fail {
		pv.resolve(f.id, f.err)
	}
	for _, p := range ready {
		for _, o := range p.ops {
			select {
			case pv.ls.queue <- o:
			case <-pv.ls.ctx.Done():
				o.done <- opResult{err: ErrNotLeader}
			}
		}
	}
}

// resolve refuses every caller of a parked request with err: back through
// the decision loop, which answers them as it answers any refusal (a
// momentary one committed, so a later copy is refused alike).
func (pv *provisioner) resolve(requestID string, err error) {
	pv.mu.Lock()
	p := pv.parked[requestID]
	delete(pv.parked, requestID)
	pv.mu.Unlock()
	if p == nil {
		return
	}
	for _, o := range p.ops {
		o.refusal = err
		select {
		case pv.ls.queue <- o:
		case <-pv.ls.ctx.Done():
			o.done <- opResult{err: ErrNotLeader}
		}
	}
}

// failAll answers every parked request when leadership ends. The requests
// were not proposed as allocations, so ErrNotLeader (retry elsewhere) is
// exact; their intent, if any, is committed and the next leader resumes it.
func (pv *provisioner) failAll(err error) {
	pv.mu.Lock()
	ps := pv.parked
	pv.parked = map[string]*parked{}
	pv.mu.Unlock()
	for _, p := range ps {
		for _, o := range p.ops {
			o.done <- opResult{err: err}
		}
	}
}

// retire drains provisioned servers idle past the policy's window (beyond
// min_pool) and commits a deprovision intent for each.
func (pv *provisioner) retire() {
	n := pv.ls.n
	pol := n.fsm.Policy().GetProvisioning()
	if pol.GetIdleRetireMs() <= 0 {
		return
	}
	// Capped where it is used too: a policy stored before the input cap
	// (or restored from an old snapshot) must not overflow the duration
	// and retire every idle server at once.
	idleFor := time.Duration(min(pol.GetIdleRetireMs(), fsm.MaxIdleRetire.Milliseconds())) * time.Millisecond
	provisioned := map[string]bool{}
	busy := map[string]bool{}
	for _, it := range n.fsm.Intents() {
		switch {
		case it.Kind == fsmpb.IntentKind_INTENT_KIND_PROVISION && it.State == fsmpb.IntentState_INTENT_STATE_DONE:
			provisioned[it.ServerId] = true
		case it.Kind == fsmpb.IntentKind_INTENT_KIND_DEPROVISION && open(it):
			busy[it.ServerId] = true
		}
	}
	now := time.Now()
	var active int
	var idle, drained []string
	for _, s := range n.fsm.Servers() {
		if provisioned[s.Id] && s.State == fsmpb.ServerState_SERVER_STATE_DRAINING && s.UsedUnits == 0 && !busy[s.Id] {
			// Drained (by us before a leader change, or by an operator)
			// and empty: hand it to the provider once idle for the window.
			if since, ok := pv.idleFrom[s.Id]; !ok {
				pv.idleFrom[s.Id] = now
			} else if now.Sub(since) >= idleFor {
				drained = append(drained, s.Id)
			}
			continue
		}
		if !provisioned[s.Id] || s.State != fsmpb.ServerState_SERVER_STATE_ACTIVE {
			delete(pv.idleFrom, s.Id)
			continue
		}
		active++
		loaded := false
		if n.cfg.Loads != nil {
			if l, ok := n.cfg.Loads.Load(s.Id); ok && l.Peers > 0 {
				loaded = true
			}
		}
		if s.UsedUnits > 0 || loaded || busy[s.Id] {
			delete(pv.idleFrom, s.Id)
			continue
		}
		since, ok := pv.idleFrom[s.Id]
		if !ok {
			pv.idleFrom[s.Id] = now
			continue
		}
		if now.Sub(since) >= idleFor {
			idle = append(idle, s.Id)
		}
	}
	slices.Sort(drained)
	for _, id := range drained {
		pv.deprovision(id)
	}
	slices.Sort(idle)
	for _, id := range idle {
		if active <= int(pol.GetMinPool()) {
			return
		}
		srv, ok := n.fsm.Server(id)
		if !ok {
			continue
		}
		if _, err := pv.submit(&fsmpb.Command{Cmd: &fsmpb.Command_SetServerState{SetServerState: &fsmpb.SetServerState{
			Id: id, State: fsmpb.ServerState_SERVER_STATE_DRAINING, IfIncarnation: srv.Incarnation}}}); err != nil {
			n.log.Warn("drain idle server", "server", id, "err", err)
			continue
		}
		// A decision committed between the idle check and the drain wins:
		// put the server back.
		if s, ok := n.fsm.Server(id); ok && s.UsedUnits > 0 {
			_, _ = pv.submit(&fsmpb.Command{Cmd: &fsmpb.Command_SetServerState{SetServerState: &fsmpb.SetServerState{Id: id, State: fsmpb.ServerState_SERVER_STATE_ACTIVE}}})
			continue
		}
		if pv.deprovision(id) {
			active--
		}
	}
}

// deprovision commits a deprovision intent for a drained, empty server;
// advance then claims it and runs the provider.
func (pv *provisioner) deprovision(id string) bool {
	n := pv.ls.n
	srv, ok := n.fsm.Server(id)
	if !ok {
		return false
	}
	res, err := pv.submit(&fsmpb.Command{Cmd: &fsmpb.Command_CreateIntent{CreateIntent: &fsmpb.ProvisionIntent{
		Kind: fsmpb.IntentKind_INTENT_KIND_DEPROVISION, ServerId: id, Region: srv.Region, Zone: srv.Zone}}})
	if err != nil {
		n.log.Warn("deprovisioning intent", "server", id, "err", err)
		return false
	}
	delete(pv.idleFrom, id)
	n.log.Info("retiring idle server", "server", id, "intent", res.GetIntent().GetId())
	return true
}
