package main_test

import (
	"bufio"
	"context"
	"os/exec"
	"testing"

	"github.com/switchyard/switchyard/internal/testcluster"
)

// streamed is a running switchyard process whose stdout arrives line by
// line on lines (closed at EOF) and whose stderr collects in stderr.
type streamed struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr *testcluster.LogBuffer
}

// startStreamed starts bin with args under ctx.
func startStreamed(t *testing.T, ctx context.Context, bin string, args ...string) *streamed {
	t.Helper()
	return startStreamedEnv(t, ctx, nil, bin, args...)
}

// startStreamedEnv is startStreamed with env added to the process's
// environment (which it inherits).
func startStreamedEnv(t *testing.T, ctx context.Context, env []string, bin string, args ...string) *streamed {
	t.Helper()
	s := &streamed{cmd: exec.CommandContext(ctx, bin, args...), lines: make(chan string, 100), stderr: &testcluster.LogBuffer{}}
	if env != nil {
		s.cmd.Env = append(s.cmd.Environ(), env...)
	}
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	return s
}
