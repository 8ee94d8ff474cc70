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

// TestRecascadeWhenTargetDies: the cascade target goes away; the origin
// notices, releases that allocation, allocates another target and
// cascades again; a new viewer is redirected there and gets media.
func TestRecascadeWhenTargetDies(t *testing.T) {
	c := testcluster.New(t, 3)
	cli := c.Client()
	m1 := startNode(t, testConfig(t, "m1", 1), httpCluster(t, c, "m1"))
	nodes := map[string]*Node{
		"m2": startNode(t, testConfig(t, "m2", 10), httpCluster(t, c, "m2")),
		"m3": startNode(t, testConfig(t, "m3", 10), httpCluster(t, c, "m3")),
	}
	pa := testAPI(t)
	pub := publish(t, pa, m1.BaseURL(), "r1")
	defer pub.close(true)
	v1 := watchRoom(t, pa, m1.BaseURL(), "r1")
	defer v1.close()
	v2 := watchRoom(t, pa, m1.BaseURL(), "r1")
	v2.waitRTP(t, 30*time.Second)
	var first string
	for id, n := range nodes {
		if strings.HasPrefix(v2.url, n.BaseURL()) {
			first = id
		}
	}
	if first == "" {
		t.Fatalf("second viewer at %s, want a cascade target", v2.url)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	old, err := cli.Allocations(ctx, api.AllocationListOptions{Room: "r1", ActiveOnly: true})
	if err != nil || len(old) != 1 {
		t.Fatalf("allocations: %+v %v", old, err)
	}

	// The target dies (its process ends: sessions and HTTP gone).
	_ = nodes[first].Close(ctx)
	v2.close()
	eventually(t, 30*time.Second, func() error {
		a, err := cli.Allocations(ctx, api.AllocationListOptions{Room: "r1", ActiveOnly: true})
		if err != nil {
			return err
		}
		if len(a) != 1 || a[0].ID == old[0].ID || a[0].Server == first {
			return fmt.Errorf("allocations %+v, want one new one away from %s", a, first)
		}
		if st := m1.Stats(); st.Cascades != 1 {
			return fmt.Errorf("m1 %+v", st)
		}
		return nil
	})
	v3, code, body, err := tryWatch(pa, m1.BaseURL(), "r1")
	if err != nil || code != http.StatusCreated {
		t.Fatalf("viewer after re-cascade: %d %s %v", code, body, err)
	}
	defer v3.close()
	if strings.HasPrefix(v3.url, nodes[first].BaseURL()) || strings.HasPrefix(v3.url, m1.BaseURL()) {
		t.Fatalf("viewer after re-cascade at %s", v3.url)
	}
	v3.waitRTP(t, 30*time.Second)
}

// TestDrain: an operator drains the node through the cluster API; it
// refuses new sessions, keeps existing ones, and deregisters once they end.
func TestDrain(t *testing.T) {
	c := testcluster.New(t, 3)
	cli := c.Client()
	m1 := startNode(t, testConfig(t, "m1", 4), httpCluster(t, c, "m1"))
	pa := testAPI(t)
	pub := publish(t, pa, m1.BaseURL(), "r1")
	v := watchRoom(t, pa, m1.BaseURL(), "r1")
	v.waitRTP(t, 30*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := cli.DrainServer(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		if !m1.Stats().Draining {
			return fmt.Errorf("m1 not draining yet")
		}
		return nil
	})
	if _, code, body, _ := tryWatch(pa, m1.BaseURL(), "r1"); code != http.StatusServiceUnavailable {
		t.Fatalf("new viewer while draining: %d %s", code, body)
	}
	n0 := v.packets.Load()
	eventually(t, 20*time.Second, func() error {
		if v.packets.Load() < n0+20 {
			return fmt.Errorf("existing viewer stalled during drain")
		}
		return nil
	})
	v.close()
	pub.close(true)
	select {
	case <-m1.Drained():
	case <-ctx.Done():
		t.Fatalf("not drained: %+v", m1.Stats())
	}
	servers, err := cli.Servers(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		if s.ID == "m1" {
			t.Fatalf("m1 still registered: %+v", s)
		}
	}
}
