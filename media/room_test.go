package media

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// TestRoomPlacementURLs: an application places a room on our media nodes
// and its clients use the returned WHIP and WHEP URLs as they are.
func TestRoomPlacementURLs(t *testing.T) {
	c := testcluster.New(t, 1)
	m1 := startNode(t, testConfig(t, "m1", 10), quicCluster(t, c, "m1"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	room, err := c.Client().PlaceRoom(ctx, "placed room", api.PlaceRoomRequest{Units: 2, SFU: "switchyard"})
	if err != nil {
		t.Fatal(err)
	}
	whip, _ := room.URLs["whip"].(string)
	whep, _ := room.URLs["whep"].(string)
	if room.Server != "m1" || whip == "" || whep == "" {
		t.Fatalf("placement %+v (m1 at %s)", room, m1.BaseURL())
	}
	pa := testAPI(t)

	// WHIP publisher at urls.whip, sending synthetic VP8-labelled RTP.
	pub, err := pa.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "placed")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	offer, err := offerGathered(pub)
	if err != nil {
		t.Fatal(err)
	}
	code, body, _, _, err := postSDP(ctx, httpClient(), whip, offer)
	if err != nil || code != http.StatusCreated {
		t.Fatalf("WHIP at %s: %d %s %v", whip, code, body, err)
	}
	if err := pub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: body}); err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for seq := uint16(0); ; seq++ {
			select {
			case <-sctx.Done():
				return
			case <-tk.C:
			}
			_ = track.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: uint32(seq) * 3000, Marker: true},
				Payload: []byte{0x10, 0x00, 0x9d, 0x01, 0x2a}})
		}
	}()

	// WHEP viewer at urls.whep receives the publisher's RTP.
	view, err := pa.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	if _, err := view.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{})
	view.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if _, _, err := tr.ReadRTP(); err == nil {
			close(got)
		}
	})
	offer, err = offerGathered(view)
	if err != nil {
		t.Fatal(err)
	}
	code, body, _, _, err = postSDP(ctx, httpClient(), whep, offer)
	if err != nil || code != http.StatusCreated {
		t.Fatalf("WHEP at %s: %d %s %v", whep, code, body, err)
	}
	if err := view.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: body}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("the WHEP viewer received no RTP within 30s")
	}
}
