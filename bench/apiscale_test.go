package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/proccluster"
)

// registrants is how many clients register servers at once.
const registrants = 64

// BenchmarkAPIScale measures the public API as the fleet grows: three
// agent processes, a client sending one allocation at a time straight to
// the leader over HTTP, first with 20 registered servers and then, in the
// same cluster, with 20,000 and with 100,000 (registered through the API
// by 64 concurrent clients, whose rate is reported too). The ratio of the
// p50s is the cost of a decision growing with the fleet, seen from a
// client.
func BenchmarkAPIScale(b *testing.B) {
	bin := proccluster.BuildBinary(b)
	for range b.N {
		pc := proccluster.New(b, bin, 3)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		leader, err := pc.WaitLeader(ctx)
		if err != nil {
			b.Fatal(err)
		}
		cl := api.NewClient(leader.HTTPAddr)
		register := func(from, to int) float64 {
			var next atomic.Int64
			next.Store(int64(from))
			var wg sync.WaitGroup
			start := time.Now()
			for range registrants {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(to) {
							return
						}
						if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: fmt.Sprintf("s%06d", i), Capacity: 1 << 30,
							Region: fmt.Sprintf("r%d", i%3)}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if b.Failed() {
				b.FailNow()
			}
			return float64(to-from) / time.Since(start).Seconds()
		}
		p50 := func(tag string) time.Duration {
			_, lat := drive(b, 1, 300, func(_ int, req string) error {
				_, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: tag + req, Room: "r", Units: 1})
				return err
			})
			return percentile(lat, 0.5)
		}
		register(0, 20)
		small := p50("small-")
		regRate := register(20, 20_000)
		large := p50("large-")
		regRate100k := register(20_000, 100_000)
		huge := p50("huge-")
		cancel()
		pc.Close()
		b.ReportMetric(ms(small), "p50-20-ms")
		b.ReportMetric(ms(large), "p50-20000-ms")
		b.ReportMetric(ms(large)/ms(small), "p50-20000/20")
		b.ReportMetric(regRate, "registrations/s")
		b.ReportMetric(regRate100k, "registrations-to-100k/s")
		b.ReportMetric(ms(huge), "p50-100000-ms")
		b.ReportMetric(ms(huge)/ms(small), "p50-100000/20")
		b.ReportMetric(0, "ns/op")
	}
}
