package pki_test

import (
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/switchyard/switchyard/pki"
)

// A certificate's role and name read back exactly as issued, whatever
// characters the name holds (a server id may hold any the registry
// accepts, and some it refuses).
func TestIdentityRoundTrips(t *testing.T) {
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"m1", "lg-17", "a b", "m\x1b[2J", "x%41y", "a/b?#", "media"} {
		for _, role := range []string{pki.RoleAgent, pki.RoleMedia} {
			certPEM, _, err := ca.IssueRole(name, role, nil)
			if err != nil {
				t.Fatalf("%q: %v", name, err)
			}
			b, _ := pem.Decode(certPEM)
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatalf("%q: %v", name, err)
			}
			if got := pki.PeerIdentity(c); got.Role != role || got.Name != name {
				t.Errorf("issued %s %q, read %s %q", role, name, got.Role, got.Name)
			}
		}
	}
}
