package provision_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/provision"
)

func spec() provision.Spec {
	return provision.Spec{IntentID: "p-9-0", ServerID: "prov-9-0", Region: "eu-west", Units: 6, Capacity: 100,
		RequestIDs: []string{"q1", "q2"}, Rooms: []string{"r"}, Cluster: []string{"127.0.0.1:7501"}}
}

func writeScript(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "p.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExecPassesEnvAndJSON(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	sh := writeScript(t, `{ echo "$SWITCHYARD_ACTION|$SWITCHYARD_SERVER_ID|$SWITCHYARD_UNITS|$SWITCHYARD_REQUEST_IDS|$SWITCHYARD_CLUSTER|$EXTRA"; cat; } > `+out)
	e := &provision.Exec{Command: sh, Env: []string{"EXTRA=x"}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Deprovision(ctx, spec()); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	first, rest, _ := strings.Cut(string(b), "\n")
	if first != "deprovision|prov-9-0|6|q1,q2|127.0.0.1:7501|x" {
		t.Fatalf("env line %q", first)
	}
	var got provision.Spec
	if err := json.Unmarshal([]byte(rest), &got); err != nil || got.Action != "deprovision" || got.ServerID != "prov-9-0" || len(got.RequestIDs) != 2 {
		t.Fatalf("stdin %q: %+v %v", rest, got, err)
	}
}

func TestExecBackgroundChildIsAccepted(t *testing.T) {
	// A provider that starts the media node in the background and exits 0.
	e := &provision.Exec{Command: writeScript(t, `sleep 5 &
echo started`)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := e.Provision(ctx, spec()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("waited %v for the background child", d)
	}
}

func TestExecErrors(t *testing.T) {
	tests := []struct {
		name    string
		exec    *provision.Exec
		timeout time.Duration
		msg     string
	}{
		{"no command", &provision.Exec{}, time.Second, "no command configured"},
		{"missing binary", &provision.Exec{Command: "/nonexistent/provider"}, time.Second, "no such file"},
		{"non-zero exit", &provision.Exec{Command: writeScript(t, `echo "no capacity in region" >&2; exit 2`)}, 5 * time.Second, "exit status 2: no capacity in region"},
		{"hangs", &provision.Exec{Command: writeScript(t, `sleep 30`)}, 300 * time.Millisecond, "gave up after the deadline"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			start := time.Now()
			err := tc.exec.Provision(ctx, spec())
			if !errors.Is(err, provision.ErrProvider) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want ErrProvider containing %q", err, tc.msg)
			}
			if d := time.Since(start); d > tc.timeout+2*time.Second {
				t.Fatalf("returned after %v", d)
			}
		})
	}
}

func TestWebhook(t *testing.T) {
	var got provision.Spec
	var auth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &got)
		switch got.ServerID {
		case "slow":
			time.Sleep(2 * time.Second)
		case "refuse":
			http.Error(w, "project over quota", http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	w := &provision.Webhook{URL: srv.URL, Header: http.Header{"Authorization": {"Bearer t"}}}
	ctx := context.Background()
	if err := w.Provision(ctx, spec()); err != nil {
		t.Fatal(err)
	}
	if got.Action != "provision" || got.IntentID != "p-9-0" || auth != "Bearer t" {
		t.Fatalf("webhook got %+v auth %q", got, auth)
	}
	s := spec()
	s.ServerID = "refuse"
	if err := w.Provision(ctx, s); !errors.Is(err, provision.ErrProvider) || !strings.Contains(err.Error(), "403 Forbidden: project over quota") {
		t.Fatalf("refused: %v", err)
	}
	s.ServerID = "slow"
	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := w.Deprovision(tctx, s); !errors.Is(err, provision.ErrProvider) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow: %v", err)
	}
	if err := (&provision.Webhook{}).Provision(ctx, s); !errors.Is(err, provision.ErrProvider) {
		t.Fatalf("no url: %v", err)
	}
}
