package media

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/switchyard/switchyard/internal/testcluster"
)

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// BenchmarkScaleOut measures a redirected viewer's POST to its first RTP
// packet on the cascade target: allocation through a real 3-node cluster,
// the server-to-server WHIP connection, the 307, the viewer's WHEP on the
// target and ICE/DTLS there. One iteration = one room scaled out.
func BenchmarkScaleOut(b *testing.B) {
	c := testcluster.New(b, 3)
	cfg := testConfig(b, "m1", 1)
	cfg.CascadeIdle = 500 * time.Millisecond
	m1 := startNode(b, cfg, httpCluster(b, c, "m1"))
	m2 := startNode(b, testConfig(b, "m2", 1000), httpCluster(b, c, "m2"))
	pa := testAPI(b)
	base := publish(b, pa, m1.BaseURL(), "fill")
	defer base.close(true)
	filler := watchRoom(b, pa, m1.BaseURL(), "fill") // m1 is now full
	defer filler.close()
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		room := fmt.Sprintf("room%d", i)
		pub := publish(b, pa, m1.BaseURL(), room)
		eventually(b, 30*time.Second, func() error {
			if m1.roomInfo(room).Tracks != 1 {
				return fmt.Errorf("no track yet")
			}
			return nil
		})
		b.StartTimer()
		v := watchRoom(b, pa, m1.BaseURL(), room)
		v.waitRTP(b, 30*time.Second)
		b.StopTimer()
		if !strings.HasPrefix(v.url, m2.BaseURL()) {
			b.Fatalf("viewer not redirected: %s", v.url)
		}
		lat = append(lat, time.Duration(v.firstAt.Load()-v.posted.UnixNano()))
		v.close()
		pub.close(true)
		b.StartTimer()
	}
	b.ReportMetric(float64(median(lat).Microseconds())/1000, "ms-median-scaleout")
}

// rtpPublisher publishes a synthetic VP8-labelled track whose payloads
// carry their send time (the SFU does not look into payloads).
func rtpPublisher(b *testing.B, api *webrtc.API, base, room string) (*webrtc.PeerConnection, *webrtc.TrackLocalStaticRTP) {
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		b.Fatal(err)
	}
	tr, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "bench")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		b.Fatal(err)
	}
	offer, err := offerGathered(pc)
	if err != nil {
		b.Fatal(err)
	}
	code, body, _, _, err := postSDP(context.Background(), httpClient(), base+"/whip/"+room, offer)
	if err != nil || code != http.StatusCreated {
		b.Fatalf("WHIP: %d %s %v", code, body, err)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: body}); err != nil {
		b.Fatal(err)
	}
	return pc, tr
}

// stampViewer posts WHEP and delivers each packet's one-way latency.
func stampViewer(b *testing.B, api *webrtc.API, base, room string) (*webrtc.PeerConnection, string, <-chan time.Duration) {
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		b.Fatal(err)
	}
	ch := make(chan time.Duration, 1024)
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			if len(p.Payload) >= 8 {
				sent := int64(binary.BigEndian.Uint64(p.Payload))
				select {
				case ch <- time.Duration(time.Now().UnixNano() - sent):
				default:
				}
			}
		}
	})
	offer, err := offerGathered(pc)
	if err != nil {
		b.Fatal(err)
	}
	code, body, final, _, err := postSDP(context.Background(), httpClient(), base+"/whep/"+room, offer)
	if err != nil || code != http.StatusCreated {
		b.Fatalf("WHEP: %d %s %v", code, body, err)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: body}); err != nil {
		b.Fatal(err)
	}
	return pc, final, ch
}

// BenchmarkCascadeHop measures the extra one-way latency a cascade hop
// adds per packet: the same packets reach a viewer on the origin directly
// and a viewer on the target through the server-to-server connection.
// One iteration = one packet, sent when the previous one arrived at both.
func BenchmarkCascadeHop(b *testing.B) {
	c := testcluster.New(b, 3)
	m1 := startNode(b, testConfig(b, "m1", 1), httpCluster(b, c, "m1"))
	m2 := startNode(b, testConfig(b, "m2", 100), httpCluster(b, c, "m2"))
	pa := testAPI(b)
	ppc, track := rtpPublisher(b, pa, m1.BaseURL(), "hop")
	defer ppc.Close()
	seq := uint16(0)
	send := func() {
		payload := make([]byte, 1000)
		binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
		seq++
		_ = track.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: uint32(seq) * 3000, SSRC: 1, Marker: true}, Payload: payload})
	}
	// Keep the room alive while the viewers connect (tracks appear on first RTP).
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				send()
			}
		}
	}()
	dpc, durl, direct := stampViewer(b, pa, m1.BaseURL(), "hop")
	defer dpc.Close()
	cpc, curl, cascaded := stampViewer(b, pa, m1.BaseURL(), "hop")
	defer cpc.Close()
	if !strings.HasPrefix(durl, m1.BaseURL()) || !strings.HasPrefix(curl, m2.BaseURL()) {
		b.Fatalf("direct viewer at %s, cascaded at %s", durl, curl)
	}
	for _, ch := range []<-chan time.Duration{direct, cascaded} {
		select {
		case <-ch:
		case <-time.After(30 * time.Second):
			b.Fatal("no media")
		}
	}
	close(stop)
	drain := func(ch <-chan time.Duration) {
		for {
			select {
			case <-ch:
			case <-time.After(100 * time.Millisecond):
				return
			}
		}
	}
	drain(direct)
	drain(cascaded)
	var dl, cl []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		send()
		for _, x := range []struct {
			ch  <-chan time.Duration
			out *[]time.Duration
		}{{direct, &dl}, {cascaded, &cl}} {
			select {
			case d := <-x.ch:
				*x.out = append(*x.out, d)
			case <-time.After(2 * time.Second):
				// lost packet: not counted
			}
		}
	}
	b.StopTimer()
	md, mc := median(dl), median(cl)
	b.ReportMetric(float64(md.Microseconds())/1000, "ms-median-direct")
	b.ReportMetric(float64(mc.Microseconds())/1000, "ms-median-cascaded")
	b.ReportMetric(float64((mc-md).Microseconds())/1000, "ms-median-extra-hop")
}

// procTicks reads a process's user+system CPU time in clock ticks.
func procTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	f := bytes.Fields(b[i+1:])
	ut, _ := strconv.ParseInt(string(f[11]), 10, 64)
	st, _ := strconv.ParseInt(string(f[12]), 10, 64)
	return ut + st, nil
}

// BenchmarkViewersPerCore runs a media node in its own process, publishes
// one ~1 Mbit/s stream to it and adds pion viewers (in this process) in
// steps, measuring the node process's CPU at each step. It reports how
// many viewers one core forwards that stream to (viewers / CPU fraction
// at the largest step) and the egress rate reached. Run with -benchtime 1x.
func BenchmarkViewersPerCore(b *testing.B) {
	for i := 0; i < b.N; i++ {
		viewersPerCore(b)
	}
}

func viewersPerCore(b *testing.B) {
	addr := testcluster.FreeAddr(b)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchNodeEnv+"="+addr)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = stdin.Close(); _ = cmd.Wait() }()
	base := "http://" + addr
	eventually(b, 30*time.Second, func() error {
		resp, err := http.Get(base + "/v1/load")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	pa := testAPI(b)
	ppc, track := rtpPublisher(b, pa, base, "load")
	defer ppc.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		// 1200-byte payloads at 104 packets/s ≈ 1 Mbit/s.
		t := time.NewTicker(9600 * time.Microsecond)
		defer t.Stop()
		var seq uint16
		payload := make([]byte, 1200)
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			seq++
			binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
			_ = track.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: uint32(seq) * 900, SSRC: 1}, Payload: payload})
		}
	}()
	var pcs []*webrtc.PeerConnection
	defer func() {
		for _, pc := range pcs {
			_ = pc.Close()
		}
	}()
	var viewers int
	var cpu float64
	var egress int64
	for _, target := range []int{10, 25, 50, 100, 150, 200} {
		for viewers < target {
			pc, _, ch := stampViewer(b, pa, base, "load")
			pcs = append(pcs, pc)
			select {
			case <-ch:
			case <-time.After(30 * time.Second):
				b.Fatalf("viewer %d got no media", viewers+1)
			}
			viewers++
		}
		t0, _ := procTicks(cmd.Process.Pid)
		w0 := time.Now()
		time.Sleep(3 * time.Second) // measurement window, not synchronisation
		t1, _ := procTicks(cmd.Process.Pid)
		cpu = float64(t1-t0) / clockTicks / time.Since(w0).Seconds()
		if resp, err := http.Get(base + "/v1/load"); err == nil {
			var l Load
			_ = json.NewDecoder(resp.Body).Decode(&l)
			resp.Body.Close()
			egress = l.EgressBps
		}
		b.Logf("%d viewers: node process CPU %.2f cores, egress %.1f Mbit/s", viewers, cpu, float64(egress)/1e6)
		if cpu > 0.8 {
			break
		}
	}
	b.ReportMetric(float64(viewers), "viewers")
	b.ReportMetric(cpu, "node-cores")
	b.ReportMetric(float64(viewers)/cpu, "viewers-per-core")
	b.ReportMetric(float64(egress)/1e6, "egress-Mbit/s")
}
