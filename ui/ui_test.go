package ui_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/transport"
)

// needChromium returns the browser's path; without it the test is skipped,
// or fails under CI=true (.ci/setup-media.sh and .ci/setup-deploy.sh
// install Debian's chromium).
func needChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "chromium is missing (Debian package chromium; .ci/setup-deploy.sh installs it as root)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// artifactDir is where the test leaves its screenshots: $ARTIFACTS_DIR, or
// switchyard-artifacts in the system temp dir.
func artifactDir(t *testing.T) string {
	d := os.Getenv("ARTIFACTS_DIR")
	if d == "" {
		d = filepath.Join(os.TempDir(), "switchyard-artifacts")
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatalf("artifact dir: %v", err)
	}
	return d
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(artifactDir(t), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Errorf("write screenshot: %v", err)
		return
	}
	t.Logf("screenshot: %s (%d bytes)", p, len(png))
}

// text returns the text of the first element matching sel ("" if none).
func text(ctx context.Context, sel string) (string, error) {
	return chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e ? e.textContent : ""; })()`, sel)))
}

const dashServers = 1000

// TestDashboardChromium loads /ui/ from a follower of a running cluster
// holding 1,000 servers in four regions (one reporting load over QUIC),
// allocations in rooms with a cascade, and checks that the page's numbers
// match the API; then it stops two agents and checks that the survivor's
// page says plainly that it has no leader. Screenshots are saved.
func TestDashboardChromium(t *testing.T) {
	bin := needChromium(t)
	c := testcluster.New(t, 3)
	ctx0, cancel0 := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel0()
	cl := c.Client()

	// One server over QUIC, reporting load (so the load columns fill).
	qc, err := transport.NewClient(transport.ClientConfig{Addrs: c.QUICAddrs(), TLS: c.Identity("a0").ClientConfig(transport.ALPN), Logger: testcluster.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer qc.Close()
	if _, err := qc.Register(ctx0, transport.ServerInfo{ID: "a0", Capacity: 8, Region: "eu", Incarnation: uint64(time.Now().UnixNano())}); err != nil {
		t.Fatalf("register a0 over QUIC: %v", err)
	}
	reportCtx, stopReports := context.WithCancel(ctx0)
	var reporters sync.WaitGroup
	reporters.Add(1)
	go func() {
		defer reporters.Done()
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		for {
			_ = qc.Report(transport.Load{CPU: 0.42, Peers: 7, FreeUnits: 8})
			select {
			case <-reportCtx.Done():
				return
			case <-tk.C:
			}
		}
	}()
	defer func() { stopReports(); reporters.Wait() }()

	// 999 more over HTTP, in four regions, straight to the leader (the
	// leader batches concurrent registrations into few log entries).
	regions := []string{"eu", "us", "ap", "sa"}
	t0 := time.Now()
	lc := api.NewClient(c.WaitLeader(15*time.Second).Cfg.HTTPAddr, c.Addrs()[0], c.Addrs()[1], c.Addrs()[2])
	var wg sync.WaitGroup
	errs := make(chan error, dashServers)
	sem := make(chan struct{}, 64)
	for i := 1; i < dashServers; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_, err := lc.RegisterServer(ctx0, api.RegisterServerRequest{ID: fmt.Sprintf("m%04d", i), Capacity: int64(4 + i%5), Region: regions[i%4], Zone: regions[i%4] + "-" + strconv.Itoa(i%2)})
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("register: %v", err)
	}
	t.Logf("registered %d servers in %v", dashServers, time.Since(t0).Round(time.Millisecond))
	// Allocations: ten rooms; room-0 starts on m0001 and cascades from it
	// to another server.
	for i := 0; i < 10; i++ {
		req := api.AllocateRequest{RequestID: fmt.Sprintf("r%d", i), Room: fmt.Sprintf("room-%d", i), Units: 2}
		if i == 0 {
			req.Server = "m0001"
		}
		if _, err := cl.Allocate(ctx0, req); err != nil {
			t.Fatalf("allocate: %v", err)
		}
	}
	casc, err := cl.Allocate(ctx0, api.AllocateRequest{RequestID: "cascade", Room: "room-0", Units: 2, Requester: "m0001"})
	if err != nil {
		t.Fatalf("cascade allocation: %v", err)
	}
	placed, err := cl.PlaceRoom(ctx0, "placed-room", api.PlaceRoomRequest{Units: 1})
	if err != nil {
		t.Fatalf("place a room: %v", err)
	}

	f := c.Followers()[0]
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1400, 2000))
	actx, acancel := chromedp.NewExecAllocator(ctx0, opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	ctx, cancel := context.WithTimeout(bctx, 2*time.Minute)
	defer cancel()
	start := time.Now()
	if _, err := chromedp.Run(ctx, chromedp.Navigate("http://"+f.Cfg.HTTPAddr+"/ui/")); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	testcluster.Eventually(t, 60*time.Second, func() error {
		n, err := text(ctx, "#servers-count")
		if err != nil || n != strconv.Itoa(dashServers) {
			return fmt.Errorf("servers on the page: %q %v", n, err)
		}
		return nil
	})
	t.Logf("dashboard: %d servers shown %v after navigation started", dashServers, time.Since(start).Round(time.Millisecond))

	// The numbers on the page match the API.
	check := func() error {
		servers, err := cl.Servers(ctx, false)
		if err != nil {
			return err
		}
		var capacity, used int64
		for _, s := range servers {
			capacity += s.Capacity
			used += s.Used
		}
		allocs, err := cl.Allocations(ctx, api.AllocationListOptions{ActiveOnly: true})
		if err != nil {
			return err
		}
		st, err := api.NewClient(f.Cfg.HTTPAddr).Status(ctx)
		if err != nil {
			return err
		}
		m1, err := cl.Servers(ctx, false)
		if err != nil {
			return err
		}
		var m0001Used int64
		for _, s := range m1 {
			if s.ID == "m0001" {
				m0001Used = s.Used
			}
		}
		want := map[string]string{
			"#servers-count":  strconv.Itoa(len(servers)),
			"#capacity-total": strconv.FormatInt(capacity, 10),
			"#used-total":     strconv.FormatInt(used, 10),
			"#alloc-active":   strconv.Itoa(len(allocs)),
			"#leader":         st.Leader,
			"#term":           strconv.FormatUint(st.Term, 10),
			"#node":           f.ID,
			"#policy-version": "0",
			"#intents-count":  "0",
			"tr[data-member='" + st.Leader + "'] .role": "leader",
			"tr[data-server='m0001'] .used":             strconv.FormatInt(m0001Used, 10),
			"tr[data-server='a0'] .peers":               "7",
			"tr[data-region='eu'] td:nth-child(2)":      strconv.Itoa(dashServers / 4),
			"#rooms li[data-room='room-0'] .edge":       "→ cascade ",
		}
		for sel, w := range want {
			got, err := text(ctx, sel)
			if err != nil {
				return err
			}
			if got != w {
				return fmt.Errorf("%s: page shows %q, API says %q", sel, got, w)
			}
		}
		for _, n := range c.Running() {
			s, err := api.NewClient(n.Cfg.HTTPAddr).Status(ctx)
			if err != nil {
				return err
			}
			got, err := text(ctx, "tr[data-member='"+n.ID+"'] .applied")
			if err != nil {
				return err
			}
			if got != strconv.FormatUint(s.AppliedIndex, 10) {
				return fmt.Errorf("member %s applied index: page %q, API %d", n.ID, got, s.AppliedIndex)
			}
		}
		return nil
	}
	testcluster.Eventually(t, 60*time.Second, check)
	if got, _ := text(ctx, "#rooms li[data-room='room-0']"); got == "" || casc.Server == "m0001" {
		t.Fatalf("cascade room on the page: %q (cascade allocation %+v)", got, casc)
	}
	testcluster.Eventually(t, 30*time.Second, func() error {
		got, _ := text(ctx, "#rooms li[data-room='placed-room']")
		if want := "placed on " + placed.Server + " (" + placed.SFU + ")"; !strings.Contains(got, want) {
			return fmt.Errorf("placed room on the page: %q, want %q", got, want)
		}
		return nil
	})
	screenshot(t, ctx, "dashboard.png")
	checkServerPages(t, ctx, cl)
	checkStateFilter(t, ctx, cl)

	// Update latency: a new allocation committed → shown.
	t1 := time.Now()
	if _, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: "late", Room: "late-room", Units: 1}); err != nil {
		t.Fatal(err)
	}
	committed := time.Since(t1)
	testcluster.Eventually(t, 30*time.Second, func() error {
		if got, _ := text(ctx, "#rooms-count"); got != "12" {
			return fmt.Errorf("rooms on the page: %q", got)
		}
		return nil
	})
	t.Logf("dashboard: new allocation shown %v after it was acknowledged (commit took %v)", time.Since(t1)-committed, committed)

	// No leader: stop the other two agents; the survivor's page says so.
	for _, n := range c.Nodes {
		if n != f {
			c.Stop(n)
		}
	}
	testcluster.Eventually(t, 60*time.Second, func() error {
		vis, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!document.getElementById("no-leader").hidden`))
		if err != nil || !vis {
			return fmt.Errorf("no-leader banner not shown (%v)", err)
		}
		msg, _ := text(ctx, "#no-leader")
		if want := "Agent " + f.ID + " has no leader"; len(msg) < len(want) || msg[:len(want)] != want {
			return fmt.Errorf("banner %q", msg)
		}
		// Still shows the local replica.
		if n, _ := text(ctx, "#servers-count"); n != strconv.Itoa(dashServers) {
			return fmt.Errorf("servers without a leader: %q", n)
		}
		return nil
	})
	screenshot(t, ctx, "dashboard-no-leader.png")
}

// checkServerPages checks the server table of a dashboard showing
// dashServers servers: it reads them from the API 50 at a time, shows the
// total the API counts (X-Total-Count), reaches the second page and back,
// and the page it shows stays live.
func checkServerPages(t *testing.T, ctx context.Context, cl *api.Client) {
	t.Helper()
	rows := func() (int, error) {
		return chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#servers tbody tr").length`))
	}
	want := func(texts map[string]string, n int) func() error {
		return func() error {
			for sel, w := range texts {
				if got, err := text(ctx, sel); err != nil || got != w {
					return fmt.Errorf("%s: %q (%v), want %q", sel, got, err, w)
				}
			}
			if got, err := rows(); err != nil || got != n {
				return fmt.Errorf("%d rows in the server table (%v), want %d", got, err, n)
			}
			return nil
		}
	}
	total := strconv.Itoa(dashServers)
	testcluster.Eventually(t, 30*time.Second, want(map[string]string{
		"#servers-total": total, "#servers-shown": "showing 1–50 of " + total, "#page": "page 1 / 20",
	}, 50))
	// Every read of the server list asked for one page.
	reads, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
		`performance.getEntriesByType("resource").map((e) => e.name).filter((n) => new URL(n).pathname === "/v1/servers")`))
	if err != nil || len(reads) == 0 {
		t.Fatalf("the page's reads of /v1/servers: %v %v", reads, err)
	}
	for _, r := range reads {
		if !strings.Contains(r, "limit=50") {
			t.Fatalf("the page read %s: not one page", r)
		}
	}
	click := func(id string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("`+id+`").click(), true`)); err != nil {
			t.Fatal(err)
		}
	}
	click("next")
	testcluster.Eventually(t, 30*time.Second, want(map[string]string{
		"#servers-shown": "showing 51–100 of " + total, "#page": "page 2 / 20", "tr[data-server='m0050'] .id": "m0050",
	}, 50))
	if got, _ := text(ctx, "tr[data-server='m0001'] .id"); got != "" {
		t.Fatalf("m0001 is still shown on the second page")
	}
	// The second page is live: a unit taken on m0050 shows.
	before, err := cl.Server(ctx, "m0050", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: "page-two", Room: "room-1", Units: 1, Server: "m0050"}); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 30*time.Second, want(map[string]string{
		"tr[data-server='m0050'] .used": strconv.FormatInt(before.Used+1, 10), "#page": "page 2 / 20",
	}, 50))
	click("prev")
	testcluster.Eventually(t, 30*time.Second, want(map[string]string{
		"#servers-shown": "showing 1–50 of " + total, "#page": "page 1 / 20", "tr[data-server='a0'] .id": "a0",
	}, 50))
	t.Logf("server table: %d reads of /v1/servers, each one page of 50; second page reached and left", len(reads))
}

// checkStateFilter drains three servers and checks the server table's
// state filter: it reads the filtered pages from the API (?state=), shows
// the filtered total, shows none for a state no server is in, and goes
// back to every server.
func checkStateFilter(t *testing.T, ctx context.Context, cl *api.Client) {
	t.Helper()
	drained := []string{"m0100", "m0200", "m0300"}
	for _, id := range drained {
		if _, err := cl.DrainServer(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	choose := func(state string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(
			`(() => { const s = document.getElementById("state-filter"); s.value = %q; s.dispatchEvent(new Event("change")); return true; })()`, state))); err != nil {
			t.Fatal(err)
		}
	}
	// table returns the ids in the server table, in order.
	table := func() ([]string, error) {
		return chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#servers tbody tr")].map((r) => r.dataset.server)`))
	}
	want := func(texts map[string]string, ids []string) func() error {
		return func() error {
			for sel, w := range texts {
				if got, err := text(ctx, sel); err != nil || got != w {
					return fmt.Errorf("%s: %q (%v), want %q", sel, got, err, w)
				}
			}
			got, err := table()
			if err != nil {
				return err
			}
			if ids != nil && strings.Join(got, ",") != strings.Join(ids, ",") {
				return fmt.Errorf("server table %v, want %v", got, ids)
			}
			if ids == nil && len(got) != 50 {
				return fmt.Errorf("%d rows in the server table, want 50", len(got))
			}
			return nil
		}
	}
	choose("draining")
	testcluster.Eventually(t, 30*time.Second, want(map[string]string{
		"#servers-total": "3", "#servers-shown": "showing 1–3 of 3 draining", "#page": "page 1 / 1",
	}, drained))
	reads, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
		`performance.getEntriesByType("resource").map((e) => e.name).filter((n) => new URL(n).pathname === "/v1/servers" && new URL(n).searchParams.get("state") === "draining")`))
	if err != nil || len(reads) == 0 {
		t.Fatalf("the page's filtered reads of /v1/servers: %v %v", reads, err)
	}
	choose("down")
	testcluster.Eventually(t, 30*time.Second, want(map[string]string{
		"#servers-total": "0", "#servers-shown": "no down servers",
	}, []string{}))
	// The id box: the API keeps the ids that start with what is typed,
	// with the state chosen or alone.
	typePrefix := func(prefix string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(
			`(() => { const s = document.getElementById("prefix-filter"); s.value = %q; s.dispatchEvent(new Event("input")); return true; })()`, prefix))); err != nil {
			t.Fatal(err)
		}
	}
	choose("draining")
	typePrefix("m02")
	testcluster.Eventually(t, 30*time.Second, want(map[string]string{
		"#servers-total": "1", "#servers-shown": "showing 1–1 of 1 draining “m02…”",
	}, []string{"m0200"}))
	choose("")
	typePrefix("m020")
	var m020 []string
	for i := range 10 {
		m020 = append(m020, fmt.Sprintf("m020%d", i))
	}
	testcluster.Eventually(t, 30*time.Second, want(map[string]string{
		"#servers-total": "10", "#servers-shown": "showing 1–10 of 10 “m020…”", "#page": "page 1 / 1",
	}, m020))
	// Over the API's 128 bytes (65 two-byte characters): said on the
	// page, the table left as it was.
	typePrefix(strings.Repeat("é", 65))
	testcluster.Eventually(t, 30*time.Second, want(map[string]string{
		"#errors": "prefix: an id prefix is at most 128 bytes", "#servers-total": "10",
	}, m020))
	typePrefix("")
	total := strconv.Itoa(dashServers)
	testcluster.Eventually(t, 30*time.Second, want(map[string]string{
		"#servers-total": total, "#servers-shown": "showing 1–50 of " + total, "#page": "page 1 / 20", "#errors": "",
	}, nil))
	t.Logf("server table: filtered on draining (%d reads with state=draining), on down, on an id prefix, and back", len(reads))
}
