package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/livekit/protocol/livekit"
	protologger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/janustest"
	"github.com/switchyard/switchyard/internal/livekittest"
	"github.com/switchyard/switchyard/internal/proccluster"
	sfumedia "github.com/switchyard/switchyard/media"
)

// sidecarRuns numbers the sidecars BenchmarkSidecarCPU starts: each
// registers a server id (and places a room) of its own, since a run
// repeated (-count) shares the cluster of the first.
var sidecarRuns atomic.Int64

// sidecarWindow is how long BenchmarkSidecarCPU measures each sidecar:
// 30 polls and reports at the default 500 ms interval.
const sidecarWindow = 15 * time.Second

// BenchmarkSidecarCPU measures what `switchyard sidecar` costs beside one
// SFU at its default interval (500 ms), as a process of its own so that
// the figure is the sidecar's alone: three agent processes (QUIC on), then
// per SFU kind a real Janus (Debian's package: VideoRoom, HTTP and admin
// API) and, when it is built, a real livekit-server, each with its sidecar
// configured as the README shows (Janus: admin API; LiveKit: metrics
// endpoint; both: --sfu-pid), one room placed on it and a publisher in
// that room sending the test VP8 clip. Once the sidecar reports the
// publisher's track and bitrate it reads the sidecar's CPU time (the process's CPU-time clock,
// to the nanosecond) over sidecarWindow. `cpu-%-of-core` is that CPU time
// over the window's wall time; `sfu-cpu-%-of-core` the SFU's own over the
// same window, for scale. Janus missing skips the benchmark and a missing
// livekit-server skips its part, naming them (under CI=true they fail).
func BenchmarkSidecarCPU(b *testing.B) {
	janus, janusLib, janusErr := janustest.Find()
	lkBin := livekittest.Binary()
	_, lkErr := os.Stat(lkBin)
	const (
		needJanus   = "janus (apt-get install janus, or bash .ci/setup-janus.sh)"
		needLiveKit = "livekit-server " + livekittest.Version + " (bash .ci/build-livekit.sh)"
	)
	if janusErr != nil && lkErr != nil {
		needSFU(b, needJanus+" and "+needLiveKit, errors.Join(janusErr, lkErr))
	}
	bin := proccluster.BuildBinary(b)
	pc := proccluster.NewWithOptions(b, bin, 3, proccluster.Options{QUIC: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := pc.WaitLeader(ctx); err != nil {
		b.Fatal(err)
	}
	b.Run("sfu=janus", func(b *testing.B) {
		if janusErr != nil {
			needSFU(b, needJanus, janusErr)
		}
		for range b.N {
			j := janustest.New(b, janus, janusLib, "41200-41299")
			id := fmt.Sprintf("cpu-janus-%d", sidecarRuns.Add(1))
			measureSidecar(ctx, b, pc, bin, id, api.SFUJanus, j.Pid(), []string{"--janus-url", j.URL(),
				"--janus-admin-url", j.AdminURL(), "--janus-admin-secret", j.Secret},
				func(room api.Room) (func(), error) { return janusPublisher(ctx, room) })
			j.Kill()
		}
	})
	b.Run("sfu=livekit", func(b *testing.B) {
		if lkErr != nil {
			needSFU(b, needLiveKit, lkErr)
		}
		for range b.N {
			lk := livekittest.New(b, lkBin, 42200, 42299)
			id := fmt.Sprintf("cpu-livekit-%d", sidecarRuns.Add(1))
			measureSidecar(ctx, b, pc, bin, id, api.SFULiveKit, lk.Pid(), []string{"--livekit-url", lk.URL(),
				"--livekit-api-key", livekittest.APIKey, "--livekit-api-secret", livekittest.APISecret,
				"--livekit-metrics-url", lk.MetricsURL()},
				liveKitPublisher)
			lk.Kill()
		}
	})
}

// needSFU skips the benchmark for want missing (err), or fails it under
// CI=true, where the setup scripts install both SFUs.
func needSFU(b *testing.B, want string, err error) {
	b.Helper()
	if os.Getenv("CI") == "true" {
		b.Fatalf("missing %s, required under CI=true: %v", want, err)
	}
	b.Skipf("missing %s: %v", want, err)
}

// measureSidecar runs `switchyard sidecar --sfu kind --id id` (plus args)
// as a process for the SFU process sfuPid, waits until it registered the
// SFU, places a room there, joins publish to it and waits until the
// sidecar reports its track and bitrate (the media flows), then reports
// the sidecar's CPU over sidecarWindow. The sidecar is killed afterwards (a SIGTERM would drain).
func measureSidecar(ctx context.Context, b *testing.B, pc *proccluster.Cluster, bin, id, kind string, sfuPid int,
	args []string, publish func(api.Room) (func(), error)) {
	b.Helper()
	dir := b.TempDir()
	cert := exec.Command(bin, "tls", "cert", "create", "--ca-dir", pc.CertDir, "--name", id, "--role", "media", "--out", dir)
	if out, err := cert.CombinedOutput(); err != nil {
		b.Fatalf("media certificate for %s: %v\n%s", id, err, out)
	}
	var allocators []string
	for _, p := range pc.Nodes {
		allocators = append(allocators, "http://"+p.HTTPAddr)
	}
	logPath := filepath.Join(dir, "sidecar.log")
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	// The default --interval: the figure is the sidecar as deployed.
	cmd := exec.Command(bin, append([]string{"sidecar", "--sfu", kind, "--id", id, "--capacity", "10",
		"--allocators", strings.Join(allocators, ","),
		"--tls-ca", filepath.Join(pc.CertDir, "ca.pem"), "--tls-cert", filepath.Join(dir, id+".pem"), "--tls-key", filepath.Join(dir, id+"-key.pem"),
		"--sfu-pid", fmt.Sprint(sfuPid), "--log-level", "warn"}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	defer stop()
	fail := func(format string, a ...any) {
		b.Helper()
		stop()
		log, _ := os.ReadFile(logPath)
		b.Fatalf("%s: %s\nsidecar log:\n%s", id, fmt.Sprintf(format, a...), tail(string(log), 3000))
	}

	cl := pc.Client()
	if err := until(ctx, 60*time.Second, exited, func() error {
		s, err := cl.Server(ctx, id, false)
		if err == nil && s.State != api.ServerActive {
			err = fmt.Errorf("%s is %s", id, s.State)
		}
		return err
	}); err != nil {
		fail("not registered: %v", err)
	}
	room, err := cl.PlaceRoom(ctx, id+"-room", api.PlaceRoomRequest{SFU: kind})
	if err != nil || room.Server != id {
		fail("placement %+v: %v", room, err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	err = cl.WaitRoomReady(wctx, room)
	wcancel()
	if err != nil {
		fail("room not ready: %v", err)
	}
	leave, err := publish(room)
	if err != nil {
		fail("publisher: %v", err)
	}
	defer leave()
	if err := until(ctx, 60*time.Second, exited, func() error {
		srvs, err := cl.ServersWithLoad(ctx, false)
		if err != nil {
			return err
		}
		for _, s := range srvs {
			if s.ID == id && s.Load != nil && s.Load.Tracks == 1 && s.Load.IngressBps > 0 {
				return nil
			}
		}
		return errors.New("the publisher's track and its bitrate are not reported yet")
	}); err != nil {
		fail("%v", err)
	}

	t0 := time.Now()
	cpu0, err := processCPU(cmd.Process.Pid)
	if err != nil {
		fail("CPU time: %v", err)
	}
	sfu0, err := processCPU(sfuPid)
	if err != nil {
		fail("the SFU's CPU time: %v", err)
	}
	select {
	case <-exited:
		fail("exited during the measurement")
	case <-ctx.Done():
		fail("%v", ctx.Err())
	case <-time.After(sidecarWindow):
	}
	cpu1, err := processCPU(cmd.Process.Pid)
	if err != nil {
		fail("CPU time: %v", err)
	}
	sfu1, _ := processCPU(sfuPid)
	wall := time.Since(t0)
	b.ReportMetric(100*float64(cpu1-cpu0)/float64(wall), "cpu-%-of-core")
	b.ReportMetric(100*float64(sfu1-sfu0)/float64(wall), "sfu-cpu-%-of-core")

	// Then the SFU dies: the time from its SIGKILL until a placement of
	// its room answers another server (the sidecar stops reporting when
	// the SFU stops answering, the agents mark the server down after the
	// failure window, and the next placement moves the room). The spare
	// is registered over HTTP (no load reports: never marked down).
	spare := "spare-" + kind
	if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: spare, Capacity: 1000,
		Addresses: []string{"http://127.0.0.1:9/" + kind}, Labels: map[string]string{api.SFULabel: kind}}); err != nil {
		fail("register the spare %s server: %v", kind, err)
	}
	killed := time.Now()
	if err := syscall.Kill(sfuPid, syscall.SIGKILL); err != nil {
		fail("kill the SFU: %v", err)
	}
	for {
		moved, err := cl.PlaceRoom(ctx, room.Room, api.PlaceRoomRequest{SFU: kind})
		if err == nil && moved.Server != id && moved.Moved {
			break
		}
		if time.Since(killed) > time.Minute {
			fail("the room of the killed SFU was not placed elsewhere: %+v %v", moved, err)
		}
		time.Sleep(20 * time.Millisecond) // the figure's resolution
	}
	b.ReportMetric(time.Since(killed).Seconds(), "kill-to-replaced-s")
	b.ReportMetric(0, "ns/op")
}

// until polls fn every 200 ms until it returns nil; it gives up with the
// last error once within has passed, ctx ended or the sidecar exited.
func until(ctx context.Context, within time.Duration, exited <-chan struct{}, fn func() error) error {
	deadline := time.After(within)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("the sidecar exited (%v)", err)
		case <-deadline:
			return err
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// processCPU is the CPU time (user and system, all threads) process pid
// has used, read from its CPU-time clock (clock_gettime of the clock id
// Linux makes of a pid: ((^pid) << 3) | CPUCLOCK_SCHED): to the
// nanosecond, where /proc/<pid>/stat counts 10 ms ticks.
func processCPU(pid int) (time.Duration, error) {
	clock := (^int32(pid))<<3 | 2
	var ts syscall.Timespec
	if _, _, e := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, uintptr(int64(clock)), uintptr(unsafe.Pointer(&ts)), 0); e != 0 {
		return 0, fmt.Errorf("CPU clock of process %d: %w", pid, e)
	}
	return time.Duration(ts.Nano()), nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// liveKitPublisher joins a placed LiveKit room at the URL the placement
// returned with LiveKit's Go SDK and publishes the test clip; the function
// returned leaves.
func liveKitPublisher(room api.Room) (func(), error) {
	url, _ := room.URLs["url"].(string)
	r, err := lksdk.ConnectToRoom(url, lksdk.ConnectInfo{APIKey: livekittest.APIKey, APISecret: livekittest.APISecret,
		RoomName: room.Room, ParticipantIdentity: "pub"}, lksdk.NewRoomCallback(),
		lksdk.WithConnectTimeout(20*time.Second), lksdk.WithLogger(protologger.GetDiscardLogger()))
	if err != nil {
		return nil, fmt.Errorf("join %s at %s: %w", room.Room, url, err)
	}
	track, err := lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000})
	if err != nil {
		r.Disconnect()
		return nil, err
	}
	if _, err := r.LocalParticipant.PublishTrack(track, &lksdk.TrackPublicationOptions{Name: "clip", Source: livekit.TrackSource_CAMERA,
		VideoWidth: 320, VideoHeight: 240}); err != nil {
		r.Disconnect()
		return nil, fmt.Errorf("publish: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go sendClip(ctx, func(s media.Sample) error { return track.WriteSample(s, nil) })
	return func() { cancel(); r.Disconnect() }, nil
}

// janusPublisher joins a placed Janus room (urls.url, urls.room) as a
// publisher through Janus' HTTP API, as an application's client would,
// and publishes the test clip from a pion peer; the function returned
// leaves. Janus offers host candidates on the machine's non-loopback
// interfaces only, so the peer gathers on every interface.
func janusPublisher(ctx context.Context, room api.Room) (func(), error) {
	base, _ := room.URLs["url"].(string)
	hc := &http.Client{Timeout: 40 * time.Second}
	// post sends one request of the API and returns its answer (an
	// acknowledgement or a synchronous result).
	post := func(url string, req map[string]any) (janusAnswer, error) {
		req["transaction"] = fmt.Sprint(time.Now().UnixNano())
		body, _ := json.Marshal(req)
		hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return janusAnswer{}, err
		}
		resp, err := hc.Do(hreq)
		if err != nil {
			return janusAnswer{}, err
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var a janusAnswer
		if err := json.Unmarshal(raw, &a); err != nil || a.Janus == "error" {
			return a, fmt.Errorf("janus %v: %s (%v)", req["janus"], raw, err)
		}
		return a, nil
	}
	created, err := post(base, map[string]any{"janus": "create"})
	if err != nil {
		return nil, err
	}
	session := fmt.Sprintf("%s/%d", base, created.Data.ID)
	leave := func() { _, _ = post(session, map[string]any{"janus": "destroy"}) }
	attached, err := post(session, map[string]any{"janus": "attach", "plugin": "janus.plugin.videoroom"})
	if err != nil {
		leave()
		return nil, err
	}
	handle := fmt.Sprintf("%s/%d", session, attached.Data.ID)
	if _, err := post(handle, map[string]any{"janus": "message", "body": map[string]any{
		"request": "join", "ptype": "publisher", "room": room.URLs["room"], "display": "pub"}}); err != nil {
		leave()
		return nil, err
	}
	wapi, err := sfumedia.NewWebRTCAPI(sfumedia.APIOptions{})
	if err != nil {
		leave()
		return nil, err
	}
	pc, err := wapi.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		leave()
		return nil, err
	}
	leave = func() { _ = pc.Close(); _, _ = post(session, map[string]any{"janus": "destroy"}) }
	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "pub")
	if err == nil {
		_, err = pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	}
	var offer webrtc.SessionDescription
	if err == nil {
		offer, err = pc.CreateOffer(nil)
	}
	if err == nil {
		gathered := webrtc.GatheringCompletePromise(pc)
		if err = pc.SetLocalDescription(offer); err == nil {
			<-gathered
		}
	}
	if err == nil {
		local := pc.LocalDescription()
		_, err = post(handle, map[string]any{"janus": "message", "body": map[string]any{"request": "configure", "audio": false, "video": true},
			"jsep": map[string]any{"type": local.Type.String(), "sdp": local.SDP}})
	}
	if err != nil {
		leave()
		return nil, err
	}
	// The answer comes as an event of the handle (long poll).
	var answer *webrtc.SessionDescription
	deadline := time.Now().Add(45 * time.Second)
	for answer == nil {
		if time.Now().After(deadline) {
			leave()
			return nil, errors.New("janus sent no answer to the publisher's offer within 45 s")
		}
		hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, session+"?maxev=5", nil)
		if err != nil {
			leave()
			return nil, err
		}
		resp, err := hc.Do(hreq)
		if err != nil {
			leave()
			return nil, err
		}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		var evs []janusAnswer
		if json.Unmarshal(raw, &evs) != nil {
			var ev janusAnswer
			if json.Unmarshal(raw, &ev) != nil {
				leave()
				return nil, fmt.Errorf("janus events: %s", raw)
			}
			evs = []janusAnswer{ev}
		}
		for _, ev := range evs {
			if e, ok := ev.Plugindata.Data["error"]; ok {
				leave()
				return nil, fmt.Errorf("janus: %v", e)
			}
			if ev.Sender == attached.Data.ID && ev.Jsep != nil {
				answer = ev.Jsep
			}
		}
	}
	if err := pc.SetRemoteDescription(*answer); err != nil {
		leave()
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	go sendClip(sctx, track.WriteSample)
	return func() { cancel(); leave() }, nil
}

// janusAnswer is what the sidecar bench reads of Janus' answers and
// events.
type janusAnswer struct {
	Janus      string `json:"janus"`
	Sender     uint64 `json:"sender"`
	Plugindata struct {
		Data map[string]any `json:"data"`
	} `json:"plugindata"`
	Jsep *webrtc.SessionDescription `json:"jsep"`
	Data struct {
		ID uint64 `json:"id"`
	} `json:"data"`
}

// sendClip sends the test clip's frames at 30 fps to write, looping,
// until ctx ends.
func sendClip(ctx context.Context, write func(media.Sample) error) {
	data, err := os.ReadFile("../testdata/media/testsrc-vp8.ivf")
	if err != nil {
		return
	}
	tk := time.NewTicker(33 * time.Millisecond)
	defer tk.Stop()
	for {
		r, _, err := ivfreader.NewWith(bytes.NewReader(data))
		if err != nil {
			return
		}
		for {
			frame, _, err := r.ParseNextFrame()
			if err != nil {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			_ = write(media.Sample{Data: frame, Duration: 33 * time.Millisecond})
		}
	}
}
