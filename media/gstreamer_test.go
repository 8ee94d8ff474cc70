package media

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer collects a child process's output safely.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// gstPackages are the GStreamer plugins a VP8 WHIP publisher pipeline needs.
var gstPackages = []string{"gstreamer1.0-plugins-base", "gstreamer1.0-plugins-good", "gstreamer1.0-plugins-bad", "gstreamer1.0-nice"}

// libsoupClash is how Debian bookworm's simple-whip-client aborts: it links
// libsoup2, GStreamer's nice/webrtc plugins load libsoup3.
const libsoupClash = "libsoup2 symbols detected"

// TestGStreamerWHIPClient: a GStreamer WHIP client publishes a VP8 test
// pattern to the WHIP endpoint, a pion viewer receives it, and stopping
// the client (SIGINT → DELETE) ends the room. Two clients: Debian's
// simple-whip-client (whip-client; on bookworm it aborts on a
// libsoup2/libsoup3 clash unless a no-op gupnp-igd stub keeps libsoup3 out,
// see buildIGDStub; its unbundled single-section offer is why the node
// adds a BUNDLE group, see bundleLone), and a webrtcbin publisher whose
// WebRTC stack is all GStreamer's (testdata/media/gst-whip.py).
func TestGStreamerWHIPClient(t *testing.T) {
	t.Run("simple-whip-client", func(t *testing.T) {
		bin := needProgram(t, "whip-client", append([]string{"simple-whip-client"}, gstPackages...)...)
		video := "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! videoconvert ! queue ! " +
			"vp8enc deadline=1 target-bitrate=500000 ! rtpvp8pay pt=96 ssrc=2 ! queue ! application/x-rtp,media=video,encoding-name=VP8,payload=96"
		stub := buildIGDStub(t)
		gstPublish(t, func(url string) *exec.Cmd {
			cmd := exec.Command(bin, "-n", "-l", "3", "-u", url, "-V", video)
			cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+stub)
			return cmd
		})
	})
	t.Run("webrtcbin", func(t *testing.T) {
		const py = "/usr/bin/python3"
		needInstalled(t, "python3 GStreamer WebRTC bindings", func() bool {
			return exec.Command(py, "-c", "import gi; gi.require_version('GstWebRTC', '1.0'); gi.require_version('GstSdp', '1.0'); from gi.repository import GstWebRTC, GstSdp").Run() == nil
		}, append([]string{"python3-gi", "python3-gst-1.0", "gir1.2-gst-plugins-bad-1.0", "gir1.2-gst-plugins-base-1.0"}, gstPackages...)...)
		gstPublish(t, func(url string) *exec.Cmd { return exec.Command(py, "../testdata/media/gst-whip.py", url) })
	})
}

// gstPublish runs a WHIP client made by mk against a fresh node and checks
// that a pion viewer receives its media and that SIGINT ends the room.
func gstPublish(t *testing.T, mk func(url string) *exec.Cmd) {
	cfg := testConfig(t, "m1", 4)
	cfg.ICEIPs = nil // libnice skips loopback: offer every interface
	n := startNode(t, cfg, &memCluster{})
	cmd := mk(n.BaseURL() + "/whip/gst")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	eventually(t, 60*time.Second, func() error {
		select {
		case err := <-exited:
			exited <- err
			if strings.Contains(out.String(), libsoupClash) {
				return nil
			}
			return fmt.Errorf("%s exited: %v\n%s", cmd.Path, err, out.String())
		default:
		}
		if ri := n.roomInfo("gst"); ri.Tracks != 1 {
			return fmt.Errorf("room %+v; client output:\n%s", ri, out.String())
		}
		return nil
	})
	if strings.Contains(out.String(), libsoupClash) {
		stopped = true
		<-exited
		t.Fatalf("%s aborts on this system although the gupnp-igd stub is on LD_LIBRARY_PATH (it links libsoup2, GStreamer's nice/webrtc plugins libsoup3): %s", cmd.Path, strings.TrimSpace(out.String()[strings.LastIndex(out.String(), "\n(")+1:]))
	}
	v := watchRoom(t, testAPI(t), n.BaseURL(), "gst")
	defer v.close()
	v.waitRTP(t, 30*time.Second)
	eventually(t, 30*time.Second, func() error {
		if v.packets.Load() < 50 {
			return fmt.Errorf("viewer got %d packets from the GStreamer publisher", v.packets.Load())
		}
		return nil
	})
	_ = cmd.Process.Signal(syscall.SIGINT)
	eventually(t, 30*time.Second, func() error {
		if st := n.Stats(); st.Rooms != 0 {
			return fmt.Errorf("room still there after the client stopped: %+v\n%s", st, out.String())
		}
		return nil
	})
	select {
	case <-exited:
		stopped = true
	case <-time.After(10 * time.Second):
	}
}

// buildIGDStub compiles testdata/media/gupnp-igd-stub.c into a directory
// to put first on LD_LIBRARY_PATH: it replaces libgupnp-igd (UPnP port
// mapping) so that libnice no longer drags libsoup3 into simple-whip-client,
// which links libsoup2 (GLib aborts when both are loaded).
func buildIGDStub(t *testing.T) string {
	t.Helper()
	gcc := needProgram(t, "gcc", "gcc")
	dir := t.TempDir()
	out, err := exec.Command(gcc, "-shared", "-fPIC", "-Wl,-soname,libgupnp-igd-1.0.so.4", "-o", filepath.Join(dir, "libgupnp-igd-1.0.so.4"), "../testdata/media/gupnp-igd-stub.c").CombinedOutput()
	if err != nil {
		t.Fatalf("build gupnp-igd stub: %v\n%s", err, out)
	}
	return dir
}
