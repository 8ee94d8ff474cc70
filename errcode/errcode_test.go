package errcode_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/switchyard/switchyard/errcode"
)

func TestRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for _, e := range errcode.Table() {
		t.Run(e.Code, func(t *testing.T) {
			if seen[e.Code] {
				t.Fatalf("code %q appears twice", e.Code)
			}
			seen[e.Code] = true
			wrapped := fmt.Errorf("%w: details", e.Err)
			if got := errcode.Code(wrapped); got != e.Code {
				t.Fatalf("Code = %q, want %q", got, e.Code)
			}
			back := errcode.FromCode(e.Code, wrapped.Error())
			if !errors.Is(back, e.Err) || back.Error() != wrapped.Error() {
				t.Fatalf("round trip: %v", back)
			}
			if errcode.Retryable(back) != e.Retryable || errcode.HTTPStatus(back) != e.HTTPStatus {
				t.Fatalf("retryable/status lost in the round trip")
			}
		})
	}
}

func TestUnknown(t *testing.T) {
	cases := []struct {
		err    error
		code   string
		status int
	}{
		{errors.New("boom"), "", http.StatusInternalServerError},
		{fmt.Errorf("commit: %w", context.DeadlineExceeded), "unknown_outcome", http.StatusServiceUnavailable},
		{nil, "", http.StatusInternalServerError},
	}
	for _, c := range cases {
		if got := errcode.Code(c.err); got != c.code {
			t.Errorf("Code(%v) = %q, want %q", c.err, got, c.code)
		}
		if got := errcode.HTTPStatus(c.err); got != c.status {
			t.Errorf("HTTPStatus(%v) = %d, want %d", c.err, got, c.status)
		}
	}
	if err := errcode.FromCode("no_such_code", "msg"); err.Error() != "msg" {
		t.Fatalf("unknown code: %v", err)
	}
}

// Only refusals that depend on the moment of the decision are momentary:
// an earlier unanswered copy of the request may still be granted.
func TestMomentary(t *testing.T) {
	for code, want := range map[string]bool{
		"insufficient_capacity": true, "server_not_active": true,
		"invalid_argument": false, "request_id_reused": false, "not_found": false,
		"unknown_outcome": false, "permission_denied": false, "no_such_code": false,
	} {
		if got := errcode.Momentary(code); got != want {
			t.Errorf("Momentary(%q) = %v, want %v", code, got, want)
		}
	}
	if err := errcode.Unsettled("no server has 2 free units"); !errcode.Retryable(err) || errcode.Code(err) != "unknown_outcome" {
		t.Fatalf("Unsettled: %v (code %q)", err, errcode.Code(err))
	}
	for _, tc := range []struct {
		code      string
		committed bool
		want      bool
	}{
		{"insufficient_capacity", false, true},
		{"insufficient_capacity", true, false},
		{"server_not_active", false, true},
		{"invalid_argument", false, false},
	} {
		if got := errcode.Unsettling(tc.code, tc.committed); got != tc.want {
			t.Errorf("Unsettling(%q, %v) = %v, want %v", tc.code, tc.committed, got, tc.want)
		}
	}
	c := fmt.Errorf("refused: %w", errcode.Committed(errcode.FromCode("insufficient_capacity", "full")))
	if !errcode.IsCommitted(c) || errcode.Code(c) != "insufficient_capacity" || errcode.IsCommitted(errcode.ErrCapacity) {
		t.Fatalf("Committed: %v (code %q, committed %v)", c, errcode.Code(c), errcode.IsCommitted(c))
	}
}
