package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/pki"
	"github.com/switchyard/switchyard/transport"
)

// need returns the path of program name; without it the test is skipped,
// or fails under CI=true (.ci/setup-deploy.sh installs it from pkg).
func need(t *testing.T, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	msg := fmt.Sprintf("%s is missing (Debian package %s; .ci/setup-deploy.sh installs it as root)", name, pkg)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// alertRules reads deploy/prometheus/alerts.yml.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) alertRules {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var r alertRules
	if err := yaml.Unmarshal(b, &r); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	return r
}

// dashboardExprs returns every PromQL expression of the Grafana dashboard
// (targets and templating queries), keyed by where it was found.
func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("grafana", "switchyard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("switchyard.json: %v", err)
	}
	if d["uid"] != "switchyard" || d["title"] != "Switchyard" {
		t.Fatalf("dashboard uid/title: %v %v", d["uid"], d["title"])
	}
	out := map[string]string{}
	panels, _ := d["panels"].([]any)
	if len(panels) == 0 {
		t.Fatal("dashboard has no panels")
	}
	for _, p := range panels {
		pm := p.(map[string]any)
		if pm["type"] == "row" {
			continue
		}
		gp := pm["gridPos"].(map[string]any)
		if x, w := gp["x"].(float64), gp["w"].(float64); x < 0 || x+w > 24 {
			t.Errorf("panel %q is outside the 24-column grid: %v", pm["title"], gp)
		}
		ts, _ := pm["targets"].([]any)
		if len(ts) == 0 {
			t.Errorf("panel %q has no query", pm["title"])
		}
		for i, tg := range ts {
			e, _ := tg.(map[string]any)["expr"].(string)
			if e == "" {
				t.Errorf("panel %q target %d has no expr", pm["title"], i)
			}
			out[fmt.Sprintf("panel %q target %d", pm["title"], i)] = e
		}
	}
	return out
}

var (
	metricName = regexp.MustCompile(`switchyard_[a-z0-9_]+`)
	// selector is a metric name with a label matcher list.
	selector = regexp.MustCompile(`(switchyard_[a-z0-9_]+)\{([^}]*)\}`)
	// eqMatcher is one label="value" matcher.
	eqMatcher = regexp.MustCompile(`([a-z_]+)="([^"]*)"`)
)

// scrape returns sample name -> label pairs seen on addr's /metrics,
// read as c's operator (Prometheus scrapes with a reader token).
func scrape(t *testing.T, c *testcluster.Cluster, addr string, into map[string]map[string]bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(c.Authorize(req))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /metrics of %s: HTTP %d", addr, resp.StatusCode)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, labels := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
			if line[i] == '{' {
				labels = line[i+1 : strings.LastIndex(line, "}")]
			}
		}
		if into[name] == nil {
			into[name] = map[string]bool{}
		}
		for _, m := range eqMatcher.FindAllStringSubmatch(labels, -1) {
			into[name][m[1]+"="+m[2]] = true
		}
	}
	return nil
}

// TestDashboardAndAlertMetricsAreExported runs a cluster with a media
// server reporting load over QUIC (through a follower, so reports are
// forwarded), allocations granted and refused, and a refused handshake,
// then scrapes every agent's /metrics: every metric the dashboard and the
// alert rules name must be there, and every label="value" they select on
// must have been seen.
func TestDashboardAndAlertMetricsAreExported(t *testing.T) {
	rules := readRules(t)
	exprs := dashboardExprs(t)
	nRules := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Annotations["summary"] == "" || r.Labels["severity"] == "" {
				t.Errorf("rule %+v needs alert, expr, severity label and summary", r)
			}
			exprs["alert "+r.Alert] = r.Expr
			nRules++
		}
	}
	// The issue's list: each must have a rule.
	for _, want := range []string{"SwitchyardNoLeader", "SwitchyardFrequentLeaderChanges", "SwitchyardCommitLatencyHigh",
		"SwitchyardFollowerBehind", "SwitchyardClockSkew", "SwitchyardDatagramsDropped", "SwitchyardServersMarkedDown", "SwitchyardProvisioningFailures"} {
		if _, ok := exprs["alert "+want]; !ok {
			t.Errorf("alerts.yml has no rule %s", want)
		}
	}

	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := c.Followers()[0]
	qc, err := transport.NewClient(transport.ClientConfig{Addrs: []string{f.Cfg.QUICAddr}, TLS: c.Identity("m1").ClientConfig(transport.ALPN), Logger: testcluster.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer qc.Close()
	if _, err := qc.Register(ctx, transport.ServerInfo{ID: "m1", Capacity: 4, Incarnation: uint64(time.Now().UnixNano())}); err != nil {
		t.Fatalf("register over QUIC: %v", err)
	}
	cl := c.Client()
	if _, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: "ok", Room: "r", Units: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: "too-big", Room: "r", Units: 100}); err == nil {
		t.Fatal("an allocation beyond capacity was granted")
	}
	// A client whose certificate another CA signed: a refused handshake.
	other, err := pki.NewCA("not the cluster's CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := other.Issue("intruder", nil)
	if err != nil {
		t.Fatal(err)
	}
	bad, err := pki.NewIdentity(c.CA.CertPEM, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	bc, err := transport.NewClient(transport.ClientConfig{Addrs: []string{c.Nodes[0].Cfg.QUICAddr}, TLS: bad.ClientConfig(transport.ALPN), Logger: testcluster.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()

	var missing []string
	testcluster.Eventually(t, 40*time.Second, func() error {
		// A handshake with a certificate of another CA (refused, counted);
		// tried again each round in case a loaded machine timed it out.
		bctx, bcancel := context.WithTimeout(ctx, 3*time.Second)
		_, _ = bc.Register(bctx, transport.ServerInfo{ID: "intruder", Capacity: 1})
		bcancel()
		_ = qc.Report(transport.Load{CPU: 0.1, FreeUnits: 3})
		seen := map[string]map[string]bool{}
		for _, n := range c.Running() {
			if err := scrape(t, c, n.Cfg.HTTPAddr, seen); err != nil {
				return err
			}
		}
		missing = nil
		for where, e := range exprs {
			for _, name := range metricName.FindAllString(e, -1) {
				if seen[name] == nil {
					missing = append(missing, fmt.Sprintf("%s: metric %s", where, name))
				}
			}
			for _, sel := range selector.FindAllStringSubmatch(e, -1) {
				for _, m := range eqMatcher.FindAllStringSubmatch(sel[2], -1) {
					if m[1] == "job" || m[1] == "instance" {
						continue // added by Prometheus
					}
					if !seen[sel[1]][m[1]+"="+m[2]] {
						missing = append(missing, fmt.Sprintf("%s: %s{%s=%q}", where, sel[1], m[1], m[2]))
					}
				}
			}
		}
		if len(missing) > 0 {
			sort.Strings(missing)
			return fmt.Errorf("not (yet) exported:\n  %s", strings.Join(missing, "\n  "))
		}
		return nil
	})
	t.Logf("%d expressions (%d alert rules, %d dashboard queries) name only exported metrics", len(exprs), nRules, len(exprs)-nRules)
}

// TestAlertRulesPromtool checks the rules' syntax and runs their unit
// tests with promtool, and compiles every dashboard query as a recording
// rule (promtool parses PromQL the way Prometheus does).
func TestAlertRulesPromtool(t *testing.T) {
	promtool := need(t, "promtool", "prometheus")
	run := func(dir string, args ...string) {
		t.Helper()
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("promtool %s: %s", strings.Join(args, " "), strings.TrimSpace(string(out)))
	}
	run("prometheus", "check", "rules", "alerts.yml")
	run("prometheus", "test", "rules", "alerts_test.yml")

	type rec struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var recs []rec
	exprs := dashboardExprs(t)
	keys := make([]string, 0, len(exprs))
	for k := range exprs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		recs = append(recs, rec{Record: fmt.Sprintf("dashboard:query_%d", i), Expr: strings.ReplaceAll(exprs[k], "$job", ".+")})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": recs}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard-rules.yml"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	run(dir, "check", "rules", "dashboard-rules.yml")
}
