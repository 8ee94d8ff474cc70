package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/pki"
)

// Docker is a cluster of agents in Docker containers built FROM scratch
// from the static binary (no image is ever pulled), on a Docker network of
// its own (10.214.X.0/24). It implements Target and Network: partitions
// and netem act inside each container's network namespace through nsenter
// (the image has no shell or tools). Names start with
// "sychaos-PID-SEQ-" so CleanStaleDocker can remove a crashed run's
// containers, networks and images. With DockerOptions.CertDir the agents
// run with mutual TLS, an HTTPS API and ACLs on.
type Docker struct {
	prefix, image, network, subnet string
	n                              int
	dir                            string
	args                           []string
	net                            *nsNet
	// Token is the operator token when the cluster was made with ACLs
	// (DockerOptions.CertDir).
	Token  string
	mu     sync.Mutex
	closed bool
}

// DockerOptions configures NewDocker beyond its node count.
type DockerOptions struct {
	// Args are extra agent flags.
	Args []string
	// CertDir, when set, holds a cluster CA (ca.pem, ca-key.pem) and turns
	// ACLs on: each agent gets a certificate of that CA (so its API is
	// HTTPS and the agents prove themselves to each other with their
	// certificates), runs with --acl default-deny (and no rate limit), and
	// the first operator token is bootstrapped into Docker.Token. The
	// caller's API clients must trust the CA and send the token (api's
	// SWITCHYARD_CACERT and SWITCHYARD_TOKEN): the leader is polled over
	// HTTPS before NewDocker returns.
	CertDir string
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
// clusters of one process, 1..9), as o says.
func NewDocker(ctx context.Context, bin, dir string, n, seq int, o DockerOptions) (_ *Docker, err error) {
	prefix := fmt.Sprintf("sychaos-%d-%d-", os.Getpid(), seq)
	x := (os.Getpid()*10+seq)%200 + 20
	d := &Docker{prefix: prefix, image: prefix + "img:latest", network: prefix + "net", subnet: fmt.Sprintf("10.214.%d.", x), n: n, dir: dir, args: o.Args}
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
	var ca *pki.CA
	if o.CertDir != "" {
		if ca, err = pki.LoadCA(o.CertDir); err != nil {
			return nil, fmt.Errorf("docker cluster CA: %w", err)
		}
	}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("n%d", i+1)
		data := filepath.Join(dir, id)
		if err := os.MkdirAll(data, 0o755); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
		a := []string{"create", "--name", d.prefix + id, "--network", d.network, "--ip", d.Host(i),
			"-v", data + ":/data", "--stop-timeout", "15"}
		var tlsArgs []string
		if ca != nil {
			// Each container sees only the CA certificate and its own
			// certificate and key, never the CA key.
			certs := filepath.Join(dir, "certs-"+id)
			if err := os.MkdirAll(certs, 0o755); err != nil {
				return nil, fmt.Errorf("certificate dir: %w", err)
			}
			if err := os.WriteFile(filepath.Join(certs, pki.CACertFile), ca.CertPEM, 0o644); err != nil {
				return nil, fmt.Errorf("certificate dir: %w", err)
			}
			if _, _, err := ca.IssueRoleFiles(id, pki.RoleAgent, []string{d.Host(i)}, certs); err != nil {
				return nil, err
			}
			a = append(a, "-v", certs+":/certs:ro")
			tlsArgs = []string{"--tls-ca", "/certs/" + pki.CACertFile, "--tls-cert", "/certs/" + id + ".pem", "--tls-key", "/certs/" + id + "-key.pem",
				"--acl", "default-deny", "--rate-limit", "-1"}
		}
		a = append(a, d.image, "agent", "--id", id, "--data-dir", "/data", "--raft-addr", d.Host(i)+":7301", "--http-addr", d.Host(i)+":7501",
			"--bootstrap-expect", strconv.Itoa(n), "--join", strings.Join(joins, ","))
		a = append(a, tlsArgs...)
		if _, err := docker(ctx, append(a, o.Args...)...); err != nil {
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
	if ca == nil {
		if _, err := Leader(lctx, d); err != nil {
			return nil, fmt.Errorf("docker cluster: %w\n%s", err, d.Logs())
		}
		return d, nil
	}
	// With ACLs on, status needs a token, which only bootstrap makes; the
	// readiness probe is open to anyone. Bootstrap answers its secret once
	// and is never resent: send it to a leader every node agrees on.
	leader, err := d.agreedLeader(lctx, ca)
	if err != nil {
		return nil, fmt.Errorf("docker cluster: %w\n%s", err, d.Logs())
	}
	boot, err := api.NewClient(d.HTTPAddr(leader)).WithToken("").ACLBootstrap(lctx)
	if err != nil {
		return nil, fmt.Errorf("docker cluster: bootstrap ACLs: %w\n%s", err, d.Logs())
	}
	d.Token = boot.Secret
	return d, nil
}

// agreedLeader waits until every node answers GET /v1/health/ready over
// HTTPS (verified against ca) as ready, naming the same leader, and
// returns that leader's id.
func (d *Docker) agreedLeader(ctx context.Context, ca *pki.CA) (string, error) {
	tc, err := pki.CAClientConfig(ca.CertPEM)
	if err != nil {
		return "", err
	}
	tr := api.NewTransport()
	tr.TLSClientConfig = tc
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	last := errors.New("not polled yet")
	for {
		leader, ok := "", true
		for _, id := range d.Nodes() {
			var rd api.Readiness
			resp, err := hc.Get("https://" + d.HTTPAddr(id) + "/v1/health/ready")
			if err == nil {
				err = json.NewDecoder(resp.Body).Decode(&rd)
				_ = resp.Body.Close()
			}
			switch {
			case err != nil:
				ok, last = false, fmt.Errorf("%s: %w", id, err)
			case !rd.Ready || rd.Leader == "" || (leader != "" && rd.Leader != leader):
				ok, last = false, fmt.Errorf("%s: ready %v, leader %q (others: %q)", id, rd.Ready, rd.Leader, leader)
			default:
				leader = rd.Leader
			}
		}
		if ok {
			return leader, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no agreed leader: %w (last: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
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

// Blackhole implements Network.
func (d *Docker) Blackhole(ctx context.Context, id string) error { return d.net.blackhole(ctx, id) }

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
