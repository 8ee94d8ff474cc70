// Package progtest runs an outside program for a test (a real SFU such as
// Janus or livekit-server): started with its output appended to a log
// file, polled until it answers, killed with SIGKILL and reaped.
package progtest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/ports"
)

// Proc is one run of a program; Start may run it again after Kill.
type Proc struct {
	t    testing.TB
	name string // for messages
	log  string // path of the log file
	bin  string
	args []string
	cmd  *exec.Cmd
	done chan struct{}
}

// New describes bin with args, logging to logPath; name is used in
// failure messages. Nothing runs until Start.
func New(t testing.TB, name, logPath, bin string, args ...string) *Proc {
	return &Proc{t: t, name: name, log: logPath, bin: bin, args: args}
}

// Start (re)starts the program and waits until GET url answers (with 200
// when need200), failing the test if the program exits first or within
// passes.
func (p *Proc) Start(url string, need200 bool, within time.Duration) {
	p.t.Helper()
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	p.cmd = exec.Command(p.bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		p.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { _ = c.Wait(); logf.Close(); close(done) }(p.cmd, p.done)
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(within)
	for {
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if !need200 || resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		select {
		case <-p.done:
			p.t.Fatalf("%s exited: %s", p.name, p.Log())
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not answer within %v: %v\n%s", p.name, within, err, p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill kills the process (SIGKILL) and waits for it; a no-op when it is
// not running.
func (p *Proc) Kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	p.cmd = nil
}

// Pid is the running process's id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Log returns the tail of the program's log.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.log)
	s := string(b)
	if len(s) > 3000 {
		s = s[len(s)-3000:]
	}
	return strings.TrimSpace(s)
}

// FreePort returns a free port number on 127.0.0.1 (network "tcp" or
// "udp").
func FreePort(t testing.TB, network string) int {
	_, p, _ := net.SplitHostPort(ports.Free(t, network))
	var n int
	_, _ = fmt.Sscan(p, &n)
	return n
}
