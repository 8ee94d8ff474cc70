package sidecar_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/internal/janustest"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/sidecar"
	"github.com/switchyard/switchyard/transport"
)

type sidecarRun struct {
	sc   *sidecar.Sidecar
	done chan error
	stop context.CancelFunc
}

func startSidecar(t *testing.T, c *testcluster.Cluster, id string, j *janustest.Proc, secret string) *sidecarRun {
	t.Helper()
	a, err := sidecar.NewJanus(sidecar.JanusConfig{URL: j.URL(), WSURL: fmt.Sprintf("ws://127.0.0.1:%d", j.Port+1), AdminURL: j.AdminURL(), AdminSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	return runSidecar(t, c, id, a, j.Pid())
}

// runSidecar runs a sidecar for adapter a (the SFU's process pid) against
// c until the test ends.
func runSidecar(t *testing.T, c *testcluster.Cluster, id string, a sidecar.SFU, pid int) *sidecarRun {
	t.Helper()
	return runConfig(t, sidecar.Config{
		ID: id, Capacity: 10, SFU: a, QUICAddrs: c.QUICAddrs(), TLS: c.Identity(id).ClientConfig(transport.ALPN),
		HTTPAddrs: c.Addrs(), Token: c.MediaToken(id), RoomEmptyTimeout: time.Second, PID: pid, Logger: testcluster.Logger(t),
	})
}

// runConfig builds a sidecar from cfg and runs it until the test ends.
func runConfig(t *testing.T, cfg sidecar.Config) *sidecarRun {
	t.Helper()
	sc, err := sidecar.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &sidecarRun{sc: sc, done: make(chan error, 1), stop: cancel}
	go func() { r.done <- sc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-r.done; _ = sc.Close() })
	return r
}

func serverState(ctx context.Context, cl *api.Client, id string) (api.Server, error) {
	return cl.Server(ctx, id, false)
}

func TestJanusSidecar(t *testing.T) {
	bin, lib := janustest.Need(t)
	c := testcluster.New(t, 1)
	c.WaitLeader(30 * time.Second)
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	ja := janustest.New(t, bin, lib, "41000-41099")
	jb := janustest.New(t, bin, lib, "41100-41199")

	// A wrong admin secret is found before anything depends on it.
	bad, _ := sidecar.NewJanus(sidecar.JanusConfig{URL: ja.URL(), AdminURL: ja.AdminURL(), AdminSecret: "wrong"})
	if err := bad.CheckAdmin(ctx); !errors.Is(err, sidecar.ErrRefused) {
		t.Fatalf("wrong admin secret: %v", err)
	}

	sa := startSidecar(t, c, "ja", ja, ja.Secret)
	sb := startSidecar(t, c, "jb", jb, jb.Secret)
	for _, id := range []string{"ja", "jb"} {
		testcluster.Eventually(t, 60*time.Second, func() error {
			s, err := serverState(ctx, cl, id)
			if err != nil {
				return err
			}
			if s.State != "active" || s.Labels[api.SFULabel] != api.SFUJanus || s.Incarnation == 0 {
				return fmt.Errorf("%s: %+v", id, s)
			}
			return nil
		})
	}

	// Placement creates the VideoRoom on the chosen instance; the
	// sidecar's reports list the room and, once someone joins, the peer.
	room, err := cl.PlaceRoom(ctx, "standup", api.PlaceRoomRequest{SFU: api.SFUJanus})
	if err != nil {
		t.Fatal(err)
	}
	jp := map[string]*janustest.Proc{"ja": ja, "jb": jb}[room.Server]
	if room.SFU != "janus" || room.URLs["url"] != jp.URL() || room.URLs["ws"] == nil || room.URLs["room"] == nil {
		t.Fatalf("placement: %+v", room)
	}
	loadOf := func(id string) (map[string]any, error) {
		raw, err := cl.ServersRaw(ctx, false)
		if err != nil {
			return nil, err
		}
		for _, s := range raw {
			if s["id"] == id {
				if l, ok := s["load"].(map[string]any); ok {
					return l, nil
				}
				return nil, fmt.Errorf("%s has no load yet", id)
			}
		}
		return nil, fmt.Errorf("%s not listed", id)
	}
	testcluster.Eventually(t, 30*time.Second, func() error {
		l, err := loadOf(room.Server)
		if err != nil {
			return err
		}
		if rs, _ := l["rooms"].([]any); len(rs) != 1 || rs[0] != "standup" || l["unmaterialized_units"].(float64) != 0 {
			return fmt.Errorf("load %v", l)
		}
		return nil
	})
	// A publisher and a subscriber (pion) meet in the placed room.
	end := janusMedia(t, room)
	testcluster.Eventually(t, 30*time.Second, func() error {
		l, err := loadOf(room.Server)
		if err != nil {
			return err
		}
		// Peers: the publisher's participant and the subscriber (the
		// admin API's handles), the subscriber's track; bitrates from
		// Janus' last-second counts.
		in, _ := l["ingress_bps"].(float64)
		out, _ := l["egress_bps"].(float64)
		if l["peers"].(float64) != 2 || l["tracks"].(float64) != 1 || l["subscribed_tracks"].(float64) != 1 || in <= 0 || out <= 0 {
			return fmt.Errorf("load %v", l)
		}
		return nil
	})
	// The SFU process's CPU (the sidecar reads Janus' pid): relaying
	// media, some report shows it busy.
	testcluster.Eventually(t, 30*time.Second, func() error {
		l, err := loadOf(room.Server)
		if err != nil {
			return err
		}
		if cpu, _ := l["cpu"].(float64); cpu <= 0 || cpu > 1 {
			return fmt.Errorf("reported cpu %v, want a share of a core in (0, 1]", l["cpu"])
		}
		return nil
	})
	// Sticky while the server is alive.
	if again, err := cl.PlaceRoom(ctx, "standup", api.PlaceRoomRequest{SFU: api.SFUJanus}); err != nil || again.Server != room.Server || again.Moved {
		t.Fatalf("second placement: %+v %v", again, err)
	}
	// The room ends on the SFU: its placement is released, the VideoRoom
	// destroyed.
	end()
	testcluster.Eventually(t, 60*time.Second, func() error {
		if _, err := cl.Room(ctx, "standup"); !errors.Is(err, errcode.ErrNotFound) {
			return fmt.Errorf("room still placed: %v", err)
		}
		return nil
	})

	// Rooms spread under the default least-loaded policy.
	r1, err := cl.PlaceRoom(ctx, "r1", api.PlaceRoomRequest{SFU: api.SFUJanus})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := cl.PlaceRoom(ctx, "r2", api.PlaceRoomRequest{SFU: api.SFUJanus})
	if err != nil {
		t.Fatal(err)
	}
	if r1.Server == r2.Server {
		t.Fatalf("least-loaded put r1 and r2 on %s", r1.Server)
	}

	// Kill r1's Janus: its sidecar stops reporting, the server is marked
	// down, and r1 moves to the survivor at its next placement.
	dead, live := ja, jb
	deadRun, liveID := sa, "jb"
	if r1.Server == "jb" {
		dead, live, deadRun, liveID = jb, ja, sb, "ja"
	}
	_ = live
	oldInc := deadRun.sc.Incarnation()
	killed := time.Now()
	dead.Kill()
	testcluster.Eventually(t, 60*time.Second, func() error {
		s, err := serverState(ctx, cl, r1.Server)
		if err != nil {
			return err
		}
		if s.State != "down" {
			return fmt.Errorf("%s is %s", s.ID, s.State)
		}
		return nil
	})
	moved, err := cl.PlaceRoom(ctx, "r1", api.PlaceRoomRequest{SFU: api.SFUJanus})
	if err != nil || moved.Server != liveID || !moved.Moved {
		t.Fatalf("r1 after its server died: %+v %v", moved, err)
	}
	t.Logf("SFU kill -> room placed elsewhere: %v", time.Since(killed).Round(time.Millisecond))

	// The dead Janus starts again: a new process, a new incarnation.
	dead.Start()
	testcluster.Eventually(t, 60*time.Second, func() error {
		s, err := serverState(ctx, cl, r1.Server)
		if err != nil {
			return err
		}
		if s.State != "active" || s.Incarnation <= oldInc {
			return fmt.Errorf("%s is %s at incarnation %d (was %d)", s.ID, s.State, s.Incarnation, oldInc)
		}
		return nil
	})

	// Drain the survivor: Janus stops accepting sessions, no new room goes
	// there, and once its rooms are empty the sidecar deregisters it.
	if _, err := cl.DrainServer(ctx, liveID); err != nil {
		t.Fatal(err)
	}
	liveAdmin, _ := sidecar.NewJanus(sidecar.JanusConfig{URL: live.URL(), AdminURL: live.AdminURL(), AdminSecret: live.Secret})
	testcluster.Eventually(t, 30*time.Second, func() error {
		acc, err := liveAdmin.AcceptingNewSessions(ctx)
		if err != nil {
			return err
		}
		if acc {
			return errors.New("still accepting new sessions")
		}
		return nil
	})
	r3, err := cl.PlaceRoom(ctx, "r3", api.PlaceRoomRequest{SFU: api.SFUJanus})
	if err != nil || r3.Server == liveID {
		t.Fatalf("placement while %s drains: %+v %v", liveID, r3, err)
	}
	liveRun := sb
	if liveID == "ja" {
		liveRun = sa
	}
	select {
	case err := <-liveRun.done:
		liveRun.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("drained sidecar: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("sidecar of %s did not finish its drain", liveID)
	}
	if _, err := serverState(ctx, cl, liveID); !errors.Is(err, errcode.ErrNotFound) {
		t.Fatalf("drained server still registered: %v", err)
	}
	if rs, err := cl.Rooms(ctx, liveID, false); err != nil || len(rs) != 0 {
		t.Fatalf("rooms left on the drained server: %+v %v", rs, err)
	}
	if sa.sc.Reports() == 0 || sb.sc.Reports() == 0 {
		t.Fatal("no reports counted")
	}
}
