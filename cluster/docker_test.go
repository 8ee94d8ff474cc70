package cluster_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/provision"
)

// dockerUnusable names why docker cannot be used here, or "".
func dockerUnusable() string {
	if _, err := exec.LookPath("docker"); err != nil {
		return "the docker CLI is not installed"
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		return fmt.Sprintf("the docker daemon is not reachable: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return ""
}

// TestDockerProvider builds the project's image (Dockerfile: the static
// binary FROM scratch), lets the leader provision a media node container
// from it when no server fits, answers the request on it once it
// registers, then retires the idle container through the provider's
// deprovision step. Skipped, with the reason, where docker is unusable;
// under CI=true that is a failure.
func TestDockerProvider(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an image; not in -short")
	}
	if why := dockerUnusable(); why != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("docker provider test needs docker under CI: %s", why)
		}
		t.Skipf("docker provider test skipped: %s", why)
	}
	ctx := testcluster.Context(t, 3*time.Minute)
	dir := t.TempDir()
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", filepath.Join(dir, "switchyard"), "../cmd/switchyard")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v: %s", err, out)
	}
	image := fmt.Sprintf("switchyard-test:%d", time.Now().UnixNano())
	if out, err := exec.CommandContext(ctx, "docker", "build", "-q", "-f", "../Dockerfile", "-t", image, dir).CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v: %s", err, out)
	}
	t.Cleanup(func() {
		out, _ := exec.Command("docker", "ps", "-aq", "--filter", "ancestor="+image).Output()
		for _, id := range strings.Fields(string(out)) {
			_ = exec.Command("docker", "rm", "-f", id).Run()
		}
		_ = exec.Command("docker", "rmi", "-f", image).Run()
	})

	// The container's media node registers over the (plain HTTP) API, so
	// with ACLs on it needs a media token: docker reads it from this file
	// when it starts the container, and the token is written once ACLs are
	// bootstrapped.
	envFile := filepath.Join(t.TempDir(), "media.env")
	if err := os.WriteFile(envFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c := testcluster.New(t, 1, testcluster.Options{NoQUIC: true, Mutate: func(_ int, cfg *agent.Config) {
		cfg.Provisioner = &provision.Docker{Image: image, StopTimeout: 5 * time.Second, ExtraArgs: []string{"--log-level", "warn"},
			RunArgs: []string{"--env-file", envFile}}
	}})
	cl := c.Client()
	media, err := cl.ACLCreateToken(ctx, api.CreateTokenRequest{Role: "media", Description: "provisioned media nodes"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(envFile, []byte(api.TokenEnv+"="+media.Secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.SetPolicy(ctx, api.Policy{Strategy: "bin-pack", Provisioning: api.Provisioning{ServerCapacity: 8, TimeoutMs: 60_000, IdleRetireMs: 500}}); err != nil {
		t.Fatal(err)
	}
	a, err := cl.Allocate(ctx, api.AllocateRequest{RequestID: "d1", Room: "r", Units: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(a.Server, "prov-") {
		t.Fatalf("allocated on %s, not a provisioned server", a.Server)
	}
	name := provision.ContainerName(a.Server)
	if out, err := exec.Command("docker", "inspect", "-f", "{{.State.Running}} {{index .Config.Labels \"io.switchyard.server\"}}", name).Output(); err != nil ||
		strings.TrimSpace(string(out)) != "true "+a.Server {
		t.Fatalf("container %s: %q %v", name, out, err)
	}
	if _, err := cl.Release(ctx, "d1"); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 60*time.Second, func() error {
		ss, err := cl.Servers(ctx, false)
		if err != nil || len(ss) != 0 {
			return fmt.Errorf("servers %+v %v", ss, err)
		}
		if out, _ := exec.Command("docker", "ps", "-aq", "--filter", "name="+name).Output(); len(strings.TrimSpace(string(out))) > 0 {
			return fmt.Errorf("container %s still exists", name)
		}
		return nil
	})
}
