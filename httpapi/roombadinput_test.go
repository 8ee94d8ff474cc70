package httpapi_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// Room placement checks its name and region as every other text field is
// checked (valid UTF-8, printable, capped) before anything is decided:
// 400 invalid_argument and nothing in the replicated state.
func TestRoomPlacementInputCaps(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{NoQUIC: true})
	leader := c.WaitLeader(30 * time.Second)
	cl := c.Client()
	ctx := ctxFor(t, 60*time.Second)
	if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 10, Addresses: []string{"http://10.0.0.1:8081"}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, room, region string
	}{
		{"invalid UTF-8 room", "a\xffb", ""},
		{"right-to-left override in the room", "evil\u202eroom", ""},
		{"terminal escape in the room", "\x1b[2Jroom", ""},
		{"room over 200 bytes", strings.Repeat("r", 201), ""},
		{"region over 64 bytes", "r1", strings.Repeat("x", 900_000)},
		{"terminal escape in the region", "r2", "\x1b]0;x\a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cl.PlaceRoom(ctx, tc.room, api.PlaceRoomRequest{Region: tc.region})
			if !errors.Is(err, errcode.ErrInvalid) {
				t.Fatalf("placement: %v, want invalid_argument", err)
			}
			// Nothing was decided: no allocation, no room (the state hash
			// also moves with the members' own entries, so it is not
			// compared here).
			f := leader.Agent.Node.FSM()
			if as := f.Allocations(fsm.AllocationFilter{}); len(as) != 0 {
				t.Fatalf("a refused placement left allocations: %v", as)
			}
			if _, ok := f.Room(tc.room); ok {
				t.Fatal("a refused placement left a room")
			}
		})
	}
	rooms, err := cl.Rooms(ctx, "", false)
	if err != nil || len(rooms) != 0 {
		t.Fatalf("rooms after refused placements: %+v %v", rooms, err)
	}
}
