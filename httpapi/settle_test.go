package httpapi

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/api"
)

// TestSettle: after an unanswered attempt, a momentary refusal (of the
// request, or of an item of a batch) that the leader did not commit is
// answered as unknown_outcome; every other answer passes unchanged.
func TestSettle(t *testing.T) {
	one := func(status int, code string) *forwardAnswer {
		b, _ := json.Marshal(api.Error{Error: code + " message", Code: code})
		return &forwardAnswer{status: status, header: http.Header{}, body: b}
	}
	committed := func(code string) *forwardAnswer {
		b, _ := json.Marshal(api.Error{Error: code + " message", Code: code, Committed: true})
		return &forwardAnswer{status: 409, header: http.Header{}, body: b}
	}
	batch := func(codes ...string) *forwardAnswer {
		var res api.BatchAllocateResponse
		for _, c := range codes {
			if c == "" {
				res.Results = append(res.Results, api.BatchResult{Status: 201, Allocation: &api.Allocation{ID: "a1"}})
				continue
			}
			code, isCommitted := strings.CutSuffix(c, "+committed")
			res.Results = append(res.Results, api.BatchResult{Status: 409, Error: &api.Error{Error: code + " message", Code: code, Committed: isCommitted}})
		}
		b, _ := json.Marshal(res)
		return &forwardAnswer{status: http.StatusOK, header: http.Header{}, body: b}
	}
	codesOf := func(a *forwardAnswer, isBatch bool) []string {
		if !isBatch {
			var e api.Error
			_ = json.Unmarshal(a.body, &e)
			return []string{e.Code}
		}
		var res api.BatchAllocateResponse
		_ = json.Unmarshal(a.body, &res)
		var out []string
		for _, r := range res.Results {
			if r.Error == nil {
				out = append(out, "")
			} else {
				out = append(out, r.Error.Code)
			}
		}
		return out
	}
	for _, tc := range []struct {
		name       string
		in         *forwardAnswer
		batch      bool
		wantStatus int
		want       []string
	}{
		{"capacity refusal", one(409, "insufficient_capacity"), false, 503, []string{"unknown_outcome"}},
		{"server not active", one(409, "server_not_active"), false, 503, []string{"unknown_outcome"}},
		{"invalid input stands", one(400, "invalid_argument"), false, 400, []string{"invalid_argument"}},
		{"request id reused stands", one(409, "request_id_reused"), false, 409, []string{"request_id_reused"}},
		{"grant stands", &forwardAnswer{status: 201, body: []byte(`{"id":"a1"}`)}, false, 201, []string{""}},
		{"batch items", batch("", "insufficient_capacity", "invalid_argument"), true, 200, []string{"", "unknown_outcome", "invalid_argument"}},
		{"batch refused whole", one(403, "permission_denied"), true, 403, []string{"permission_denied"}},
		{"committed refusal stands", committed("insufficient_capacity"), false, 409, []string{"insufficient_capacity"}},
		{"committed batch item stands", batch("insufficient_capacity+committed", "server_not_active"), true, 200, []string{"insufficient_capacity", "unknown_outcome"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := settle(tc.in, tc.batch)
			if out.status != tc.wantStatus {
				t.Fatalf("status %d, want %d", out.status, tc.wantStatus)
			}
			got := codesOf(out, tc.batch && out.status == http.StatusOK)
			if len(got) != len(tc.want) {
				t.Fatalf("codes %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("codes %v, want %v", got, tc.want)
				}
			}
		})
	}
}
