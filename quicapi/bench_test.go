package quicapi_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/quic-go/quic-go"

	"github.com/switchyard/switchyard/fsm/fsmpb"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/loadview"
	"github.com/switchyard/switchyard/quicapi"
	"github.com/switchyard/switchyard/transport"
	"github.com/switchyard/switchyard/transport/transportpb"
)

// typicalReport is a realistic report: a mid-sized SFU with a few rooms and
// a handful of hosted allocations.
func typicalReport(id string, seq uint64) *transportpb.LoadReport {
	r := &transportpb.LoadReport{ServerId: id, Incarnation: 1732400000000000000, Seq: seq, Cpu: 0.42,
		IngressBps: 48_000_000, EgressBps: 310_000_000, Peers: 412, Tracks: 1630, FreeUnits: 37,
		SentAtUnixUs: time.Now().UnixMicro()}
	for i := 0; i < 5; i++ {
		r.Rooms = append(r.Rooms, fmt.Sprintf("room-%04d", i))
	}
	for i := 0; i < 10; i++ {
		r.AllocationIds = append(r.AllocationIds, fmt.Sprintf("a-%d-%d", 100000+i, i))
	}
	return r
}

// rawRegister registers server id over conn with one stream request, so
// that conn's reports for id are accepted.
func rawRegister(tb testing.TB, conn *quic.Conn, id string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pollTimeout)
	defer cancel()
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	req := &transportpb.Request{Version: transport.RequestVersion, Body: &transportpb.Request_Register{Register: &transportpb.RegisterRequest{
		Server: &fsmpb.Server{Id: id, CapacityUnits: 100, Incarnation: 1732400000000000000}}}}
	if err := transport.WriteFrame(st, req); err != nil {
		tb.Fatal(err)
	}
	_ = st.Close()
	var resp transportpb.Response
	if err := transport.ReadFrame(st, transport.MaxRequestFrame, &resp); err != nil || resp.GetErrorCode() != "" {
		tb.Fatalf("register %s: %v %v", id, err, resp.GetErrorMessage())
	}
}

// dialRaw dials addr with a media certificate for server id name (agents
// accept a connection's requests only for the id its certificate names).
func dialRaw(tb testing.TB, c *testcluster.Cluster, addr, name string) *quic.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pollTimeout)
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr, c.Identity(name).ClientConfig(transport.ALPN), &quic.Config{EnableDatagrams: true, MaxIdleTimeout: time.Minute})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.CloseWithError(0, "") })
	return conn
}

// BenchmarkIngest measures load reports accepted into one agent's view per
// second, sent over 1 or many connections from the same process (so the
// senders' CPU counts too: the figure is a lower bound for the receiver).
// Reports lost in flight (QUIC datagrams are unreliable) are not counted.
func BenchmarkIngest(b *testing.B) {
	for _, conns := range []int{1, 1000} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			c := newCluster(b, 1, -1, func(q *quicapi.ServerConfig) { q.DatagramRate = -1 })
			nd := leaderNode(b, c)
			type sender struct {
				conn *quic.Conn
				id   string
			}
			ss := make([]sender, conns)
			var wg sync.WaitGroup
			sem := make(chan struct{}, 32)
			for i := range ss {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					id := fmt.Sprintf("bench-%d", i)
					conn := dialRaw(b, c, nd.Cfg.QUICAddr, id)
					rawRegister(b, conn, id)
					ss[i] = sender{conn, id}
				}()
			}
			wg.Wait()
			accepted := func() float64 { return datagrams(nd, "accepted") }
			base := accepted()
			per := (b.N + conns - 1) / conns
			total := per * conns
			// Encode up front: encoding is the sender's cost, not the agent's.
			enc := make([][][]byte, conns)
			for i := range enc {
				enc[i] = make([][]byte, per)
				for s := range enc[i] {
					enc[i][s], _ = transport.EncodeReport(typicalReport(ss[i].id, uint64(s+1)), 0)
				}
			}
			b.ResetTimer()
			start := time.Now()
			for i := range ss {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for _, d := range enc[i] {
						_ = ss[i].conn.SendDatagram(d)
					}
				}()
			}
			wg.Wait()
			// Wait until ingestion stops making progress.
			last, still := accepted(), 0
			for still < 20 && last-base < float64(total) {
				time.Sleep(5 * time.Millisecond)
				if n := accepted(); n == last {
					still++
				} else {
					last, still = n, 0
				}
			}
			el := time.Since(start)
			b.StopTimer()
			got := last - base
			b.ReportMetric(got/el.Seconds(), "reports/s")
			b.ReportMetric(100*(1-got/float64(total)), "%lost")
		})
	}
}

// BenchmarkBytesPerReport reports the size of a typical report: payload,
// and on the wire (QUIC packet incl. header, frame and AEAD tag; plus
// 28 bytes of IPv4+UDP not counted).
func BenchmarkBytesPerReport(b *testing.B) {
	c := newCluster(b, 1, -1, func(q *quicapi.ServerConfig) { q.DatagramRate = -1 })
	nd := leaderNode(b, c)
	conn := dialRaw(b, c, nd.Cfg.QUICAddr, "bytes")
	rawRegister(b, conn, "bytes")
	d, _ := transport.EncodeReport(typicalReport("bytes", 1), 0)
	before := conn.ConnectionStats()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, _ = transport.EncodeReport(typicalReport("bytes", uint64(i+1)), 0)
		_ = conn.SendDatagram(d)
		time.Sleep(200 * time.Microsecond) // one report per packet, as in real life
	}
	time.Sleep(50 * time.Millisecond)
	b.StopTimer()
	after := conn.ConnectionStats()
	b.ReportMetric(float64(len(d)), "payload-bytes/report")
	b.ReportMetric(float64(after.BytesSent-before.BytesSent)/float64(b.N), "wire-bytes/report")
}

// BenchmarkReportToLeaderView measures the time from Report on a media
// node to the report being in the leader's view, for a media node
// connected to the leader and one connected to a follower (forwarded,
// coalesced every ForwardInterval = 50 ms by default).
func BenchmarkReportToLeaderView(b *testing.B) {
	c := newCluster(b, 3, -1, func(q *quicapi.ServerConfig) { q.DatagramRate = -1 })
	leader := leaderNode(b, c)
	for _, tc := range []struct {
		name     string
		addr     string
		gap, jit time.Duration // pause before each report: gap + rand(jit)
	}{
		{"direct", leader.Cfg.QUICAddr, 0, 60 * time.Millisecond},
		// Reports at random phases of the follower's 50 ms coalescing
		// window (what a busy follower sees).
		{"via-follower", c.Followers()[0].Cfg.QUICAddr, 0, 60 * time.Millisecond},
		// Reports spaced more than the window apart (a quiet follower:
		// each goes out at once).
		{"via-follower-quiet", c.Followers()[0].Cfg.QUICAddr, 60 * time.Millisecond, 20 * time.Millisecond},
	} {
		b.Run(tc.name, func(b *testing.B) {
			id := "lat-" + tc.name
			cl := newClient(b, c, id, tc.addr)
			// A fresh incarnation per run: the benchmark body runs more than
			// once with the same server id.
			register(b, cl, id, 10, uint64(time.Now().UnixNano()))
			lat := make([]time.Duration, 0, b.N)
			lost := 0
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				// Start at a random phase of the forwarder's tick, as a
				// real report would (a closed loop would always start
				// just after a tick).
				time.Sleep(tc.gap + time.Duration(rand.Int64N(int64(tc.jit))))
				// Leadership can move under load (150 ms election timeout
				// on a shared machine): always read the current leader.
				leader := currentLeader(c, leader)
				prev, _ := leader.Agent.Loads.Get(id)
				t0 := time.Now()
				if err := cl.Report(transport.Load{CPU: 0.5}); err != nil {
					b.Fatal(err)
				}
				arrived := false
				for !arrived && time.Since(t0) < time.Second {
					if e, ok := leader.Agent.Loads.Get(id); ok && (e.Seq != prev.Seq || e.Incarnation != prev.Incarnation) {
						arrived = true
						break
					}
					time.Sleep(100 * time.Microsecond)
				}
				if !arrived {
					lost++ // datagrams are unreliable; not a latency sample
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			if len(lat) == 0 {
				b.Fatal("no report reached the leader")
			}
			b.ReportMetric(float64(lost), "lost")
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// BenchmarkRawUDPReceive is the yardstick: a plain UDP receive loop on
// loopback (one reader, as the QUIC listener has one socket), fed by four
// senders in the same process with datagrams of a typical report's size.
func BenchmarkRawUDPReceive(b *testing.B) {
	rc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer rc.Close()
	_ = rc.SetReadBuffer(4 << 20)
	const senders = 4
	var scs []*net.UDPConn
	for i := 0; i < senders; i++ {
		sc, err := net.DialUDP("udp", nil, rc.LocalAddr().(*net.UDPAddr))
		if err != nil {
			b.Fatal(err)
		}
		defer sc.Close()
		scs = append(scs, sc)
	}
	payload, _ := transport.EncodeReport(typicalReport("raw", 1), 0)
	var got int
	var last time.Time
	done := make(chan struct{})
	b.ResetTimer()
	start := time.Now()
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			_ = rc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if _, _, err := rc.ReadFromUDP(buf); err != nil {
				return
			}
			got++
			last = time.Now()
		}
	}()
	var wg sync.WaitGroup
	for _, sc := range scs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < b.N/senders; i++ {
				_, _ = sc.Write(payload)
			}
		}()
	}
	wg.Wait()
	<-done
	el := last.Sub(start)
	b.StopTimer()
	b.ReportMetric(float64(got)/el.Seconds(), "reports/s")
	b.ReportMetric(100*(1-float64(got)/float64(b.N/senders*senders)), "%lost")
}

// BenchmarkTenThousandServersAt1Hz paces 10,000 simulated servers (one
// connection each: a connection's media certificate names one server id)
// at one report per second each for a few seconds and reports the process's CPU use (senders included, so an
// upper bound for the agent) in cores, and CPU-µs per report.
func BenchmarkTenThousandServersAt1Hz(b *testing.B) {
	const conns, perConn = 10000, 1
	c := newCluster(b, 1, -1, func(q *quicapi.ServerConfig) { q.DatagramRate = -1 })
	nd := leaderNode(b, c)
	type sender struct {
		conn *quic.Conn
		ids  []string
	}
	ss := make([]sender, conns)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range ss {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			id := fmt.Sprintf("s-%d", i)
			conn := dialRaw(b, c, nd.Cfg.QUICAddr, id)
			rawRegister(b, conn, id)
			ss[i] = sender{conn: conn, ids: []string{id}}
		}()
	}
	wg.Wait()
	const seconds = 3
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		base := datagrams(nd, "accepted")
		cpu0 := cpuTime()
		start := time.Now()
		for i := range ss {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Spread each connection's sends over the second.
				offset := time.Duration(i) * time.Second / conns
				time.Sleep(offset)
				for s := 0; s < seconds; s++ {
					for _, id := range ss[i].ids {
						d, _ := transport.EncodeReport(typicalReport(id, uint64(n*seconds+s+1)), 0)
						_ = ss[i].conn.SendDatagram(d)
					}
					time.Sleep(time.Until(start.Add(offset + time.Duration(s+1)*time.Second)))
				}
			}()
		}
		wg.Wait()
		el := time.Since(start)
		cpu := cpuTime() - cpu0
		got := datagrams(nd, "accepted") - base
		b.ReportMetric(cpu.Seconds()/el.Seconds(), "cores")
		b.ReportMetric(float64(cpu.Microseconds())/got, "cpu-µs/report")
		b.ReportMetric(100*(1-got/float64(conns*perConn*seconds)), "%lost")
	}
	_ = testutil.ToFloat64
}

// currentLeader returns the running node that leads now, or def.
func currentLeader(c *testcluster.Cluster, def *testcluster.Node) *testcluster.Node {
	for _, nd := range c.Running() {
		if nd.Agent.Node.IsLeader() {
			return nd
		}
	}
	return def
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDecodeAndOffer is the agent's own per-report work once quic-go
// has delivered a datagram: decode, and offer to the view (10,000 servers).
func BenchmarkDecodeAndOffer(b *testing.B) {
	v := loadview.New(nil)
	const servers = 10000
	enc := make([][]byte, servers)
	for i := range enc {
		enc[i], _ = transport.EncodeReport(typicalReport(fmt.Sprintf("s-%d", i), 1), 0)
	}
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := transport.DecodeDatagram(enc[i%servers])
		if err != nil {
			b.Fatal(err)
		}
		r.Seq = uint64(i + 1)
		v.Offer(r, now)
	}
}
