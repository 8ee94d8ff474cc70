package chaos

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/api"
)

// LoadGen runs `switchyard loadgen` during a chaos run: Servers
// simulated media servers register over QUIC (mutual TLS, one media
// certificate per server minted from the cluster's CA) and report load every Interval, failing
// over between allocators. The runner then checks that no server was
// marked down while the load generator was reporting for it.
type LoadGen struct {
	Bin       string
	CertDir   string   // holds ca.pem and ca-key.pem (proccluster Options.QUIC)
	QUICAddrs []string // the allocators' QUIC addresses
	Servers   int
	Interval  time.Duration
	// Window is the agents' failure-detection window (--failure-window).
	Window time.Duration
	Prefix string // server id prefix (default "lg-")

	mu      sync.Mutex
	cmd     *exec.Cmd
	out     bytes.Buffer
	done    chan struct{}
	started int64 // history clock: every server registered
	stopped int64 // history clock: loadgen stopped
}

// start starts the load generator and waits until every server is
// registered (read from the cluster).
func (l *LoadGen) start(ctx context.Context, h *History, cl *api.Client, d time.Duration) error {
	if l.Prefix == "" {
		l.Prefix = "lg-"
	}
	if l.Interval <= 0 {
		l.Interval = 500 * time.Millisecond
	}
	// Given the CA, loadgen mints a media certificate per simulated
	// server, each naming its own server id (agents refuse anything else).
	l.cmd = exec.Command(l.Bin, "loadgen", "--allocators", strings.Join(l.QUICAddrs, ","), "--servers", fmt.Sprint(l.Servers),
		"--interval", l.Interval.String(), "--duration", d.String(), "--id-prefix", l.Prefix, "--ca-dir", l.CertDir)
	l.cmd.Stdout, l.cmd.Stderr = &syncWriter{mu: &l.mu, b: &l.out}, &syncWriter{mu: &l.mu, b: &l.out}
	l.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := l.cmd.Start(); err != nil {
		return fmt.Errorf("start loadgen: %w", err)
	}
	l.done = make(chan struct{})
	go func() { _ = l.cmd.Wait(); close(l.done) }()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		ss, err := cl.Servers(wctx, true)
		n := 0
		for _, s := range ss {
			if strings.HasPrefix(s.ID, l.Prefix) && s.State == "active" {
				n++
			}
		}
		if err == nil && n >= l.Servers {
			l.started = h.Now()
			return nil
		}
		select {
		case <-l.done:
			return fmt.Errorf("loadgen exited before registering its servers:\n%s", l.output())
		case <-wctx.Done():
			return fmt.Errorf("loadgen registered %d of %d servers: %w\n%s", n, l.Servers, wctx.Err(), l.output())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop ends the load generator (SIGINT, then SIGKILL) and records when.
func (l *LoadGen) stop(h *History) {
	if l.cmd == nil || l.cmd.Process == nil {
		return
	}
	l.stopped = h.Now()
	_ = l.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-l.done:
	case <-time.After(10 * time.Second):
		_ = l.cmd.Process.Kill()
		<-l.done
	}
}

func (l *LoadGen) output() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.out.String()
}

// exited reports whether the load generator died before it was stopped.
func (l *LoadGen) exited() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// reporting is what the load generator did for each server: a report
// every Interval from registration until it was stopped. (loadgen prints
// totals only; a server it could not report for shows up in its "not
// sent" count, which the summary quotes.)
func (l *LoadGen) reporting() []Reporting {
	var out []Reporting
	for i := 0; i < l.Servers; i++ {
		r := Reporting{Server: fmt.Sprintf("%s%d", l.Prefix, i)}
		for t := l.started; t <= l.stopped; t += int64(l.Interval) {
			r.Reports = append(r.Reports, t)
		}
		out = append(out, r)
	}
	return out
}

// downEvents lists the load generator's servers seen down in samples, at
// the time the mark was committed (state_changed_at, history clock).
func (l *LoadGen) downEvents(h *History, samples []api.Server) []DownEvent {
	seen := map[string]bool{}
	var out []DownEvent
	for _, s := range samples {
		if !strings.HasPrefix(s.ID, l.Prefix) || s.State != "down" {
			continue
		}
		k := fmt.Sprint(s.ID, s.StateChangedAtUnixMs)
		if seen[k] {
			continue
		}
		seen[k] = true
		at := time.UnixMilli(s.StateChangedAtUnixMs).Sub(h.Start())
		out = append(out, DownEvent{Server: s.ID, At: int64(at)})
	}
	return out
}

type syncWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
