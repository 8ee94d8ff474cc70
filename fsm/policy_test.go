package fsm_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// polApply applies cmds as one entry at index and returns its results.
func polApply(t *testing.T, f *fsm.FSM, index uint64, cmds ...*fsmpb.Command) []*fsmpb.Result {
	t.Helper()
	data, err := fsm.Encode(int64(1_000_000+index*10), cmds...)
	if err != nil {
		t.Fatal(err)
	}
	res, ok := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data}).([]*fsmpb.Result)
	if !ok {
		t.Fatal("apply did not return results")
	}
	return res
}

func setPolicy(p *fsmpb.Policy) *fsmpb.Command {
	return &fsmpb.Command{Cmd: &fsmpb.Command_SetPolicy{SetPolicy: p}}
}

func TestSetPolicyValidatesInApply(t *testing.T) {
	f := fsm.New()
	res := polApply(t, f, 1, setPolicy(&fsmpb.Policy{Strategy: "bin-pack", Hard: &fsmpb.Limits{Units: 0.9}}))
	if err := fsm.ResultError(res[0]); err != nil {
		t.Fatal(err)
	}
	good := f.Policy()
	if good.GetVersion() != 1 || good.GetAppliedAtIndex() != 1 || good.GetStrategy() != "bin-pack" {
		t.Fatalf("policy after set: %v", good)
	}
	if good.GetTombstoneRetentionMs() != fsm.DefaultTombstoneRetentionMs {
		t.Fatalf("zero retention must keep the current one, got %d", good.GetTombstoneRetentionMs())
	}
	bad := []struct {
		name string
		p    *fsmpb.Policy
		code error
	}{
		{"unknown strategy", &fsmpb.Policy{Strategy: "nope"}, fsm.ErrInvalid},
		{"bad expression", &fsmpb.Policy{Strategy: "bin-pack", Expr: "server.cpu +* 1"}, fsm.ErrInvalid},
		{"wrong return type", &fsmpb.Policy{Strategy: "bin-pack", Expr: `server.region`}, fsm.ErrInvalid},
		{"negative limit", &fsmpb.Policy{Strategy: "bin-pack", Soft: &fsmpb.Limits{EgressBps: -5}}, fsm.ErrInvalid},
		{"stale if_version", &fsmpb.Policy{Strategy: "least-loaded", IfVersion: 7}, fsm.ErrVersionMismatch},
	}
	for i, tc := range bad {
		res := polApply(t, f, uint64(2+i), setPolicy(tc.p))
		if err := fsm.ResultError(res[0]); !errors.Is(err, tc.code) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.code)
		}
		if got := f.Policy(); got.GetVersion() != 1 || got.GetStrategy() != "bin-pack" {
			t.Fatalf("%s: old policy not kept: %v", tc.name, got)
		}
	}
	res = polApply(t, f, 10, setPolicy(&fsmpb.Policy{Strategy: "least-loaded", IfVersion: 1}))
	if err := fsm.ResultError(res[0]); err != nil || f.Policy().GetVersion() != 2 || f.Policy().GetAppliedAtIndex() != 10 {
		t.Fatalf("conditional set: %v, policy %v", err, f.Policy())
	}
}

func TestHardUnitsLimitInApply(t *testing.T) {
	f := fsm.New()
	polApply(t, f, 1,
		&fsmpb.Command{Cmd: &fsmpb.Command_RegisterServer{RegisterServer: &fsmpb.RegisterServer{Server: &fsmpb.Server{Id: "m1", CapacityUnits: 10}}}},
		setPolicy(&fsmpb.Policy{Strategy: "least-loaded", Hard: &fsmpb.Limits{Units: 0.5}}))
	a := func(req string, units int64) *fsmpb.Command {
		return &fsmpb.Command{Cmd: &fsmpb.Command_Allocate{Allocate: &fsmpb.AllocateDecision{RequestId: req, Room: "r", Server: "m1", Units: units}}}
	}
	res := polApply(t, f, 2, a("r1", 5), a("r2", 1))
	if err := fsm.ResultError(res[0]); err != nil {
		t.Fatal(err)
	}
	if err := fsm.ResultError(res[1]); !errors.Is(err, fsm.ErrCapacity) {
		t.Fatalf("allocation past the hard limit: got %v, want ErrCapacity", err)
	}
}

func intentCmd(in *fsmpb.ProvisionIntent) *fsmpb.Command {
	return &fsmpb.Command{Cmd: &fsmpb.Command_CreateIntent{CreateIntent: in}}
}

func updateCmd(u *fsmpb.UpdateIntent) *fsmpb.Command {
	return &fsmpb.Command{Cmd: &fsmpb.Command_UpdateIntent{UpdateIntent: u}}
}

func TestIntentLifecycle(t *testing.T) {
	f := fsm.New()
	res := polApply(t, f, 1, intentCmd(&fsmpb.ProvisionIntent{Kind: fsmpb.IntentKind_INTENT_KIND_PROVISION, Units: 3, RequestIds: []string{"q1"}, Rooms: []string{"r"}}))
	it := res[0].GetIntent()
	if err := fsm.ResultError(res[0]); err != nil || it.GetId() != "p-1-0" || it.GetServerId() != "prov-1-0" || it.GetState() != fsmpb.IntentState_INTENT_STATE_PENDING {
		t.Fatalf("create: %v %v", err, it)
	}
	// The same request cannot wait on two intents.
	res = polApply(t, f, 2, intentCmd(&fsmpb.ProvisionIntent{Kind: fsmpb.IntentKind_INTENT_KIND_PROVISION, Units: 1, RequestIds: []string{"q1"}}))
	if err := fsm.ResultError(res[0]); !errors.Is(err, fsm.ErrInvalid) {
		t.Fatalf("second intent for q1: %v", err)
	}
	// The state holds it once, and a copy restored from it hashes the same.
	if st := f.Export(); len(st.GetIntents()) != 1 {
		t.Fatalf("exported state holds %d intents, want 1", len(st.GetIntents()))
	} else {
		var buf bytes.Buffer
		if err := fsm.WriteState(&buf, st); err != nil {
			t.Fatal(err)
		}
		g := fsm.New()
		if err := g.Restore(io.NopCloser(&buf)); err != nil {
			t.Fatal(err)
		}
		if len(g.Export().GetIntents()) != 1 || g.Hash() != f.Hash() {
			t.Fatalf("restored copy: %d intents, hash %s vs %s", len(g.Export().GetIntents()), g.Hash(), f.Hash())
		}
	}
	// Claims: exactly one of two racing claims wins.
	claim := updateCmd(&fsmpb.UpdateIntent{Id: "p-1-0", State: fsmpb.IntentState_INTENT_STATE_STARTED, IfState: fsmpb.IntentState_INTENT_STATE_PENDING, Owner: "n1/x"})
	claim2 := updateCmd(&fsmpb.UpdateIntent{Id: "p-1-0", State: fsmpb.IntentState_INTENT_STATE_STARTED, IfState: fsmpb.IntentState_INTENT_STATE_PENDING, Owner: "n2/y"})
	res = polApply(t, f, 3, claim, claim2)
	if err := fsm.ResultError(res[0]); err != nil {
		t.Fatal(err)
	}
	if err := fsm.ResultError(res[1]); !errors.Is(err, fsm.ErrVersionMismatch) {
		t.Fatalf("second claim: %v", err)
	}
	// Attach a sharing request.
	res = polApply(t, f, 4, updateCmd(&fsmpb.UpdateIntent{Id: "p-1-0", AddRequestIds: []string{"q2"}, AddUnits: 2, AddRooms: []string{"r2"}}))
	if got := res[0].GetIntent(); got.GetUnits() != 5 || len(got.GetRequestIds()) != 2 || got.GetOwner() != "n1/x" {
		t.Fatalf("attach: %v", got)
	}
	// Registration of the intent's server completes it.
	polApply(t, f, 5, &fsmpb.Command{Cmd: &fsmpb.Command_RegisterServer{RegisterServer: &fsmpb.RegisterServer{Server: &fsmpb.Server{Id: "prov-1-0", CapacityUnits: 10}}}})
	if got, _ := f.Intent("p-1-0"); got.GetState() != fsmpb.IntentState_INTENT_STATE_DONE {
		t.Fatalf("after registration: %v", got)
	}
	// A final intent never changes.
	res = polApply(t, f, 6, updateCmd(&fsmpb.UpdateIntent{Id: "p-1-0", State: fsmpb.IntentState_INTENT_STATE_FAILED}))
	if err := fsm.ResultError(res[0]); !errors.Is(err, fsm.ErrVersionMismatch) {
		t.Fatalf("update of a done intent: %v", err)
	}
	// Deprovision intents name a registered server, one open at a time.
	res = polApply(t, f, 7,
		intentCmd(&fsmpb.ProvisionIntent{Kind: fsmpb.IntentKind_INTENT_KIND_DEPROVISION, ServerId: "prov-1-0"}),
		intentCmd(&fsmpb.ProvisionIntent{Kind: fsmpb.IntentKind_INTENT_KIND_DEPROVISION, ServerId: "prov-1-0"}),
		intentCmd(&fsmpb.ProvisionIntent{Kind: fsmpb.IntentKind_INTENT_KIND_DEPROVISION, ServerId: "ghost"}),
		intentCmd(&fsmpb.ProvisionIntent{Kind: fsmpb.IntentKind_INTENT_KIND_PROVISION}))
	if err := fsm.ResultError(res[0]); err != nil {
		t.Fatal(err)
	}
	for i, want := range []error{fsm.ErrInvalid, fsm.ErrNotFound, fsm.ErrInvalid} {
		if err := fsm.ResultError(res[i+1]); !errors.Is(err, want) {
			t.Errorf("command %d: got %v, want %v", i+1, err, want)
		}
	}

	// Snapshot and restore keep intents and the hash.
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	sink := &polSink{Buffer: &buf}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := fsm.New()
	if err := g.Restore(polReadCloser{&buf}); err != nil {
		t.Fatal(err)
	}
	if g.Hash() != f.Hash() || len(g.Intents()) != 2 {
		t.Fatalf("restore: hash %s vs %s, %d intents", g.Hash(), f.Hash(), len(g.Intents()))
	}
}

type polSink struct{ *bytes.Buffer }

func (polSink) ID() string    { return "mem" }
func (polSink) Cancel() error { return nil }
func (polSink) Close() error  { return nil }

type polReadCloser struct{ *bytes.Buffer }

func (polReadCloser) Close() error { return nil }
