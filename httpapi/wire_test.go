package httpapi_test

import (
	"slices"
	"testing"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/fsm"
)

// The Go SDK repeats a few server constants so that it links nothing of the
// server; these checks keep the copies equal.
func TestWireConstantsMatchServer(t *testing.T) {
	if got, want := []string{api.SFUSwitchyard, api.SFULiveKit, api.SFUJanus}, fsm.SFUKinds(); !slices.Equal(got, want) {
		t.Errorf("api SFU kinds %v, fsm %v", got, want)
	}
	if api.MaxIDLen != fsm.MaxIDLen {
		t.Errorf("api.MaxIDLen %d, fsm.MaxIDLen %d", api.MaxIDLen, fsm.MaxIDLen)
	}
	if api.SFULabel != fsm.SFULabel {
		t.Errorf("api.SFULabel %q, fsm.SFULabel %q", api.SFULabel, fsm.SFULabel)
	}
	want := api.AttemptTimeoutFor(cluster.ForwardTimeout(cluster.DefaultHeartbeatTimeout, cluster.DefaultElectionTimeout))
	if api.DefaultAttemptTimeout != want {
		t.Errorf("api.DefaultAttemptTimeout %v, derived from the default raft timing %v", api.DefaultAttemptTimeout, want)
	}
}
