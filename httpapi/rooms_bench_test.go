package httpapi_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// BenchmarkRoomPlacement measures room placement latency through HTTP on
// a 3-node in-process cluster (requests spread over all agents, so 2/3
// are forwarded): "new" places rooms never seen (an allocation and a room
// record: two commits), "sticky" places them again (a read). b.N rounds
// of 200 placements per client; p50/p99 are reported.
func BenchmarkRoomPlacement(b *testing.B) {
	c := testcluster.New(b, 3)
	c.WaitLeader(30 * time.Second)
	ctx := context.Background()
	for i := range 20 {
		if _, err := c.Client().RegisterServer(ctx, api.RegisterServerRequest{ID: fmt.Sprintf("m%d", i), Capacity: 1 << 20, Addresses: []string{"http://10.0.0.1:8081"}}); err != nil {
			b.Fatal(err)
		}
	}
	round := 0
	for _, clients := range []int{1, 16} {
		for _, kind := range []string{"new", "sticky"} {
			b.Run(fmt.Sprintf("%s/clients=%d", kind, clients), func(b *testing.B) {
				var mu sync.Mutex
				var lat []time.Duration
				for range b.N {
					if kind == "new" {
						round++
					}
					var wg sync.WaitGroup
					for w := range clients {
						wg.Add(1)
						go func() {
							defer wg.Done()
							cl := api.NewClient(c.Addrs()[w%3]).WithToken(c.Token)
							for i := range 200 {
								t0 := time.Now()
								if _, err := cl.PlaceRoom(ctx, fmt.Sprintf("r%d-%d-%d", round, w, i), api.PlaceRoomRequest{}); err != nil {
									b.Error(err)
									return
								}
								d := time.Since(t0)
								mu.Lock()
								lat = append(lat, d)
								mu.Unlock()
							}
						}()
					}
					wg.Wait()
				}
				slices.Sort(lat)
				if len(lat) > 0 {
					b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
					b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
				}
			})
		}
	}
}
