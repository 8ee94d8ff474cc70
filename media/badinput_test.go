package media

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// settle polls until the goroutine count is back to at most base.
func settle(t *testing.T, base int) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		if g := runtime.NumGoroutine(); g > base {
			buf := make([]byte, 1<<16)
			return fmt.Errorf("%d goroutines, baseline %d\n%s", g, base, buf[:runtime.Stack(buf, true)])
		}
		return nil
	})
}

// TestBadInput: malformed SDP, wrong content type, unknown room, an
// unsupported codec, a viewer that never completes ICE and a publisher
// that disappears get a 4xx with a reason or a timed cleanup, and the
// node's sessions and the process's goroutines return to baseline.
func TestBadInput(t *testing.T) {
	n := startNode(t, testConfig(t, "m1", 4), &memCluster{})
	base := runtime.NumGoroutine()
	hc := httpClient()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pa := testAPI(t)

	// A valid offer to mutate.
	pc, _ := pa.NewPeerConnection(webrtc.Configuration{})
	_, _ = pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly})
	good, err := offerGathered(pc)
	if err != nil {
		t.Fatal(err)
	}
	_ = pc.Close()
	vp9 := strings.NewReplacer("VP8/90000", "VP9/90000", "H264/90000", "H265/90000").Replace(good)
	sendOnly := strings.ReplaceAll(vp9, "a=recvonly", "a=sendonly")

	post := func(path, ctype, body string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, n.BaseURL()+path, strings.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		name, path, ctype, body string
		code                    int
		reason                  string
	}{
		{"malformed SDP", "/whip/r1", "application/sdp", "v=0\r\nthis is not sdp\r\n", 400, "bad SDP offer"},
		{"empty body", "/whip/r1", "application/sdp", "", 400, "empty body"},
		{"wrong content type", "/whip/r1", "application/json", good, 400, "Content-Type"},
		{"WHIP offer that sends nothing", "/whip/r1", "application/sdp", good, 400, "must send"},
		{"unknown room", "/whep/nope", "application/sdp", good, 404, "unknown room"},
		{"unsupported codec WHIP", "/whip/r1", "application/sdp", sendOnly, 406, "unsupported codec"},
		{"unsupported codec WHEP", "/whep/r1", "application/sdp", vp9, 406, "unsupported codec"},
	} {
		code, body := post(tc.path, tc.ctype, tc.body)
		if code != tc.code || !strings.Contains(body, tc.reason) {
			t.Errorf("%s: got %d %q, want %d with %q", tc.name, code, body, tc.code, tc.reason)
		}
	}
	if st := n.Stats(); st != (Stats{}) {
		t.Fatalf("after rejected requests: %+v", st)
	}

	// A publisher and a viewer that never completes ICE (it never applies
	// the answer): closed after ConnectTimeout.
	pub := publish(t, pa, n.BaseURL(), "r1")
	v := watchRoom(t, pa, n.BaseURL(), "r1")
	v.waitRTP(t, 30*time.Second)

	stuck, _ := pa.NewPeerConnection(webrtc.Configuration{})
	_, _ = stuck.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly})
	offer, _ := offerGathered(stuck)
	code, _, _, _, err := postSDP(ctx, hc, n.BaseURL()+"/whep/r1", offer)
	if err != nil || code != http.StatusCreated {
		t.Fatalf("stuck viewer: %d %v", code, err)
	}
	eventually(t, 10*time.Second, func() error {
		if st := n.Stats(); st.Viewers != 2 {
			return fmt.Errorf("%+v, want 2 viewers", st)
		}
		return nil
	})
	eventually(t, 60*time.Second, func() error {
		if st := n.Stats(); st.Viewers != 1 || st.UsedUnits != 1 {
			return fmt.Errorf("stuck viewer not cleaned up: %+v", st)
		}
		return nil
	})
	_ = stuck.Close()

	// No trickle ICE: PATCH on a session resource is 405 (RFC 9725).
	preq, _ := http.NewRequestWithContext(ctx, http.MethodPatch, v.resource, strings.NewReader("a=end-of-candidates\r\n"))
	preq.Header.Set("Content-Type", "application/trickle-ice-sdpfrag")
	if resp, err := hc.Do(preq); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("PATCH: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// A second publisher for the same room is refused.
	code, body := post("/whip/r1", "application/sdp", strings.ReplaceAll(good, "a=recvonly", "a=sendonly"))
	if code != http.StatusConflict {
		t.Fatalf("second publisher: %d %s", code, body)
	}

	// The publisher disappears without DELETE: ICE consent fails, the room
	// ends and takes its viewer with it.
	pub.close(false)
	eventually(t, 30*time.Second, statsIs(n, Stats{}))
	v.close()
	settle(t, base)
}
