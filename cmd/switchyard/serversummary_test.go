package main

import (
	"strings"
	"testing"

	"github.com/switchyard/switchyard/api"
)

func TestServerSummary(t *testing.T) {
	ss := []api.Server{
		{ID: "a", Region: "eu", State: "active", Capacity: 10, Used: 5},
		{ID: "b", Region: "eu", State: "draining", Capacity: 10, Used: 1},
		{ID: "c", Region: "us", State: "down", Capacity: 20},
		{ID: "d", State: "active", Capacity: 10, Used: 10},
	}
	sum := summarizeServers(ss)
	if sum.Servers != 4 || sum.Capacity != 50 || sum.Used != 16 || sum.ByState["active"] != 2 || len(sum.ByRegion) != 3 {
		t.Fatalf("summary %+v", sum)
	}
	if r := sum.ByRegion[1]; r.Region != "eu" || r.Servers != 2 || r.ByState["draining"] != 1 || r.Used != 6 {
		t.Fatalf("eu %+v", r)
	}
	var b strings.Builder
	if err := sum.print(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"4 servers: 2 active, 1 draining, 1 down; 16 of 50 units used (32%)", "REGION", "eu ", "us ", "- "} {
		if !strings.Contains(out, want) {
			t.Fatalf("missing %q in\n%s", want, out)
		}
	}
}
