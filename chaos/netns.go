package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// NetNS is a private test network: one network namespace per node, each
// with a veth whose other end is on a bridge in the root namespace, and
// addresses in 10.213.X.0/24 (X picked per network). The addresses exist
// only inside namespaces this process made; nothing leaves the machine.
// The root namespace gets 10.213.X.254 on the bridge so the test's clients
// reach every node. Partitions are iptables DROP rules inside the nodes'
// namespaces (between node addresses only, so clients still reach every
// node); netem is a root qdisc on each node's interface.
//
// Names carry the creating process's pid (namespaces "sychaos-PID-S-nI",
// bridge "sycPIDSbr"), so CleanStaleNetNS can remove what a crashed run
// left behind without touching a live run's.
type NetNS struct {
	tag    string // "PIDHEX" + seq
	bridge string
	subnet string // "10.213.X."
	n      int
	mu     sync.Mutex
	closed bool
}

const nsPrefix = "sychaos-"

// run executes a command and wraps its output into the error.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// NetNSUsable reports why network namespaces cannot be used here (nil when
// they can): root, ip, iptables and tc are needed.
func NetNSUsable(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root")
	}
	for _, tool := range []string{"ip", "iptables", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (install iproute2 and iptables: .ci/setup-chaos.sh)", tool)
		}
	}
	name := fmt.Sprintf("%sprobe-%d", nsPrefix, os.Getpid())
	if err := run(ctx, "ip", "netns", "add", name); err != nil {
		return fmt.Errorf("cannot create a network namespace: %w", err)
	}
	defer func() { _ = run(context.Background(), "ip", "netns", "del", name) }()
	if err := run(ctx, "ip", "netns", "exec", name, "iptables", "-L", "INPUT"); err != nil {
		return fmt.Errorf("iptables does not work inside a namespace: %w", err)
	}
	return nil
}

func alive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// CleanStaleNetNS removes namespaces and bridges left by runs whose
// process is gone.
func CleanStaleNetNS(ctx context.Context) error {
	staleNS := regexp.MustCompile(`^sychaos-(?:probe-)?([0-9]+)\b`)
	staleBridge := regexp.MustCompile(`^syc([0-9a-f]+)br$`)
	var errs []error
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			if m := staleNS.FindStringSubmatch(f[0]); m != nil {
				if pid, _ := strconv.Atoi(m[1]); !alive(pid) {
					errs = append(errs, run(ctx, "ip", "netns", "del", f[0]))
				}
			}
		}
	}
	out, err = exec.CommandContext(ctx, "ip", "-o", "link", "show", "type", "bridge").Output()
	if err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			name := strings.TrimSuffix(f[1], ":")
			if m := staleBridge.FindStringSubmatch(name); m != nil {
				if pid, _ := strconv.ParseInt(m[1][:len(m[1])-1], 16, 64); !alive(int(pid)) {
					errs = append(errs, run(ctx, "ip", "link", "del", name))
					_ = run(ctx, "iptables", "-D", "FORWARD", "-i", name, "-o", name, "-j", "ACCEPT")
				}
			}
		}
	}
	return errors.Join(errs...)
}

// NewNetNS creates the network for n nodes (seq distinguishes networks of
// one process, 1..9). Close removes it.
func NewNetNS(ctx context.Context, n, seq int) (_ *NetNS, err error) {
	if seq < 1 || seq > 9 {
		return nil, fmt.Errorf("netns seq %d out of 1..9", seq)
	}
	tag := fmt.Sprintf("%x%d", os.Getpid(), seq)
	x := (os.Getpid()*10+seq)%200 + 20
	nn := &NetNS{tag: tag, bridge: "syc" + tag + "br", subnet: fmt.Sprintf("10.213.%d.", x), n: n}
	defer func() {
		if err != nil {
			_ = nn.Close(context.Background())
		}
	}()
	steps := [][]string{
		{"ip", "link", "add", nn.bridge, "type", "bridge"},
		{"ip", "addr", "add", nn.subnet + "254/24", "dev", nn.bridge},
		{"ip", "link", "set", nn.bridge, "up"},
		// Docker's FORWARD policy DROP would eat bridged traffic when
		// br_netfilter is loaded.
		{"iptables", "-I", "FORWARD", "-i", nn.bridge, "-o", nn.bridge, "-j", "ACCEPT"},
	}
	for i := 0; i < n; i++ {
		ns, veth := nn.ns(i), fmt.Sprintf("syc%sv%d", tag, i)
		steps = append(steps,
			[]string{"ip", "netns", "add", ns},
			[]string{"ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"ip", "link", "set", veth, "master", nn.bridge},
			[]string{"ip", "link", "set", veth, "up"},
			[]string{"ip", "-n", ns, "link", "set", "lo", "up"},
			[]string{"ip", "-n", ns, "addr", "add", nn.Host(i) + "/24", "dev", "eth0"},
			[]string{"ip", "-n", ns, "link", "set", "eth0", "up"},
		)
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return nil, fmt.Errorf("netns setup: %w", err)
		}
	}
	return nn, nil
}

func (nn *NetNS) ns(i int) string {
	return fmt.Sprintf("%s%d-%d-n%d", nsPrefix, os.Getpid(), nn.tag[len(nn.tag)-1]-'0', i+1)
}

// Host is node i's address (0-based).
func (nn *NetNS) Host(i int) string { return fmt.Sprintf("%s%d", nn.subnet, i+1) }

// Exec is the command prefix that runs a program inside node i's
// namespace (`ip netns exec` execs, so the pid is the program's).
func (nn *NetNS) Exec(i int) []string { return []string{"ip", "netns", "exec", nn.ns(i)} }

// index maps a proccluster node id ("n3") to its 0-based index.
func (nn *NetNS) index(id string) (int, error) {
	i, err := strconv.Atoi(strings.TrimPrefix(id, "n"))
	if err != nil || i < 1 || i > nn.n {
		return 0, fmt.Errorf("unknown node %q", id)
	}
	return i - 1, nil
}

// Partition implements Network.
func (nn *NetNS) Partition(ctx context.Context, groups [][]string) error {
	return nn.nsNet().partition(ctx, groups)
}

// Netem implements Network. Kernels without sch_netem (some VM kernels
// ship only a few qdiscs) get an emulation; the returned note says which
// was applied.
func (nn *NetNS) Netem(ctx context.Context, spec string) (string, error) {
	return nn.nsNet().netem(ctx, spec)
}

// Blackhole implements Network.
func (nn *NetNS) Blackhole(ctx context.Context, id string) error {
	return nn.nsNet().blackhole(ctx, id)
}

// Heal implements Network.
func (nn *NetNS) Heal(ctx context.Context) error { return nn.nsNet().heal(ctx) }

func (nn *NetNS) nsNet() *nsNet {
	return &nsNet{n: nn.n, host: nn.Host, exec: func(_ context.Context, i int) ([]string, error) { return nn.Exec(i), nil }}
}

// Close removes the namespaces, veths and the bridge (idempotent).
func (nn *NetNS) Close(ctx context.Context) error {
	nn.mu.Lock()
	defer nn.mu.Unlock()
	if nn.closed {
		return nil
	}
	nn.closed = true
	var errs []error
	for i := 0; i < nn.n; i++ {
		_ = run(ctx, "ip", "netns", "del", nn.ns(i))
	}
	_ = run(ctx, "iptables", "-D", "FORWARD", "-i", nn.bridge, "-o", nn.bridge, "-j", "ACCEPT")
	if err := run(ctx, "ip", "link", "del", nn.bridge); err != nil && !strings.Contains(err.Error(), "Cannot find") {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
