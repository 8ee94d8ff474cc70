package media

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// TestH264Forwarding: a publisher sends the H.264 test file; a viewer
// offering VP8 and H.264 receives H.264 RTP; a viewer offering only VP8 is
// refused with 406 and a reason.
func TestH264Forwarding(t *testing.T) {
	n := startNode(t, testConfig(t, "m1", 4), &memCluster{})
	pa := testAPI(t)
	pub := publishFile(t, pa, n.BaseURL(), "h", webrtc.MimeTypeH264)
	defer pub.close(true)
	v := watchRoom(t, pa, n.BaseURL(), "h")
	defer v.close()
	v.waitRTP(t, 30*time.Second)
	eventually(t, 30*time.Second, func() error {
		if v.packets.Load() < 30 {
			return fmt.Errorf("%d packets", v.packets.Load())
		}
		return nil
	})
	if m, _ := v.mime.Load().(string); m != webrtc.MimeTypeH264 {
		t.Fatalf("viewer got %q, want H264", m)
	}

	pc, err := pa.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	_, _ = pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly})
	offer, err := offerGathered(pc)
	if err != nil {
		t.Fatal(err)
	}
	vp8only := strings.ReplaceAll(offer, "H264/90000", "H265/90000")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, body, _, _, err := postSDP(ctx, httpClient(), n.BaseURL()+"/whep/h", vp8only)
	if err != nil || code != http.StatusNotAcceptable || !strings.Contains(body, "H264") {
		t.Fatalf("VP8-only viewer of an H264 room: %d %q %v", code, body, err)
	}
}
