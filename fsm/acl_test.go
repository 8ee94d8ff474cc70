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
