package httpapi_test

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/httpapi"
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
	if api.MaxReasonLen != fsm.MaxReasonLen {
		t.Errorf("api.MaxReasonLen %d, fsm.MaxReasonLen %d", api.MaxReasonLen, fsm.MaxReasonLen)
	}
	if api.SFULabel != fsm.SFULabel {
		t.Errorf("api.SFULabel %q, fsm.SFULabel %q", api.SFULabel, fsm.SFULabel)
	}
	want := api.AttemptTimeoutFor(cluster.ForwardTimeout(cluster.DefaultHeartbeatTimeout, cluster.DefaultElectionTimeout))
	if api.DefaultAttemptTimeout != want {
		t.Errorf("api.DefaultAttemptTimeout %v, derived from the default raft timing %v", api.DefaultAttemptTimeout, want)
	}
}

// An intent's JSON carries every field of the contract, empty ones too.
func TestIntentJSONFieldsPresentWhenEmpty(t *testing.T) {
	b, err := json.Marshal(httpapi.IntentFromPB(&fsmpb.ProvisionIntent{Id: "p-1-0"}))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "kind", "state", "server_id", "region", "zone", "units", "request_ids", "rooms", "owner", "error",
		"created_at_unix_ms", "updated_at_unix_ms", "deadline_unix_ms"} {
		if _, ok := m[k]; !ok {
			t.Errorf("field %q missing: %s", k, b)
		}
	}
	if m["request_ids"] == nil || m["rooms"] == nil {
		t.Errorf("request_ids and rooms must be [], not null: %s", b)
	}
}
