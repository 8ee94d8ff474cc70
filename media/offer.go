package media

import (
	"fmt"
	"strings"

	"github.com/pion/sdp/v3"
)

// maxOfferBytes bounds the SDP offer a client may send.
const maxOfferBytes = 64 << 10

// offerInfo is what checkOffer learned from an offer.
type offerInfo struct {
	sending int // audio/video sections the offerer sends on (its published tracks)
	media   int // audio/video sections in total (port != 0)
	// codecs lists the lower-case codec names offered per kind ("video", "audio").
	codecs map[string]map[string]bool
}

// accepts reports whether the offer has a section of kind offering codec
// (a MIME type such as "video/VP8").
func (o offerInfo) accepts(kind, mime string) bool {
	_, name, _ := strings.Cut(mime, "/")
	return o.codecs[kind][strings.ToLower(name)]
}

// checkOffer parses an SDP offer and checks that every active audio/video
// section offers at least one codec the node forwards (VP8, H264, Opus).
// It returns ErrBadOffer or ErrUnsupportedCodec (wrapped, with the reason).
func checkOffer(body []byte) (offerInfo, error) {
	info := offerInfo{codecs: map[string]map[string]bool{}}
	var sd sdp.SessionDescription
	if len(body) == 0 {
		return info, fmt.Errorf("%w: empty body", ErrBadOffer)
	}
	if err := sd.Unmarshal(body); err != nil {
		return info, fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	for i, m := range sd.MediaDescriptions {
		kind := m.MediaName.Media
		if (kind != "audio" && kind != "video") || m.MediaName.Port.Value == 0 {
			continue
		}
		info.media++
		var offered []string
		ok := false
		for _, a := range m.Attributes {
			if a.Key != "rtpmap" {
				continue
			}
			_, enc, _ := strings.Cut(a.Value, " ")
			name, _, _ := strings.Cut(enc, "/")
			offered = append(offered, name)
			if info.codecs[kind] == nil {
				info.codecs[kind] = map[string]bool{}
			}
			info.codecs[kind][strings.ToLower(name)] = true
			switch strings.ToLower(name) {
			case "vp8", "h264":
				ok = ok || kind == "video"
			case "opus":
				ok = ok || kind == "audio"
			}
		}
		if !ok {
			return info, fmt.Errorf("%w: m=%s (section %d) offers %v; this node forwards VP8, H264 and Opus", ErrUnsupportedCodec, kind, i, offered)
		}
		dir := "sendrecv"
		for _, d := range []string{"sendonly", "recvonly", "inactive", "sendrecv"} {
			if _, has := m.Attribute(d); has {
				dir = d
			}
		}
		if dir == "sendonly" || dir == "sendrecv" {
			info.sending++
		}
	}
	if info.media == 0 {
		return info, fmt.Errorf("%w: no audio or video section", ErrBadOffer)
	}
	return info, nil
}

// bundleLone adds "a=group:BUNDLE <mid>" to an offer that has no BUNDLE
// group and a single media section. pion answers only bundled transports:
// without a group it rejects every section (port 0). With one section,
// bundled and unbundled mean the same single transport, so the group
// changes nothing else; GStreamer's simple-whip-client (bundle-policy none)
// sends such offers. Any other offer is returned unchanged.
func bundleLone(body []byte) []byte {
	var sd sdp.SessionDescription
	if sd.Unmarshal(body) != nil || len(sd.MediaDescriptions) != 1 {
		return body
	}
	if g, ok := sd.Attribute(sdp.AttrKeyGroup); ok && strings.HasPrefix(g, "BUNDLE") {
		return body
	}
	mid, ok := sd.MediaDescriptions[0].Attribute(sdp.AttrKeyMID)
	if !ok || mid == "" {
		return body
	}
	sd.WithValueAttribute(sdp.AttrKeyGroup, "BUNDLE "+mid)
	out, err := sd.Marshal()
	if err != nil {
		return body
	}
	return out
}
