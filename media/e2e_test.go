package media

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// TestForwardAndCascade: a real 3-node allocator cluster and two media
// nodes; a publisher sends the IVF file to m1; two viewers fill m1; the
// third is redirected (307) to m2, follows and receives RTP through the
// cascade; the allocation is visible in the API; after the viewer leaves
// the cascade and its allocation go away.
func TestForwardAndCascade(t *testing.T) {
	c := testcluster.New(t, 3)
	m1 := startNode(t, testConfig(t, "m1", 2), httpCluster(t, c, "m1"))
	m2 := startNode(t, testConfig(t, "m2", 10), httpCluster(t, c, "m2"))
	cli := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	pa := testAPI(t)
	pub := publish(t, pa, m1.BaseURL(), "r1")
	defer pub.close(true)

	v1 := watchRoom(t, pa, m1.BaseURL(), "r1")
	v2 := watchRoom(t, pa, m1.BaseURL(), "r1")
	v1.waitRTP(t, 30*time.Second)
	v2.waitRTP(t, 30*time.Second)
	if !strings.HasPrefix(v1.url, m1.BaseURL()) || !strings.HasPrefix(v2.url, m1.BaseURL()) {
		t.Fatalf("first viewers answered by %s and %s, want %s", v1.url, v2.url, m1.BaseURL())
	}

	v3 := watchRoom(t, pa, m1.BaseURL(), "r1")
	if !strings.HasPrefix(v3.url, m2.BaseURL()+"/whep/r1") {
		t.Fatalf("third viewer answered by %s, want a redirect to %s", v3.url, m2.BaseURL())
	}
	v3.waitRTP(t, 30*time.Second)
	n0 := v3.packets.Load()
	eventually(t, 30*time.Second, func() error {
		if v3.packets.Load() < n0+30 {
			return fmt.Errorf("cascaded viewer: %d packets", v3.packets.Load())
		}
		return nil
	})

	allocs, err := cli.Allocations(ctx, api.AllocationListOptions{Room: "r1", ActiveOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(allocs) != 1 || allocs[0].Server != "m2" || allocs[0].Requester != "m1" {
		t.Fatalf("allocations for r1: %+v, want one on m2 requested by m1", allocs)
	}
	eventually(t, 10*time.Second, func() error {
		if l := m2.currentLoad(); len(l.Allocs) != 1 || l.Allocs[0] != allocs[0].ID {
			return fmt.Errorf("m2 load lists allocations %v, want [%s]", l.Allocs, allocs[0].ID)
		}
		return nil
	})

	// A fourth viewer reuses the cascade (2 units).
	v4 := watchRoom(t, pa, m1.BaseURL(), "r1")
	if !strings.HasPrefix(v4.url, m2.BaseURL()) {
		t.Fatalf("fourth viewer at %s, want %s", v4.url, m2.BaseURL())
	}
	v4.waitRTP(t, 30*time.Second)
	if st := m1.Stats(); st.Cascades != 1 {
		t.Fatalf("m1 has %d cascades, want 1 reused", st.Cascades)
	}

	v3.close()
	v4.close()
	eventually(t, 30*time.Second, func() error {
		if st := m1.Stats(); st.Cascades != 0 {
			return fmt.Errorf("m1 still has %d cascades", st.Cascades)
		}
		a, err := cli.Allocations(ctx, api.AllocationListOptions{Room: "r1", ActiveOnly: true})
		if err != nil {
			return err
		}
		if len(a) != 0 {
			return fmt.Errorf("active allocations for r1: %+v", a)
		}
		return nil
	})
	eventually(t, 30*time.Second, statsIs(m2, Stats{}))

	v1.close()
	v2.close()
	pub.close(true)
	eventually(t, 30*time.Second, statsIs(m1, Stats{}))
	if l := m1.currentLoad(); l.Server != "m1" {
		t.Fatalf("load %+v", l)
	}
	_ = http.StatusOK
}
