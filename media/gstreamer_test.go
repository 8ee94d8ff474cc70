package media

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
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

// TestGStreamerWHIPClient: Debian's simple-whip-client (GStreamer
// webrtcbin; binary whip-client) publishes a VP8 test pattern to the WHIP
// endpoint; a pion viewer receives it; SIGINT makes the client DELETE its
// resource and the room goes away.
func TestGStreamerWHIPClient(t *testing.T) {
	bin := needProgram(t, "whip-client", "simple-whip-client", "gstreamer1.0-plugins-base", "gstreamer1.0-plugins-good", "gstreamer1.0-plugins-bad", "gstreamer1.0-nice")
	cfg := testConfig(t, "m1", 4)
	cfg.ICEIPs = nil // libnice skips loopback: offer every interface
	n := startNode(t, cfg, &memCluster{})

	video := "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! videoconvert ! queue ! " +
		"vp8enc deadline=1 target-bitrate=500000 ! rtpvp8pay pt=96 ssrc=2 ! queue ! application/x-rtp,media=video,encoding-name=VP8,payload=96"
	cmd := exec.Command(bin, "-n", "-l", "3", "-u", n.BaseURL()+"/whip/gst", "-V", video)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "GST_DEBUG=1")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start whip-client: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()

	eventually(t, 60*time.Second, func() error {
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("whip-client exited: %v\n%s", err, out.String())
		default:
		}
		if ri := n.roomInfo("gst"); ri.Tracks != 1 {
			return fmt.Errorf("room %+v; whip-client output:\n%s", ri, out.String())
		}
		return nil
	})
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
			return fmt.Errorf("room still there after the client stopped: %+v", st)
		}
		return nil
	})
}
