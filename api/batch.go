package api

import (
	"context"
	"fmt"
	"sync"

	"github.com/switchyard/switchyard/errcode"
)

// MaxBatch caps the allocation requests in one POST /v1/allocations/batch
// body; a larger batch is refused whole with invalid_argument.
const MaxBatch = 1000

// BatchAllocateRequest is the body of POST /v1/allocations/batch.
type BatchAllocateRequest struct {
	Requests []AllocateRequest `json:"requests"`
}

// BatchResult is one request's answer in a batch, in request order: the
// HTTP status the single endpoint would have answered, and its body (an
// allocation, or an error).
type BatchResult struct {
	Status     int         `json:"status"`
	Allocation *Allocation `json:"allocation,omitempty"`
	Error      *Error      `json:"error,omitempty"`
}

// BatchAllocateResponse is the answer of POST /v1/allocations/batch.
type BatchAllocateResponse struct {
	Results []BatchResult `json:"results"`
}

// batcher coalesces a Client's concurrent Allocate calls into batch
// requests: a call is sent at once when fewer than maxInflight batches
// are out; otherwise it waits for the next batch, which takes every call
// queued meanwhile (up to MaxBatch). One caller alone therefore pays no
// wait, and many share one HTTP exchange and one forward to the leader.
type batcher struct {
	c           *Client
	mu          sync.Mutex
	pending     []*batchCall
	inflight    int
	maxInflight int
}

type batchCall struct {
	req  AllocateRequest
	done chan batchAnswer // buffered: the sender never blocks
}

type batchAnswer struct {
	a   Allocation
	err error
	// fallback: the batch could not answer this call (transport failure,
	// a retryable refusal): the caller sends it alone, with retries.
	fallback bool
	// unanswered: the batch may have reached an agent that can still act
	// on the call (see Client.doAfter).
	unanswered bool
}

func (b *batcher) allocate(ctx context.Context, r AllocateRequest) (Allocation, error) {
	call := &batchCall{req: r, done: make(chan batchAnswer, 1)}
	b.mu.Lock()
	b.pending = append(b.pending, call)
	if b.inflight < b.maxInflight {
		b.inflight++
		go b.flush()
	}
	b.mu.Unlock()
	select {
	case ans := <-call.done:
		if ans.fallback {
			return b.c.allocateAfter(ctx, r, ans.unanswered)
		}
		return ans.a, ans.err
	case <-ctx.Done():
		// The batch may still commit it: the request id makes a retry safe.
		return Allocation{}, fmt.Errorf("%w: %w", errcode.ErrUnknownOutcome, ctx.Err())
	}
}

// flush sends batches until nothing is pending.
func (b *batcher) flush() {
	for {
		b.mu.Lock()
		n := min(len(b.pending), MaxBatch)
		if n == 0 {
			b.inflight--
			b.mu.Unlock()
			return
		}
		calls := b.pending[:n:n]
		b.pending = b.pending[n:]
		b.mu.Unlock()
		b.send(calls)
	}
}

func (b *batcher) send(calls []*batchCall) {
	body := BatchAllocateRequest{Requests: make([]AllocateRequest, len(calls))}
	for i, c := range calls {
		body.Requests[i] = c.req
	}
	var res BatchAllocateResponse
	// One attempt: a failed batch is resent call by call, each with the
	// client's retries and its caller's deadline.
	ctx, cancel := context.WithTimeout(context.Background(), b.c.hc.Timeout)
	defer cancel()
	err := b.c.once(ctx, b.c.pick(), "POST", "/v1/allocations/batch", mustJSON(body), &res)
	if err != nil || len(res.Results) != len(calls) {
		// A malformed answer came from an agent that ran the batch.
		unanswered := err == nil || mayHaveArrived(err)
		for _, c := range calls {
			c.done <- batchAnswer{fallback: true, unanswered: unanswered}
		}
		return
	}
	for i, c := range calls {
		r := res.Results[i]
		switch {
		case r.Error != nil && r.Error.Retryable:
			c.done <- batchAnswer{fallback: true, unanswered: mayHaveArrived(&APIError{Status: r.Status, Body: *r.Error})}
		case r.Error != nil:
			c.done <- batchAnswer{err: &APIError{Status: r.Status, Body: *r.Error}}
		case r.Allocation != nil:
			c.done <- batchAnswer{a: *r.Allocation}
		default:
			c.done <- batchAnswer{fallback: true, unanswered: true}
		}
	}
}
