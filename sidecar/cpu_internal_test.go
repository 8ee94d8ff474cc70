package sidecar

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// A meter on a pid file follows the process the file names: a new pid
// (a restarted SFU) is measured from its own start, not against the old
// process's counters.
func TestCPUMeterFollowsThePIDFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sfu.pid")
	write := func(pid int) {
		t.Helper()
		if err := os.WriteFile(file, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	busy := func() {
		for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
		}
	}
	write(os.Getpid())
	m := newCPUMeter(0, file)
	if m.pid != os.Getpid() {
		t.Fatalf("meter on pid %d, want %d", m.pid, os.Getpid())
	}
	// This process burns CPU until a sample shows it (a tick is 10 ms).
	for i := 0; ; i++ {
		busy()
		if m.sample() > 0 {
			break
		}
		if i > 200 {
			t.Fatal("no CPU seen for a busy process")
		}
	}
	// The file now names another process: the first sample starts over.
	other := exec.Command("sleep", "30")
	if err := other.Start(); err != nil {
		t.Skipf("no sleep program: %v", err)
	}
	defer func() { _ = other.Process.Kill(); _ = other.Wait() }()
	write(other.Process.Pid)
	busy()
	if got := m.sample(); got != 0 || m.pid != other.Process.Pid {
		t.Fatalf("after the pid file changed: sample %v on pid %d, want 0 on %d", got, m.pid, other.Process.Pid)
	}
	// Garbage in the file keeps the last process.
	if err := os.WriteFile(file, []byte("not a pid"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.sample()
	if m.pid != other.Process.Pid {
		t.Fatalf("a garbage pid file moved the meter to %d", m.pid)
	}
}

func TestReadPIDFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		body string
		want int
	}{{"123\n", 123}, {" 42 ", 42}, {"", 0}, {"-5", 0}, {"12ab", 0}, {"99999999999999999999999", 0}} {
		p := filepath.Join(dir, "p")
		if err := os.WriteFile(p, []byte(tc.body), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := readPIDFile(p)
		if got != tc.want || (tc.want == 0) != (err != nil) {
			t.Errorf("pid file %q: %d, %v; want %d", tc.body, got, err, tc.want)
		}
	}
	if _, err := readPIDFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing pid file read without error")
	}
}
