package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Docker is a cluster of agents in Docker containers built FROM scratch
// from the static binary (no image is ever pulled), on a Docker network of
// its own (10.214.X.0/24). It implements Target and Network: partitions
// and netem act inside each container's network namespace through nsenter
// (the image has no shell or tools). Names start with
// "sychaos-PID-SEQ-" so CleanStaleDocker can remove a crashed run's
// containers, networks and images.
type Docker struct {
	prefix, image, network, subnet string
	n                              int
	dir                            string
	args                           []string
	net                            *nsNet
	mu                             sync.Mutex
	closed                         bool
}

// DockerUsable reports why Docker cannot be used here (nil when it can).
func DockerUsable(ctx context.Context) error {
	if _, err := exec.LookPath("docker"); err != nil {
		return errors.New("docker CLI not found (.ci/setup-chaos.sh installs docker.io)")
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		return errors.New("nsenter not found (util-linux)")
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := run(cctx, "docker", "info"); err != nil {
		return fmt.Errorf("docker engine not usable: %w", err)
	}
	return nil
}

func docker(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0") // the classic builder needs nothing from a registry for FROM scratch
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// CleanStaleDocker removes containers, networks and images named by runs
// whose process is gone.
func CleanStaleDocker(ctx context.Context) error {
	re := regexp.MustCompile(`^sychaos-([0-9]+)-`)
	dead := func(name string) bool {
		m := re.FindStringSubmatch(name)
		if m == nil {
			return false
		}
		pid, _ := strconv.Atoi(m[1])
		return !alive(pid)
	}
	var errs []error
	for _, q := range []struct{ list, rm []string }{
		{[]string{"ps", "-a", "--format", "{{.Names}}"}, []string{"rm", "-f"}},
		{[]string{"network", "ls", "--format", "{{.Name}}"}, []string{"network", "rm"}},
		{[]string{"images", "--format", "{{.Repository}}:{{.Tag}}"}, []string{"rmi", "-f"}},
	} {
		out, err := docker(ctx, q.list...)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, name := range strings.Fields(out) {
			if dead(name) {
				_, err := docker(ctx, append(q.rm, name)...)
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// NewDocker builds the image from bin (a static binary), creates the
// network and starts n agents bootstrapping together (seq distinguishes
// clusters of one process, 1..9). args are extra agent flags.
func NewDocker(ctx context.Context, bin, dir string, n, seq int, args []string) (_ *Docker, err error) {
	prefix := fmt.Sprintf("sychaos-%d-%d-", os.Getpid(), seq)
	x := (os.Getpid()*10+seq)%200 + 20
	d := &Docker{prefix: prefix, image: prefix + "img:latest", network: prefix + "net", subnet: fmt.Sprintf("10.214.%d.", x), n: n, dir: dir, args: args}
	defer func() {
		if err != nil {
			_ = d.Close(context.Background())
		}
	}()
	bctx := filepath.Join(dir, "image")
	if err := os.MkdirAll(bctx, 0o755); err != nil {
		return nil, fmt.Errorf("docker build context: %w", err)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("read binary: %w", err)
	}
	if err := os.WriteFile(filepath.Join(bctx, "switchyard"), b, 0o755); err != nil {
		return nil, fmt.Errorf("docker build context: %w", err)
	}
	dockerfile := "FROM scratch\nCOPY switchyard /switchyard\nENTRYPOINT [\"/switchyard\"]\n"
	if err := os.WriteFile(filepath.Join(bctx, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return nil, fmt.Errorf("docker build context: %w", err)
	}
	if _, err := docker(ctx, "build", "-q", "-t", d.image, bctx); err != nil {
		return nil, err
	}
	if _, err := docker(ctx, "network", "create", "--subnet", d.subnet+"0/24", d.network); err != nil {
		return nil, err
	}
	var joins []string
	for i := 0; i < n; i++ {
		joins = append(joins, d.Host(i)+":7501")
	}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("n%d", i+1)
		data := filepath.Join(dir, id)
		if err := os.MkdirAll(data, 0o755); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
		a := []string{"create", "--name", d.prefix + id, "--network", d.network, "--ip", d.Host(i),
			"-v", data + ":/data", "--stop-timeout", "15", d.image,
			"agent", "--id", id, "--data-dir", "/data", "--raft-addr", d.Host(i) + ":7301", "--http-addr", d.Host(i) + ":7501",
			"--bootstrap-expect", strconv.Itoa(n), "--join", strings.Join(joins, ",")}
		if _, err := docker(ctx, append(a, args...)...); err != nil {
			return nil, err
		}
	}
	for _, id := range d.Nodes() {
		if err := d.Start(ctx, id); err != nil {
			return nil, err
		}
	}
	d.net = &nsNet{n: n, host: d.Host, exec: d.nsExec}
	lctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := Leader(lctx, d); err != nil {
		return nil, fmt.Errorf("docker cluster: %w\n%s", err, d.Logs())
	}
	return d, nil
}

// Host is node i's container address (0-based).
func (d *Docker) Host(i int) string { return fmt.Sprintf("%s%d", d.subnet, i+11) }

// Name implements Target.
func (d *Docker) Name() string { return "docker" }

// Nodes implements Target.
func (d *Docker) Nodes() []string {
	var ids []string
	for i := 0; i < d.n; i++ {
		ids = append(ids, fmt.Sprintf("n%d", i+1))
	}
	return ids
}

func (d *Docker) index(id string) (int, error) {
	i, err := strconv.Atoi(strings.TrimPrefix(id, "n"))
	if err != nil || i < 1 || i > d.n {
		return 0, fmt.Errorf("unknown node %q", id)
	}
	return i - 1, nil
}

// HTTPAddr implements Target.
func (d *Docker) HTTPAddr(id string) string {
	i, err := d.index(id)
	if err != nil {
		return ""
	}
	return d.Host(i) + ":7501"
}

// Kill implements Target (SIGKILL; docker kill returns once it is dead).
func (d *Docker) Kill(ctx context.Context, id string) error {
	_, _ = docker(ctx, "kill", "-s", "CONT", d.prefix+id)
	_, err := docker(ctx, "kill", "-s", "KILL", d.prefix+id)
	return err
}

// Stop implements Target (SIGTERM, SIGKILL after 15 s).
func (d *Docker) Stop(ctx context.Context, id string) error {
	_, _ = docker(ctx, "kill", "-s", "CONT", d.prefix+id)
	_, err := docker(ctx, "stop", d.prefix+id)
	return err
}

// Start implements Target.
func (d *Docker) Start(ctx context.Context, id string) error {
	_, err := docker(ctx, "start", d.prefix+id)
	return err
}

// Pause implements Target (SIGSTOP, like the process target).
func (d *Docker) Pause(ctx context.Context, id string) error {
	_, err := docker(ctx, "kill", "-s", "STOP", d.prefix+id)
	return err
}

// Resume implements Target.
func (d *Docker) Resume(ctx context.Context, id string) error {
	if !d.Running(id) {
		return nil
	}
	_, err := docker(ctx, "kill", "-s", "CONT", d.prefix+id)
	return err
}

// Running implements Target.
func (d *Docker) Running(id string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := docker(ctx, "inspect", "-f", "{{.State.Running}}", d.prefix+id)
	return err == nil && out == "true"
}

// Logs implements Target.
func (d *Docker) Logs() string {
	var b strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range d.Nodes() {
		out, _ := docker(ctx, "logs", "--tail", "40", d.prefix+id)
		fmt.Fprintf(&b, "---- %s ----\n%s\n", id, out)
	}
	return b.String()
}

// nsExec returns the command prefix entering node i's network namespace.
func (d *Docker) nsExec(ctx context.Context, i int) ([]string, error) {
	pid, err := docker(ctx, "inspect", "-f", "{{.State.Pid}}", d.prefix+fmt.Sprintf("n%d", i+1))
	if err != nil {
		return nil, err
	}
	if pid == "0" {
		return nil, fmt.Errorf("node n%d is not running", i+1)
	}
	return []string{"nsenter", "-t", pid, "-n"}, nil
}

// Partition implements Network.
func (d *Docker) Partition(ctx context.Context, groups [][]string) error {
	return d.net.partition(ctx, groups)
}

// Netem implements Network.
func (d *Docker) Netem(ctx context.Context, spec string) (string, error) {
	return d.net.netem(ctx, spec)
}

// Heal implements Network.
func (d *Docker) Heal(ctx context.Context) error { return d.net.heal(ctx) }

// Close removes the containers, the network and the image (idempotent).
func (d *Docker) Close(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	var errs []error
	for _, id := range d.Nodes() {
		_, _ = docker(ctx, "rm", "-f", d.prefix+id)
	}
	if _, err := docker(ctx, "network", "rm", d.network); err != nil && !strings.Contains(err.Error(), "not found") {
		errs = append(errs, err)
	}
	_, _ = docker(ctx, "rmi", "-f", d.image)
	return errors.Join(errs...)
}
