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
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
