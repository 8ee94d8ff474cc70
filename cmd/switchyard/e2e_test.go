package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/proccluster"
)

// run executes the binary and returns stdout, stderr and the exit code.
func run(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func TestCLIAgainstProcessCluster(t *testing.T) {
	bin := proccluster.BuildBinary(t)
	c := proccluster.New(t, bin, 3)
	addr := "--addr=" + strings.Join(c.Addrs(), ",")

	out, errOut, code := run(t, bin, "cluster", "status", "--json", addr)
	if code != 0 {
		t.Fatalf("status: %d %s", code, errOut)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if st["leader"] == "" || len(st["members"].([]any)) != 3 {
		t.Fatalf("status json: %s", out)
	}

	if _, e, code := run(t, bin, "server", "register", "--id", "m1", "--capacity", "4", addr); code != 0 {
		t.Fatal(e)
	}
	out, e, code := run(t, bin, "alloc", "request", "--room", "r", "--units", "3", "--request-id", "q1", "--json", addr)
	if code != 0 {
		t.Fatal(e)
	}
	var a map[string]any
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "request_id", "room", "server", "units"} {
		if _, ok := a[k]; !ok {
			t.Fatalf("allocation json lacks %q: %s", k, out)
		}
	}
	// Same request id again: same allocation.
	out2, _, _ := run(t, bin, "alloc", "request", "--room", "r", "--units", "3", "--request-id", "q1", "--json", addr)
	var a2 map[string]any
	_ = json.Unmarshal([]byte(out2), &a2)
	if a2["id"] != a["id"] || a2["duplicate"] != true {
		t.Fatalf("retry gave %s, first %s", out2, out)
	}
	// Refused: exit 1 with the reason.
	_, e, code = run(t, bin, "alloc", "request", "--room", "r", "--units", "3", "--request-id", "q2", addr)
	if code != 1 || !strings.Contains(e, "no server has 3 free units") {
		t.Fatalf("refusal: code %d, %q", code, e)
	}
	// Bad usage: exit 2 with a one-line reason naming the problem.
	for _, args := range [][]string{
		{"alloc", "request", "--room", "r", "--units", "0", "--request-id", "z", addr},
		{"alloc", "request", "--bogus"},
		{"server", "register", "--id", "m2", "--capacity", "-1", addr},
		{"cluster", "status", "--addr", "nonsense"},
	} {
		_, e, code := run(t, bin, args...)
		if code != 2 || !strings.HasPrefix(e, "switchyard: ") {
			t.Fatalf("%v: code %d %q", args, code, e)
		}
	}
	// An unknown server is a refusal (exit 1) that names it.
	if _, e, code := run(t, bin, "server", "drain", "ghost", addr); code != 1 || !strings.Contains(e, "ghost") {
		t.Fatalf("drain ghost: %d %q", code, e)
	}

	// SIGKILL the leader: the CLI keeps working through the survivors and the
	// acknowledged allocation is still there.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leader, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(leader)
	out, e, code = run(t, bin, "alloc", "list", "--json", addr, "--timeout", "20s")
	if code != 0 || !strings.Contains(out, fmt.Sprint(a["id"])) {
		t.Fatalf("after SIGKILL: %d %s %s", code, out, e)
	}
	if _, e, code := run(t, bin, "alloc", "release", "q1", addr); code != 0 {
		t.Fatal(e)
	}
	// SIGTERM the new leader: it hands over before exiting.
	leader2, err := c.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Start(leader)
	if _, err := c.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	c.Stop(leader2)
	l3, err := c.WaitLeader(ctx)
	if err != nil || l3.ID == leader2.ID {
		t.Fatalf("after SIGTERM of %s: %v %v", leader2.ID, l3, err)
	}
	if _, e, code := run(t, bin, "alloc", "request", "--room", "r", "--units", "3", "--request-id", "q3", addr); code != 0 {
		t.Fatal(e)
	}
}
