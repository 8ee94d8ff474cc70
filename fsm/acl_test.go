package fsm_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

func aclToken(id, role string) *fsmpb.AclToken {
	return &fsmpb.AclToken{Id: id, SecretHash: strings.Repeat(id[:1], 64), Role: role}
}

func TestACLBootstrapOnceCreateRevokeSnapshot(t *testing.T) {
	a := newApplier(t)
	boot := func(id string) error {
		_, err := a.one(&fsmpb.Command{Cmd: &fsmpb.Command_AclBootstrap{AclBootstrap: &fsmpb.AclBootstrap{Token: aclToken(id, "operator")}}})
		return err
	}
	if _, err := a.one(&fsmpb.Command{Cmd: &fsmpb.Command_AclBootstrap{AclBootstrap: &fsmpb.AclBootstrap{Token: aclToken("r", "reader")}}}); !errors.Is(err, fsm.ErrInvalid) {
		t.Fatalf("bootstrap with a reader token: %v", err)
	}
	if err := boot("a"); err != nil {
		t.Fatal(err)
	}
	if err := boot("b"); !errors.Is(err, fsm.ErrACLBootstrapped) {
		t.Fatalf("second bootstrap: %v", err)
	}
	for _, tc := range []struct {
		tok  *fsmpb.AclToken
		want error
	}{
		{aclToken("c", "reader"), nil},
		{aclToken("c", "reader"), fsm.ErrInvalid},                  // id exists
		{aclToken("d", "root"), fsm.ErrInvalid},                    // no such role
		{&fsmpb.AclToken{Id: "e", Role: "reader"}, fsm.ErrInvalid}, // no hash
	} {
		if _, err := a.one(&fsmpb.Command{Cmd: &fsmpb.Command_AclCreateToken{AclCreateToken: tc.tok}}); !errors.Is(err, tc.want) && !(err == nil && tc.want == nil) {
			t.Fatalf("create %v: %v, want %v", tc.tok, err, tc.want)
		}
	}
	if tok, ok := a.f.ACLTokenByHash(strings.Repeat("c", 64)); !ok || tok.GetRole() != "reader" || tok.GetCreatedAtUnixMs() == 0 {
		t.Fatalf("lookup: %v %v", tok, ok)
	}
	// Snapshot and restore keep tokens, bootstrap flag and the hash.
	restored := fsm.New()
	snapshotInto(t, a.f, restored)
	if restored.Hash() != a.f.Hash() || !restored.ACLBootstrapped() || len(restored.ACLTokens()) != 2 {
		t.Fatalf("restored ACL state differs")
	}
	if _, err := a.one(&fsmpb.Command{Cmd: &fsmpb.Command_AclRevokeToken{AclRevokeToken: "c"}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.f.ACLTokenByHash(strings.Repeat("c", 64)); ok {
		t.Fatal("revoked token still found")
	}
	if _, err := a.one(&fsmpb.Command{Cmd: &fsmpb.Command_AclRevokeToken{AclRevokeToken: "c"}}); !errors.Is(err, fsm.ErrNotFound) {
		t.Fatalf("second revoke: %v", err)
	}
}

// A command carries the token that authorized it, and Apply re-checks the
// token against the replicated state at the entry's time: a revoked or
// expired token's command is refused and changes nothing, so a revocation
// is in force from its own index on whatever was checked before it.
func TestCommandTokenRecheckedInApply(t *testing.T) {
	a := newApplier(t) // a.now starts at 1,000,000 and grows 10 ms per entry
	for _, tok := range []*fsmpb.AclToken{
		aclToken("live", "allocator"),
		aclToken("revoked", "allocator"),
		{Id: "expired", SecretHash: strings.Repeat("e", 64), Role: "allocator", ExpiresAtUnixMs: 1_000_000 - fsm.TokenLeewayMs - 1},
		{Id: "inleeway", SecretHash: strings.Repeat("i", 64), Role: "allocator", ExpiresAtUnixMs: 1_000_000},
	} {
		if _, err := a.one(&fsmpb.Command{Cmd: &fsmpb.Command_AclCreateToken{AclCreateToken: tok}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.one(register("s1", 100)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.one(&fsmpb.Command{Cmd: &fsmpb.Command_AclRevokeToken{AclRevokeToken: "revoked"}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		token string
		want  error
	}{
		{"", nil},
		{"live", nil},
		{"inleeway", nil},
		{"revoked", fsm.ErrUnauthenticated},
		{"expired", fsm.ErrUnauthenticated},
		{"never-created", fsm.ErrUnauthenticated},
	}
	for i, tc := range tests {
		t.Run("token="+tc.token, func(t *testing.T) {
			before := a.f.Hash()
			reqID := "req-" + tc.token
			c := alloc(reqID, "room", "s1", 1)
			c.AclTokenId = tc.token
			_, err := a.one(c)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("allocation %d with token %q: %v", i, tc.token, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("allocation with token %q: %v, want %v", tc.token, err, tc.want)
			}
			if g, rf := a.f.Outcome(reqID); g != nil || rf != nil || a.f.Hash() != before {
				t.Fatalf("a refused command changed the state: allocation %v, refusal %v", g, rf)
			}
			// Every kind of command is checked, not only allocations.
			for _, cmd := range []*fsmpb.Command{
				register("s-"+tc.token, 5),
				{Cmd: &fsmpb.Command_AclRevokeToken{AclRevokeToken: "live"}},
				{Cmd: &fsmpb.Command_Release{Release: &fsmpb.Release{Id: "req-live"}}},
			} {
				cmd.AclTokenId = tc.token
				if _, err := a.one(cmd); !errors.Is(err, tc.want) {
					t.Fatalf("%v with token %q: %v, want %v", cmd, tc.token, err, tc.want)
				}
			}
			if a.f.Hash() != before {
				t.Fatal("refused commands changed the state")
			}
		})
	}
}
