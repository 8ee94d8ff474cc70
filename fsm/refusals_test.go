package fsm_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

func refuse(req, code, msg string) *fsmpb.Command {
	return &fsmpb.Command{Cmd: &fsmpb.Command_RefuseAllocation{RefuseAllocation: &fsmpb.Refusal{RequestId: req, ErrorCode: code, ErrorMessage: msg}}}
}

func allocRecording(req, room, server string, units int64) *fsmpb.Command {
	c := alloc(req, room, server, units)
	c.GetAllocate().RecordRefusal = true
	return c
}

// A committed refusal answers every later copy of its request id the same
// way, even once the capacity it lacked is free, until it expires.
func TestCommittedRefusalAnswersLaterCopies(t *testing.T) {
	cases := []struct {
		name    string
		refusal *fsmpb.Command // refuses r2 while s1 is full
		code    string
	}{
		{"leader refusal", refuse("r2", "insufficient_capacity", "no server has 5 free units"), "insufficient_capacity"},
		{"hard limit in Apply", allocRecording("r2", "room", "s1", 5), "insufficient_capacity"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := newApplier(t)
			a.apply(register("s1", 10))
			if _, err := a.one(alloc("r1", "room", "s1", 8)); err != nil {
				t.Fatal(err)
			}
			r, err := a.one(tc.refusal)
			if !errors.Is(err, fsm.ErrCapacity) || r.ErrorCode != tc.code || r.Duplicate {
				t.Fatalf("refusal: %+v, %v", r, err)
			}
			first := r.ErrorMessage
			if _, err := a.one(release("r1")); err != nil {
				t.Fatal(err)
			}
			// The capacity is free now; the same request id is still refused,
			// with the first answer, as a duplicate; a new id is granted.
			for _, c := range []*fsmpb.Command{alloc("r2", "room", "s1", 5), refuse("r2", "insufficient_capacity", "other words")} {
				r, err = a.one(c)
				if !errors.Is(err, fsm.ErrCapacity) || r.ErrorMessage != first || !r.Duplicate || r.Allocation != nil {
					t.Fatalf("later copy: %+v, %v; want the first refusal %q as a duplicate", r, err, first)
				}
			}
			if _, err := a.one(alloc("r3", "room", "s1", 5)); err != nil {
				t.Fatalf("new request id: %v", err)
			}
			// A snapshot keeps the refusal.
			g := fsm.New()
			snapshotInto(t, a.f, g)
			if a.f.Hash() != g.Hash() {
				t.Fatal("restored state hashes differently")
			}
			if ok := refused(g, "r2"); !ok {
				t.Fatal("snapshot lost the refusal")
			}
			// Expire forgets it after RefusalRetention of leader time.
			// ExpiryDue (the leader's cue to propose Expire) sees it.
			expire := &fsmpb.Command{Cmd: &fsmpb.Command_Expire{Expire: true}}
			a.apply(expire)
			if ok := refused(a.f, "r2"); !ok || a.f.ExpiryDue(a.now) {
				t.Fatalf("refusal kept %v, expiry due %v: want kept, not due", ok, a.f.ExpiryDue(a.now))
			}
			a.now += fsm.RefusalRetention.Milliseconds()
			if !a.f.ExpiryDue(a.now + 10) {
				t.Fatal("expiry not due once the refusal is older than its retention")
			}
			a.apply(expire)
			if ok := refused(a.f, "r2"); ok {
				t.Fatal("refusal kept past its retention")
			}
			if _, err := a.one(alloc("r2", "room", "s1", 2)); err != nil {
				t.Fatalf("after the retention the request id is new again: %v", err)
			}
		})
	}
}

func TestRefuseAllocation(t *testing.T) {
	a := newApplier(t)
	a.apply(register("s1", 10))
	if _, err := a.one(alloc("granted", "room", "s1", 1)); err != nil {
		t.Fatal(err)
	}
	h0 := a.f.Hash()
	cases := []struct {
		name    string
		cmd     *fsmpb.Command
		wantErr error
		dup     bool
		changes bool
	}{
		{"no request id", refuse("", "insufficient_capacity", "x"), fsm.ErrInvalid, false, false},
		{"not momentary", refuse("r", "invalid_argument", "x"), fsm.ErrInvalid, false, false},
		{"unknown code", refuse("r", "made_up", "x"), fsm.ErrInvalid, false, false},
		{"already granted", refuse("granted", "insufficient_capacity", "x"), nil, true, false},
		{"unrecorded refusal in Apply", alloc("over", "room", "s1", 50), fsm.ErrCapacity, false, false},
		{"unknown server, unrecorded", alloc("gone", "room", "nope", 1), fsm.ErrNotFound, false, false},
		{"server not active", refuse("r", "server_not_active", "server s1 is draining"), fsm.ErrServerNotActive, false, true},
		{"pinned server not registered", refuse("pinned", "not_found", `server "m9" is not registered`), fsm.ErrNotFound, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := a.one(tc.cmd)
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) || r.Duplicate != tc.dup {
				t.Fatalf("got %+v, %v; want %v, duplicate %v", r, err, tc.wantErr, tc.dup)
			}
			if h := a.f.Hash(); (h != h0) != tc.changes {
				t.Fatalf("state changed: %v, want %v", h != h0, tc.changes)
			}
		})
	}
	if !refused(a.f, "pinned") || !refused(a.f, "r") || refused(a.f, "over") || refused(a.f, "gone") {
		t.Fatal("the committed refusals are not exactly those of pinned and r")
	}
	// A recorded decision for a server deregistered since the leader chose
	// it is a momentary refusal, committed.
	r, err := a.one(allocRecording("gone", "room", "nope", 1))
	if kept := refused(a.f, "gone"); !errors.Is(err, fsm.ErrServerNotActive) || !r.RefusalCommitted || !kept {
		t.Fatalf("decision for a vanished server: %+v, %v, kept %v", r, err, kept)
	}
}

// At most MaxRefusals are kept, oldest forgotten first.
func TestRefusalsAreCapped(t *testing.T) {
	if testing.Short() {
		t.Skip("applies MaxRefusals commands")
	}
	a := newApplier(t)
	const batch = 1000
	for i := 0; i < fsm.MaxRefusals+batch; i += batch {
		cmds := make([]*fsmpb.Command, batch)
		for j := range cmds {
			cmds[j] = refuse(refusalID(i+j), "insufficient_capacity", "full")
		}
		a.apply(cmds...)
	}
	if ok := refused(a.f, refusalID(batch-1)); ok {
		t.Fatal("the oldest refusals are still kept beyond the cap")
	}
	for _, i := range []int{batch, fsm.MaxRefusals + batch - 1} {
		if ok := refused(a.f, refusalID(i)); !ok {
			t.Fatalf("refusal %d forgotten", i)
		}
	}
	g := fsm.New()
	snapshotInto(t, a.f, g)
	if err := fsm.ValidateState(g.Export()); err != nil {
		t.Fatal(err)
	}
}

func refusalID(i int) string { return fmt.Sprintf("q%d", i) }

func TestRefusalMessageIsCapped(t *testing.T) {
	long := strings.Repeat("server m-é not active; ", 100)
	for _, tc := range []struct {
		name, in string
		cut      bool
	}{
		{"short", "no server has 5 free units", false},
		{"exactly the cap", strings.Repeat("x", fsm.MaxRefusalMessage), false},
		{"long", long, true},
		{"cut inside a character", strings.Repeat("x", fsm.MaxRefusalMessage-3) + "ééé", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := fsm.RefusalMessage(tc.in)
			if len(got) > fsm.MaxRefusalMessage || !utf8.ValidString(got) || (got != tc.in) != tc.cut || !strings.HasPrefix(tc.in, strings.TrimSuffix(got, "…")) {
				t.Fatalf("RefusalMessage: %d bytes %q (cut %v)", len(got), got, got != tc.in)
			}
		})
	}
	// What a refusal stores and answers, to the first caller and to every
	// later copy, is the cut message.
	a := newApplier(t)
	r, err := a.one(refuse("r", "insufficient_capacity", long))
	if err == nil || r.ErrorMessage != fsm.RefusalMessage(long) {
		t.Fatalf("first answer: %d bytes, %v", len(r.ErrorMessage), err)
	}
	if r, _ = a.one(alloc("r", "room", "s1", 1)); r.ErrorMessage != fsm.RefusalMessage(long) {
		t.Fatalf("later copy: %d bytes", len(r.ErrorMessage))
	}
}

// refused reports whether f keeps a committed refusal of requestID.
func refused(f *fsm.FSM, requestID string) bool {
	_, r := f.Outcome(requestID)
	return r != nil
}
