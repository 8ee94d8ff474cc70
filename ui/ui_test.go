package ui_test

import (
	"context"
	"encoding/json"
	"errors"
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

	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/errcode"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/provision"
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

// pageTime formats a Unix time in ms as the page does (fmtTime in app.js).
func pageTime(unixMs int64) string {
	return time.UnixMilli(unixMs).UTC().Format("2006-01-02 15:04:05Z")
}

// pageAge reads a load age as the page writes it (fmtAge in app.js:
// "850 ms", "3.2 s" or "4 min").
func pageAge(s string) (time.Duration, error) {
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{" ms", time.Millisecond}, {" s", time.Second}, {" min", time.Minute}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 {
				break
			}
			return time.Duration(f * float64(u.unit)), nil
		}
	}
	return 0, fmt.Errorf("not a load age: %q", s)
}

const dashServers = 1000

// provCapacity is the capacity of a provisioned server in the policy
// checkPolicyChange sets: more than any registered server has (at most 8).
const provCapacity = 16

// heldProvider is the cluster's provisioner in TestDashboardChromium. It
// hands each Provision call's spec to the test and holds the call (the
// intent stays started) until the test answers it on answer.
type heldProvider struct {
	calls  chan provision.Spec
	answer chan error
}

func newHeldProvider() *heldProvider {
	return &heldProvider{calls: make(chan provision.Spec, 4), answer: make(chan error, 1)}
}

func (p *heldProvider) Name() string { return "ui-test" }

func (p *heldProvider) Provision(ctx context.Context, spec provision.Spec) error {
	select {
	case p.calls <- spec:
	default:
	}
	select {
	case err := <-p.answer:
		return err
	case <-ctx.Done(): // the intent's deadline passed, or the leader stepped down
		return ctx.Err()
	}
}

func (p *heldProvider) Deprovision(context.Context, provision.Spec) error {
	return errors.New("ui test provider: nothing to deprovision")
}

// TestDashboardChromium loads /ui/ from a follower of a running cluster
// holding 1,000 servers in four regions (one reporting load over QUIC),
// allocations in rooms with a cascade, and checks that the page's numbers
// match the API; then, live, a policy change, the allocation and refusal
// rates and a provisioning intent from start to failure; then it stops
// two agents and checks that the survivor's page says plainly that it has
// no leader. Screenshots are saved.
func TestDashboardChromium(t *testing.T) {
	bin := needChromium(t)
	// Every agent can provision servers (only the leader does): through
	// prov, which the test drives (checkIntent).
	prov := newHeldProvider()
	c := testcluster.New(t, 3, testcluster.Options{Mutate: func(_ int, cfg *agent.Config) { cfg.Provisioner = prov }})
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
	lc := api.NewClient(c.WaitLeader(15*time.Second).Cfg.HTTPAddr, c.Addrs()[0], c.Addrs()[1], c.Addrs()[2]).WithToken(c.Token)
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

	// The dashboard reads with a reader token, as the dashboard link of
	// `switchyard dev` carries (/ui/#token=...).
	reader, err := cl.ACLCreateToken(ctx0, api.CreateTokenRequest{Role: "reader", Description: "dashboard"})
	if err != nil {
		t.Fatal(err)
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
	if _, err := chromedp.Run(ctx, chromedp.Navigate("http://"+f.Cfg.HTTPAddr+"/ui/#token="+reader.Secret)); err != nil {
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
		st, err := api.NewClient(f.Cfg.HTTPAddr).WithToken(c.Token).Status(ctx)
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
			"#policy-when":    "(default)",
			"#intents-count":  "0",
			// Allocations were granted but none refused so far.
			"#refuse-rate": "0.0",
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
			s, err := api.NewClient(n.Cfg.HTTPAddr).WithToken(c.Token).Status(ctx)
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
			// The clock offset moves only when the member applies an
			// entry, so a quiet cluster shows what the API says.
			if s.ClockOffsetMs == nil {
				return fmt.Errorf("member %s reports no clock offset", n.ID)
			}
			got, err = text(ctx, "tr[data-member='"+n.ID+"'] .clock")
			if err != nil {
				return err
			}
			if want := strconv.FormatInt(*s.ClockOffsetMs, 10) + " ms"; got != want {
				return fmt.Errorf("member %s clock offset: page %q, API %q", n.ID, got, want)
			}
		}
		return checkLoadAges(ctx, api.NewClient(f.Cfg.HTTPAddr).WithToken(c.Token))
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

	t2 := time.Now()
	checkPolicyChange(t, ctx, cl)
	checkRates(t, ctx, cl)
	checkIntent(t, ctx, cl, prov)
	screenshot(t, ctx, "dashboard-policy-intent.png")
	t.Logf("dashboard: policy change, rates and intent checked in %v", time.Since(t2).Round(time.Millisecond))

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

// checkLoadAges compares the load age column of the server table's first
// page with the page of the API it shows (read through cl, a client of
// the agent the page reads from): a load age where the API has a report,
// "–" where it has none. The age itself grows between reports (every
// 200 ms for a0), so only its form and its order of magnitude are checked.
func checkLoadAges(ctx context.Context, cl *api.Client) error {
	p, err := cl.FilteredServersPage(ctx, api.ServerListOptions{}, api.PageOptions{Limit: 50})
	if err != nil {
		return err
	}
	ages, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](
		`Object.fromEntries([...document.querySelectorAll("#servers tbody tr")].map((r) => [r.dataset.server, r.querySelector(".age").textContent]))`))
	if err != nil {
		return err
	}
	if len(ages) != len(p.Items) {
		return fmt.Errorf("%d servers in the table, %d on the API's first page", len(ages), len(p.Items))
	}
	reported := 0
	for _, s := range p.Items {
		got, ok := ages[s.ID]
		switch {
		case !ok:
			return fmt.Errorf("server %s (on the API's first page) is not in the table", s.ID)
		case s.LoadAgeMs == nil && got != "–":
			return fmt.Errorf("server %s has reported no load, the page shows load age %q", s.ID, got)
		case s.LoadAgeMs != nil:
			age, err := pageAge(got)
			if err != nil {
				return fmt.Errorf("server %s: %v", s.ID, err)
			}
			if age > time.Minute {
				return fmt.Errorf("server %s: load age %q on the page (the API says %d ms)", s.ID, got, *s.LoadAgeMs)
			}
			reported++
		}
	}
	if reported == 0 {
		return fmt.Errorf("no server on the API's first page has a load yet")
	}
	return nil
}

// checkPolicyChange replaces the default policy through the API and checks
// that the page, still the same document (no reload), shows the new
// strategy, version and the time and index it was applied at, and the
// policy itself. The policy provisions servers of provCapacity units,
// which checkRates and checkIntent rely on.
func checkPolicyChange(t *testing.T, ctx context.Context, cl *api.Client) {
	t.Helper()
	// A mark in the page's window, lost if the page were loaded again.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.uiTestMark = "before-policy", true`)); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.SetPolicy(ctx, api.Policy{Strategy: "bin-pack",
		Provisioning: api.Provisioning{ServerCapacity: provCapacity, TimeoutMs: 60_000}}); err != nil {
		t.Fatal(err)
	}
	p, err := cl.Policy(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if p.Version == 0 || p.AppliedAtIndex == 0 || p.AppliedAtUnixMs == 0 || p.Strategy != "bin-pack" {
		t.Fatalf("policy after the change: %+v", p)
	}
	want := map[string]string{
		"#policy-strategy": "bin-pack",
		"#policy-version":  strconv.FormatUint(p.Version, 10),
		"#policy-when":     "since " + pageTime(p.AppliedAtUnixMs) + " (index " + strconv.FormatUint(p.AppliedAtIndex, 10) + ")",
	}
	testcluster.Eventually(t, 30*time.Second, func() error {
		for sel, w := range want {
			if got, err := text(ctx, sel); err != nil || got != w {
				return fmt.Errorf("%s: page shows %q (%v), API says %q", sel, got, err, w)
			}
		}
		// The policy in full, as JSON.
		pre, err := text(ctx, "#policy")
		if err != nil {
			return err
		}
		var shown api.Policy
		if err := json.Unmarshal([]byte(pre), &shown); err != nil {
			return fmt.Errorf("policy on the page: %v: %q", err, pre)
		}
		if shown.Version != p.Version || shown.AppliedAtIndex != p.AppliedAtIndex || shown.Provisioning != p.Provisioning {
			return fmt.Errorf("policy on the page %+v, API %+v", shown, p)
		}
		return nil
	})
	mark, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.uiTestMark || ""`))
	if err != nil || mark != "before-policy" {
		t.Fatalf("the page was loaded again to show the policy (mark %q, %v)", mark, err)
	}
	t.Logf("policy: version %d (index %d) shown live", p.Version, p.AppliedAtIndex)
}

// checkRates checks the allocations/s and refused/s tile, each against
// its own kind of answer: while allocations are granted (and none
// refused) the first shows a rate above zero and the second 0.0; while
// allocations are refused (and none granted) the other way round; once
// nothing is asked, both 0.0.
func checkRates(t *testing.T, ctx context.Context, cl *api.Client) {
	t.Helper()
	// flow asks for one allocation of units every 100 ms until the
	// returned stop is called, which fails the test if an answer was not
	// a grant (refused false) or a refusal for capacity (refused true).
	flow := func(name string, units int64, refused bool) (stop func()) {
		fctx, cancel := context.WithCancel(ctx)
		t.Cleanup(cancel) // if the test fails before stop
		done := make(chan error, 1)
		go func() {
			for i := 0; ; i++ {
				_, err := cl.Allocate(fctx, api.AllocateRequest{RequestID: fmt.Sprintf("%s-%d", name, i), Room: name + "-room", Units: units})
				switch {
				case fctx.Err() != nil:
					done <- nil
					return
				case !refused && err != nil:
					done <- fmt.Errorf("allocation %s-%d: %v", name, i, err)
					return
				case refused && !errors.Is(err, errcode.ErrCapacity):
					done <- fmt.Errorf("allocation %s-%d of %d units: %v, want a refusal for capacity", name, i, units, err)
					return
				}
				select {
				case <-fctx.Done():
					done <- nil
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}()
		return func() {
			t.Helper()
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
	}
	// rates reads both tiles; a rate of "–" (not measured yet) fails.
	rates := func() (alloc, refuse float64, err error) {
		a, err := text(ctx, "#alloc-rate")
		if err != nil {
			return 0, 0, err
		}
		r, err := text(ctx, "#refuse-rate")
		if err != nil {
			return 0, 0, err
		}
		alloc, err = strconv.ParseFloat(a, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("allocations/s %q: %v", a, err)
		}
		refuse, err = strconv.ParseFloat(r, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("refused/s %q: %v", r, err)
		}
		return alloc, refuse, nil
	}
	want := func(what string, ok func(alloc, refuse float64) bool) func() error {
		return func() error {
			a, r, err := rates()
			if err != nil {
				return err
			}
			if !ok(a, r) {
				return fmt.Errorf("allocations/s %v and refused/s %v on the page, want %s", a, r, what)
			}
			return nil
		}
	}
	stop := flow("granted", 1, false)
	testcluster.Eventually(t, 30*time.Second, want("granted > 0, refused 0", func(a, r float64) bool { return a > 0 && r == 0 }))
	stop()
	// More units than any server has or a provisioned one would have:
	// refused at once (not held for provisioning).
	stop = flow("refused", provCapacity+1, true)
	testcluster.Eventually(t, 30*time.Second, want("granted 0, refused > 0", func(a, r float64) bool { return a == 0 && r > 0 }))
	stop()
	testcluster.Eventually(t, 30*time.Second, want("both 0", func(a, r float64) bool { return a == 0 && r == 0 }))
}

// checkIntent asks for more units than any server has but fewer than a
// provisioned server holds: the leader commits a provisioning intent and
// calls the provider, which holds the call. The page lists the intent as
// the API does, started (one open); when the provider fails, failed with
// its error; and the request is refused.
func checkIntent(t *testing.T, ctx context.Context, cl *api.Client, prov *heldProvider) {
	t.Helper()
	const units = provCapacity/2 + 1
	answer := make(chan error, 1)
	go func() {
		_, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: "needs-a-new-server", Room: "big-room", Units: units})
		answer <- err
	}()
	var spec provision.Spec
	select {
	case spec = <-prov.calls:
	case <-time.After(60 * time.Second):
		t.Fatal("no provisioning intent was run")
	}
	if spec.Units != units || spec.Capacity != provCapacity {
		t.Fatalf("provider called with %+v, want %d units on a server of %d", spec, units, provCapacity)
	}
	// listed checks the intent table and tiles against the API's intents,
	// which must be the one of spec, in state.
	listed := func(state string, tiles map[string]string) func() error {
		return func() error {
			its, err := cl.Intents(ctx, false)
			if err != nil {
				return err
			}
			if len(its) != 1 || its[0].ID != spec.IntentID || its[0].State != state {
				return fmt.Errorf("intents in the API: %+v, want %s %s", its, spec.IntentID, state)
			}
			it := its[0]
			if state == "failed" && it.Error == "" {
				return fmt.Errorf("intent %s failed without an error", it.ID)
			}
			want := []string{it.ID, it.ID, it.Kind, it.State, it.ServerID, strconv.FormatInt(it.Units, 10), pageTime(it.UpdatedAtUnixMs), it.Error}
			rows, err := chromedp.Run(ctx, chromedp.Evaluate[[][]string](
				`[...document.querySelectorAll("#intents tbody tr")].map((r) => [r.dataset.intent, ...[...r.cells].map((c) => c.textContent)])`))
			if err != nil {
				return err
			}
			if len(rows) != 1 || strings.Join(rows[0], "|") != strings.Join(want, "|") {
				return fmt.Errorf("intent table %q, want [%q]", rows, want)
			}
			for sel, w := range tiles {
				if got, err := text(ctx, sel); err != nil || got != w {
					return fmt.Errorf("%s: %q (%v), want %q", sel, got, err, w)
				}
			}
			return nil
		}
	}
	testcluster.Eventually(t, 30*time.Second, listed("started", map[string]string{
		"#intents-open": "1 open", "#intents-count": "1", "#intents-failed": "0",
	}))
	prov.answer <- errors.New("ui test provider: no machine available")
	testcluster.Eventually(t, 30*time.Second, listed("failed", map[string]string{
		"#intents-open": "0 open", "#intents-count": "1", "#intents-failed": "1",
	}))
	select {
	case err := <-answer:
		if !errors.Is(err, errcode.ErrCapacity) || !strings.Contains(err.Error(), spec.IntentID) {
			t.Fatalf("the request waiting for %s: %v, want a refusal for capacity naming it", spec.IntentID, err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the request waiting for the failed intent was not answered")
	}
	t.Logf("intent %s (server %s) shown started, then failed", spec.IntentID, spec.ServerID)
}
