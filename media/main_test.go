package media

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"
)

// benchNodeEnv, when set to host:port, makes the test binary run a bare
// media node there instead of tests, until its stdin closes (see
// BenchmarkViewersPerCore, which measures that process's CPU alone).
const benchNodeEnv = "SWITCHYARD_MEDIA_BENCH_NODE"

func TestMain(m *testing.M) {
	if addr := os.Getenv(benchNodeEnv); addr != "" {
		os.Exit(runBenchNode(addr))
	}
	os.Exit(m.Run())
}

func runBenchNode(addr string) int {
	n, err := New(Config{ID: "bench", Capacity: 1 << 20, ICEIPs: []net.IP{net.IPv4(127, 0, 0, 1)}, StatePoll: -1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, &memCluster{})
	if err != nil {
		return 1
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Start(ctx, ln); err != nil {
		return 1
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = n.Close(ctx)
	return 0
}
