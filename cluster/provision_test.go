package cluster_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/provision"
)

// script writes an executable shell script into dir and returns its path.
func script(t *testing.T, dir, body string) string {
	t.Helper()
	p := filepath.Join(dir, "provider.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func lines(path string) []string {
	b, _ := os.ReadFile(path)
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// execProvider runs every node's provisioner with the exec provider sh,
// without QUIC: these clusters are driven through the HTTP API alone.
func execProvider(sh string) testcluster.Options {
	return testcluster.Options{NoQUIC: true, Mutate: func(_ int, cfg *agent.Config) {
		cfg.Provisioner = &provision.Exec{Command: sh}
	}}
}

// TestProvisionExactlyOnceAcrossLeaderKill: no server fits three concurrent
// requests that one new server can hold; the leader commits one intent,
// claims it, runs the exec provider (a script that records each call) and
// is killed before the new server registers. The next leader must not run
// the provider again: when the server registers under the intent's id, all
// three requests (retried by their clients) are answered on it, and the
// script ran exactly once.
func TestProvisionExactlyOnceAcrossLeaderKill(t *testing.T) {
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls.log")
	stdin := filepath.Join(dir, "stdin.json")
	sh := script(t, dir, fmt.Sprintf(`echo "$SWITCHYARD_ACTION $SWITCHYARD_SERVER_ID $SWITCHYARD_INTENT_ID $SWITCHYARD_UNITS" >> %s
cat > %s`, calls, stdin))
	c := testcluster.New(t, 3, execProvider(sh))
	cl := c.Client()
	ctx := testcluster.Context(t, 60*time.Second)
	if _, err := cl.SetPolicy(ctx, api.Policy{Strategy: "bin-pack", Provisioning: api.Provisioning{ServerCapacity: 10, TimeoutMs: 30_000}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: "fill", Room: "old", Units: 2}); err != nil {
		t.Fatal(err)
	}

	type answer struct {
		a   api.Allocation
		err error
	}
	answers := make(chan answer, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: fmt.Sprintf("q%d", i), Room: "big", Units: 3})
			answers <- answer{a, err}
		}()
	}
	testcluster.Eventually(t, 15*time.Second, func() error {
		if n := len(lines(calls)); n != 1 {
			return fmt.Errorf("%d provider calls", n)
		}
		return nil
	})
	leader := c.WaitLeader(5 * time.Second)
	var intent api.Intent
	testcluster.Eventually(t, 5*time.Second, func() error {
		its, err := cl.Intents(ctx, false)
		if err != nil {
			return err
		}
		if len(its) != 1 || its[0].State != "started" || len(its[0].RequestIDs) != 3 {
			return fmt.Errorf("intents %+v", its)
		}
		intent = its[0]
		return nil
	})
	if !strings.HasPrefix(intent.Owner, leader.ID+"/") || intent.Kind != "provision" || intent.Units != 9 {
		t.Fatalf("intent %+v (leader %s)", intent, leader.ID)
	}
	c.Kill(leader)
	newLeader := c.WaitLeader(10 * time.Second)
	if newLeader == leader {
		t.Fatal("no new leader")
	}
	// Give the new leader's provisioner several passes to act wrongly.
	waitPasses(t, c, 5)
	// The media node the provider started comes up and registers.
	cl = c.Client()
	if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: intent.ServerID, Capacity: 10}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(answers)
	for ans := range answers {
		if ans.err != nil {
			t.Fatalf("request failed: %v", ans.err)
		}
		if ans.a.Server != intent.ServerID {
			t.Errorf("allocation %+v not on the provisioned server %s", ans.a, intent.ServerID)
		}
	}
	if got := lines(calls); len(got) != 1 || !strings.HasPrefix(got[0], fmt.Sprintf("provision %s %s ", intent.ServerID, intent.ID)) {
		t.Fatalf("provider calls: %q, want exactly one for %s", got, intent.ID)
	}
	b, _ := os.ReadFile(stdin)
	if !strings.Contains(string(b), `"server_id":"`+intent.ServerID+`"`) || !strings.Contains(string(b), `"action":"provision"`) {
		t.Fatalf("stdin JSON: %s", b)
	}
	its, err := cl.Intents(ctx, false)
	if err != nil || len(its) != 1 || its[0].State != "done" {
		t.Fatalf("intents after registration: %+v %v", its, err)
	}
}

// TestProvisionFailures: a provider that fails, hangs or starts nothing
// gets the waiting request a clear ErrCapacity error within the bounded
// provisioning timeout, and the intent is marked failed with the reason.
func TestProvisionFailures(t *testing.T) {
	tests := []struct {
		name, body, msg string
	}{
		{"fails", `echo "quota exceeded for project" >&2; exit 3`, "quota exceeded for project"},
		{"hangs", `sleep 30`, "provisioning intent"},
		{"starts nothing", `exit 0`, "did not register"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sh := script(t, t.TempDir(), tc.body)
			c := testcluster.New(t, 1, execProvider(sh))
			cl := c.Client()
			ctx := testcluster.Context(t, 30*time.Second)
			if _, err := cl.SetPolicy(ctx, api.Policy{Strategy: "least-loaded", Provisioning: api.Provisioning{ServerCapacity: 10, TimeoutMs: 1500}}); err != nil {
				t.Fatal(err)
			}
			// The refusal names the intent's failure: the request was
			// answered when the intent failed, not when a deadline passed.
			_, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: "q", Room: "r", Units: 1})
			if !errors.Is(err, fsm.ErrCapacity) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want ErrCapacity mentioning %q", err, tc.msg)
			}
			testcluster.Eventually(t, 5*time.Second, func() error {
				its, err := cl.Intents(ctx, false)
				if err != nil || len(its) != 1 || its[0].State != "failed" || its[0].Error == "" {
					return fmt.Errorf("intents %+v %v", its, err)
				}
				return nil
			})
			// A request larger than a new server could hold is refused at
			// once, without an intent.
			_, err = cl.Allocate(ctx, api.AllocateRequest{RequestID: "huge", Room: "r", Units: 11})
			if !errors.Is(err, fsm.ErrCapacity) {
				t.Fatalf("huge request: %v", err)
			}
		})
	}
}

// TestRetireIdleProvisionedServers: two servers are provisioned for two
// requests; once both are released and idle past idle_retire, the leader
// drains and deprovisions one of them (min_pool keeps the other), then
// deregisters it.
func TestRetireIdleProvisionedServers(t *testing.T) {
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls.log")
	sh := script(t, dir, fmt.Sprintf(`echo "$SWITCHYARD_ACTION $SWITCHYARD_SERVER_ID" >> %s`, calls))
	c := testcluster.New(t, 3, execProvider(sh))
	cl := c.Client()
	ctx := testcluster.Context(t, 60*time.Second)
	if _, err := cl.SetPolicy(ctx, api.Policy{Strategy: "bin-pack", Provisioning: api.Provisioning{
		ServerCapacity: 10, TimeoutMs: 20_000, MinPool: 1, IdleRetireMs: 300}}); err != nil {
		t.Fatal(err)
	}
	var servers []string
	for i := range 2 {
		done := make(chan error, 1)
		go func() {
			_, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: fmt.Sprintf("q%d", i), Room: "r", Units: 10})
			done <- err
		}()
		var id string
		testcluster.Eventually(t, 10*time.Second, func() error {
			ls := lines(calls)
			if len(ls) != i+1 {
				return fmt.Errorf("calls %q", ls)
			}
			id = strings.TrimPrefix(ls[i], "provision ")
			return nil
		})
		if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: id, Capacity: 10}); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		servers = append(servers, id)
	}
	for i := range 2 {
		if _, err := cl.Release(ctx, fmt.Sprintf("q%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	var kept, retired string
	testcluster.Eventually(t, 15*time.Second, func() error {
		ss, err := cl.Servers(ctx, false)
		if err != nil {
			return err
		}
		if len(ss) != 1 || ss[0].State != "active" {
			return fmt.Errorf("servers %+v", ss)
		}
		kept = ss[0].ID
		return nil
	})
	retired = servers[0]
	if kept == servers[0] {
		retired = servers[1]
	}
	want := []string{"provision " + servers[0], "provision " + servers[1], "deprovision " + retired}
	if got := lines(calls); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("provider calls %q, want %q", got, want)
	}
	testcluster.Eventually(t, 5*time.Second, func() error {
		its, err := cl.Intents(ctx, false)
		if err != nil || len(its) != 3 {
			return fmt.Errorf("intents %+v %v", its, err)
		}
		for _, it := range its {
			if it.Kind == "deprovision" && (it.State != "done" || it.ServerID != retired) {
				return fmt.Errorf("deprovision intent %+v", it)
			}
		}
		return nil
	})
	// min_pool holds: the last one stays however many passes it idles.
	waitPasses(t, c, 8)
	if got := lines(calls); len(got) != 3 {
		t.Fatalf("provider calls after the pool minimum: %q", got)
	}
}

// provisionerPasses sums switchyard_provisioner_passes_total over the
// running nodes (only a leader's provisioner runs).
func provisionerPasses(t *testing.T, c *testcluster.Cluster) float64 {
	t.Helper()
	var sum float64
	for _, nd := range c.Running() {
		reg := prometheus.NewRegistry()
		reg.MustRegister(nd.Agent.Node.Collectors()...)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, mf := range mfs {
			if mf.GetName() == "switchyard_provisioner_passes_total" {
				sum += mf.GetMetric()[0].GetCounter().GetValue()
				found = true
			}
		}
		if !found {
			t.Fatalf("%s does not export switchyard_provisioner_passes_total", nd.ID)
		}
	}
	return sum
}

// waitPasses waits until the cluster's provisioners have run n more
// passes (on whichever node leads), so an assertion that something did
// not happen has given the provisioner n chances to.
func waitPasses(t *testing.T, c *testcluster.Cluster, n float64) {
	t.Helper()
	start := provisionerPasses(t, c)
	testcluster.Eventually(t, 30*time.Second, func() error {
		if got := provisionerPasses(t, c); got < start+n {
			return fmt.Errorf("provisioner passes %v, want %v", got-start, n)
		}
		return nil
	})
}
