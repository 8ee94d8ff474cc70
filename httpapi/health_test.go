package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// get sends an anonymous GET (the open routes: health probes, UI assets).
func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	return getAs(t, "", url)
}

// getAs sends a GET with token as its bearer token ("" sends none).
func getAs(t *testing.T, token, url string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func readiness(t *testing.T, addr string) (int, api.Readiness) {
	t.Helper()
	code, b := get(t, "http://"+addr+"/v1/health/ready")
	var rd api.Readiness
	if err := json.Unmarshal(b, &rd); err != nil {
		t.Fatalf("ready body %q: %v", b, err)
	}
	return code, rd
}

// TestHealthProbes: every node of a healthy cluster is live and ready; a
// node that lost its quorum stays live but is not ready, and says why; a
// node shutting down is not ready.
func TestHealthProbes(t *testing.T) {
	c := testcluster.New(t, 3)
	for _, n := range c.Nodes {
		code, b := get(t, "http://"+n.Cfg.HTTPAddr+"/v1/health/live")
		var lv api.Live
		if code != 200 || json.Unmarshal(b, &lv) != nil || lv.Status != "live" || lv.Node != n.ID {
			t.Fatalf("live on %s: %d %s", n.ID, code, b)
		}
		testcluster.Eventually(t, 30*time.Second, func() error {
			code, rd := readiness(t, n.Cfg.HTTPAddr)
			if code != 200 || !rd.Ready || !rd.Member || rd.Leader == "" || len(rd.Reasons) != 0 {
				return fmt.Errorf("ready on %s: %d %+v", n.ID, code, rd)
			}
			return nil
		})
	}
	if code, b := get(t, "http://"+c.Nodes[0].Cfg.HTTPAddr+"/v1/health/ready?max_lag=x"); code != 400 || !strings.Contains(string(b), "invalid_argument") {
		t.Fatalf("bad max_lag: %d %s", code, b)
	}

	// Stop two nodes: the survivor loses its leader, stays live, is not ready.
	survivor := c.Nodes[0]
	c.Stop(c.Nodes[1])
	c.Stop(c.Nodes[2])
	testcluster.Eventually(t, 60*time.Second, func() error {
		code, rd := readiness(t, survivor.Cfg.HTTPAddr)
		if code != http.StatusServiceUnavailable || rd.Ready || !strings.Contains(strings.Join(rd.Reasons, ";"), "no known leader") {
			return fmt.Errorf("ready without quorum: %d %+v", code, rd)
		}
		return nil
	})
	if code, _ := get(t, "http://"+survivor.Cfg.HTTPAddr+"/v1/health/live"); code != 200 {
		t.Fatalf("live without quorum: %d", code)
	}

	// Shutting down: readiness fails at once, liveness does not.
	survivor.Agent.API.SetShuttingDown()
	code, rd := readiness(t, survivor.Cfg.HTTPAddr)
	if code != http.StatusServiceUnavailable || !rd.ShuttingDown || !strings.Contains(strings.Join(rd.Reasons, ";"), "shutting down") {
		t.Fatalf("ready while shutting down: %d %+v", code, rd)
	}
	if code, _ := get(t, "http://"+survivor.Cfg.HTTPAddr+"/v1/health/live"); code != 200 {
		t.Fatalf("live while shutting down: %d", code)
	}
}

// TestOverviewStatsAndStateMetrics: /v1/overview shows every member with
// its counters, a stopped member as unreachable; /metrics carries the
// state gauges; / and /ui lead to the dashboard.
func TestOverviewStatsAndStateMetrics(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := c.Client()
	if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 10, Region: "eu"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: fmt.Sprintf("r%d", i), Room: "room", Units: 2}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: "big", Room: "room", Units: 100}); err == nil {
		t.Fatal("an allocation beyond capacity was granted")
	}
	f := c.Followers()[0]
	testcluster.Eventually(t, 30*time.Second, func() error {
		code, b := getAs(t, c.Token, "http://"+f.Cfg.HTTPAddr+"/v1/overview")
		var ov api.Overview
		if code != 200 || json.Unmarshal(b, &ov) != nil {
			return fmt.Errorf("overview: %d %s", code, b)
		}
		if ov.Node != f.ID || ov.Leader == "" || len(ov.Members) != 3 {
			return fmt.Errorf("overview %+v", ov)
		}
		var granted, refused float64
		for _, m := range ov.Members {
			if !m.Reachable || m.Stats == nil || m.Stats.Status.ID != m.ID {
				return fmt.Errorf("member %+v", m)
			}
			granted += m.Stats.Allocations["granted"]
			refused += m.Stats.Allocations["refused"]
		}
		if granted != 3 || refused != 1 {
			return fmt.Errorf("granted %v refused %v", granted, refused)
		}
		return nil
	})

	code, b := getAs(t, c.Token, "http://"+f.Cfg.HTTPAddr+"/metrics")
	for _, want := range []string{`switchyard_servers{state="active"} 1`, `switchyard_server_capacity_units{state="active"} 10`,
		`switchyard_server_used_units{state="active"} 6`, `switchyard_allocations_active 3`, `switchyard_servers{state="down"} 0`,
		`switchyard_provisioning_intents{kind="provision",state="failed"} 0`, `switchyard_policy_version `} {
		if code != 200 || !strings.Contains(string(b), want) {
			// The follower may not have applied the last entry yet.
			testcluster.Eventually(t, 20*time.Second, func() error {
				code, b = getAs(t, c.Token, "http://"+f.Cfg.HTTPAddr+"/metrics")
				if !strings.Contains(string(b), want) {
					return fmt.Errorf("/metrics lacks %q", want)
				}
				return nil
			})
		}
	}

	// The dashboard: / redirects, /ui/ is the page, its script is served.
	code, b = get(t, "http://"+f.Cfg.HTTPAddr+"/")
	if code != 200 || !strings.Contains(string(b), "<title>Switchyard</title>") {
		t.Fatalf("GET / (following the redirect): %d %.200s", code, b)
	}
	if code, b = get(t, "http://"+f.Cfg.HTTPAddr+"/ui/app.js"); code != 200 || !strings.Contains(string(b), "/v1/overview") {
		t.Fatalf("GET /ui/app.js: %d", code)
	}

	// A stopped member is reported unreachable, quickly.
	gone := c.Followers()[1]
	c.Stop(gone)
	testcluster.Eventually(t, 30*time.Second, func() error {
		t0 := time.Now()
		code, b := getAs(t, c.Token, "http://"+f.Cfg.HTTPAddr+"/v1/overview")
		var ov api.Overview
		if code != 200 || json.Unmarshal(b, &ov) != nil {
			return fmt.Errorf("overview: %d %s", code, b)
		}
		for _, m := range ov.Members {
			if m.ID == gone.ID && !m.Reachable && m.Error != "" {
				t.Logf("overview with %s down answered in %v", gone.ID, time.Since(t0))
				return nil
			}
		}
		return fmt.Errorf("stopped member not reported unreachable: %s", b)
	})
}
