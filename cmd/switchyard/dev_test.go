package main_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/proccluster"
)

// TestDevClusterStartsAndStopsOnCtrlC runs what `make run` runs: the dev
// cluster answers the CLI, and SIGINT stops it cleanly (exit 0).
func TestDevClusterStartsAndStopsOnCtrlC(t *testing.T) {
	bin := proccluster.BuildBinary(t)
	base := 10000 + rand.IntN(20000) // below the ephemeral port range (32768+)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	proc := startStreamed(t, ctx, bin, "dev",
		"--raft-port", fmt.Sprint(base), "--http-port", fmt.Sprint(base+10), "--quic-port", fmt.Sprint(base+20))
	cmd, lines, stderr := proc.cmd, proc.lines, proc.stderr
	var seen []string
	for leader := false; !leader; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("dev exited early: %v\n%s\n%s", cmd.Wait(), strings.Join(seen, "\n"), stderr.String())
			}
			seen = append(seen, l)
			leader = strings.HasPrefix(l, "leader: ")
		case <-ctx.Done():
			t.Fatalf("no leader line: %v\n%s", strings.Join(seen, "\n"), stderr.String())
		}
	}
	addr := fmt.Sprintf("--addr=127.0.0.1:%d", base+10)
	if _, e, code := run(t, bin, "server", "register", "--id", "devtest", "--capacity", "2", addr); code != 0 {
		t.Fatal(e)
	}
	if o, e, code := run(t, bin, "alloc", "request", "--room", "demo", "--units", "1", "--request-id", "r1", "--server", "devtest", addr); code != 0 || !strings.Contains(o, "on devtest") {
		t.Fatal(o, e)
	}
	// No server has 50 units: the leader starts a media node for the
	// request (--provisioner local), and the CLI says so.
	if o, e, code := run(t, bin, "alloc", "request", "--room", "big", "--units", "50", "--request-id", "big1", "--timeout", "45s", addr); code != 0 || !strings.Contains(o, "was started for this request") {
		t.Fatal(o, e)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dev did not stop cleanly: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not stop within 30s of SIGINT")
	}
}
