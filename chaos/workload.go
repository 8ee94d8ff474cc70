package chaos

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/fsm"
)

// params derives a request id's room and units from the id itself, so a
// retry or a duplicate sent by another client carries the same parameters
// (the FSM refuses a reused id with different ones).
func params(key string) (room string, units int64) {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	v := h.Sum32()
	return fmt.Sprintf("room-%d", v%16), int64(1 + v%3)
}

// allocTTL is every allocation's TTL: far longer than any run, so an
// allocation that expires during one was expired early (a leader's clock
// jump, say), and no_lost_ack reports it.
const allocTTL = time.Hour

// keyPool holds recently granted request ids for duplicates and releases
// sent by other clients.
type keyPool struct {
	mu   sync.Mutex
	keys []string
}

func (p *keyPool) add(k string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys = append(p.keys, k)
	if len(p.keys) > 256 {
		p.keys = p.keys[len(p.keys)-256:]
	}
}

func (p *keyPool) random(r *rand.Rand) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.keys) == 0 {
		return ""
	}
	return p.keys[r.IntN(len(p.keys))]
}

// classify maps an allocate/release error to an outcome: only a refusal
// by the state machine is definite; everything else may have been applied.
func classify(kind Kind, err error) Outcome {
	if err == nil {
		return OK
	}
	if api.IsRetryable(err) {
		return Unknown
	}
	var ae *api.APIError
	if !errors.As(err, &ae) {
		return Unknown
	}
	switch {
	case kind == KindAllocate && (errors.Is(err, fsm.ErrCapacity) || errors.Is(err, fsm.ErrServerNotActive) || errors.Is(err, fsm.ErrInvalid)):
		return Fail
	case kind == KindRelease && errors.Is(err, fsm.ErrNotFound):
		return Fail
	}
	return Unknown
}

// workload runs one client: new allocations, releases of its own (and
// others') grants, and duplicates of other clients' request ids, until
// stop is closed. Each operation has its own deadline (the API client
// retries inside it), independent of stop, so stopping never turns an
// operation into an unknown one.
type workload struct {
	id      int
	cl      *api.Client
	node    string
	h       *History
	pool    *keyPool
	timeout time.Duration
	mu      sync.Mutex // guards rand
	rand    *rand.Rand
	// rate, when > 0, limits this client to rate operations per second.
	rate float64
	// direct, when set, replaces cl's retries: one non-retrying client per
	// node, tried in turn with a 2–20 ms backoff (see Config.FastRetry).
	direct []*api.Client
}

// call runs f with cl's own retries, or, with direct clients, retries
// retryable errors itself across the nodes (same request, so the same
// request id) until ctx ends.
func (w *workload) call(ctx context.Context, f func(context.Context, *api.Client) error) error {
	if len(w.direct) == 0 {
		return f(ctx, w.cl)
	}
	backoff := 2 * time.Millisecond
	// After an attempt that went unanswered, a momentary refusal does not
	// settle the request (errcode.Unsettled), as in the SDK's own retries.
	unanswered := false
	for attempt := 0; ; attempt++ {
		// One attempt may not wait out a dial to a node whose address
		// went dark (a killed container): its outcome is unknown, and
		// the retry carries the same request id.
		actx, cancel := context.WithTimeout(ctx, time.Second)
		err := f(actx, w.direct[attempt%len(w.direct)])
		timedOut := err != nil && ctx.Err() == nil && actx.Err() != nil
		cancel()
		if timedOut {
			err = &api.APIError{Status: 503, Body: api.Error{Error: "attempt timed out: " + err.Error(), Code: "unknown_outcome", Retryable: true}}
		}
		var ae *api.APIError
		if err != nil && !api.IsRetryable(err) && unanswered && errors.As(err, &ae) && errcode.Unsettling(ae.Body.Code, ae.Body.Committed) {
			return errcode.Unsettled(ae.Body.Error)
		}
		if err == nil || !api.IsRetryable(err) {
			return err
		}
		unanswered = unanswered || !errors.As(err, &ae) || errcode.OutcomeUnknown(ae.Body.Code)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %v)", err, ctx.Err())
		case <-time.After(backoff/2 + w.jitter(backoff/2)):
		}
		backoff = min(2*backoff, 20*time.Millisecond)
	}
}

func (w *workload) jitter(d time.Duration) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return time.Duration(w.rand.Int64N(int64(d) + 1))
}

func (w *workload) run(stop <-chan struct{}) {
	var mine []string
	var interval time.Duration
	if w.rate > 0 {
		interval = time.Duration(float64(time.Second) / w.rate)
	}
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return
		default:
		}
		t0 := time.Now()
		w.mu.Lock()
		r := w.rand.Float64()
		w.mu.Unlock()
		switch {
		case r < 0.45 || len(mine) == 0:
			key := fmt.Sprintf("c%d-%d", w.id, seq)
			if w.allocate(key) != Fail {
				mine = append(mine, key)
				w.pool.add(key)
			}
		case r < 0.85:
			// Release the oldest of ours (any outcome: a retry later
			// would be a no-op or not-found, both legal).
			key := mine[0]
			mine = mine[1:]
			w.release(key)
		default:
			w.mu.Lock()
			key := w.pool.random(w.rand)
			w.mu.Unlock()
			if key != "" {
				w.allocate(key)
			}
		}
		if interval > 0 {
			select {
			case <-stop:
				return
			case <-time.After(interval - time.Since(t0)):
			}
		}
	}
}

func (w *workload) allocate(key string) Outcome {
	room, units := params(key)
	i := w.h.Invoke(Op{Client: w.id, Kind: KindAllocate, Key: key, Node: w.node, Units: units})
	ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
	var a api.Allocation
	err := w.call(ctx, func(ctx context.Context, cl *api.Client) (err error) {
		a, err = cl.Allocate(ctx, api.AllocateRequest{RequestID: key, Room: room, Units: units, TTLMs: allocTTL.Milliseconds()})
		return err
	})
	cancel()
	res := classify(KindAllocate, err)
	w.h.Complete(i, res, func(op *Op) {
		if err != nil {
			op.Err = err.Error()
			return
		}
		op.AllocID, op.Server, op.State = a.ID, a.Server, a.State
	})
	return res
}

func (w *workload) release(key string) {
	i := w.h.Invoke(Op{Client: w.id, Kind: KindRelease, Key: key, Node: w.node})
	ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
	var a api.Allocation
	err := w.call(ctx, func(ctx context.Context, cl *api.Client) (err error) {
		a, err = cl.Release(ctx, key)
		return err
	})
	cancel()
	w.h.Complete(i, classify(KindRelease, err), func(op *Op) {
		if err != nil {
			op.Err = err.Error()
			return
		}
		op.AllocID, op.Server, op.State = a.ID, a.Server, a.State
	})
}
