package httpapi_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// A sidecar whose SFU refuses a room gives the placement up with a reason
// (POST /v1/rooms/{room}/vacate): the room's record stays, vacated, the
// reason reaches the application waiting for the room, and the next
// placement moves it.
func TestRoomVacateReachesTheApplication(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{NoQUIC: true})
	c.WaitFeature(cluster.FeatureRoomVacate, 30*time.Second)
	cl := c.Client()
	ctx := ctxFor(t, 60*time.Second)
	for _, id := range []string{"j1", "j2"} {
		if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: id, Capacity: 10, Addresses: []string{"http://" + id + ":8088/janus"},
			Labels: map[string]string{fsm.SFULabel: fsm.SFUJanus}}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := cl.PlaceRoom(ctx, "talk", api.PlaceRoomRequest{SFU: fsm.SFUJanus})
	if err != nil {
		t.Fatal(err)
	}
	other := "j1"
	if r.Server == "j1" {
		other = "j2"
	}
	// Only the room's own server may give it up.
	if _, err := cl.VacateRoom(ctx, "talk", other, "", "not mine"); !errors.Is(err, errcode.ErrVersionMismatch) {
		t.Fatalf("vacate by %s, which does not host the room: %v", other, err)
	}
	for _, bad := range []struct{ server, reason string }{{"", "x"}, {r.Server, ""}, {r.Server, strings.Repeat("x", api.MaxReasonLen+1)}, {r.Server, "bad\x1b[2J"}} {
		if _, err := cl.VacateRoom(ctx, "talk", bad.server, "", bad.reason); !errors.Is(err, errcode.ErrInvalid) {
			t.Fatalf("vacate with server %q reason %q: %v, want invalid_argument", bad.server, bad.reason, err)
		}
	}
	const why = "the SFU refused to create it: 426 no such room name"
	if _, err := cl.VacateRoom(ctx, "talk", r.Server, "a-1-0", why); !errors.Is(err, errcode.ErrVersionMismatch) {
		t.Fatalf("vacate of another placement of the room: %v", err)
	}
	got, err := cl.VacateRoom(ctx, "talk", r.Server, r.AllocationID, why)
	if err != nil || got.Server != "" || got.VacatedReason != why {
		t.Fatalf("vacate: %+v %v", got, err)
	}
	// The application waiting for the room learns why, at once.
	err = cl.WaitRoomReady(ctx, r)
	if !errors.Is(err, api.ErrRoomNotReady) || !strings.Contains(err.Error(), why) {
		t.Fatalf("waiting for the vacated room: %v", err)
	}
	if cur, err := cl.Room(ctx, "talk"); err != nil || cur.VacatedReason != why || cur.Server != "" {
		t.Fatalf("room get: %+v %v", cur, err)
	}
	// Placed again: on a server, reason cleared, moved.
	again, err := cl.PlaceRoom(ctx, "talk", api.PlaceRoomRequest{SFU: fsm.SFUJanus})
	if err != nil || again.Server == "" || again.VacatedReason != "" || again.AllocationID == r.AllocationID {
		t.Fatalf("placed again: %+v %v", again, err)
	}
	// The same vacate sent again (a retry after a lost answer) does not
	// undo the new placement, even on the same server.
	if _, err := cl.VacateRoom(ctx, "talk", again.Server, r.AllocationID, why); !errors.Is(err, errcode.ErrVersionMismatch) {
		t.Fatalf("the earlier vacate, sent again: %v", err)
	}
	if cur, err := cl.Room(ctx, "talk"); err != nil || cur.Server != again.Server || cur.AllocationID != again.AllocationID {
		t.Fatalf("after the repeated vacate: %+v %v", cur, err)
	}
}

// A draining server takes no new room. Its rooms move at their next
// placement, except on LiveKit, which lets its rooms finish where they are
// (it still takes their late joiners' sessions).
func TestRoomsOnADrainingServer(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{NoQUIC: true})
	cl := c.Client()
	ctx := ctxFor(t, 60*time.Second)
	for _, sfu := range []string{fsm.SFULiveKit, fsm.SFUJanus} {
		t.Run(sfu, func(t *testing.T) {
			a, b := sfu+"-a", sfu+"-b"
			for _, id := range []string{a, b} {
				if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: id, Capacity: 10, Addresses: []string{"http://" + id + ":7880"},
					Labels: map[string]string{fsm.SFULabel: sfu}}); err != nil {
					t.Fatal(err)
				}
			}
			r, err := cl.PlaceRoom(ctx, sfu+"-room", api.PlaceRoomRequest{SFU: sfu})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cl.DrainServer(ctx, r.Server); err != nil {
				t.Fatal(err)
			}
			again, err := cl.PlaceRoom(ctx, r.Room, api.PlaceRoomRequest{SFU: sfu})
			if err != nil {
				t.Fatal(err)
			}
			stays := sfu == fsm.SFULiveKit
			if stays && (again.Server != r.Server || again.AllocationID != r.AllocationID || again.Moved) {
				t.Fatalf("a room on a draining LiveKit moved: %+v, was %+v", again, r)
			}
			if !stays && (again.Server == r.Server || !again.Moved) {
				t.Fatalf("a room on a draining %s stayed: %+v", sfu, again)
			}
			other, err := cl.PlaceRoom(ctx, sfu+"-new", api.PlaceRoomRequest{SFU: sfu})
			if err != nil || other.Server == r.Server {
				t.Fatalf("a new room went to the draining server: %+v %v", other, err)
			}
		})
	}
}
