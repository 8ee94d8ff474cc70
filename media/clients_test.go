package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	pmedia "github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/h264reader"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"

	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/transport"
)

const (
	ivfPath  = "../testdata/media/testsrc-vp8.ivf"
	h264Path = "../testdata/media/testsrc-h264.h264"
)

// testAPI is a pion API for test clients: loopback host candidates only.
func testAPI(t testing.TB) *webrtc.API {
	t.Helper()
	a, err := NewWebRTCAPI(APIOptions{IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Disconnected: 2 * time.Second, Failed: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// httpClient returns a client without connection reuse (so server
// goroutine counts return to baseline quickly).
func httpClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
}

// postSDP posts an offer and returns the status, the body, the final URL
// (after redirects) and the resolved Location.
func postSDP(ctx context.Context, hc *http.Client, url, sdp string) (int, string, string, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(sdp))
	if err != nil {
		return 0, "", "", "", err
	}
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", "", "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	loc := ""
	if l := resp.Header.Get("Location"); l != "" {
		if u, err := resp.Request.URL.Parse(l); err == nil {
			loc = u.String()
		}
	}
	return resp.StatusCode, string(b), resp.Request.URL.String(), loc, nil
}

func offerGathered(pc *webrtc.PeerConnection) (string, error) {
	o, err := pc.CreateOffer(nil)
	if err != nil {
		return "", err
	}
	g := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(o); err != nil {
		return "", err
	}
	<-g
	return pc.LocalDescription().SDP, nil
}

// publisher is a pion WHIP client sending the test IVF file in a loop.
type publisher struct {
	pc       *webrtc.PeerConnection
	resource string
	cancel   context.CancelFunc
	done     chan struct{}
	frames   atomic.Int64
}

func publish(t testing.TB, api *webrtc.API, base, room string) *publisher {
	t.Helper()
	return publishFile(t, api, base, room, webrtc.MimeTypeVP8)
}

// publishFile publishes the VP8 (IVF) or H264 (Annex B) test file.
func publishFile(t testing.TB, api *webrtc.API, base, room, mime string) *publisher {
	t.Helper()
	path := ivfPath
	capab := webrtc.RTPCodecCapability{MimeType: mime, ClockRate: 90000}
	if mime == webrtc.MimeTypeH264 {
		path = h264Path
		capab.SDPFmtpLine = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	track, err := webrtc.NewTrackLocalStaticSample(capab, "video", "pub")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			if _, _, err := tr.Sender().ReadRTCP(); err != nil {
				return
			}
		}
	}()
	offer, err := offerGathered(pc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, body, _, loc, err := postSDP(ctx, httpClient(), base+"/whip/"+room, offer)
	if err != nil || code != http.StatusCreated {
		t.Fatalf("WHIP %s: %d %s %v", room, code, body, err)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: body}); err != nil {
		t.Fatal(err)
	}
	p := &publisher{pc: pc, resource: loc, done: make(chan struct{})}
	var sctx context.Context
	sctx, p.cancel = context.WithCancel(context.Background())
	if mime == webrtc.MimeTypeH264 {
		go p.sendH264(sctx, track, data)
	} else {
		go p.send(sctx, track, data)
	}
	return p
}

// sendH264 paces the Annex B file's NAL units, one picture per frame
// interval, looping, until ctx ends.
func (p *publisher) sendH264(ctx context.Context, track *webrtc.TrackLocalStaticSample, data []byte) {
	defer close(p.done)
	const frameDur = time.Second / 30
	r, err := h264reader.NewReader(bytes.NewReader(data))
	if err != nil {
		return
	}
	tick := time.NewTicker(frameDur)
	defer tick.Stop()
	for {
		nal, err := r.NextNAL()
		if errors.Is(err, io.EOF) {
			r, _ = h264reader.NewReader(bytes.NewReader(data))
			continue
		}
		if err != nil {
			return
		}
		var d time.Duration
		if nal.UnitType == h264reader.NalUnitTypeCodedSliceNonIdr || nal.UnitType == h264reader.NalUnitTypeCodedSliceIdr {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			d = frameDur
		}
		if track.WriteSample(pmedia.Sample{Data: nal.Data, Duration: d}) == nil {
			p.frames.Add(1)
		}
	}
}

// send paces the IVF frames at their frame rate, looping, until ctx ends.
func (p *publisher) send(ctx context.Context, track *webrtc.TrackLocalStaticSample, data []byte) {
	defer close(p.done)
	r, hdr, err := ivfreader.NewWith(bytes.NewReader(data))
	if err != nil {
		return
	}
	frameDur := time.Second * time.Duration(hdr.TimebaseNumerator) / time.Duration(hdr.TimebaseDenominator)
	tick := time.NewTicker(frameDur)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		frame, _, err := r.ParseNextFrame()
		if errors.Is(err, io.EOF) {
			r, _, _ = ivfreader.NewWith(bytes.NewReader(data))
			continue
		}
		if err != nil {
			return
		}
		if track.WriteSample(pmedia.Sample{Data: frame, Duration: frameDur}) == nil {
			p.frames.Add(1)
		}
	}
}

// close ends the publisher: DELETE on the resource when del, else it just
// disappears (peer connection closed without telling the server).
func (p *publisher) close(del bool) {
	p.cancel()
	<-p.done
	if del && p.resource != "" {
		deleteURL(p.resource)
	}
	_ = p.pc.Close()
}

func deleteURL(u string) {
	req, _ := http.NewRequest(http.MethodDelete, u, nil)
	if resp, err := httpClient().Do(req); err == nil {
		resp.Body.Close()
	}
}

// viewer is a pion WHEP client counting the RTP packets it receives.
type viewer struct {
	pc       *webrtc.PeerConnection
	url      string // WHEP URL finally answered (after redirects)
	resource string
	packets  atomic.Int64
	firstRTP chan struct{}
	once     sync.Once
	posted   time.Time
	firstAt  atomic.Int64 // unix nanos
	mime     atomic.Value // string: the received track's codec
}

func watchRoom(t testing.TB, api *webrtc.API, base, room string) *viewer {
	t.Helper()
	v, code, body, err := tryWatch(api, base, room)
	if err != nil || code != http.StatusCreated {
		t.Fatalf("WHEP %s at %s: %d %s %v", room, base, code, body, err)
	}
	return v
}

// tryWatch posts a recvonly video offer to base's WHEP endpoint (following
// redirects); on 201 it returns a connected viewer.
func tryWatch(api *webrtc.API, base, room string) (*viewer, int, string, error) {
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, 0, "", err
	}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		return nil, 0, "", err
	}
	v := &viewer{pc: pc, firstRTP: make(chan struct{})}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		v.mime.Store(tr.Codec().MimeType)
		for {
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
			v.packets.Add(1)
			v.once.Do(func() { v.firstAt.Store(time.Now().UnixNano()); close(v.firstRTP) })
		}
	})
	offer, err := offerGathered(pc)
	if err != nil {
		return nil, 0, "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v.posted = time.Now()
	code, body, final, loc, err := postSDP(ctx, httpClient(), base+"/whep/"+room, offer)
	if err != nil || code != http.StatusCreated {
		_ = pc.Close()
		return nil, code, body, err
	}
	v.url, v.resource = final, loc
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: body}); err != nil {
		_ = pc.Close()
		return nil, code, body, err
	}
	return v, code, body, nil
}

func (v *viewer) waitRTP(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case <-v.firstRTP:
	case <-time.After(timeout):
		t.Fatalf("viewer at %s got no RTP within %v", v.url, timeout)
	}
}

func (v *viewer) close() {
	deleteURL(v.resource)
	_ = v.pc.Close()
}

// memCluster is an in-memory Cluster for tests that need no allocator.
type memCluster struct {
	mu      sync.Mutex
	state   string
	reports []Load
}

func (m *memCluster) Register(context.Context, ServerInfo) error { return nil }
func (m *memCluster) Allocate(context.Context, AllocRequest) (Allocation, error) {
	return Allocation{}, errors.New("memCluster: no servers")
}
func (m *memCluster) Release(context.Context, string) error { return nil }
func (m *memCluster) Drain(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.state = "draining"
	return nil
}
func (m *memCluster) Deregister(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.state = "unregistered"
	return nil
}
func (m *memCluster) State(context.Context) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state == "" {
		return "active", nil
	}
	return m.state, nil
}
func (m *memCluster) Report(l Load) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reports = append(m.reports, l)
}

// testConfig is a node config with short timeouts for tests.
func testConfig(t testing.TB, id string, capacity int64) Config {
	return Config{
		ID: id, Capacity: capacity, ICEIPs: []net.IP{net.IPv4(127, 0, 0, 1)},
		CascadeUnits: 2, CascadeIdle: time.Second, CascadePoll: 100 * time.Millisecond,
		ConnectTimeout: 10 * time.Second, TrackWait: 20 * time.Second,
		ICEDisconnected: 2 * time.Second, ICEFailed: 4 * time.Second,
		ReportInterval: 200 * time.Millisecond, StatePoll: 200 * time.Millisecond,
		Logger: testcluster.Logger(t),
	}
}

// httpCluster is NewHTTPCluster for media node id of c, with its media
// token.
func httpCluster(t testing.TB, c *testcluster.Cluster, id string) *HTTPCluster {
	t.Helper()
	h := NewHTTPCluster(id, c.Addrs()...)
	h.c.WithToken(c.MediaToken(id))
	return h
}

// quicCluster is NewQUICCluster for media node id of c with its media
// certificate (QUIC) and its media token (what it asks the plain HTTP API).
func quicCluster(t testing.TB, c *testcluster.Cluster, id string) *QUICCluster {
	t.Helper()
	qc, err := NewQUICCluster(id, c.QUICAddrs(), c.Addrs(), c.Identity(id).ClientConfig(transport.ALPN), testcluster.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = qc.Close() })
	qc.h.WithToken(c.MediaToken(id))
	return qc
}

// startNode starts a node on a loopback port and closes it at cleanup.
func startNode(t testing.TB, cfg Config, cl Cluster) *Node {
	t.Helper()
	n, err := New(cfg, cl)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx, ln); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = n.Close(ctx)
	})
	return n
}

// eventually polls fn until it returns nil.
func eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	testcluster.Eventually(t, timeout, fn)
}

func statsIs(n *Node, want Stats) func() error {
	return func() error {
		if got := n.Stats(); got != want {
			return fmt.Errorf("%s stats %+v, want %+v", n.ID(), got, want)
		}
		return nil
	}
}
