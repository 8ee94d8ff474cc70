package main_test

import (
	"net"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/internal/ports"
	"github.com/switchyard/switchyard/internal/proccluster"
)

// The CLI pointed at an address where no agent answers HTTP — nothing
// listening, or a port that closes the connection (a raft port) — gives
// up with a message that says so, well before its --timeout.
func TestCLIWrongAddress(t *testing.T) {
	bin := proccluster.BuildBinary(t)
	closer, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	go func() {
		for {
			c, err := closer.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	for _, addr := range []string{ports.Free(t, "tcp"), closer.Addr().String()} {
		_, stderr, code := run(t, bin, "--addr", addr, "--timeout", "2m", "cluster", "status")
		if code == 0 || !strings.Contains(stderr, "no agent answered HTTP at "+addr) {
			t.Fatalf("%s: exit %d: %s", addr, code, stderr)
		}
	}
}
