package media

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/mediatoken"
)

type watchStats struct {
	Viewers       int     `json:"viewers"`
	Connected     int     `json:"connected"`
	BytesReceived float64 `json:"bytesReceived"`
}

type pubStats struct {
	Connection string  `json:"connection"`
	BytesSent  float64 `json:"bytesSent"`
}

// TestChromiumPublishes: headless Chromium with fake camera/microphone
// publishes through the demo page, with a publish token in the page's
// fragment (both nodes require WHIP/WHEP tokens, as the dev cluster's
// do); the node receives its RTP and forwards it to a pion viewer, which
// fills the node; a second tab watching through the demo page with a play
// token is redirected (307, cross-origin: the browser drops the header and
// the redirect carries a token for the target) to the cascade target and
// plays the stream from there. Without the page's tokens each step would
// be refused (TestWHIPWHEPTokens).
func TestChromiumPublishes(t *testing.T) {
	bin := needProgram(t, "chromium", "chromium")
	c := testcluster.New(t, 3)
	key := mediatoken.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	keys := &mediatoken.Keyring{}
	keys.Set([]mediatoken.Key{key})
	frag := func(action string) string {
		tok, err := mediatoken.Mint(key, mediatoken.Claims{Room: "browser", Action: action, ExpiresAt: time.Now().Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return "#token=" + tok
	}
	cfg := testConfig(t, "m1", 1)
	cfg.ICEIPs = nil // the browser does not use loopback by default: offer every interface
	cfg.Tokens = keys
	n := startNode(t, cfg, httpCluster(t, c, "m1"))
	cfg2 := testConfig(t, "m2", 4)
	cfg2.ICEIPs = nil
	cfg2.Tokens = keys
	m2 := startNode(t, cfg2, httpCluster(t, c, "m2"))

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Host candidates as IPs, not mDNS names, for the watching tab too.
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns"),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	ctx, cancel := context.WithTimeout(bctx, 2*time.Minute)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Navigate(n.BaseURL()+"/?publish=browser"+frag(mediatoken.Publish))); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	var st pubStats
	eventually(t, 60*time.Second, func() error {
		var err error
		st, err = chromedp.Run(ctx, chromedp.Evaluate[pubStats](`publishStats()`, chromedp.EvalAwaitPromise))
		if err != nil {
			return err
		}
		if st.Connection != "connected" || st.BytesSent == 0 {
			logText, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('log').textContent`))
			return fmt.Errorf("browser publisher %+v; page log: %s", st, logText)
		}
		return nil
	})
	eventually(t, 30*time.Second, func() error {
		if ri := n.roomInfo("browser"); ri.Tracks != 2 || n.meter.in.Load() == 0 {
			return fmt.Errorf("room %+v, %d bytes in", ri, n.meter.in.Load())
		}
		return nil
	})
	v := watchRoom(t, testAPI(t), n.BaseURL(), "browser?access_token="+url.QueryEscape(strings.TrimPrefix(frag(mediatoken.Play), "#token=")))
	defer v.close()
	v.waitRTP(t, 30*time.Second)
	eventually(t, 30*time.Second, func() error {
		if v.packets.Load() < 50 {
			return fmt.Errorf("viewer got %d packets", v.packets.Load())
		}
		return nil
	})
	if l := n.sample(); l.Tracks != 2 || l.Peers != 2 {
		t.Fatalf("load while a browser publishes to one viewer: %+v", l)
	}

	// A second tab watches the room through the demo page: m1 is full, so
	// it is sent to m2.
	wctx, wcancel := chromedp.NewContext(bctx)
	defer wcancel()
	if _, err := chromedp.Run(wctx, chromedp.Navigate(n.BaseURL()+"/?watch=browser"+frag(mediatoken.Play))); err != nil {
		t.Fatalf("chromium watch tab: %v", err)
	}
	eventually(t, 60*time.Second, func() error {
		ws, err := chromedp.Run(wctx, chromedp.Evaluate[watchStats](`watchStats()`, chromedp.EvalAwaitPromise))
		if err != nil {
			return err
		}
		if ws.Connected != 1 || ws.BytesReceived < 10000 || m2.roomInfo("browser").Viewers != 1 {
			logText, _ := chromedp.Run(wctx, chromedp.Evaluate[string](`document.getElementById('log').textContent`))
			return fmt.Errorf("browser viewer %+v; page log: %s", ws, logText)
		}
		return nil
	})

}
