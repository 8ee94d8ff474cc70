package sidecar_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"

	"github.com/switchyard/switchyard/api"
	sfumedia "github.com/switchyard/switchyard/media"
)

// janusClient is a minimal client of Janus' HTTP API (one session, events
// by long poll), as an application's client would use the URL and room
// number a placement returns.
type janusClient struct {
	t       *testing.T
	session string
	hc      *http.Client
}

type janusEvent struct {
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

func (c *janusClient) post(url string, req map[string]any) janusEvent {
	c.t.Helper()
	req["transaction"] = fmt.Sprint(time.Now().UnixNano())
	b, _ := json.Marshal(req)
	resp, err := c.hc.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		c.t.Fatalf("janus %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var ev janusEvent
	if err := json.Unmarshal(body, &ev); err != nil || ev.Janus == "error" {
		c.t.Fatalf("janus %s %v: %s %v", url, req["janus"], body, err)
	}
	return ev
}

func newJanusClient(t *testing.T, base string) *janusClient {
	c := &janusClient{t: t, hc: &http.Client{Timeout: 40 * time.Second}}
	ev := c.post(base, map[string]any{"janus": "create"})
	c.session = fmt.Sprintf("%s/%d", base, ev.Data.ID)
	return c
}

func (c *janusClient) attach() uint64 {
	return c.post(c.session, map[string]any{"janus": "attach", "plugin": "janus.plugin.videoroom"}).Data.ID
}

func (c *janusClient) message(handle uint64, body map[string]any, jsep *webrtc.SessionDescription) {
	req := map[string]any{"janus": "message", "body": body}
	if jsep != nil {
		req["jsep"] = map[string]any{"type": jsep.Type.String(), "sdp": jsep.SDP}
	}
	c.post(fmt.Sprintf("%s/%d", c.session, handle), req)
}

// coreEvent waits for a Janus core event (e.g. "webrtcup") of handle.
func (c *janusClient) coreEvent(handle uint64, kind string) {
	c.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := c.hc.Get(c.session + "?maxev=1")
		if err != nil {
			c.t.Fatalf("janus events: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var evs []janusEvent
		if err := json.Unmarshal(body, &evs); err != nil {
			var ev janusEvent
			if json.Unmarshal(body, &ev) != nil {
				c.t.Fatalf("janus events: %s", body)
			}
			evs = []janusEvent{ev}
		}
		for _, ev := range evs {
			if ev.Sender == handle && ev.Janus == kind {
				return
			}
		}
	}
	c.t.Fatalf("no %q event from janus handle %d", kind, handle)
}

// event waits for the next plugin event of handle whose data has key.
func (c *janusClient) event(handle uint64, key string) janusEvent {
	c.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := c.hc.Get(c.session + "?maxev=1")
		if err != nil {
			c.t.Fatalf("janus events: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var evs []janusEvent
		if err := json.Unmarshal(body, &evs); err != nil {
			var ev janusEvent
			if json.Unmarshal(body, &ev) != nil {
				c.t.Fatalf("janus events: %s", body)
			}
			evs = []janusEvent{ev}
		}
		for _, ev := range evs {
			if ev.Sender == handle && ev.Plugindata.Data[key] != nil {
				if e, ok := ev.Plugindata.Data["error"]; ok {
					c.t.Fatalf("janus event: %v", e)
				}
				return ev
			}
		}
	}
	c.t.Fatalf("no %q event from janus handle %d", key, handle)
	return janusEvent{}
}

func gathered(pc *webrtc.PeerConnection, d webrtc.SessionDescription) *webrtc.SessionDescription {
	g := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(d); err != nil {
		panic(err)
	}
	<-g
	return pc.LocalDescription()
}

// janusMedia publishes the test VP8 clip into a placed Janus room and
// subscribes to it from a second client; it returns once the subscriber
// received RTP, and a function that ends both. Janus offers host
// candidates on the machine's non-loopback interfaces only, so the pion
// clients gather on every interface.
func janusMedia(t *testing.T, room api.Room) func() {
	t.Helper()
	wapi, err := sfumedia.NewWebRTCAPI(sfumedia.APIOptions{})
	if err != nil {
		t.Fatal(err)
	}
	base := room.URLs["url"].(string)
	num := room.URLs["room"]

	// Publisher.
	pubc := newJanusClient(t, base)
	ph := pubc.attach()
	pubc.message(ph, map[string]any{"request": "join", "ptype": "publisher", "room": num, "display": "pub"}, nil)
	joined := pubc.event(ph, "videoroom")
	feed := joined.Plugindata.Data["id"]
	pc, err := wapi.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "pub")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	up := make(chan struct{})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			close(up)
		}
	})
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	pubc.message(ph, map[string]any{"request": "configure", "audio": false, "video": true}, gathered(pc, offer))
	answer := pubc.event(ph, "configured")
	if answer.Jsep == nil {
		t.Fatal("janus configured without an answer")
	}
	if err := pc.SetRemoteDescription(*answer.Jsep); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go sendIVF(ctx, track.WriteSample)
	select {
	case <-up:
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("the Janus publisher's connection did not come up within 30s")
	}
	// Janus offers the feed to subscribers once its side is up too.
	pubc.coreEvent(ph, "webrtcup")

	// Subscriber.
	subc := newJanusClient(t, base)
	sh := subc.attach()
	subc.message(sh, map[string]any{"request": "join", "ptype": "subscriber", "room": num, "streams": []any{map[string]any{"feed": feed}}}, nil)
	attached := subc.event(sh, "videoroom")
	if attached.Jsep == nil {
		t.Fatalf("subscriber join without an offer: %+v", attached.Plugindata.Data)
	}
	spc, err := wapi.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{})
	spc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if _, _, err := tr.ReadRTP(); err == nil {
			close(got)
		}
	})
	if err := spc.SetRemoteDescription(*attached.Jsep); err != nil {
		t.Fatal(err)
	}
	sa, err := spc.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	subc.message(sh, map[string]any{"request": "start"}, gathered(spc, sa))
	select {
	case <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("the Janus subscriber received no RTP within 30s")
	}
	return func() {
		cancel()
		_ = spc.Close()
		_ = pc.Close()
		subc.post(subc.session, map[string]any{"janus": "destroy"})
		pubc.post(pubc.session, map[string]any{"janus": "destroy"})
	}
}

// sendIVF sends the test clip's frames at 30 fps to write, looping,
// until ctx ends.
func sendIVF(ctx context.Context, write func(media.Sample) error) {
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
