package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/errcode"
)

// Settling a forwarded answer.
//
// A forwarded attempt that went unanswered (its leader froze, or was cut
// off) may still reach that node later — a partition heals and the
// request's packets arrive — and be granted then. A momentary refusal
// (insufficient capacity, a server not active) from a later attempt does
// not settle such a request: answered as final, it would be contradicted
// by the late grant. It is answered as errcode.Unsettled instead (503
// unknown_outcome, retryable): the caller learns the outcome by sending
// the request again with the same request id.

// unsettledError is the wire error for a momentary refusal e that does
// not settle its request.
func unsettledError(e *api.Error) *api.Error {
	err := errcode.Unsettled(e.Error)
	return &api.Error{Error: err.Error(), Code: errcode.Code(err), Retryable: true, Leader: e.Leader}
}

// settleItem is the answer to give instead of r, one result of a batch
// with an unanswered earlier attempt; ok is false when r stands as it is.
func settleItem(r api.BatchResult) (api.BatchResult, bool) {
	if r.Error == nil || !errcode.Unsettling(r.Error.Code, r.Error.Committed) {
		return r, false
	}
	return api.BatchResult{Status: http.StatusServiceUnavailable, Error: unsettledError(r.Error)}, true
}

// settle rewrites the leader's answer a to a forwarded request whose
// earlier attempt went unanswered: a momentary refusal, of the request or
// of an item of a batch, becomes unknown_outcome. Any other answer is
// returned as it is.
func settle(a *forwardAnswer, batch bool) *forwardAnswer {
	if batch {
		if a.status != http.StatusOK {
			return settle(a, false)
		}
		var res api.BatchAllocateResponse
		if json.Unmarshal(a.body, &res) != nil {
			return a
		}
		changed := false
		for i, r := range res.Results {
			if s, ok := settleItem(r); ok {
				res.Results[i], changed = s, true
			}
		}
		if !changed {
			return a
		}
		b, err := json.Marshal(res)
		if err != nil {
			return a
		}
		return &forwardAnswer{status: a.status, header: a.header, body: b}
	}
	var e api.Error
	if a.status < 400 || json.Unmarshal(a.body, &e) != nil || !errcode.Unsettling(e.Code, e.Committed) {
		return a
	}
	b, err := json.Marshal(unsettledError(&e))
	if err != nil {
		return a
	}
	h := a.header.Clone()
	h.Del("Content-Length")
	return &forwardAnswer{status: http.StatusServiceUnavailable, header: h, body: b}
}
