package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/internal/testcluster"
)

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestRoomPlacement(t *testing.T) {
	c := testcluster.New(t, 3)
	c.WaitLeader(30 * time.Second)
	// Through a follower: placements are forwarded to the leader.
	cl := api.NewClient(c.Followers()[0].Cfg.HTTPAddr).WithToken(c.Token)
	ctx := ctxFor(t, 60*time.Second)
	reg := func(r api.RegisterServerRequest) {
		t.Helper()
		if _, err := cl.RegisterServer(ctx, r); err != nil {
			t.Fatalf("register %s: %v", r.ID, err)
		}
	}
	reg(api.RegisterServerRequest{ID: "m1", Capacity: 10, Addresses: []string{"http://10.0.0.1:8081"}})
	reg(api.RegisterServerRequest{ID: "j1", Capacity: 10, Addresses: []string{"http://10.0.0.2:8088/janus", "ws://10.0.0.2:8188"},
		Labels: map[string]string{fsm.SFULabel: fsm.SFUJanus}})

	r1, err := cl.PlaceRoom(ctx, "lobby", api.PlaceRoomRequest{Units: 2, SFU: fsm.SFUSwitchyard})
	if err != nil {
		t.Fatal(err)
	}
	if r1.Server != "m1" || r1.SFU != "switchyard" || r1.Moved || r1.AllocationID == "" || r1.PlacedAtUnixMs == 0 ||
		r1.URLs["whip"] != "http://10.0.0.1:8081/whip/lobby" || r1.URLs["whep"] != "http://10.0.0.1:8081/whep/lobby" {
		t.Fatalf("placement: %+v", r1)
	}
	// Sticky and idempotent.
	for range 3 {
		again, err := cl.PlaceRoom(ctx, "lobby", api.PlaceRoomRequest{Units: 2})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(again) != fmt.Sprint(r1) {
			t.Fatalf("second placement %+v, first %+v", again, r1)
		}
	}
	// Janus: URL, WebSocket URL and the VideoRoom number.
	j, err := cl.PlaceRoom(ctx, "talk", api.PlaceRoomRequest{SFU: fsm.SFUJanus})
	if err != nil {
		t.Fatal(err)
	}
	if j.Server != "j1" || j.SFU != "janus" || j.URLs["url"] != "http://10.0.0.2:8088/janus" || j.URLs["ws"] != "ws://10.0.0.2:8188" || j.URLs["room"] == nil {
		t.Fatalf("janus placement: %+v", j)
	}
	// Bad input: clear, final errors.
	if _, err := cl.PlaceRoom(ctx, "x", api.PlaceRoomRequest{SFU: "jitsi"}); !errors.Is(err, fsm.ErrInvalid) {
		t.Fatalf("unknown SFU kind: %v", err)
	}
	if _, err := cl.PlaceRoom(ctx, "x", api.PlaceRoomRequest{SFU: fsm.SFULiveKit}); !errors.Is(err, fsm.ErrCapacity) {
		t.Fatalf("no livekit server: %v", err)
	}
	if _, err := cl.PlaceRoom(ctx, "lobby", api.PlaceRoomRequest{SFU: fsm.SFUJanus}); !errors.Is(err, fsm.ErrInvalid) {
		t.Fatalf("placed room asked on another kind: %v", err)
	}
	if _, err := cl.PlaceRoom(ctx, "big", api.PlaceRoomRequest{Units: 100}); !errors.Is(err, fsm.ErrCapacity) {
		t.Fatalf("too many units: %v", err)
	}

	// A draining server takes no new rooms, and its rooms move.
	reg(api.RegisterServerRequest{ID: "m2", Capacity: 10, Addresses: []string{"http://10.0.0.3:8081"}})
	if _, err := cl.DrainServer(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	moved, err := cl.PlaceRoom(ctx, "lobby", api.PlaceRoomRequest{Units: 2})
	if err != nil {
		t.Fatal(err)
	}
	if moved.Server != "m2" || !moved.Moved || moved.AllocationID == r1.AllocationID || moved.URLs["whip"] != "http://10.0.0.3:8081/whip/lobby" {
		t.Fatalf("after drain: %+v", moved)
	}
	if a, err := cl.Allocations(ctx, api.AllocationListOptions{Room: "lobby", ActiveOnly: true}); err != nil || len(a) != 1 || a[0].Server != "m2" {
		t.Fatalf("active allocations of lobby: %+v %v", a, err)
	}

	// A server that stops reporting is marked down (the failure detector
	// watches servers registered with an incarnation); its rooms are
	// vacated at once and move on the next placement.
	reg(api.RegisterServerRequest{ID: "m3", Capacity: 10, Addresses: []string{"http://10.0.0.4:8081"}})
	if _, err := cl.DrainServer(ctx, "m2"); err != nil {
		t.Fatal(err)
	}
	reg(api.RegisterServerRequest{ID: "m4", Capacity: 10, Addresses: []string{"http://10.0.0.5:8081"}})
	if _, err := cl.DrainServer(ctx, "m3"); err != nil {
		t.Fatal(err)
	}
	onM4, err := cl.PlaceRoom(ctx, "lobby", api.PlaceRoomRequest{Units: 2})
	if err != nil || onM4.Server != "m4" || !onM4.Moved {
		t.Fatalf("placement on m4: %+v %v", onM4, err)
	}
	reg(api.RegisterServerRequest{ID: "m5", Capacity: 10, Addresses: []string{"http://10.0.0.6:8081"}})
	// m4 now declares an incarnation and never reports.
	reg(api.RegisterServerRequest{ID: "m4", Capacity: 10, Addresses: []string{"http://10.0.0.5:8081"}, Incarnation: 7})
	testcluster.Eventually(t, 60*time.Second, func() error {
		r, err := cl.Room(ctx, "lobby")
		if err != nil {
			return err
		}
		if r.Server != "" || len(r.URLs) != 0 {
			return fmt.Errorf("room still on %q", r.Server)
		}
		return nil
	})
	again, err := cl.PlaceRoom(ctx, "lobby", api.PlaceRoomRequest{Units: 2})
	if err != nil || again.Server != "m5" || !again.Moved {
		t.Fatalf("after m4 went down: %+v %v", again, err)
	}

	// Concurrent first placements of one room agree on one allocation.
	var wg sync.WaitGroup
	got := make([]api.Room, 16)
	errs := make([]error, 16)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = api.NewClient(c.Addrs()[i%3]).WithToken(c.Token).PlaceRoom(ctx, "crowd", api.PlaceRoomRequest{})
		}()
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil || got[i].AllocationID != got[0].AllocationID || got[i].Server != got[0].Server {
			t.Fatalf("concurrent placement %d: %+v %v (first %+v)", i, got[i], errs[i], got[0])
		}
	}
	if a, _ := cl.Allocations(ctx, api.AllocationListOptions{Room: "crowd", ActiveOnly: true}); len(a) != 1 {
		t.Fatalf("crowd holds %d active allocations", len(a))
	}

	// List, release (idempotent), place again after a release.
	rs, err := cl.Rooms(ctx, "", false)
	if err != nil || len(rs) != 3 {
		t.Fatalf("rooms: %+v %v", rs, err)
	}
	rel, err := cl.ReleaseRoom(ctx, "crowd")
	if err != nil || !rel.Released || rel.AllocationID != got[0].AllocationID {
		t.Fatalf("release: %+v %v", rel, err)
	}
	if rel, err = cl.ReleaseRoom(ctx, "crowd"); err != nil || rel.Released {
		t.Fatalf("second release: %+v %v", rel, err)
	}
	if _, err := cl.Room(ctx, "crowd"); !errors.Is(err, fsm.ErrNotFound) {
		t.Fatalf("released room: %v", err)
	}
	back, err := cl.PlaceRoom(ctx, "crowd", api.PlaceRoomRequest{Units: 3})
	if err != nil || back.AllocationID == got[0].AllocationID || back.Moved {
		t.Fatalf("placement after release: %+v %v", back, err)
	}
	c.WaitConverged(30 * time.Second)
}

// Rooms spread under least-loaded and pack under bin-pack: placement uses
// the live policy.
func TestRoomPlacementFollowsPolicy(t *testing.T) {
	c := testcluster.New(t, 1)
	c.WaitLeader(30 * time.Second)
	cl := c.Client()
	ctx := ctxFor(t, 60*time.Second)
	for _, id := range []string{"a", "b"} {
		if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: id, Capacity: 10, Addresses: []string{"http://" + id}}); err != nil {
			t.Fatal(err)
		}
	}
	s1, err1 := cl.PlaceRoom(ctx, "s1", api.PlaceRoomRequest{Units: 2})
	s2, err2 := cl.PlaceRoom(ctx, "s2", api.PlaceRoomRequest{Units: 2})
	if err1 != nil || err2 != nil || s1.Server == s2.Server {
		t.Fatalf("least-loaded: %+v %+v %v %v", s1, s2, err1, err2)
	}
	if _, err := cl.SetPolicy(ctx, api.Policy{Strategy: "bin-pack"}); err != nil {
		t.Fatal(err)
	}
	p1, err1 := cl.PlaceRoom(ctx, "p1", api.PlaceRoomRequest{Units: 2})
	p2, err2 := cl.PlaceRoom(ctx, "p2", api.PlaceRoomRequest{Units: 2})
	if err1 != nil || err2 != nil || p1.Server != p2.Server {
		t.Fatalf("bin-pack: %+v %+v %v %v", p1, p2, err1, err2)
	}
}
