#!/usr/bin/env bash
# Installs what the media tests drive from outside Go (Debian bookworm):
#   chromium            headless browser for the demo-page test (TestChromiumPublishes)
#   simple-whip-client  GStreamer WHIP client, binary /usr/bin/whip-client (TestGStreamerWHIPClient)
#   + the GStreamer plugins its pipelines need (VP8 encoder, webrtcbin, nice).
#   python3-gst-1.0 + GI typelibs: bookworm's whip-client aborts at start (it
#     links libsoup2, GStreamer's nice/webrtc plugins libsoup3), so the test
#     also publishes with testdata/media/gst-whip.py, a webrtcbin WHIP client.
# The tests install these themselves when missing and running as root; this
# script does it once up front so CI time is predictable. Idempotent.
set -euo pipefail
pkgs=(chromium simple-whip-client gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-nice python3-gi python3-gst-1.0 gir1.2-gst-plugins-bad-1.0 gir1.2-gst-plugins-base-1.0)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-media: all present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "setup-media: missing ${missing[*]} and not root; the media tests will skip (or fail with CI=true)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup-media: installed ${missing[*]}"
