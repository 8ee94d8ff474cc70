package provision_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/provision"
)

// TestLocal runs a stand-in for `switchyard media` that records its
// arguments and waits for SIGTERM.
func TestLocal(t *testing.T) {
	dir := t.TempDir()
	args := filepath.Join(dir, "args")
	bin := writeScript(t, `echo "$@" > `+args+`
trap 'echo term >> `+args+`; exit 0' TERM
while true; do sleep 0.05; done`)
	l := &provision.Local{Binary: bin}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := spec()
	if err := l.Provision(ctx, s); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(args)
	got := strings.TrimSpace(string(b))
	if !strings.HasPrefix(got, "media --id prov-9-0 --allocators 127.0.0.1:7501 --http-addr 127.0.0.1:") || !strings.HasSuffix(got, "--capacity 100 --region eu-west") {
		t.Fatalf("media args %q", got)
	}
	if err := l.Deprovision(ctx, s); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(args); !strings.HasSuffix(strings.TrimSpace(string(b)), "term") {
		t.Fatalf("no SIGTERM seen: %q", b)
	}
	if err := l.Deprovision(ctx, s); !errors.Is(err, provision.ErrProvider) {
		t.Fatalf("second deprovision: %v", err)
	}
	// A media node that exits at once is a provider failure with its output.
	bad := &provision.Local{Binary: writeScript(t, `echo "bind: address already in use" >&2; exit 1`)}
	if err := bad.Provision(ctx, s); !errors.Is(err, provision.ErrProvider) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("early exit: %v", err)
	}
	// Close stops a process still inside its start-up watch, and later
	// starts are refused: nothing is left running.
	done := make(chan error, 1)
	s2 := s
	s2.ServerID = "prov-10-0"
	go func() { done <- l.Provision(ctx, s2) }()
	peventuallyArgs(t, args, "prov-10-0")
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	<-done
	if b, _ := os.ReadFile(args); !strings.HasSuffix(strings.TrimSpace(string(b)), "term") {
		t.Fatalf("process not stopped by Close: %q", b)
	}
	if err := l.Provision(ctx, s); !errors.Is(err, provision.ErrProvider) {
		t.Fatalf("provision after close: %v", err)
	}
}

func peventuallyArgs(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(path); strings.Contains(string(b), want) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s never mentioned %s", path, want)
}
