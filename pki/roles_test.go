package pki_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"testing"
	"time"

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

// handshake runs a TLS handshake between a server presenting a
// certificate of role serverRole and a client configured by client, and
// returns the client's error.
func handshake(t *testing.T, ca *pki.CA, serverRole string, client *tls.Config) error {
	t.Helper()
	srv, err := ca.IssueIdentity("peer", serverRole, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		s := tls.Server(a, srv.HTTPServerConfig())
		_ = s.Handshake()
		s.Close()
	}()
	c := tls.Client(b, client)
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return c.Handshake()
}

// Clients of agents accept only agents' (or role-less, older) server
// certificates: a media node's certificate, signed by the same CA, cannot
// pose as an agent to the CLI, the SDK or another agent.
func TestClientsAcceptOnlyAgents(t *testing.T) {
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	caOnly, err := pki.CAClientConfig(ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	agent, err := ca.IssueIdentity("n1", pki.RoleAgent, nil)
	if err != nil {
		t.Fatal(err)
	}
	withCert := pki.RequireAgent(agent.ClientConfig(), nil)
	for _, tc := range []struct {
		name       string
		client     *tls.Config
		serverRole string
		wantErr    error
	}{
		{"CA-only client, agent server", caOnly, pki.RoleAgent, nil},
		{"CA-only client, media server", caOnly, pki.RoleMedia, pki.ErrWrongRole},
		{"agent client, agent server", withCert, pki.RoleAgent, nil},
		{"agent client, media server", withCert, pki.RoleMedia, pki.ErrWrongRole},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := handshake(t, ca, tc.serverRole, tc.client.Clone())
			if (tc.wantErr == nil) != (err == nil) || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
				t.Fatalf("handshake: %v, want %v", err, tc.wantErr)
			}
		})
	}
}
