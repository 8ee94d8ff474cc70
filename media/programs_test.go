package media

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// needInstalled makes sure an outside dependency of a test is there: when
// ok reports false and the test runs as root, it installs the Debian
// packages pkgs (apt-get update and retry on failure). When it still is
// not there the test is skipped, or fails under CI=true.
func needInstalled(t *testing.T, what string, ok func() bool, pkgs ...string) {
	t.Helper()
	if ok() {
		return
	}
	if os.Geteuid() == 0 {
		install := func() error {
			cmd := exec.Command("apt-get", append([]string{"install", "-y", "-q", "--no-install-recommends"}, pkgs...)...)
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Logf("apt-get install %v: %v\n%s", pkgs, err, out)
			}
			return err
		}
		if install() != nil {
			if out, err := exec.Command("apt-get", "update", "-q").CombinedOutput(); err != nil {
				t.Logf("apt-get update: %v\n%s", err, out)
			}
			_ = install()
		}
		if ok() {
			return
		}
	}
	msg := what + " is missing (Debian packages " + strings.Join(pkgs, " ") + "; .ci/setup-media.sh installs them as root)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// needProgram is needInstalled for a program on PATH; it returns its path.
func needProgram(t *testing.T, name string, pkgs ...string) string {
	t.Helper()
	needInstalled(t, name, func() bool { _, err := exec.LookPath(name); return err == nil }, pkgs...)
	p, _ := exec.LookPath(name)
	return p
}
