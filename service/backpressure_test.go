package service_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/transport"
)

// Far more requests than the leader can hold at once — its queue holds 16
// here (four commands per log entry), while 600 arrive together over HTTP
// from every agent and over one QUIC connection (more streams than the
// listener allows open) — are slowed, not refused or lost: every caller
// gets its allocation, each granted once.
func TestFloodIsSlowedNotLost(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Mutate: func(_ int, cfg *agent.Config) {
		cfg.MaxBatch = 4 // queue: 4×MaxBatch = 16
	}})
	c.WaitLeader(30 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := c.Client().RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	qc, err := transport.NewClient(transport.ClientConfig{Addrs: c.QUICAddrs(), TLS: c.Identity("flood").ClientConfig(transport.ALPN),
		Logger: testcluster.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer qc.Close()

	const perPath = 300
	var (
		mu  sync.Mutex
		ids = map[string]string{} // allocation id -> request id
		wg  sync.WaitGroup
	)
	record := func(rid, id string, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			t.Errorf("%s: %v", rid, err)
			return
		}
		if other, ok := ids[id]; ok {
			t.Errorf("allocation %s granted to %s and %s", id, other, rid)
		}
		ids[id] = rid
	}
	httpClients := []*api.Client{}
	for _, a := range c.Addrs() {
		httpClients = append(httpClients, api.NewClient(a).WithToken(c.Token))
	}
	for i := range perPath {
		wg.Add(2)
		go func() {
			defer wg.Done()
			rid := fmt.Sprintf("flood-http-%d", i)
			a, err := httpClients[i%len(httpClients)].Allocate(ctx, api.AllocateRequest{RequestID: rid, Room: fmt.Sprintf("r%d", i%9), Units: 1})
			record(rid, a.ID, err)
		}()
		go func() {
			defer wg.Done()
			rid := fmt.Sprintf("flood-quic-%d", i)
			a, _, err := qc.Allocate(ctx, transport.AllocateRequest{RequestID: rid, Room: fmt.Sprintf("r%d", i%9), Units: 1})
			record(rid, a.GetId(), err)
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if len(ids) != 2*perPath {
		t.Fatalf("%d allocations acknowledged, want %d", len(ids), 2*perPath)
	}
	c.WaitConverged(30 * time.Second)
	active := c.WaitLeader(30 * time.Second).Agent.Node.FSM().Allocations(fsm.AllocationFilter{ActiveOnly: true})
	if len(active) != len(ids) {
		t.Fatalf("the leader holds %d active allocations, %d were acknowledged", len(active), len(ids))
	}
	for _, a := range active {
		if ids[a.GetId()] != a.GetRequestId() {
			t.Fatalf("allocation %s (request %s) was never acknowledged as such", a.GetId(), a.GetRequestId())
		}
	}
}
