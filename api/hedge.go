package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Hedged allocations.
//
// An allocation sent to an agent that is frozen (SIGSTOP, a hung VM, a
// blackholed host) gets no answer at all. The per-attempt deadline bounds
// what that costs, but it must be long enough for a live agent to fail a
// forwarded request over to a new leader (two forward windows), so a
// client whose agent froze waited ~1.1 s (the default timing) before it
// turned to another. An allocation or room placement that has had no
// answer for a quarter of its attempt deadline is therefore sent again,
// with the same request id, to the next agent while the first copy keeps
// waiting; the first answer that settles the request ends the call. Both
// are idempotent (a request id is granted once), so the second copy
// never grants twice; at most two copies are in flight. Other requests
// are not hedged: a resent deregistration or release that overtakes a
// slow first copy would answer not_found for a request that succeeded.

// hedged reports whether a request is sent to a second agent when the
// first is slow to answer (see above).
func (c *Client) hedged(method, path string, body []byte, out any) bool {
	if method != http.MethodPost || !c.perAttempt(body, out) {
		return false
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	return path == "/v1/allocations" || (strings.HasPrefix(path, "/v1/rooms/") && strings.HasSuffix(path, "/placement"))
}

// hedgeDelay is how long the given attempt may stay unanswered before the
// next one starts beside it.
func (c *Client) hedgeDelay(attempt int) time.Duration { return c.attemptTimeout(attempt) / 4 }

// maxHedgedAnswer caps the body of a hedged request's answer (read whole
// before it is decoded, so that only the copy that wins writes out).
const maxHedgedAnswer = 1 << 20

// hedgedAnswer is what one attempt of a hedged request got.
type hedgedAnswer struct {
	attempt int // 0-based
	addr    int // index into addrs
	err     error
	header  http.Header
	body    []byte
}

// doHedged is doAfter for a hedged request. It keeps doAfter's rules:
// retryable failures are retried on the next address with backoff, and a
// momentary refusal settles the request only when no other copy of it may
// still be acted on. While a copy is in flight, no other answer but a
// grant or a committed refusal (every copy gets that one) ends the call:
// a refusal, even a final one such as rate_limited from one agent, waits
// for the other copy, which may still be granted; a copy that failed in a
// way worth retrying is replaced on the next agent (two copies at most);
// and a caller's context that ends lets the copies end with it before the
// call answers, so that it answers as doAfter would (an outcome unknown,
// never a refusal that a live copy could still contradict).
func (c *Client) doHedged(ctx context.Context, method, path string, body []byte, out any, unanswered bool) error {
	n := len(c.addrs)
	first := int(c.next.Load())
	// Every attempt sends one answer; at most two are in flight when the
	// call returns, and the buffer takes theirs.
	answers := make(chan hedgedAnswer, 2)
	cancels := map[int]context.CancelFunc{} // of the attempts in flight
	defer func() {
		for _, cancel := range cancels {
			cancel()
		}
	}()
	attempt, inflight := 0, 0
	hedge := time.NewTimer(time.Hour)
	defer hedge.Stop()
	launch := func() {
		k, i := attempt, (first+attempt)%n
		actx, cancel := context.WithTimeout(ctx, c.attemptTimeout(attempt))
		cancels[k] = cancel
		c.Attempts.Add(1)
		attempt++
		inflight++
		hedge.Reset(c.hedgeDelay(k))
		go func() {
			h, b, err := c.onceRaw(actx, c.addrs[i], method, path, body)
			answers <- hedgedAnswer{attempt: k, addr: i, err: err, header: h, body: b}
		}()
	}
	launch()
	var (
		last     error
		held     error // a refusal waiting for the copy still in flight
		retry    <-chan time.Time
		backoff  retryBackoff
		answered = time.Now() // when an agent last answered HTTP
		done     = ctx.Done() // nil once the context ended: draining
	)
	for {
		select {
		case <-done:
			if inflight == 0 {
				return gaveUp(last, n, attempt, ctx.Err())
			}
			// The copies' contexts end with ctx: wait for their answers.
			done, retry = nil, nil
			hedge.Stop()
		case <-hedge.C:
			if inflight == 1 && held == nil && done != nil {
				launch()
			}
		case <-retry:
			retry = nil
			if inflight < 2 && held == nil && done != nil {
				launch()
			}
		case a := <-answers:
			inflight--
			cancels[a.attempt]()
			delete(cancels, a.attempt)
			if a.err == nil {
				c.next.Store(int64(a.addr))
				return decodeAnswer(a, out)
			}
			last = a.err
			var ae *APIError
			isAPI := errors.As(a.err, &ae)
			if !IsRetryable(a.err) {
				if inflight == 0 || (isAPI && ae.Body.Committed) {
					return settleRefusal(a.err, unanswered)
				}
				held = a.err // the other copy may still be granted
				continue
			}
			unanswered = unanswered || mayHaveArrived(a.err)
			if wasAnswered(a.err) {
				answered = time.Now()
			}
			if ctx.Err() != nil {
				done, retry = nil, nil // draining: no more copies
			}
			switch {
			case inflight > 0 && (held != nil || done == nil):
				continue // the other copy may still answer
			case done == nil:
				// The context ended and every copy has answered: as
				// doAfter, whatever a copy was refused.
				return gaveUp(last, n, attempt, ctx.Err())
			case held != nil:
				return settleRefusal(held, unanswered)
			case c.NoAnswerTimeout > 0 && inflight == 0 && time.Since(answered) >= c.NoAnswerTimeout:
				return c.noAnswer(last)
			}
			// The next agent, beside the copy still in flight if there is
			// one.
			if retry == nil {
				retry = time.After(backoff.next())
			}
		}
	}
}

// onceRaw sends one attempt and returns a successful answer's header and
// body (at most maxHedgedAnswer bytes), or the error once would.
func (c *Client) onceRaw(ctx context.Context, addr, method, path string, body []byte) (http.Header, []byte, error) {
	req, err := c.newRequest(ctx, addr, method, path, body)
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return nil, nil, answerError(method, path, resp)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxHedgedAnswer+1))
	if err == nil && len(b) > maxHedgedAnswer {
		err = fmt.Errorf("%s %s: answer over %d bytes", method, path, maxHedgedAnswer)
	}
	return resp.Header, b, err
}

// decodeAnswer writes the winning attempt's answer into out, as once
// does.
func decodeAnswer(a hedgedAnswer, out any) error {
	if wh, ok := out.(*withHeader); ok {
		wh.header, out = a.header, wh.out
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(bytes.NewReader(a.body)).Decode(out)
}
