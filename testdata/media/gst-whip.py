#!/usr/bin/python3
"""WHIP publisher on GStreamer's WebRTC stack (webrtcbin + libnice).

Stand-in for Debian bookworm's simple-whip-client, which aborts at start
there: it links libsoup2 while GStreamer's nice/webrtc plugins pull in
libsoup3 (through libnice -> gupnp-igd). WebRTC (ICE, DTLS, SRTP, RTP) is
all GStreamer's; this file only does RFC 9725's HTTP exchange (no trickle).

usage: gst-whip.py WHIP_URL     SIGINT/SIGTERM: DELETE the resource and exit
"""
import signal
import sys
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

URL = sys.argv[1]
Gst.init(None)
pipe = Gst.parse_launch(
    "webrtcbin name=w bundle-policy=max-bundle "
    "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! "
    "videoconvert ! queue ! vp8enc deadline=1 target-bitrate=500000 keyframe-max-dist=60 ! rtpvp8pay pt=96 ! queue ! "
    "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000 ! w."
)
w = pipe.get_by_name("w")
loop = GLib.MainLoop()
state = {"resource": None, "posted": False}


def on_offer(promise, _el, _data):
    reply = promise.get_reply()
    offer = reply.get_value("offer") if reply else None
    if offer is None:
        print("create-offer failed:", reply.to_string() if reply else "no reply", flush=True)
        loop.quit()
        return
    w.emit("set-local-description", offer, Gst.Promise.new())


def on_negotiation_needed(el):
    el.emit("create-offer", None, Gst.Promise.new_with_change_func(on_offer, el, None))


def post():
    if state["posted"] or w.get_property("local-description") is None:
        return False
    state["posted"] = True
    sdp = w.get_property("local-description").sdp.as_text()
    req = urllib.request.Request(URL, data=sdp.encode(), headers={"Content-Type": "application/sdp"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            state["resource"] = urllib.parse.urljoin(r.geturl(), r.headers["Location"])
            answer = r.read().decode()
    except Exception as e:  # noqa: BLE001
        print("WHIP POST failed:", e, flush=True)
        loop.quit()
        return False
    _, msg = GstSdp.SDPMessage.new_from_text(answer)
    w.emit("set-remote-description", GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg), Gst.Promise.new())
    print("published", state["resource"], flush=True)
    return False


def on_gathering(el, _pspec):
    if el.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
        GLib.idle_add(post)


def stop(*_):
    if state["resource"]:
        try:
            urllib.request.urlopen(urllib.request.Request(state["resource"], method="DELETE"), timeout=5).close()
        except Exception as e:  # noqa: BLE001
            print("DELETE failed:", e, flush=True)
    pipe.set_state(Gst.State.NULL)
    loop.quit()
    return False


w.connect("on-negotiation-needed", on_negotiation_needed)
w.connect("notify::ice-gathering-state", on_gathering)
GLib.timeout_add(3000, post)  # in case gathering never reports complete
GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, stop)
GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, stop)
pipe.set_state(Gst.State.PLAYING)
loop.run()
