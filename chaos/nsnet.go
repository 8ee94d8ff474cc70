package chaos

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// nsNet cuts and degrades links between nodes that each have a network
// namespace of their own (made by NetNS, or a container's), by running
// iptables and tc inside those namespaces. Only traffic between node
// addresses is affected, except netem (a qdisc on the node's eth0).
type nsNet struct {
	n    int
	host func(i int) string
	// exec returns the command prefix entering node i's namespace.
	exec func(ctx context.Context, i int) ([]string, error)
}

// run runs a command inside node i's namespace.
func (nn *nsNet) run(ctx context.Context, i int, args ...string) error {
	pre, err := nn.exec(ctx, i)
	if err != nil {
		return err
	}
	all := append(append([]string(nil), pre...), args...)
	return run(ctx, all[0], all[1:]...)
}

// index maps a node id ("n3") to its 0-based index.
func (nn *nsNet) index(id string) (int, error) {
	i, err := strconv.Atoi(strings.TrimPrefix(id, "n"))
	if err != nil || i < 1 || i > nn.n {
		return 0, fmt.Errorf("unknown node %q", id)
	}
	return i - 1, nil
}

// partition installs DROP rules between nodes that share no group.
func (nn *nsNet) partition(ctx context.Context, groups [][]string) error {
	if err := nn.flush(ctx); err != nil {
		return err
	}
	sees := make([]map[int]bool, nn.n)
	for i := range sees {
		sees[i] = map[int]bool{i: true}
	}
	for _, g := range groups {
		var idx []int
		for _, id := range g {
			i, err := nn.index(id)
			if err != nil {
				return err
			}
			idx = append(idx, i)
		}
		for _, a := range idx {
			for _, b := range idx {
				sees[a][b] = true
			}
		}
	}
	for a := 0; a < nn.n; a++ {
		for b := 0; b < nn.n; b++ {
			if sees[a][b] {
				continue
			}
			if err := nn.run(ctx, a, "iptables", "-A", "INPUT", "-s", nn.host(b), "-j", "DROP"); err != nil {
				return err
			}
			if err := nn.run(ctx, a, "iptables", "-A", "OUTPUT", "-d", nn.host(b), "-j", "DROP"); err != nil {
				return err
			}
		}
	}
	return nil
}

// netem applies spec to every node's eth0. Kernels without sch_netem (some VM kernels
// ship only a few qdiscs) get an emulation: loss with iptables' statistic
// match (DROP), duplication with the TEE target (a clone sent to the same
// peer), delay as queueing delay behind a token bucket (tbf) at a low
// rate. The returned note says which was applied.
func (nn *nsNet) netem(ctx context.Context, spec string) (string, error) {
	var err error
	for i := 0; i < nn.n; i++ {
		args := append([]string{"tc", "qdisc", "replace", "dev", "eth0", "root", "netem"}, strings.Fields(spec)...)
		if err = nn.run(ctx, i, args...); err != nil {
			break
		}
	}
	if err == nil {
		return "tc netem " + spec, nil
	}
	if !strings.Contains(err.Error(), "qdisc kind is unknown") {
		return "", err
	}
	return nn.emulate(ctx, spec)
}

// emulate applies spec ("loss 10%", "duplicate 5%", "delay 30ms ...")
// without netem, between node addresses only.
func (nn *nsNet) emulate(ctx context.Context, spec string) (string, error) {
	f := strings.Fields(spec)
	var notes []string
	for k := 0; k < len(f); k++ {
		switch f[k] {
		case "loss", "duplicate":
			if k+1 >= len(f) {
				return "", fmt.Errorf("netem spec %q: %s needs a percentage", spec, f[k])
			}
			pct, err := strconv.ParseFloat(strings.TrimSuffix(f[k+1], "%"), 64)
			if err != nil {
				return "", fmt.Errorf("netem spec %q: %w", spec, err)
			}
			p := strconv.FormatFloat(pct/100, 'f', 4, 64)
			for a := 0; a < nn.n; a++ {
				for b := 0; b < nn.n; b++ {
					if a == b {
						continue
					}
					var args []string
					if f[k] == "loss" {
						args = []string{"iptables", "-A", "OUTPUT", "-d", nn.host(b), "-m", "statistic", "--mode", "random", "--probability", p, "-j", "DROP"}
					} else {
						args = []string{"iptables", "-t", "mangle", "-A", "OUTPUT", "-d", nn.host(b), "-m", "statistic", "--mode", "random", "--probability", p, "-j", "TEE", "--gateway", nn.host(b)}
					}
					if err := nn.run(ctx, a, args...); err != nil {
						return "", err
					}
				}
			}
			notes = append(notes, fmt.Sprintf("iptables %s %s", f[k], f[k+1]))
			k++
		case "delay":
			for a := 0; a < nn.n; a++ {
				if err := nn.run(ctx, a, "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "20mbit", "burst", "32kbit", "latency", "100ms"); err != nil {
					return "", err
				}
			}
			notes = append(notes, "tbf 20mbit (queueing delay instead of netem delay)")
			// Skip the delay's arguments (times, jitter, correlation).
			for k+1 < len(f) && (strings.HasSuffix(f[k+1], "ms") || strings.HasSuffix(f[k+1], "us") || strings.HasSuffix(f[k+1], "%")) {
				k++
			}
		default:
			return "", fmt.Errorf("netem spec %q: %q cannot be emulated without sch_netem", spec, f[k])
		}
	}
	return "no sch_netem in this kernel; emulated: " + strings.Join(notes, ", "), nil
}

// blackhole drops, inside node id's namespace, every packet in and out
// but its own loopback traffic.
func (nn *nsNet) blackhole(ctx context.Context, id string) error {
	i, err := nn.index(id)
	if err != nil {
		return err
	}
	if err := nn.flush(ctx); err != nil {
		return err
	}
	if err := nn.run(ctx, i, "iptables", "-A", "INPUT", "!", "-i", "lo", "-j", "DROP"); err != nil {
		return err
	}
	return nn.run(ctx, i, "iptables", "-A", "OUTPUT", "!", "-o", "lo", "-j", "DROP")
}

// flush removes every iptables rule; a node whose namespace is gone (a
// stopped container) has none.
func (nn *nsNet) flush(ctx context.Context) error {
	var errs []error
	for i := 0; i < nn.n; i++ {
		if _, err := nn.exec(ctx, i); err != nil {
			continue
		}
		errs = append(errs, nn.run(ctx, i, "iptables", "-F"), nn.run(ctx, i, "iptables", "-t", "mangle", "-F"))
	}
	return errors.Join(errs...)
}

// heal removes every rule and qdisc (nodes that are down are skipped).
func (nn *nsNet) heal(ctx context.Context) error {
	err := nn.flush(ctx)
	for i := 0; i < nn.n; i++ {
		// No qdisc to delete is fine.
		_ = nn.run(ctx, i, "tc", "qdisc", "del", "dev", "eth0", "root")
	}
	return err
}
