package media

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

type pubStats struct {
	Connection string  `json:"connection"`
	BytesSent  float64 `json:"bytesSent"`
}

// TestChromiumPublishes: headless Chromium with fake camera/microphone
// publishes through the demo page; the node receives its RTP and forwards
// it to a pion viewer.
func TestChromiumPublishes(t *testing.T) {
	bin := needProgram(t, "chromium", "chromium")
	cfg := testConfig(t, "m1", 4)
	cfg.ICEIPs = nil // the browser does not use loopback by default: offer every interface
	n := startNode(t, cfg, &memCluster{})

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	ctx, cancel := context.WithTimeout(bctx, 2*time.Minute)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Navigate(n.BaseURL()+"/?publish=browser")); err != nil {
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
	v := watchRoom(t, testAPI(t), n.BaseURL(), "browser")
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
}
