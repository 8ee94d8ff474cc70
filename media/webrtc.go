package media

import (
	"fmt"
	"net"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
)

// videoFeedback is the RTCP feedback offered on every video codec: NACK
// (retransmission through pion's NACK interceptors) and PLI/FIR (key frame
// requests forwarded to the publisher).
func videoFeedback() []webrtc.RTCPFeedback {
	return []webrtc.RTCPFeedback{{Type: "ccm", Parameter: "fir"}, {Type: "nack"}, {Type: "nack", Parameter: "pli"}}
}

// supportedCodecs lists what the node forwards: VP8, H.264 (constrained
// baseline/baseline, packetization modes 1 and 0) and Opus. No RTX: NACKed
// packets are resent on the original SSRC.
func supportedCodecs() []struct {
	p webrtc.RTPCodecParameters
	k webrtc.RTPCodecType
} {
	h264 := func(pt uint8, fmtp string) webrtc.RTPCodecParameters {
		return webrtc.RTPCodecParameters{PayloadType: webrtc.PayloadType(pt), RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: fmtp, RTCPFeedback: videoFeedback()}}
	}
	return []struct {
		p webrtc.RTPCodecParameters
		k webrtc.RTPCodecType
	}{
		{webrtc.RTPCodecParameters{PayloadType: 111, RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}}, webrtc.RTPCodecTypeAudio},
		{webrtc.RTPCodecParameters{PayloadType: 96, RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: videoFeedback()}}, webrtc.RTPCodecTypeVideo},
		{h264(102, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"), webrtc.RTPCodecTypeVideo},
		{h264(106, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"), webrtc.RTPCodecTypeVideo},
		{h264(104, "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f"), webrtc.RTPCodecTypeVideo},
		{h264(108, "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f"), webrtc.RTPCodecTypeVideo},
	}
}

// APIOptions configures NewWebRTCAPI.
type APIOptions struct {
	// IPs limits host candidates to these addresses; empty means every
	// interface address, loopback included.
	IPs []net.IP
	// Disconnected and Failed are the ICE consent timeouts (zero: pion's).
	Disconnected, Failed time.Duration
	// Extra, if set, is registered before pion's default interceptors
	// (the node's byte meter).
	Extra interceptor.Factory
}

// NewWebRTCAPI builds a pion API limited to the supported codecs, with
// pion's default interceptors (NACK generator/responder, RTCP reports,
// TWCC) and host-only UDP candidates. Exported for test clients.
func NewWebRTCAPI(o APIOptions) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	for _, c := range supportedCodecs() {
		if err := m.RegisterCodec(c.p, c.k); err != nil {
			return nil, fmt.Errorf("register codec %s: %w", c.p.MimeType, err)
		}
	}
	reg := &interceptor.Registry{}
	if o.Extra != nil {
		reg.Add(o.Extra)
	}
	if err := webrtc.RegisterDefaultInterceptors(m, reg); err != nil {
		return nil, fmt.Errorf("register interceptors: %w", err)
	}
	s := webrtc.SettingEngine{}
	s.SetIncludeLoopbackCandidate(true)
	s.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	if o.Disconnected > 0 && o.Failed > 0 {
		s.SetICETimeouts(o.Disconnected, o.Failed, 500*time.Millisecond)
	}
	if len(o.IPs) > 0 {
		allowed := append([]net.IP(nil), o.IPs...)
		s.SetIPFilter(func(ip net.IP) bool {
			for _, a := range allowed {
				if a.Equal(ip) {
					return true
				}
			}
			return false
		})
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(s)), nil
}
