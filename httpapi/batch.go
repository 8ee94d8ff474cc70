package httpapi

import (
	"fmt"
	"net/http"
	"sync"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
)

// allocateBatch runs many allocation requests in one HTTP exchange: a
// follower forwards the whole batch to the leader in one request, and the
// leader hands every request to its decision loop at once, so they share
// log entries. Each request gets exactly the validation, idempotency and
// error codes of POST /v1/allocations (allocateOne).
func (s *Handler) allocateBatch(w http.ResponseWriter, r *http.Request) {
	var req api.BatchAllocateRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, err)
		return
	}
	if len(req.Requests) > api.MaxBatch {
		s.fail(w, fmt.Errorf("%w: %d requests in one batch (at most %d)", fsm.ErrInvalid, len(req.Requests), api.MaxBatch))
		return
	}
	res := api.BatchAllocateResponse{Results: make([]api.BatchResult, len(req.Requests))}
	var wg sync.WaitGroup
	for i, one := range req.Requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, code, err := s.allocateOne(r.Context(), one)
			if err != nil {
				status, e := s.errorFor(err)
				res.Results[i] = api.BatchResult{Status: status, Error: e}
				return
			}
			res.Results[i] = api.BatchResult{Status: code, Allocation: &a}
		}()
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, res)
}
