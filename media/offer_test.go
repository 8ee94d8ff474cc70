package media

import (
	"errors"
	"strings"
	"testing"
)

const seedOffer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n" +
	"m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\na=rtpmap:111 opus/48000/2\r\n"

func TestCheckOffer(t *testing.T) {
	info, err := checkOffer([]byte(seedOffer))
	if err != nil {
		t.Fatal(err)
	}
	if info.media != 2 || info.sending != 1 || !info.accepts("video", "video/H264") || !info.accepts("audio", "audio/opus") || info.accepts("audio", "audio/PCMU") {
		t.Fatalf("%+v", info)
	}
	for _, bad := range []struct {
		sdp  string
		want error
	}{
		{"", ErrBadOffer},
		{"garbage", ErrBadOffer},
		{"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", ErrBadOffer},
		{"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 98\r\na=rtpmap:98 VP9/90000\r\n", ErrUnsupportedCodec},
		{"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n", ErrUnsupportedCodec},
	} {
		if _, err := checkOffer([]byte(bad.sdp)); !errors.Is(err, bad.want) {
			t.Errorf("checkOffer(%q) = %v, want %v", bad.sdp, err, bad.want)
		}
	}
}

// FuzzCheckOffer: the offer parser never panics on client input.
func FuzzCheckOffer(f *testing.F) {
	f.Add([]byte(seedOffer))
	f.Add([]byte("v=0\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := checkOffer(b)
		if err == nil && info.media == 0 {
			t.Fatalf("accepted an offer without media: %q", b)
		}
	})
}

func TestProcCPUTicks(t *testing.T) {
	a, err := procCPUTicks()
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for i := 0; i < 30_000_000; i++ {
		x += i % 7
	}
	b, err := procCPUTicks()
	if err != nil || b < a {
		t.Fatalf("ticks %d then %d (%v) %d", a, b, err, x)
	}
}

func TestBundleLoneSection(t *testing.T) {
	lone := "v=0\r\no=- 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:video0\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\n"
	got := string(bundleLone([]byte(lone)))
	if !strings.Contains(got, "a=group:BUNDLE video0") {
		t.Fatalf("no BUNDLE group added:\n%s", got)
	}
	if string(bundleLone([]byte(got))) != got {
		t.Fatal("a bundled offer was changed")
	}
	two := lone + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:audio1\r\na=rtpmap:111 opus/48000/2\r\n"
	if string(bundleLone([]byte(two))) != two {
		t.Fatal("an unbundled offer with two sections was changed")
	}
	if string(bundleLone([]byte("garbage"))) != "garbage" {
		t.Fatal("garbage was changed")
	}
}
