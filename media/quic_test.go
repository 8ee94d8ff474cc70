package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/transport"
)

// TestQUICCluster: media nodes talk to the cluster over QUIC with mutual
// TLS; a cascade works through it, and the leader's load view shows the
// nodes' measured reports (peers, tracks, rooms, hosted allocation).
func TestQUICCluster(t *testing.T) {
	c := testcluster.New(t, 3)
	start := func(id string, capacity int64) *Node {
		return startNode(t, testConfig(t, id, capacity), quicCluster(t, c, id))
	}
	m1 := start("m1", 1)
	m2 := start("m2", 10)
	pa := testAPI(t)
	pub := publish(t, pa, m1.BaseURL(), "q")
	defer pub.close(true)
	v1 := watchRoom(t, pa, m1.BaseURL(), "q")
	defer v1.close()
	v2 := watchRoom(t, pa, m1.BaseURL(), "q")
	defer v2.close()
	if !strings.HasPrefix(v2.url, m2.BaseURL()) {
		t.Fatalf("second viewer at %s, want %s", v2.url, m2.BaseURL())
	}
	v2.waitRTP(t, 30*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cli := c.Client()
	eventually(t, 30*time.Second, func() error {
		raw, err := cli.ServersRaw(ctx, false)
		if err != nil {
			return err
		}
		loads := map[string]struct {
			Peers, Tracks int64
			Rooms         []string
			AllocIDs      []string `json:"allocation_ids"`
			EgressBps     int64    `json:"egress_bps"`
			Subscribed    int64    `json:"subscribed_tracks"`
		}{}
		for _, s := range raw {
			b, _ := json.Marshal(s["load"])
			l := loads[fmt.Sprint(s["id"])]
			_ = json.Unmarshal(b, &l)
			loads[fmt.Sprint(s["id"])] = l
		}
		l1, l2 := loads["m1"], loads["m2"]
		// m1: publisher, viewer, cascade out (the track sent twice); m2:
		// cascade in, viewer (sent once).
		if l1.Peers != 3 || l1.Tracks != 1 || l1.Subscribed != 2 || l1.EgressBps == 0 ||
			l2.Peers != 2 || l2.Subscribed != 1 || len(l2.AllocIDs) != 1 {
			return fmt.Errorf("load view m1 %+v m2 %+v", l1, l2)
		}
		return nil
	})
}

// TestQUICClusterHTTPSWithItsCertificate: with ACLs on and the agents'
// API over HTTPS, a media node with no token reads its own state over the
// HTTP API as the media server its certificate names (the certificate it
// presents over QUIC), and nothing more.
func TestQUICClusterHTTPSWithItsCertificate(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{RaftTLS: true, Mutate: func(_ int, cfg *agent.Config) {
		cfg.ACL, cfg.HTTPS = true, true
	}})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, c.CA.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(api.CACertEnv, caFile)
	t.Setenv(api.TokenEnv, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	qc, err := NewQUICCluster("m1", c.QUICAddrs(), c.Addrs(), c.Identity("m1").ClientConfig(transport.ALPN), testcluster.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = qc.Close() })
	if err := qc.Register(ctx, ServerInfo{ID: "m1", Capacity: 4}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		st, err := qc.State(ctx)
		if err != nil || st != "active" {
			return fmt.Errorf("state over HTTPS: %q %v", st, err)
		}
		return nil
	})
	// The same client may not act for another (registered) server, and
	// reads the media keys every media server verifies tokens with.
	qc2, err := NewQUICCluster("m2", c.QUICAddrs(), c.Addrs(), c.Identity("m2").ClientConfig(transport.ALPN), testcluster.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = qc2.Close() })
	if err := qc2.Register(ctx, ServerInfo{ID: "m2", Capacity: 4}); err != nil {
		t.Fatal(err)
	}
	if _, err := qc.h.DrainServer(ctx, "m2"); !errors.Is(err, errcode.ErrPermissionDenied) {
		t.Fatalf("m1's certificate draining m2: %v, want permission_denied", err)
	}
	if _, err := qc.h.MediaKeys(ctx); err != nil {
		t.Fatalf("m1's certificate reading the media keys: %v", err)
	}
	// Without the certificate the same request is anonymous: refused.
	if _, err := api.NewClient(c.Addrs()...).Server(ctx, "m1", false); !errors.Is(err, errcode.ErrUnauthenticated) && !errors.Is(err, errcode.ErrPermissionDenied) {
		t.Fatalf("anonymous read: %v, want a refusal", err)
	}
}
