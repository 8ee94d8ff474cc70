package api_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/errcode"
)

// An application places a room and takes units on a media server. Against
// `make run`, set SWITCHYARD_TOKEN to the operator token it prints and use
// its agents' HTTP addresses.
func Example() {
	c := api.NewClient("127.0.0.1:7501", "127.0.0.1:7502", "127.0.0.1:7503")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	room, err := c.PlaceRoom(ctx, "lobby", api.PlaceRoomRequest{Units: 1})
	if err != nil {
		fmt.Println("place:", err)
		return
	}
	fmt.Println("publish to", room.URLs["whip"])

	a, err := c.Allocate(ctx, api.AllocateRequest{RequestID: "lobby-viewer-1", Room: "lobby", Units: 1})
	switch {
	case errors.Is(err, errcode.ErrCapacity):
		fmt.Println("the fleet is full")
	case err != nil:
		fmt.Println("allocate:", err)
	default:
		fmt.Println("allocated", a.ID, "on", a.Server)
		_, _ = c.Release(ctx, a.ID)
	}
}

// An operator's tool reads the active allocations of a large cluster a
// page at a time: each request answers at most 500, whatever the fleet.
func ExamplePages() {
	c := api.NewClient("127.0.0.1:7501")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	units := map[string]int64{}
	for pg, err := range api.Pages(ctx, api.PageOptions{Limit: 500}, c.AllocationPages(api.AllocationListOptions{ActiveOnly: true})) {
		if err != nil {
			fmt.Println("list:", err)
			return
		}
		for _, a := range pg.Items {
			units[a.Server] += a.Units
		}
	}
	fmt.Println(len(units), "servers hold active allocations")
}
