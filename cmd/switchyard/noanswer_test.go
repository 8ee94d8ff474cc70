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
	// --timeout 2m is far beyond the CLI's no-answer limit (3 s) and
	// run's own 30 s: the command must be ended by that limit, with exit
	// 1 and an error that says so and names the last failure (for the
	// port nobody listens on, a refused connection) — not by --timeout
	// ("gave up"), nor killed by run (exit -1).
	for _, tc := range []struct{ addr, cause string }{
		{ports.Free(t, "tcp"), "connect: connection refused"},
		{closer.Addr().String(), ""},
	} {
		_, stderr, code := run(t, bin, "--addr", tc.addr, "--timeout", "2m", "cluster", "status")
		want := "switchyard: no agent answered HTTP at " + tc.addr + " for 3s: Get \"http://" + tc.addr + "/v1/status\": "
		if code != 1 || !strings.HasPrefix(stderr, want) || !strings.Contains(stderr, tc.cause) || strings.Contains(stderr, "gave up") {
			t.Fatalf("%s: exit %d: %s\nwant exit 1 and %q...%s", tc.addr, code, stderr, want, tc.cause)
		}
	}
}
