package sidecar_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/internal/livekittest"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/sidecar"
)

func startLiveKitSidecar(t *testing.T, c *testcluster.Cluster, id string, p *livekittest.Proc) *sidecarRun {
	t.Helper()
	l, err := sidecar.NewLiveKit(sidecar.LiveKitConfig{URL: p.URL(), APIKey: livekittest.APIKey, APISecret: livekittest.APISecret,
		MetricsURL: p.MetricsURL()})
	if err != nil {
		t.Fatal(err)
	}
	return runSidecar(t, c, id, l, p.Pid())
}

// liveKitRooms lists the rooms a LiveKit server has (RoomService API).
func liveKitRooms(ctx context.Context, p *livekittest.Proc) ([]string, error) {
	l, err := sidecar.NewLiveKit(sidecar.LiveKitConfig{URL: p.URL(), APIKey: livekittest.APIKey, APISecret: livekittest.APISecret})
	if err != nil {
		return nil, err
	}
	st, err := l.Poll(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range st.Rooms {
		out = append(out, r.Name)
	}
	return out, nil
}

// TestLiveKitSidecar: two single-node LiveKit servers (no Redis), each
// with a sidecar. Placed rooms spread and are created on their server;
// LiveKit SDK clients publish and receive a track in one at the URL the
// placement gave, which the sidecar reports; rooms are released when
// LiveKit closes them; killing one server marks it down and
// its room moves; a drained server takes no new room and deregisters.
func TestLiveKitSidecar(t *testing.T) {
	bin := livekittest.Need(t)
	c := testcluster.New(t, 1)
	c.WaitLeader(30 * time.Second)
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	procs := map[string]*livekittest.Proc{
		"lk1": livekittest.New(t, bin, 42000, 42099),
		"lk2": livekittest.New(t, bin, 42100, 42199),
	}
	// A wrong secret is refused by LiveKit.
	bad, _ := sidecar.NewLiveKit(sidecar.LiveKitConfig{URL: procs["lk1"].URL(), APIKey: livekittest.APIKey, APISecret: "not-the-secret-not-the-secret-00"})
	if _, err := bad.Poll(ctx); !errors.Is(err, sidecar.ErrRefused) {
		t.Fatalf("wrong API secret: %v", err)
	}
	runs := map[string]*sidecarRun{}
	for id, p := range procs {
		runs[id] = startLiveKitSidecar(t, c, id, p)
	}
	for id := range procs {
		testcluster.Eventually(t, 60*time.Second, func() error {
			s, err := cl.Server(ctx, id, false)
			if err != nil {
				return err
			}
			if s.State != "active" || s.Labels[api.SFULabel] != api.SFULiveKit {
				return fmt.Errorf("%s: %+v", id, s)
			}
			return nil
		})
	}

	r1, err := cl.PlaceRoom(ctx, "r1", api.PlaceRoomRequest{SFU: api.SFULiveKit})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := cl.PlaceRoom(ctx, "r2", api.PlaceRoomRequest{SFU: api.SFULiveKit})
	if err != nil {
		t.Fatal(err)
	}
	if r1.Server == r2.Server || r1.SFU != "livekit" || r1.URLs["url"] != procs[r1.Server].URL() {
		t.Fatalf("placements %+v %+v", r1, r2)
	}
	for _, r := range []api.Room{r1, r2} {
		testcluster.Eventually(t, 30*time.Second, func() error {
			names, err := liveKitRooms(ctx, procs[r.Server])
			if err != nil {
				return err
			}
			if !slices.Contains(names, r.Room) {
				return fmt.Errorf("%s has rooms %v", r.Server, names)
			}
			return nil
		})
	}

	// Two clients of LiveKit's SDK meet in r1 at the placement's URL: one
	// publishes, the other receives; the sidecar reports them and the
	// bitrates.
	endMedia := liveKitMedia(t, r1) // livekitmedia_test.go
	defer endMedia()
	// Up to a minute: in `make test` beside busy loops LiveKit once
	// forwarded nothing to the subscriber for 30 s (egress 0, the rest
	// reported) while the whole suite ran.
	testcluster.Eventually(t, 60*time.Second, func() error {
		srvs, err := cl.ServersWithLoad(ctx, false)
		if err != nil {
			return err
		}
		for _, s := range srvs {
			if s.ID == r1.Server {
				// Bitrates and subscribed tracks from LiveKit's Prometheus
				// endpoint: the clip in from the publisher and out to the
				// subscriber.
				if s.Load == nil || s.Load.Peers != 2 || s.Load.Tracks != 1 || s.Load.SubscribedTracks != 1 || s.Load.IngressBps <= 0 || s.Load.EgressBps <= 0 {
					return fmt.Errorf("%s: load %+v", s.ID, s.Load)
				}
				return nil
			}
		}
		return fmt.Errorf("%s not listed", r1.Server)
	})
	endMedia()

	// LiveKit closes r2 (here: deleted through its API, as an application
	// would end it): the sidecar releases the placement.
	l2, _ := sidecar.NewLiveKit(sidecar.LiveKitConfig{URL: procs[r2.Server].URL(), APIKey: livekittest.APIKey, APISecret: livekittest.APISecret})
	if err := l2.CloseRoom(ctx, sidecar.RoomRef{Name: "r2"}); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 30*time.Second, func() error {
		if _, err := cl.Room(ctx, "r2"); !errors.Is(err, errcode.ErrNotFound) {
			names, lerr := liveKitRooms(ctx, procs[r2.Server])
			return fmt.Errorf("r2 still placed: %v (%s has rooms %v %v)", err, r2.Server, names, lerr)
		}
		return nil
	})

	// Kill r1's server: marked down, r1 moves to the other one.
	dead, liveID := r1.Server, r2.Server
	procs[dead].Kill()
	testcluster.Eventually(t, 60*time.Second, func() error {
		s, err := cl.Server(ctx, dead, false)
		if err != nil {
			return err
		}
		if s.State != "down" {
			return fmt.Errorf("%s is %s", dead, s.State)
		}
		return nil
	})
	moved, err := cl.PlaceRoom(ctx, "r1", api.PlaceRoomRequest{SFU: api.SFULiveKit})
	if err != nil || moved.Server != liveID || !moved.Moved {
		t.Fatalf("r1 after %s died: %+v %v", dead, moved, err)
	}

	// Drain the survivor: no new room goes there (none is left), and with
	// its rooms empty the sidecar releases them and deregisters.
	if _, err := cl.DrainServer(ctx, liveID); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.PlaceRoom(ctx, "r3", api.PlaceRoomRequest{SFU: api.SFULiveKit}); !errors.Is(err, fsm.ErrCapacity) {
		t.Fatalf("placement with every livekit server draining or down: %v", err)
	}
	select {
	case err := <-runs[liveID].done:
		runs[liveID].done <- err
		if err != nil {
			t.Fatalf("drained sidecar: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("sidecar of %s did not finish its drain", liveID)
	}
	if _, err := cl.Server(ctx, liveID, false); !errors.Is(err, errcode.ErrNotFound) {
		t.Fatalf("drained server still registered: %v", err)
	}
}
