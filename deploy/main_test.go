package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// The switchyard binary, built once for every test of the package (the
// compose test's image and the manifests' flag checks use the same one).
var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// switchyardBinary builds ./cmd/switchyard statically (as the image needs
// it) on first use and returns its path.
func switchyardBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "switchyard-deploy-test-"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "switchyard")
		cmd := exec.Command("go", "build", "-trimpath", "-o", binPath, "./cmd/switchyard")
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = err
			t.Logf("go build: %s", out)
		}
	})
	if binErr != nil {
		t.Fatalf("build switchyard: %v", binErr)
	}
	return binPath
}
