package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/proccluster"
)

// TestDevClusterStartsAndStopsOnCtrlC runs what `make run` runs: the dev
// cluster answers the CLI, and SIGINT stops it cleanly (exit 0). Neither
// its start, a leader change nor Ctrl-C prints a level=ERROR line (raft's
// ERROR lines for those are demoted; before, Ctrl-C printed seven).
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
	leader := strings.Fields(strings.TrimPrefix(seen[len(seen)-1], "leader: "))[0]
	// The rest of stdout is read to its end (so the process never blocks
	// on a full pipe) and checked once it has exited.
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for l := range lines {
			seen = append(seen, l)
		}
	}()
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
	// A leader change: hand leadership away until the cluster says
	// another node leads. On a busy machine a transfer may time out
	// (raft gives it one election timeout): ask again every 2 s.
	var transfer string
	for i := 0; ; i++ {
		if i%20 == 0 {
			o, e, _ := run(t, bin, "operator", "raft", "transfer-leader", addr)
			transfer = o + e
		}
		o, e, code := run(t, bin, "cluster", "status", "--json", addr)
		var st struct{ Leader string }
		if code == 0 && json.Unmarshal([]byte(o), &st) == nil && st.Leader != "" && st.Leader != leader {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("leader still %s after transfer-leader (%s): %s %s", leader, transfer, o, e)
		case <-time.After(100 * time.Millisecond):
		}
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { <-drained; done <- cmd.Wait() }() // Wait after the last read from the pipe
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dev did not stop cleanly: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not stop within 30s of SIGINT")
	}
	var errLines []string
	for _, l := range append(seen, strings.Split(stderr.String(), "\n")...) {
		if strings.Contains(l, "level=ERROR") {
			errLines = append(errLines, l)
		}
	}
	if len(errLines) > 0 {
		t.Fatalf("dev printed %d ERROR line(s) during start, a leader change and Ctrl-C:\n%s", len(errLines), strings.Join(errLines, "\n"))
	}
}
