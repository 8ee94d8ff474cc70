package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/internal/proccluster"
)

// TestPolicyCLI drives `switchyard policy` against a 3-process cluster:
// get/set/validate with their JSON contract and exit codes, a refused
// expression keeping the old policy, and simulate offline.
func TestPolicyCLI(t *testing.T) {
	bin := proccluster.BuildBinary(t)
	c := proccluster.New(t, bin, 3)
	addr := "--addr=" + strings.Join(c.Addrs(), ",")

	out, e, code := run(t, bin, "policy", "get", "--json", addr)
	if code != 0 {
		t.Fatalf("get: %d %s", code, e)
	}
	var p map[string]any
	if err := json.Unmarshal([]byte(out), &p); err != nil || p["strategy"] != "least-loaded" {
		t.Fatalf("default policy: %s %v", out, err)
	}
	out, e, code = run(t, bin, "policy", "set", "--strategy", "bin-pack", "--hard-units", "0.9", "--soft-cpu", "0.7",
		"--expr", "server.free - 10 * server.cpu", "--distance", "eu:us=80", "--idle-retire", "5m", "--min-pool", "2", "--json", addr)
	if code != 0 {
		t.Fatalf("set: %d %s", code, e)
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatal(err)
	}
	hard := p["hard"].(map[string]any)
	prov := p["provisioning"].(map[string]any)
	if p["strategy"] != "bin-pack" || hard["units"] != 0.9 || p["expr"] == "" || p["version"].(float64) != 1 ||
		p["applied_at_index"].(float64) == 0 || prov["idle_retire_ms"].(float64) != 300000 || prov["min_pool"].(float64) != 2 {
		t.Fatalf("set answered %s", out)
	}
	// Only the flags given change.
	if _, e, code = run(t, bin, "policy", "set", "--soft-units", "0.8", addr); code != 0 {
		t.Fatal(e)
	}
	out, _, _ = run(t, bin, "policy", "get", "--json", addr)
	_ = json.Unmarshal([]byte(out), &p)
	if p["strategy"] != "bin-pack" || p["hard"].(map[string]any)["units"] != 0.9 || p["soft"].(map[string]any)["units"] != 0.8 || p["version"].(float64) != 2 {
		t.Fatalf("partial set: %s", out)
	}
	// Refused: exit 1, the parser's message, old policy kept.
	for _, bad := range [][]string{
		{"--expr", "server.free +"},
		{"--expr", `server.region == "eu"`},
		{"--strategy", "random"},
		{"--hard-units", "-1"},
	} {
		_, e, code = run(t, bin, append([]string{"policy", "set", addr}, bad...)...)
		if code != 1 || !strings.Contains(e, "policy refused, the committed one stays") {
			t.Errorf("set %v: code %d %q", bad, code, e)
		}
		_, e, code = run(t, bin, append([]string{"policy", "validate", addr}, bad...)...)
		if code != 1 || !strings.Contains(e, "policy is invalid") {
			t.Errorf("validate %v: code %d %q", bad, code, e)
		}
	}
	out, _, _ = run(t, bin, "policy", "get", "--json", addr)
	_ = json.Unmarshal([]byte(out), &p)
	if p["version"].(float64) != 2 {
		t.Fatalf("a refused policy changed it: %s", out)
	}
	if out, e, code = run(t, bin, "policy", "validate", "--strategy", "two-choice", addr); code != 0 || !strings.Contains(out, "policy is valid") {
		t.Fatalf("validate: %d %s %s", code, out, e)
	}
	if out, _, code = run(t, bin, "policy", "get", addr); code != 0 || !strings.Contains(out, "bin-pack") || !strings.Contains(out, "units 90%") {
		t.Fatalf("get text: %s", out)
	}
	if _, e, code = run(t, bin, "policy", "intents", "--json", addr); code != 0 {
		t.Fatal(e)
	}

	// simulate is offline.
	trace := filepath.Join("..", "..", "testdata", "traces", "webinar-burst.jsonl")
	out, e, code = run(t, bin, "policy", "simulate", "--trace", trace, "--strategy", "bin-pack,least-loaded", "--json")
	if code != 0 {
		t.Fatalf("simulate: %s", e)
	}
	var rs []map[string]any
	if err := json.Unmarshal([]byte(out), &rs); err != nil || len(rs) != 2 || rs[0]["policy"] != "bin-pack" || rs[0]["ratio"].(float64) > rs[1]["ratio"].(float64) {
		t.Fatalf("simulate json: %s %v", out, err)
	}
	if out, _, code = run(t, bin, "policy", "simulate", "--trace", trace); code != 0 || !strings.Contains(out, "RATIO") || strings.Count(out, "\n") != 7 {
		t.Fatalf("simulate table:\n%s", out)
	}
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	_ = os.WriteFile(bad, []byte(`{"t_ms":0,"op":"teleport"}`), 0o644)
	if _, e, code = run(t, bin, "policy", "simulate", "--trace", bad); code != 1 || !strings.Contains(e, "line 1: unknown op") {
		t.Fatalf("bad trace: %d %q", code, e)
	}
	if _, _, code = run(t, bin, "policy", "simulate"); code != 2 {
		t.Fatalf("simulate without --trace: exit %d, want 2", code)
	}
}
