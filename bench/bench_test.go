// Package bench holds the cluster core's benchmarks: allocation
// throughput and latency at 1, 16 and 256 concurrent clients against a
// 3-node cluster, and failover time after SIGKILL of the leader process.
// Run with `make bench`; the figures are printed as custom metrics.
package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/internal/proccluster"
	"github.com/switchyard/switchyard/internal/testcluster"
)

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(float64(len(d)-1) * p)
	return d[i]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkAllocate measures acknowledged allocations per second and
// latency through the HTTP API (clients spread over all three nodes, so
// two thirds are forwarded by followers) and directly on the leader's
// decision loop (the core without HTTP/JSON).
func BenchmarkAllocate(b *testing.B) {
	for _, path := range []string{"http", "leader"} {
		for _, clients := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("%s/clients=%d", path, clients), func(b *testing.B) {
				// Measure with the production raft timing, not the test default.
				c := testcluster.New(b, 3, testcluster.Options{Mutate: func(_ int, cfg *agent.Config) {
					cfg.HeartbeatTimeout, cfg.ElectionTimeout = cluster.DefaultHeartbeatTimeout, cluster.DefaultElectionTimeout
					cfg.LeaderLeaseTimeout = cluster.DefaultLeaderLeaseTimeout
				}})
				ctx := context.Background()
				if _, err := c.Client().RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 1 << 40}); err != nil {
					b.Fatal(err)
				}
				leader := c.WaitLeader(10 * time.Second)
				ops := b.N * 200 // at least 200 ops per iteration for stable percentiles
				if clients > 16 {
					ops = b.N * 2000
				}
				var next atomic.Int64
				lat := make([][]time.Duration, clients)
				var wg sync.WaitGroup
				var failed atomic.Int64
				entries0 := leader.Agent.Node.Status().LastIndex
				b.ResetTimer()
				start := time.Now()
				for w := 0; w < clients; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						cl := api.NewClient(c.Nodes[w%3].Cfg.HTTPAddr).WithToken(c.Token)
						for {
							i := next.Add(1)
							if i > int64(ops) {
								return
							}
							t0 := time.Now()
							var err error
							req := fmt.Sprintf("w%d-%d", w, i)
							if path == "http" {
								_, err = cl.Allocate(ctx, api.AllocateRequest{RequestID: req, Room: "r", Units: 1})
							} else {
								_, _, err = leader.Agent.Node.Allocate(ctx, cluster.AllocateRequest{RequestID: req, Room: "r", Units: 1})
							}
							if err != nil {
								failed.Add(1)
								continue
							}
							lat[w] = append(lat[w], time.Since(t0))
						}
					}()
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				var all []time.Duration
				for _, l := range lat {
					all = append(all, l...)
				}
				if failed.Load() > 0 {
					b.Fatalf("%d allocations failed", failed.Load())
				}
				entries := leader.Agent.Node.Status().LastIndex - entries0
				b.ReportMetric(float64(len(all))/elapsed.Seconds(), "allocs/s")
				b.ReportMetric(ms(percentile(all, 0.5)), "p50-ms")
				b.ReportMetric(ms(percentile(all, 0.99)), "p99-ms")
				b.ReportMetric(float64(len(all))/float64(max(entries, 1)), "allocs/entry")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// BenchmarkFailoverSIGKILL kills the leader process with SIGKILL again and
// again while one client allocates continuously (spread over all nodes,
// retrying with the same request id), and reports the time from the kill
// to the next acknowledged allocation. Each iteration is one kill.
func BenchmarkFailoverSIGKILL(b *testing.B) {
	bin := proccluster.BuildBinary(b)
	c := proccluster.New(b, bin, 3)
	ctx := context.Background()
	cl := api.NewClient(c.Addrs()...)
	if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 1 << 40}); err != nil {
		b.Fatal(err)
	}
	// The first kill must find a formed cluster: every node a voter whose
	// HTTP address is in the member table (survivors ask each other where
	// their logs end before one starts the election).
	for {
		ms, err := cl.Members(ctx)
		formed := err == nil && len(ms) == 3
		for _, m := range ms {
			formed = formed && m.Suffrage == "Voter" && m.HTTPAddr != ""
		}
		if formed {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var acks atomic.Int64
	// killAt is the unix nanos of the current kill; firstAck the end time
	// of the first allocation that was sent after it and acknowledged.
	var killAt, firstAck atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wc := api.NewClient(c.Addrs()...)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				t0 := time.Now().UnixNano()
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := wc.Allocate(rctx, api.AllocateRequest{RequestID: fmt.Sprintf("f%d-%d", w, i), Room: "r", Units: 1})
				cancel()
				if err == nil {
					acks.Add(1)
					if k := killAt.Load(); k > 0 && t0 >= k {
						firstAck.CompareAndSwap(0, time.Now().UnixNano())
					}
				}
			}
		}()
	}
	var outages []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		leader, err := c.WaitLeader(wctx)
		cancel()
		if err != nil {
			b.Fatalf("kill %d: %v", i, err)
		}
		// Let traffic flow before the kill.
		base := acks.Load()
		for acks.Load() < base+50 {
			time.Sleep(time.Millisecond)
		}
		firstAck.Store(0)
		k := time.Now()
		killAt.Store(k.UnixNano())
		c.Kill(leader)
		for firstAck.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		outages = append(outages, time.Unix(0, firstAck.Load()).Sub(k))
		killAt.Store(0)
		c.Start(leader)
	}
	b.StopTimer()
	close(stop)
	wg.Wait()
	b.ReportMetric(ms(percentile(outages, 0.5)), "p50-ms")
	b.ReportMetric(ms(percentile(outages, 0.99)), "p99-ms")
	b.ReportMetric(ms(slices.Max(outages)), "max-ms")
	b.ReportMetric(0, "ns/op")
	b.Logf("kills=%d outages=%v", len(outages), outages)
}
