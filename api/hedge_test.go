package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/errcode"
)

// agentThat serves POST /v1/allocations the way an agent in a given
// condition would: hanging until the request is cancelled, refusing with
// a code, or granting after a delay.
func agentThat(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

func hangs(w http.ResponseWriter, r *http.Request) {
	_, _ = io.ReadAll(r.Body)
	<-r.Context().Done()
}

func refuses(code string, status int, retryable bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(api.Error{Error: code + " refusal", Code: code, Retryable: retryable})
	}
}

func grantsAfter(d time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(api.Allocation{ID: "a-1-0", RequestID: "x", Room: "r", Units: 1, Server: "s1"})
	}
}

// TestHedgedCopiesSettleTogether: while one copy of an allocation is in
// flight, the other copy's refusal does not settle it (the first may
// still be granted), and a caller's context that ends then answers an
// unknown outcome (retryable), never a refusal or a "not run" code.
func TestHedgedCopiesSettleTogether(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		first, hedge         http.HandlerFunc
		attempt, callTimeout time.Duration // a copy is hedged after attempt/4
		granted              bool
	}{
		{"momentary refusal, then the caller gives up", hangs, refuses("insufficient_capacity", http.StatusConflict, false), 800 * time.Millisecond, 500 * time.Millisecond, false},
		{"no leader, then the caller gives up", hangs, refuses("no_leader", http.StatusServiceUnavailable, true), 800 * time.Millisecond, 500 * time.Millisecond, false},
		{"the first copy is granted after the other's rate limit", grantsAfter(2 * time.Second), refuses("rate_limited", http.StatusTooManyRequests, false), 4 * time.Second, 20 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := api.NewClient(agentThat(t, tc.first), agentThat(t, tc.hedge))
			cl.AttemptTimeout = tc.attempt
			ctx, cancel := context.WithTimeout(context.Background(), tc.callTimeout)
			defer cancel()
			_, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: "x", Room: "r", Units: 1})
			if cl.Attempts.Load() < 2 {
				t.Fatalf("%d attempts: the allocation was not hedged", cl.Attempts.Load())
			}
			if tc.granted {
				if err != nil {
					t.Fatalf("the first copy was granted, the call says %v", err)
				}
				return
			}
			if err == nil || !api.IsRetryable(err) {
				t.Fatalf("got %v (retryable %v), want an unknown outcome: the first copy may still run", err, api.IsRetryable(err))
			}
			var ae *api.APIError
			if errors.As(err, &ae) && !errcode.OutcomeUnknown(ae.Body.Code) {
				t.Fatalf("code %q although the first copy may still run", ae.Body.Code)
			}
		})
	}
}
