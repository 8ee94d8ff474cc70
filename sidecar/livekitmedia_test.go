package sidecar_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	protologger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/livekittest"
)

// liveKitMedia joins a placed LiveKit room at the URL the placement
// returned, with two clients of LiveKit's own Go SDK: one publishes the
// test VP8 clip, the other subscribes to it. It returns once the
// subscriber received RTP of that track, and a function that disconnects
// both (once; it may be called again).
func liveKitMedia(t *testing.T, room api.Room) func() {
	t.Helper()
	url, _ := room.URLs["url"].(string)
	info := func(identity string) lksdk.ConnectInfo {
		return lksdk.ConnectInfo{APIKey: livekittest.APIKey, APISecret: livekittest.APISecret, RoomName: room.Room, ParticipantIdentity: identity}
	}
	// The SDK's own logging is off: what fails is returned.
	opts := []lksdk.ConnectOption{lksdk.WithConnectTimeout(20 * time.Second), lksdk.WithLogger(protologger.GetDiscardLogger())}
	ctx, cancel := context.WithCancel(context.Background())
	var rooms []*lksdk.Room
	var ended sync.Once
	end := func() {
		ended.Do(func() {
			cancel()
			for _, r := range rooms {
				r.Disconnect()
			}
		})
	}
	pub, err := lksdk.ConnectToRoom(url, info("pub"), lksdk.NewRoomCallback(), opts...)
	if err != nil {
		end()
		t.Fatalf("publisher joins %s at %s: %v", room.Room, url, err)
	}
	rooms = append(rooms, pub)
	track, err := lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000})
	if err != nil {
		end()
		t.Fatal(err)
	}
	if _, err := pub.LocalParticipant.PublishTrack(track, &lksdk.TrackPublicationOptions{Name: "clip", Source: livekit.TrackSource_CAMERA,
		VideoWidth: 320, VideoHeight: 240}); err != nil {
		end()
		t.Fatalf("publish: %v", err)
	}
	go sendIVF(ctx, func(s media.Sample) error { return track.WriteSample(s, nil) })

	received := make(chan string, 1)
	var once sync.Once
	cb := lksdk.NewRoomCallback()
	cb.ParticipantCallback.OnTrackSubscribed = func(tr *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		go func() {
			for {
				if _, _, err := tr.ReadRTP(); err != nil {
					return
				}
				once.Do(func() { received <- rp.Identity() + " " + tr.Codec().MimeType })
			}
		}()
	}
	sub, err := lksdk.ConnectToRoom(url, info("sub"), cb, opts...)
	if err != nil {
		end()
		t.Fatalf("subscriber joins %s at %s: %v", room.Room, url, err)
	}
	rooms = append(rooms, sub)
	select {
	case got := <-received:
		if got != "pub "+webrtc.MimeTypeVP8 {
			end()
			t.Fatalf("the subscriber received %q, want pub's %s", got, webrtc.MimeTypeVP8)
		}
	case <-time.After(60 * time.Second):
		end()
		t.Fatalf("the subscriber received no RTP from the publisher in %s within 60 s", room.Room)
	}
	return end
}
