package cluster_test

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/pki"
)

func identity(t *testing.T, ca *pki.CA, name string) *pki.Identity {
	t.Helper()
	c, k, err := ca.Issue(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.NewIdentity(ca.CertPEM, c, k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// The raft stream layer accepts peers with a certificate of the cluster CA
// and refuses the rest.
func TestTLSStreamLayer(t *testing.T) {
	ca, err := pki.NewCA("cluster")
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	srv := identity(t, ca, "n1")
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := free.Addr().String()
	_ = free.Close()
	l, err := cluster.NewTLSStreamLayer(addr, srv.ServerConfig(nil, cluster.RaftALPN), srv.ClientConfig(cluster.RaftALPN))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Addr().String() != addr {
		t.Fatalf("advertised %s, want %s", l.Addr(), addr)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.Copy(c, c) // echo; the handshake runs on first read
			}(c)
		}
	}()
	foreign := identity(t, other, "intruder")
	noCert := identity(t, ca, "x").ClientConfig(cluster.RaftALPN)
	noCert.Certificates = nil
	for _, tc := range []struct {
		name string
		conf *tls.Config
		ok   bool
	}{
		{"member", identity(t, ca, "n2").ClientConfig(cluster.RaftALPN), true},
		{"foreign CA", foreign.ClientConfig(cluster.RaftALPN), false},
		{"no certificate", noCert, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := cluster.NewTLSStreamLayer("127.0.0.1:0", srv.ServerConfig(nil, cluster.RaftALPN), tc.conf)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			c, err := d.Dial(raft.ServerAddress(addr), 5*time.Second)
			if err == nil {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err = c.Write([]byte("ping")); err == nil {
					buf := make([]byte, 4)
					_, err = io.ReadFull(c, buf)
				}
			}
			if (err == nil) != tc.ok {
				t.Fatalf("exchange: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
