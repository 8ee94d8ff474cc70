package media

import (
	"os"
	"os/exec"
	"testing"
)

// needProgram returns the path of an outside program a test drives,
// installing the Debian packages that provide it when it is missing and
// the test runs as root. When it cannot be had the test is skipped, or
// fails under CI=true.
func needProgram(t *testing.T, name string, pkgs ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if os.Geteuid() == 0 {
		install := append([]string{"install", "-y", "-q", "--no-install-recommends"}, pkgs...)
		cmd := exec.Command("apt-get", install...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("apt-get install %v: %v\n%s", pkgs, err, out)
			if out, err := exec.Command("apt-get", "update", "-q").CombinedOutput(); err != nil {
				t.Logf("apt-get update: %v\n%s", err, out)
			}
			cmd := exec.Command("apt-get", install...)
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Logf("apt-get install %v: %v\n%s", pkgs, err, out)
			}
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := name + " is missing (Debian packages " + joinWords(pkgs) + "; run .ci/setup-media.sh as root)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func joinWords(w []string) string {
	s := ""
	for i, x := range w {
		if i > 0 {
			s += " "
		}
		s += x
	}
	return s
}
