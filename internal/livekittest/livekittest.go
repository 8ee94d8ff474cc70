// Package livekittest starts real livekit-server processes for tests:
// single-node (no Redis), bound to loopback, with generated configs. The
// binary is built from github.com/livekit/livekit-server at Version by
// .ci/build-livekit.sh into the cache directory (outside the clone;
// about 5 minutes and hundreds of modules, once). CI builds it in its
// setup (.ci/setup-livekit.sh); elsewhere the tests that need it are
// skipped, naming it, until it is built (`make test-livekit`).
package livekittest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/progtest"
)

// Version is the livekit-server release the tests run.
const Version = "v1.13.5"

// API key and secret of the test servers.
const (
	APIKey    = "switchyard-test"
	APISecret = "switchyard-test-secret-0123456789abcdef"
)

// Binary is where .ci/build-livekit.sh puts the server:
// $SWITCHYARD_LIVEKIT_SERVER, else $XDG_CACHE_HOME or ~/.cache,
// switchyard/livekit-server-<Version>.
func Binary() string {
	if p := os.Getenv("SWITCHYARD_LIVEKIT_SERVER"); p != "" {
		return p
	}
	dir := os.Getenv("XDG_CACHE_HOME")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache")
	}
	return filepath.Join(dir, "switchyard", "livekit-server-"+Version)
}

// Need returns the livekit-server binary. When it is not built the test is
// skipped, naming it, or fails under CI=true or SWITCHYARD_LIVEKIT=1.
func Need(t testing.TB) string {
	t.Helper()
	bin := Binary()
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") == "true" || os.Getenv("SWITCHYARD_LIVEKIT") == "1" {
			t.Fatalf("livekit-server %s (bash .ci/build-livekit.sh) is required under CI=true or SWITCHYARD_LIVEKIT=1: %v", Version, err)
		}
		t.Skipf("livekit-server %s is not built (%v): make test-livekit, or bash .ci/build-livekit.sh", Version, err)
	}
	return bin
}

// Proc is one livekit-server process.
type Proc struct {
	t              testing.TB
	dir            string
	Port           int
	MetricsPort    int // Prometheus endpoint
	*progtest.Proc     // Kill, Pid, Log
}

// MaxRoomNameLength is the longest room name the servers New starts
// accept (LiveKit's limit.max_room_name_length): shorter than Switchyard
// allows, so a test can place a room LiveKit refuses.
const MaxRoomNameLength = 64

// New starts a server with UDP media ports in [udpLo, udpHi] and waits
// until it answers; it is killed when the test ends.
func New(t testing.TB, bin string, udpLo, udpHi int) *Proc {
	p := &Proc{t: t, dir: t.TempDir(), Port: progtest.FreePort(t, "tcp"), MetricsPort: progtest.FreePort(t, "tcp")}
	cfg := fmt.Sprintf(`port: %d
bind_addresses: ["127.0.0.1"]
prometheus:
  port: %d
rtc:
  tcp_port: %d
  port_range_start: %d
  port_range_end: %d
  node_ip: 127.0.0.1
  use_external_ip: false
keys:
  %s: %s
limit:
  max_room_name_length: %d
logging:
  level: warn
`, p.Port, p.MetricsPort, progtest.FreePort(t, "tcp"), udpLo, udpHi, APIKey, APISecret, MaxRoomNameLength)
	if err := os.WriteFile(filepath.Join(p.dir, "livekit.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p.Proc = progtest.New(t, "livekit-server", filepath.Join(p.dir, "livekit.log"), bin, "--config", filepath.Join(p.dir, "livekit.yaml"))
	p.Start()
	t.Cleanup(p.Kill)
	return p
}

// MetricsURL is the server's Prometheus endpoint.
func (p *Proc) MetricsURL() string { return fmt.Sprintf("http://127.0.0.1:%d/metrics", p.MetricsPort) }

// URL is the URL clients connect to.
func (p *Proc) URL() string { return fmt.Sprintf("ws://127.0.0.1:%d", p.Port) }

// Start (re)starts the process and waits until it answers HTTP.
func (p *Proc) Start() {
	p.t.Helper()
	p.Proc.Start(fmt.Sprintf("http://127.0.0.1:%d/", p.Port), false, 60*time.Second)
}
