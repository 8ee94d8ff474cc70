package provision

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Docker starts each provisioned media node as a container of the project's
// own image (see the Dockerfile at the repository root: the static
// switchyard binary on an empty image), through the docker CLI:
//
//	docker run -d --name switchyard-<server id> --network <Network>
//	  --label io.switchyard.server=<id> --label io.switchyard.intent=<intent>
//	  <RunArgs...> <Image> media --id <id> --allocators <cluster>
//	  --http-addr <Host>:<free port> --capacity <capacity> [--region <r>] <ExtraArgs...>
//
// A container that is not running shortly after the start is reported as a
// failure with the tail of its logs. Deprovision stops the container
// (SIGTERM: the media node drains and deregisters) and removes it; a
// container that no longer exists counts as stopped.
type Docker struct {
	// Image is the media node image. Required.
	Image string
	// CLI is the docker executable; empty means "docker" on PATH.
	CLI string
	// Network is the container network; empty means "host", so the node
	// reaches the allocators and clients reach it on Host.
	Network string
	// Host is the address the media node listens on; empty: 127.0.0.1.
	Host string
	// RunArgs are extra `docker run` arguments (before the image).
	RunArgs []string
	// ExtraArgs are appended to the media command line.
	ExtraArgs []string
	// StopTimeout is the grace period of `docker stop`; 0 means 30 s.
	StopTimeout time.Duration
}

// Name implements Provider.
func (d *Docker) Name() string { return "docker" }

// ContainerName is the container a server id runs in.
func ContainerName(serverID string) string {
	var b strings.Builder
	b.WriteString("switchyard-")
	for _, r := range serverID {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

func (d *Docker) cli() string {
	if d.CLI != "" {
		return d.CLI
	}
	return "docker"
}

// docker runs one docker CLI command and returns its combined output.
func (d *Docker) docker(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, d.cli(), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		return out.Bytes(), fmt.Errorf("docker %s: gave up after the deadline: %w", args[0], ctx.Err())
	}
	if err != nil {
		return out.Bytes(), fmt.Errorf("docker %s: %v: %s", args[0], err, tail(out.Bytes(), 512))
	}
	return out.Bytes(), nil
}

// Provision implements Provider.
func (d *Docker) Provision(ctx context.Context, spec Spec) error {
	if d.Image == "" {
		return fmt.Errorf("%w: docker: no image configured", ErrProvider)
	}
	if len(spec.Cluster) == 0 {
		return fmt.Errorf("%w: docker: no allocator addresses to register with", ErrProvider)
	}
	host := d.Host
	if host == "" {
		host = "127.0.0.1"
	}
	network := d.Network
	if network == "" {
		network = "host"
	}
	port, err := freePort(host)
	if err != nil {
		return fmt.Errorf("%w: docker: %w", ErrProvider, err)
	}
	capacity := spec.Capacity
	if capacity <= 0 {
		capacity = max(spec.Units, 1)
	}
	name := ContainerName(spec.ServerID)
	args := []string{"run", "-d", "--name", name, "--network", network,
		"--label", "io.switchyard.server=" + spec.ServerID, "--label", "io.switchyard.intent=" + spec.IntentID}
	args = append(args, d.RunArgs...)
	args = append(args, d.Image, "media", "--id", spec.ServerID, "--allocators", strings.Join(spec.Cluster, ","),
		"--http-addr", net.JoinHostPort(host, strconv.Itoa(port)), "--capacity", strconv.FormatInt(capacity, 10))
	if spec.Region != "" {
		args = append(args, "--region", spec.Region)
	}
	args = append(args, d.ExtraArgs...)
	if _, err := d.docker(ctx, args...); err != nil {
		return fmt.Errorf("%w: %w", ErrProvider, err)
	}
	select {
	case <-time.After(earlyExit):
	case <-ctx.Done():
		return fmt.Errorf("%w: docker: container %s started but the deadline passed: %w", ErrProvider, name, ctx.Err())
	}
	out, err := d.docker(ctx, "inspect", "-f", "{{.State.Running}}", name)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProvider, err)
	}
	if strings.TrimSpace(string(out)) != "true" {
		logs, _ := d.docker(ctx, "logs", "--tail", "20", name)
		_, _ = d.docker(ctx, "rm", "-f", name)
		return fmt.Errorf("%w: docker: container %s exited at once: %s", ErrProvider, name, tail(logs, 512))
	}
	return nil
}

// Deprovision implements Provider.
func (d *Docker) Deprovision(ctx context.Context, spec Spec) error {
	name := ContainerName(spec.ServerID)
	grace := d.StopTimeout
	if grace <= 0 {
		grace = 30 * time.Second
	}
	if out, err := d.docker(ctx, "stop", "-t", strconv.Itoa(int(grace.Seconds())), name); err != nil {
		if bytes.Contains(out, []byte("No such container")) {
			return nil
		}
		return fmt.Errorf("%w: %w", ErrProvider, err)
	}
	if out, err := d.docker(ctx, "rm", name); err != nil && !bytes.Contains(out, []byte("No such container")) {
		return fmt.Errorf("%w: %w", ErrProvider, err)
	}
	return nil
}
