package quicapi_test

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/pki"
	"github.com/switchyard/switchyard/transport"
)

// mediaClient connects with a media-role certificate for name.
func mediaClient(t *testing.T, c *testcluster.Cluster, name string, addrs ...string) *transport.Client {
	t.Helper()
	cp, kp, err := c.CA.IssueRole(name, pki.RoleMedia, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.NewIdentity(c.CA.CertPEM, cp, kp)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := transport.NewClient(transport.ClientConfig{Addrs: addrs, TLS: id.ClientConfig(transport.ALPN), Logger: testcluster.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// TestMediaCertificateActsOnlyAsItself: a certificate issued for m1 may
// register m1, through a follower or the leader, and is refused
// (and counted) for m2.
func TestMediaCertificateActsOnlyAsItself(t *testing.T) {
	c := newCluster(t, 3, 0, nil)
	leader := leaderNode(t, c)
	register(t, newClient(t, c, "agent-tool", leader.Cfg.QUICAddr), "m2", 5, 1)
	for _, nd := range c.Running() {
		cl := mediaClient(t, c, "m1", nd.Cfg.QUICAddr)
		ctx, cancel := context.WithTimeout(context.Background(), pollTimeout)
		register(t, cl, "m1", 5, 1)
		if _, err := cl.Register(ctx, transport.ServerInfo{ID: "m2", Capacity: 1, Incarnation: 99, Addresses: []string{"http://evil"}}); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("m1 registering m2 via %s: %v", nd.ID, err)
		}
		cancel()
		if n := testutil.ToFloat64(nd.Agent.QUIC.Metrics().Requests.WithLabelValues("register", "permission_denied")); n < 1 {
			t.Fatalf("%s counted %v refused registrations", nd.ID, n)
		}
	}
	s, _ := leader.Agent.Node.FSM().Server("m2")
	if s.GetIncarnation() != 1 || len(s.GetAddresses()) != 0 || s.GetState() != 1 {
		t.Fatalf("m2 changed: %v", s)
	}
}
