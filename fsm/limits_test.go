package fsm_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

func TestCheckPolicyInput(t *testing.T) {
	dist := func(from, to string) []*fsmpb.RegionDistance {
		return []*fsmpb.RegionDistance{{From: from, To: to, Distance: 1}}
	}
	tests := []struct {
		name string
		p    *fsmpb.Policy
		ok   bool
	}{
		{"empty", &fsmpb.Policy{}, true},
		{"retention at the cap", &fsmpb.Policy{TombstoneRetentionMs: fsm.MaxTombstoneRetention.Milliseconds()}, true},
		{"retention past the cap", &fsmpb.Policy{TombstoneRetentionMs: 9e15}, false},
		{"negative retention", &fsmpb.Policy{TombstoneRetentionMs: -1}, false},
		{"idle retire at the cap", &fsmpb.Policy{Provisioning: &fsmpb.Provisioning{IdleRetireMs: fsm.MaxIdleRetire.Milliseconds()}}, true},
		// 9.3e12 ms overflows time.Duration once multiplied by a millisecond.
		{"idle retire that overflows a duration", &fsmpb.Policy{Provisioning: &fsmpb.Provisioning{IdleRetireMs: 9_300_000_000_000}}, false},
		{"negative idle retire", &fsmpb.Policy{Provisioning: &fsmpb.Provisioning{IdleRetireMs: -1}}, false},
		{"distances", &fsmpb.Policy{Distances: dist("eu", "us")}, true},
		{"distance region too long", &fsmpb.Policy{Distances: dist(strings.Repeat("x", 500_000), "us")}, false},
		{"distance region with an escape", &fsmpb.Policy{Distances: dist("eu", "\x1b[2Jus")}, false},
		{"too many distances", &fsmpb.Policy{Distances: make([]*fsmpb.RegionDistance, fsm.MaxDistances+1)}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := fsm.CheckPolicyInput(tc.p)
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok && !errors.Is(err, fsm.ErrInvalid) {
				t.Fatalf("got %v, want invalid_argument", err)
			}
		})
	}
}

func TestCheckAllocateInputRefusesAllocationIDs(t *testing.T) {
	for _, tc := range []struct {
		requestID string
		ok        bool
	}{
		{"a-3-0", false},
		{"a-123456-17", false},
		{"a-3", true},
		{"a-3-", true},
		{"a-x-0", true},
		{"room:a-3-0:0", true},
		{"b-3-0", true},
		{"req-1", true},
	} {
		err := fsm.CheckAllocateInput(tc.requestID, "room", "", "", "", 0)
		if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, fsm.ErrInvalid) {
			t.Errorf("request id %q: %v", tc.requestID, err)
		}
	}
}
