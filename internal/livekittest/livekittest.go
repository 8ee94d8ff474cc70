// Package livekittest starts real livekit-server processes for tests:
// single-node (no Redis), bound to loopback, with generated configs. The
// binary is built from github.com/livekit/livekit-server at Version by
// .ci/build-livekit.sh into the cache directory (outside the clone).
// Building it takes minutes and hundreds of modules, so the tests that
// need it are opt-in (SWITCHYARD_LIVEKIT=1, `make test-livekit`).
package livekittest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/ports"
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

// Need returns the livekit-server binary. The test is skipped unless
// SWITCHYARD_LIVEKIT=1 (then a missing binary fails it).
func Need(t *testing.T) string {
	t.Helper()
	if os.Getenv("SWITCHYARD_LIVEKIT") != "1" {
		t.Skip("LiveKit tests are opt-in: make test-livekit (builds livekit-server " + Version + " with .ci/build-livekit.sh, then SWITCHYARD_LIVEKIT=1)")
	}
	bin := Binary()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("livekit-server %s (bash .ci/build-livekit.sh) is required with SWITCHYARD_LIVEKIT=1: %v", Version, err)
	}
	return bin
}

// Proc is one livekit-server process.
type Proc struct {
	t    *testing.T
	bin  string
	dir  string
	Port int
	cmd  *exec.Cmd
	done chan struct{}
}

func freePort(t *testing.T, network string) int {
	_, p, _ := net.SplitHostPort(ports.Free(t, network))
	var n int
	_, _ = fmt.Sscan(p, &n)
	return n
}

// New starts a server with UDP media ports in [udpLo, udpHi] and waits
// until it answers; it is killed when the test ends.
func New(t *testing.T, bin string, udpLo, udpHi int) *Proc {
	p := &Proc{t: t, bin: bin, dir: t.TempDir(), Port: freePort(t, "tcp")}
	cfg := fmt.Sprintf(`port: %d
bind_addresses: ["127.0.0.1"]
rtc:
  tcp_port: %d
  port_range_start: %d
  port_range_end: %d
  node_ip: 127.0.0.1
  use_external_ip: false
keys:
  %s: %s
logging:
  level: warn
`, p.Port, freePort(t, "tcp"), udpLo, udpHi, APIKey, APISecret)
	if err := os.WriteFile(filepath.Join(p.dir, "livekit.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p.Start()
	t.Cleanup(p.Kill)
	return p
}

// URL is the URL clients connect to.
func (p *Proc) URL() string { return fmt.Sprintf("ws://127.0.0.1:%d", p.Port) }

// Start (re)starts the process and waits until it answers HTTP.
func (p *Proc) Start() {
	p.t.Helper()
	logf, err := os.OpenFile(filepath.Join(p.dir, "livekit.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	p.cmd = exec.Command(p.bin, "--config", filepath.Join(p.dir, "livekit.yaml"))
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); logf.Close(); close(done) }(p.cmd, p.done)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", p.Port), nil)
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			return
		}
		select {
		case <-p.done:
			p.t.Fatalf("livekit-server exited: %s", p.Log())
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("livekit-server did not answer within 60s: %v\n%s", err, p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill kills the process (SIGKILL) and waits for it.
func (p *Proc) Kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	p.cmd = nil
}

// Pid is the running process's id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Log returns the tail of the process's log.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "livekit.log"))
	s := string(b)
	if len(s) > 3000 {
		s = s[len(s)-3000:]
	}
	return strings.TrimSpace(s)
}
