package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// Coalescing forwarded allocations.
//
// A follower that proxied every POST /v1/allocations on its own made the
// leader serve one HTTP exchange per allocation: two thirds of a
// three-agent cluster's traffic paid for a second request, parse and
// answer. Instead, allocations waiting to be forwarded are grouped: while
// fewer than coalesceInflight batches are on their way to the leader, a
// request goes at once (one caller alone waits for nothing); otherwise it
// joins the next batch, which takes every request queued meanwhile (up to
// coalesceMax). A batch is one POST /v1/allocations/batch, forwarded with
// the same failover as any request (cluster.Node.Forward: bounded
// attempts, re-sent with the same request ids to a new leader), and each
// caller gets exactly the status and body the leader's single endpoint
// gives (the batch endpoint runs the same code per request).
//
// Credentials are never mixed: requests are grouped by their credential
// headers (Authorization, and the certificate a request came with, named
// to the leader in principalHeader; the forwarding follower's own TLS
// identity is the same for all), so the leader authenticates and
// rate-limits each group as it would the requests themselves.

const (
	// coalesceMax caps the allocations in one forwarded batch (well under
	// api.MaxBatch), and coalesceMaxBytes its encoded size (half the
	// leader's body cap: every request is within the input caps, but JSON
	// escaping can grow a field sixfold).
	coalesceMax      = 256
	coalesceMaxBytes = maxJSONBody / 2
	// coalesceRounds bounds the re-sends of the requests a leader refused
	// as not_leader inside a batch (it lost leadership while serving it).
	coalesceRounds = 3
	// coalesceInflight is how many batches of one group may be on their
	// way to the leader at once.
	coalesceInflight = 8
	// coalesceGroups caps the groups (distinct credentials with requests
	// queued or in flight; an idle group is forgotten); beyond it a
	// request is forwarded alone.
	coalesceGroups = 1024
)

// coalescer groups a follower's forwarded allocations into batches.
type coalescer struct {
	s       *Handler
	fw      leaderForwarder
	batches prometheus.Counter
	calls   prometheus.Counter

	mu     sync.Mutex
	groups map[string]*coalesceGroup
}

// coalesceGroup is the queue of one credential.
type coalesceGroup struct {
	key      string
	header   http.Header // the credential headers every batch carries
	pending  []*coalesceCall
	inflight int
}

type coalesceCall struct {
	req  api.AllocateRequest
	size int                 // encoded size
	ctx  context.Context     // the caller's request: done once it gave up
	done chan coalesceAnswer // buffered: the sender never blocks
}

// coalesceAnswer is one caller's answer: what the leader's single endpoint
// would have written, or a forwarding error.
type coalesceAnswer struct {
	status int
	alloc  *api.Allocation
	apiErr *api.Error
	err    error
	st     cluster.ForwardStats
}

func newCoalescer(s *Handler, fw leaderForwarder, reg prometheus.Registerer) *coalescer {
	c := &coalescer{s: s, fw: fw, groups: map[string]*coalesceGroup{},
		batches: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_forward_batches_total",
			Help: "Batches of allocations a follower forwarded to the leader."}),
		calls: prometheus.NewCounter(prometheus.CounterOpts{Name: "switchyard_forward_batched_allocations_total",
			Help: "Allocations a follower forwarded to the leader inside a batch."}),
	}
	reg.MustRegister(c.batches, c.calls)
	return c
}

// credentialHeaders are the request headers a batch carries on behalf of
// its callers; requests are grouped by their values.
func credentialHeaders(r *http.Request) (string, http.Header) {
	h := http.Header{"Content-Type": {"application/json"}}
	auth, who, unverified := r.Header.Get("Authorization"), r.Header.Get(principalHeader), r.Header.Get(unverifiedHeader)
	if auth != "" {
		h.Set("Authorization", auth)
	}
	if who != "" {
		h.Set(principalHeader, who)
	}
	if unverified != "" {
		h.Set(unverifiedHeader, unverified)
	}
	return auth + "\x00" + who + "\x00" + unverified, h
}

// allocate forwards one allocation within a batch and writes its answer.
// It returns false, having written nothing, for a request the leader would
// refuse on its input (over a cap, no request id, no units: sent alone, so
// it can never spoil a batch and its refusal reads the same) and when too
// many credentials are being coalesced already: the caller forwards the
// request alone then.
func (c *coalescer) allocate(w http.ResponseWriter, r *http.Request, req api.AllocateRequest) bool {
	if req.RequestID == "" || req.Units <= 0 ||
		fsm.CheckAllocateInput(req.RequestID, req.Room, req.Requester, req.Region, req.Server, req.TTLMs) != nil {
		return false
	}
	enc, err := json.Marshal(req)
	if err != nil {
		return false
	}
	key, header := credentialHeaders(r)
	call := &coalesceCall{req: req, size: len(enc) + 1, ctx: r.Context(), done: make(chan coalesceAnswer, 1)}
	c.mu.Lock()
	g := c.groups[key]
	if g == nil {
		if len(c.groups) >= coalesceGroups {
			c.mu.Unlock()
			return false
		}
		g = &coalesceGroup{key: key, header: header}
		c.groups[key] = g
	}
	g.pending = append(g.pending, call)
	if g.inflight < coalesceInflight {
		g.inflight++
		go c.flush(g)
	}
	c.mu.Unlock()
	var ans coalesceAnswer
	select {
	case ans = <-call.done:
	case <-r.Context().Done():
		// The batch may still commit it; the request id makes a retry safe.
		c.s.fail(w, fmt.Errorf("%w: %w", errcode.ErrUnknownOutcome, r.Context().Err()))
		return true
	}
	w.Header().Set(forwardAttemptsHeader, strconv.Itoa(ans.st.Attempts))
	w.Header().Set(forwardLeadersHeader, strings.Join(ans.st.Leaders, ","))
	switch {
	case ans.err != nil:
		c.s.fail(w, ans.err)
	case ans.apiErr != nil:
		writeError(w, ans.status, ans.apiErr)
	default:
		writeJSON(w, ans.status, ans.alloc)
	}
	return true
}

// flush sends batches of g until nothing is pending.
func (c *coalescer) flush(g *coalesceGroup) {
	for {
		c.mu.Lock()
		n, size := 0, 0
		for n < len(g.pending) && n < coalesceMax && (n == 0 || size+g.pending[n].size <= coalesceMaxBytes) {
			size += g.pending[n].size
			n++
		}
		if n == 0 {
			g.inflight--
			if g.inflight == 0 {
				// Idle: forget the group (and the credential it holds).
				delete(c.groups, g.key)
			}
			c.mu.Unlock()
			return
		}
		calls := g.pending[:n:n]
		g.pending = g.pending[n:]
		c.mu.Unlock()
		c.send(g.header, calls, coalesceRounds)
	}
}

// send forwards one batch and answers its callers. Requests the leader
// refused as not_leader or no_leader (it lost leadership while serving the
// batch; none was proposed) are sent again, up to rounds times in all, as
// a request forwarded alone would be.
func (c *coalescer) send(header http.Header, calls []*coalesceCall, rounds int) {
	// The batch lives as long as one of its callers waits (and at most the
	// forwarding timeout): when the last caller gives up, or the agent
	// closes their connections at shutdown, the attempt in flight ends too.
	ctx, cancel := context.WithTimeout(context.Background(), c.s.fwd.Timeout)
	defer cancel()
	waiting := atomic.Int64{}
	waiting.Store(int64(len(calls)))
	for _, call := range calls {
		stop := context.AfterFunc(call.ctx, func() {
			if waiting.Add(-1) == 0 {
				cancel()
			}
		})
		defer stop()
	}
	// Every attempt (the first, and each re-send to a new leader) carries
	// only the requests whose callers still wait: a caller that gave up
	// may already have sent the same request id again elsewhere and taken
	// that answer (a refusal, say), so its old copy must not be granted
	// later. This is what a request forwarded alone does: its forward ends
	// with the caller's request.
	var (
		ans  *forwardAnswer
		sent []*coalesceCall
	)
	st, err := c.fw.Forward(ctx, true, func(actx context.Context, lid string, m *fsmpb.Member) error {
		live := make([]*coalesceCall, 0, len(calls))
		for _, call := range calls {
			if call.ctx.Err() == nil {
				live = append(live, call)
			}
		}
		if len(live) == 0 {
			ans, sent = nil, nil
			return nil // nobody waits any more: nothing to send
		}
		body := api.BatchAllocateRequest{Requests: make([]api.AllocateRequest, len(live))}
		for i, call := range live {
			body.Requests[i] = call.req
		}
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		c.batches.Inc()
		c.calls.Add(float64(len(live)))
		a, err := c.s.forwardRaw(actx, http.MethodPost, "/v1/allocations/batch", header, raw, lid, m)
		if err != nil {
			return err
		}
		if err := refusedAsNotLeader(a, lid); err != nil {
			return err
		}
		ans, sent = a, live
		return nil
	})
	if st.Attempts > 1 {
		c.s.log.Info("forwarded batch failed over to another leader", "allocations", len(calls), "attempts", st.Attempts, "leaders", st.Leaders, "err", err)
	}
	if err == nil && ans == nil {
		// Every caller gave up; they were answered when they did.
		c.answerAll(calls, coalesceAnswer{err: fmt.Errorf("%w: the caller gave up", errcode.ErrUnknownOutcome), st: st})
		return
	}
	if err == nil && len(sent) < len(calls) {
		// Those left out gave up meanwhile (nobody reads their answer).
		gone := make([]*coalesceCall, 0, len(calls)-len(sent))
		for _, call := range calls {
			if !slices.Contains(sent, call) {
				gone = append(gone, call)
			}
		}
		c.answerAll(gone, coalesceAnswer{err: fmt.Errorf("%w: the caller gave up", errcode.ErrUnknownOutcome), st: st})
		calls = sent
	}
	if err != nil {
		c.answerAll(calls, coalesceAnswer{err: err, st: st})
		return
	}
	if ans.status != http.StatusOK {
		// The leader refused the batch as a whole (credentials, rate):
		// every caller gets that refusal.
		var e api.Error
		if json.Unmarshal(ans.body, &e) != nil || e.Code == "" {
			e = api.Error{Error: fmt.Sprintf("leader answered HTTP %d to a forwarded batch", ans.status), Code: errcode.Internal}
		}
		c.answerAll(calls, coalesceAnswer{status: ans.status, apiErr: &e, st: st})
		return
	}
	var res api.BatchAllocateResponse
	if err := json.Unmarshal(ans.body, &res); err != nil || len(res.Results) != len(calls) {
		// An answer that does not fit the batch: the allocations may have
		// been granted, so the callers retry with their request ids.
		c.answerAll(calls, coalesceAnswer{err: fmt.Errorf("%w: malformed batch answer from the leader", errcode.ErrUnknownOutcome), st: st})
		return
	}
	var again []*coalesceCall
	for i, call := range calls {
		r := res.Results[i]
		if st.Unanswered {
			// An earlier attempt of this batch went unanswered: a
			// momentary refusal does not settle the request (settle.go).
			r, _ = settleItem(r)
		}
		switch {
		case r.Error != nil && (r.Error.Code == "not_leader" || r.Error.Code == "no_leader") && rounds > 1:
			again = append(again, call)
		case r.Error != nil:
			call.done <- coalesceAnswer{status: r.Status, apiErr: r.Error, st: st}
		case r.Allocation != nil:
			call.done <- coalesceAnswer{status: r.Status, alloc: r.Allocation, st: st}
		default:
			call.done <- coalesceAnswer{err: fmt.Errorf("%w: empty result in the leader's batch answer", errcode.ErrUnknownOutcome), st: st}
		}
	}
	if len(again) > 0 {
		c.send(header, again, rounds-1)
	}
}

func (c *coalescer) answerAll(calls []*coalesceCall, a coalesceAnswer) {
	for _, call := range calls {
		call.done <- a
	}
}
