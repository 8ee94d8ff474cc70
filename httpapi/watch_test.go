package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// mirror is a watcher's copy of the state, built from events only.
type mirror struct {
	mu     sync.Mutex
	synced uint64
	resets int
	srv    map[string]api.Server
	alloc  map[string]api.Allocation
	policy uint64
	log    []api.WatchEvent
	seen   map[string]time.Time // allocation id -> when its first event arrived
	rooms  map[string]api.Room
}

func (m *mirror) apply(ev api.WatchEvent) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.log = append(m.log, ev)
	switch ev.Kind {
	case api.WatchReset:
		m.resets++
		m.srv, m.alloc, m.rooms = map[string]api.Server{}, map[string]api.Allocation{}, map[string]api.Room{}
	case api.WatchSynced:
		m.synced = ev.Index
	case api.WatchServer:
		if ev.Op == "delete" {
			delete(m.srv, ev.ID)
		} else {
			m.srv[ev.ID] = *ev.Server
		}
	case api.WatchAllocation:
		if ev.Op == "delete" {
			delete(m.alloc, ev.ID)
		} else {
			m.alloc[ev.ID] = *ev.Allocation
		}
		if _, ok := m.seen[ev.ID]; !ok {
			m.seen[ev.ID] = time.Now()
		}
	case api.WatchPolicy:
		m.policy = ev.Policy.Version
	case api.WatchRoom:
		if ev.Op == "delete" {
			delete(m.rooms, ev.ID)
		} else {
			m.rooms[ev.ID] = *ev.Room
		}
	}
	return nil
}

// matches compares the mirror with the cluster's state read through the
// API.
func (m *mirror) matches(ctx context.Context, cl *api.Client) error {
	servers, err := cl.Servers(ctx, false)
	if err != nil {
		return err
	}
	allocs, err := cl.Allocations(ctx, api.AllocationListOptions{})
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(servers) != len(m.srv) || len(allocs) != len(m.alloc) {
		return fmt.Errorf("watched %d servers, %d allocations; API %d, %d (synced %d)", len(m.srv), len(m.alloc), len(servers), len(allocs), m.synced)
	}
	for _, s := range servers {
		if w := m.srv[s.ID]; w.Used != s.Used || w.State != s.State || w.Capacity != s.Capacity {
			return fmt.Errorf("server %s: watched %+v, API %+v", s.ID, w, s)
		}
	}
	for _, a := range allocs {
		if w := m.alloc[a.ID]; w.State != a.State || w.Server != a.Server {
			return fmt.Errorf("allocation %s: watched %+v, API %+v", a.ID, w, a)
		}
	}
	return nil
}

// rawWatch reads a /v1/watch stream until it has seen the synced index
// until (or fails the test).
func rawWatch(t *testing.T, c *testcluster.Cluster, url string, until uint64) []api.WatchEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	c.Authorize(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	var out []api.WatchEvent
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var ev api.WatchEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
		if ev.Kind == api.WatchSynced && ev.Index >= until {
			return out
		}
	}
	t.Fatalf("stream %s ended before index %d: %v", url, until, sc.Err())
	return nil
}

// TestWatch: a watcher's copy built from the stream alone matches the
// cluster through registrations, allocations, releases, a policy change
// and the loss of the agent it was reading from (resuming on an agent with
// no watch history of its own); a resume from a synced index on the same
// agent replays exactly the events after it; an index neither the agent's
// history nor the state's change log reaches gets 410 compacted; bad
// kinds get 400.
func TestWatch(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cl := c.Client()
	f0, f1 := c.Followers()[0], c.Followers()[1]
	if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 100}); err != nil {
		t.Fatal(err)
	}

	m := &mirror{seen: map[string]time.Time{}}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	done := make(chan error, 1)
	go func() {
		// Follower f0 first; when it goes, the others.
		done <- api.NewClient(f0.Cfg.HTTPAddr, f1.Cfg.HTTPAddr, c.WaitLeader(10*time.Second).Cfg.HTTPAddr).WithToken(c.Token).Watch(wctx, api.WatchOptions{}, m.apply)
	}()
	testcluster.Eventually(t, 30*time.Second, func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.resets != 1 || m.srv["m1"].Capacity != 100 {
			return fmt.Errorf("initial copy not in: resets %d, servers %v", m.resets, m.srv)
		}
		return nil
	})
	m.mu.Lock()
	first := m.synced
	m.mu.Unlock()
	// Kinds filter (on the leader: f1 stays without a watch history until
	// the watcher comes to it, so that its resume there is answered from
	// the state's change log).
	leaderAddr := c.WaitLeader(10 * time.Second).Cfg.HTTPAddr
	only := rawWatch(t, c, "http://"+leaderAddr+"/v1/watch?kinds=servers", 0)
	for _, ev := range only {
		if ev.Kind == api.WatchAllocation {
			t.Fatalf("kinds=servers sent %+v", ev)
		}
	}

	var ids []string
	for i := 0; i < 20; i++ {
		a, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: fmt.Sprintf("w%d", i), Room: fmt.Sprintf("room-%d", i%3), Units: 2})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, a.ID)
	}
	for _, id := range ids[:5] {
		if _, err := cl.Release(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: "m2", Capacity: 10}); err != nil {
		t.Fatal(err)
	}
	placed, err := cl.PlaceRoom(ctx, "placed", api.PlaceRoomRequest{Units: 1})
	if err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 30*time.Second, func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		if r := m.rooms["placed"]; r.Server != placed.Server || r.AllocationID != placed.AllocationID {
			return fmt.Errorf("watched room %+v, placed %+v", r, placed)
		}
		return nil
	})
	testcluster.Eventually(t, 30*time.Second, func() error { return m.matches(ctx, cl) })
	m.mu.Lock()
	mid := m.synced
	m.mu.Unlock()

	// Resume on the same agent from the first synced index: exactly the
	// events the live stream had after it.
	replay := rawWatch(t, c, "http://"+f0.Cfg.HTTPAddr+"/v1/watch?since="+fmt.Sprint(first), mid)
	m.mu.Lock()
	var live []api.WatchEvent
	for _, ev := range m.log {
		if ev.Index > first && ev.Index <= mid && ev.Kind != api.WatchHeartbeat {
			live = append(live, ev)
		}
	}
	m.mu.Unlock()
	var replayed []api.WatchEvent
	for _, ev := range replay {
		if ev.Kind != api.WatchHeartbeat {
			replayed = append(replayed, ev)
		}
	}
	lb, _ := json.Marshal(live)
	rb, _ := json.Marshal(replayed)
	if string(lb) != string(rb) || len(live) == 0 {
		t.Fatalf("resume from %d to %d:\nlive     %s\nreplayed %s", first, mid, lb, rb)
	}

	code, body := getAs(t, c.Token, "http://"+leaderAddr+"/v1/watch?kinds=rockets")
	if code != 400 || !strings.Contains(string(body), "invalid_argument") {
		t.Fatalf("bad kinds: %d %s", code, body)
	}

	// The agent the watcher reads from goes away: it resumes on f1, which
	// has no watch history yet, and keeps up without a full copy.
	c.Stop(f0)
	for i := 20; i < 30; i++ {
		if _, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: fmt.Sprintf("w%d", i), Room: "after", Units: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cl.Release(ctx, ids[5]); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 30*time.Second, func() error { return m.matches(ctx, cl) })

	// Figure: acknowledged allocation → its event on the watch stream,
	// under 8 concurrent allocating clients.
	if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: "big", Capacity: 1000}); err != nil {
		t.Fatal(err)
	}
	acked := sync.Map{}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				a, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: fmt.Sprintf("load-%d-%d", w, i), Room: "load", Units: 1})
				if err == nil {
					acked.Store(a.ID, time.Now())
				}
			}
		}()
	}
	wg.Wait()
	if _, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: "load-check", Room: "load", Units: 1}); err != nil {
		t.Fatalf("allocating under load failed: %v", err)
	}
	var delays []time.Duration
	testcluster.Eventually(t, 30*time.Second, func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		delays = delays[:0]
		n := 0
		acked.Range(func(k, v any) bool {
			n++
			if at, ok := m.seen[k.(string)]; ok {
				d := at.Sub(v.(time.Time))
				delays = append(delays, max(d, 0))
			}
			return true
		})
		if len(delays) < n {
			return fmt.Errorf("%d of %d allocations seen", len(delays), n)
		}
		return nil
	})
	slices.Sort(delays)
	if len(delays) > 0 {
		t.Logf("watch delay after the acknowledgement, %d allocations from 8 clients: p50 %v, p99 %v, max %v",
			len(delays), delays[len(delays)/2], delays[len(delays)*99/100], delays[len(delays)-1])
	}
	wcancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("watch ended with %v", err)
	}
	m.mu.Lock()
	t.Logf("watched %d events, %d resets (1 = no full copy after the agent was lost)", len(m.log), m.resets)
	if m.resets != 1 {
		t.Errorf("the watcher needed %d full copies; a resume should continue from its index", m.resets)
	}
	m.mu.Unlock()

	// After a snapshot restore neither f1's watch history (it started
	// after first) nor its change log reaches back to first: 410, with
	// how to resume.
	var snap bytes.Buffer
	if err := cl.SaveSnapshot(ctx, &snap); err != nil {
		t.Fatal(err)
	}
	res, err := cl.RestoreSnapshot(ctx, snap.Bytes(), false)
	if err != nil || !res.Restored {
		t.Fatalf("restore: %+v %v", res, err)
	}
	c.WaitConverged(30 * time.Second)
	code, body = getAs(t, c.Token, "http://"+f1.Cfg.HTTPAddr+"/v1/watch?since="+fmt.Sprint(first))
	if code != 410 || !strings.Contains(string(body), "compacted") || !strings.Contains(string(body), "reconnect without since") {
		t.Fatalf("since=%d after a restore: %d %s", first, code, body)
	}
}
