// Package janustest starts real Janus processes (Debian's janus package)
// for tests: only the VideoRoom plugin and the HTTP transport, API and
// admin API on loopback, generated configs in a temp dir.
package janustest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/progtest"
)

// janusLibs are where Debian's janus package installs its plugins.
var janusLibs = []string{"/usr/lib/x86_64-linux-gnu/janus", "/usr/lib/aarch64-linux-gnu/janus", "/usr/lib/janus"}

// Find returns the janus binary and its plugin library directory, or an
// error naming what is missing.
func Find() (bin, lib string, err error) {
	if bin, err = exec.LookPath("janus"); err != nil {
		return "", "", err
	}
	for _, d := range janusLibs {
		if _, err := os.Stat(filepath.Join(d, "plugins", "libjanus_videoroom.so")); err == nil {
			return bin, d, nil
		}
	}
	return "", "", fmt.Errorf("no libjanus_videoroom.so in %v", janusLibs)
}

// Need returns the janus binary and its library dir, skipping the test
// when Janus is not installed (failing under CI=true, where
// .ci/setup-janus.sh installs it).
func Need(t testing.TB) (string, string) {
	t.Helper()
	bin, lib, err := Find()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("janus (Debian package janus, installed by .ci/setup-janus.sh) is required under CI=true: %v", err)
		}
		t.Skip("janus not installed (apt-get install janus, or bash .ci/setup-janus.sh)")
	}
	return bin, lib
}

// Proc is one Janus process.
type Proc struct {
	t   testing.TB
	dir string
	// Port and AdminPort are the HTTP API's and the admin API's ports;
	// Secret is the admin secret.
	Port, AdminPort int
	Secret          string
	*progtest.Proc  // Kill, Pid, Log
}

// New starts a Janus (bin and lib from Need) with RTP ports in rtp
// ("min-max") and waits until its API answers; it is killed when the test
// ends.
func New(t testing.TB, bin, lib, rtp string) *Proc {
	j := &Proc{t: t, dir: t.TempDir(), Port: progtest.FreePort(t, "tcp"), AdminPort: progtest.FreePort(t, "tcp"), Secret: "admin-secret"}
	for _, d := range []string{"conf", "plugins", "transports", "empty"} {
		if err := os.MkdirAll(filepath.Join(j.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link := func(kind, name string) {
		if err := os.Symlink(filepath.Join(lib, kind, name), filepath.Join(j.dir, kind, name)); err != nil {
			t.Fatal(err)
		}
	}
	link("plugins", "libjanus_videoroom.so")
	link("transports", "libjanus_http.so")
	files := map[string]string{
		"janus.jcfg": fmt.Sprintf(`general: {
  configs_folder = "%[1]s/conf"
  plugins_folder = "%[1]s/plugins"
  transports_folder = "%[1]s/transports"
  events_folder = "%[1]s/empty"
  loggers_folder = "%[1]s/empty"
  debug_level = 3
  admin_secret = "%[2]s"
  protected_folders = []
}
media: { rtp_port_range = "%[3]s" }
`, j.dir, j.Secret, rtp),
		"janus.transport.http.jcfg": fmt.Sprintf(`general: { json = "plain" base_path = "/janus" http = true port = %d ip = "127.0.0.1" https = false }
admin: { admin_base_path = "/admin" admin_http = true admin_port = %d admin_ip = "127.0.0.1" admin_https = false }
`, j.Port, j.AdminPort),
		"janus.plugin.videoroom.jcfg": "general: { }\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(j.dir, "conf", name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	j.Proc = progtest.New(t, "janus", filepath.Join(j.dir, "janus.log"), bin,
		"-F", filepath.Join(j.dir, "conf"), "-C", filepath.Join(j.dir, "conf", "janus.jcfg"), "-o")
	j.Start()
	t.Cleanup(j.Kill)
	return j
}

// URL is the HTTP API's URL.
func (j *Proc) URL() string { return fmt.Sprintf("http://127.0.0.1:%d/janus", j.Port) }

// AdminURL is the admin API's URL.
func (j *Proc) AdminURL() string { return fmt.Sprintf("http://127.0.0.1:%d/admin", j.AdminPort) }

// Start (re)starts the process and waits until its API answers.
func (j *Proc) Start() {
	j.t.Helper()
	j.Proc.Start(j.URL()+"/info", true, 30*time.Second)
}
