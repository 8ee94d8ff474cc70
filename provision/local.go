package provision

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Local starts each provisioned media node as a local process, for
// `switchyard dev`: `<Binary> media --id <server id> --allocators
// <cluster> --http-addr <Host>:<free port> --capacity <capacity> [--region
// <region>] <ExtraArgs...>`. It coordinates with the media node only
// through that command line (and the node's own registration).
//
// Deprovision sends SIGTERM (the media node drains, deregisters and exits)
// and kills the process if it has not exited when the context ends.
// Processes this provider did not start (e.g. before a restart) cannot be
// stopped by it. Close stops every process it started.
type Local struct {
	// Binary is the switchyard executable; empty means this process's.
	Binary string
	// Host is the address media nodes listen on; empty means 127.0.0.1.
	Host string
	// ExtraArgs are appended to every media command line.
	ExtraArgs []string
	// Logger receives the processes' lifecycle; nil discards.
	Logger *slog.Logger
	// Output, if set, receives the processes' stdout and stderr.
	Output *os.File

	mu     sync.Mutex
	procs  map[string]*localProc
	closed bool
}

type localProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	out  *lockedBuffer
}

// lockedBuffer keeps the tail of a process's output for error messages.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 64<<10 {
		b.buf.Reset()
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// Name implements Provider.
func (l *Local) Name() string { return "local" }

// earlyExit is how long Provision watches a new process: one that exits
// within it is reported as a failure with its output.
const earlyExit = 500 * time.Millisecond

// Provision implements Provider: it starts the process and returns once it
// has survived earlyExit (or ctx ended).
func (l *Local) Provision(ctx context.Context, spec Spec) error {
	bin := l.Binary
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return fmt.Errorf("%w: local: find own executable: %w", ErrProvider, err)
		}
	}
	if len(spec.Cluster) == 0 {
		return fmt.Errorf("%w: local: no allocator addresses to register with", ErrProvider)
	}
	host := l.Host
	if host == "" {
		host = "127.0.0.1"
	}
	port, err := freePort(host)
	if err != nil {
		return fmt.Errorf("%w: local: %w", ErrProvider, err)
	}
	capacity := spec.Capacity
	if capacity <= 0 {
		capacity = max(spec.Units, 1)
	}
	args := []string{"media", "--id", spec.ServerID, "--allocators", joinComma(spec.Cluster),
		"--http-addr", net.JoinHostPort(host, strconv.Itoa(port)), "--capacity", strconv.FormatInt(capacity, 10)}
	if spec.Region != "" {
		args = append(args, "--region", spec.Region)
	}
	args = append(args, l.ExtraArgs...)
	// Not CommandContext: the media node outlives this call.
	cmd := exec.Command(bin, args...)
	p := &localProc{cmd: cmd, done: make(chan struct{}), out: &lockedBuffer{}}
	if l.Output != nil {
		cmd.Stdout, cmd.Stderr = l.Output, l.Output
	} else {
		cmd.Stdout, cmd.Stderr = p.out, p.out
	}
	// Start and record under the lock, so Close never misses a process.
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return fmt.Errorf("%w: local: provider is closed", ErrProvider)
	}
	if err := cmd.Start(); err != nil {
		l.mu.Unlock()
		return fmt.Errorf("%w: local: start %s: %w", ErrProvider, bin, err)
	}
	if l.procs == nil {
		l.procs = map[string]*localProc{}
	}
	l.procs[spec.ServerID] = p
	l.mu.Unlock()
	go func() { p.err = cmd.Wait(); close(p.done) }()
	l.log().Info("media node process started", "server", spec.ServerID, "pid", cmd.Process.Pid, "args", args)
	select {
	case <-p.done:
		l.mu.Lock()
		if l.procs[spec.ServerID] == p {
			delete(l.procs, spec.ServerID)
		}
		l.mu.Unlock()
		return fmt.Errorf("%w: local: media node %s exited at once: %v: %s", ErrProvider, spec.ServerID, p.err, tail(p.out.Bytes(), 512))
	case <-time.After(earlyExit):
	case <-ctx.Done():
	}
	return nil
}

// Deprovision implements Provider.
func (l *Local) Deprovision(ctx context.Context, spec Spec) error {
	l.mu.Lock()
	p := l.procs[spec.ServerID]
	delete(l.procs, spec.ServerID)
	l.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%w: local: media node %s was not started by this process", ErrProvider, spec.ServerID)
	}
	return stopProc(ctx, p)
}

func stopProc(ctx context.Context, p *localProc) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%w: local: media node did not exit after SIGTERM; killed: %w", ErrProvider, ctx.Err())
	}
}

// Close stops every process this provider started, bounded by ctx; later
// Provision calls fail.
func (l *Local) Close(ctx context.Context) error {
	l.mu.Lock()
	ps := l.procs
	l.procs = nil
	l.closed = true
	l.mu.Unlock()
	var errs []error
	for _, p := range ps {
		if err := stopProc(ctx, p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (l *Local) log() *slog.Logger {
	if l.Logger != nil {
		return l.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func joinComma(s []string) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += ","
		}
		out += v
	}
	return out
}
