package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/internal/janustest"
	"github.com/switchyard/switchyard/internal/proccluster"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/sidecar"
)

// TestRoomCLI drives `switchyard room` against a process cluster (the
// --json contract, stickiness, exit codes) and, where Janus is installed,
// `switchyard sidecar` as a process: it registers Janus, a placement lands
// there, and SIGTERM drains and deregisters it.
func TestRoomCLI(t *testing.T) {
	bin := proccluster.BuildBinary(t)
	c := proccluster.NewWithOptions(t, bin, 1, proccluster.Options{QUIC: true})
	addr := "--addr=" + strings.Join(c.Addrs(), ",")

	if _, e, code := run(t, bin, "server", "register", "--id", "m1", "--capacity", "4", "--addresses", "http://10.0.0.1:8081", addr); code != 0 {
		t.Fatal(e)
	}
	out, e, code := run(t, bin, "room", "place", "--room", "demo", "--units", "2", "--json", addr)
	if code != 0 {
		t.Fatalf("place: %d %s", code, e)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(r))
	for k := range r {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"allocation_id", "moved", "placed_at_unix_ms", "room", "server", "sfu", "urls", "vacated_reason"}; !slices.Equal(keys, want) {
		t.Fatalf("room place --json keys %v, want %v", keys, want)
	}
	urls := r["urls"].(map[string]any)
	if r["room"] != "demo" || r["server"] != "m1" || r["sfu"] != "switchyard" || r["moved"] != false ||
		urls["whip"] != "http://10.0.0.1:8081/whip/demo" || urls["whep"] != "http://10.0.0.1:8081/whep/demo" {
		t.Fatalf("room place --json: %s", out)
	}
	if again, _, code := run(t, bin, "room", "place", "--room", "demo", "--units", "2", "--json", addr); code != 0 || again != out {
		t.Fatalf("second placement (%d): %s\nfirst: %s", code, again, out)
	}
	out, _, code = run(t, bin, "room", "list", "--json", addr)
	var list []map[string]any
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil || len(list) != 1 || list[0]["room"] != "demo" {
		t.Fatalf("room list: %d %s %v", code, out, err)
	}
	if out, _, code = run(t, bin, "room", "get", "demo", addr); code != 0 || !strings.Contains(out, `"allocation_id"`) {
		t.Fatalf("room get: %d %s", code, out)
	}
	if _, e, code = run(t, bin, "room", "place", "--room", "x", "--sfu", "jitsi", addr); code != 2 || !strings.Contains(e, "jitsi") {
		t.Fatalf("unknown kind: %d %s", code, e)
	}
	if _, e, code = run(t, bin, "room", "place", "--room", "x", "--sfu", "janus", addr); code != 1 || !strings.Contains(e, "no janus server") {
		t.Fatalf("no janus server: %d %s", code, e)
	}
	if out, _, code = run(t, bin, "room", "release", "demo", "--json", addr); code != 0 || !strings.Contains(out, `"released": true`) {
		t.Fatalf("release: %d %s", code, out)
	}
	if out, _, code = run(t, bin, "room", "release", "demo", addr); code != 0 || !strings.Contains(out, "was not placed") {
		t.Fatalf("second release: %d %s", code, out)
	}
	if _, _, code = run(t, bin, "room", "get", "demo", addr); code != 1 {
		t.Fatalf("get of a released room exits %d", code)
	}

	t.Run("janus sidecar", func(t *testing.T) {
		jbin, lib := janustest.Need(t)
		j := janustest.New(t, jbin, lib, "41200-41299")
		dir := t.TempDir()
		if _, e, code := run(t, bin, "tls", "cert", "create", "--ca-dir", c.CertDir, "--role", "media", "--name", "j1", "--out", dir); code != 0 {
			t.Fatal(e)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		sc := startStreamed(t, ctx, bin, "sidecar", "--sfu", "janus", "--id", "j1", "--allocators", strings.Join(c.Addrs(), ","), "--quic-allocators", c.Nodes[0].QUICAddr,
			"--capacity", "5", "--tls-ca", filepath.Join(c.CertDir, "ca.pem"), "--tls-cert", filepath.Join(dir, "j1.pem"), "--tls-key", filepath.Join(dir, "j1-key.pem"),
			"--janus-url", j.URL(), "--janus-admin-url", j.AdminURL(), "--janus-admin-secret", j.Secret, "--sfu-pid", strconv.Itoa(j.Pid()))
		cl := api.NewClient(c.Addrs()...)
		testcluster.Eventually(t, 60*time.Second, func() error {
			s, err := cl.Server(ctx, "j1", false)
			if err != nil {
				return err
			}
			if s.State != "active" {
				return fmt.Errorf("j1 is %s", s.State)
			}
			return nil
		})
		out, e, code := run(t, bin, "room", "place", "--room", "talk", "--sfu", "janus", "--wait-ready", "20s", "--json", addr)
		if code != 0 {
			t.Fatalf("place on janus: %d %s", code, e)
		}
		var r api.Room
		if err := json.Unmarshal([]byte(out), &r); err != nil || r.Server != "j1" || r.SFU != fsm.SFUJanus || r.URLs["url"] != j.URL() || r.URLs["room"] == nil {
			t.Fatalf("janus placement: %s %v", out, err)
		}
		// --wait-ready returned: the VideoRoom exists on Janus.
		jc, _ := sidecar.NewJanus(sidecar.JanusConfig{URL: j.URL()})
		st, err := jc.Poll(ctx)
		if err != nil || len(st.Rooms) != 1 || st.Rooms[0].Name != "talk" || float64(st.Rooms[0].Number) != r.URLs["room"] {
			t.Fatalf("janus rooms after --wait-ready: %+v %v", st, err)
		}
		// SIGTERM drains: the room is released, j1 deregistered, exit 0.
		if err := sc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		for range sc.lines {
		}
		if err := sc.cmd.Wait(); err != nil {
			t.Fatalf("sidecar exit: %v\n%s", err, sc.stderr)
		}
		if _, err := cl.Server(ctx, "j1", false); !errors.Is(err, fsm.ErrNotFound) {
			t.Fatalf("j1 after the drain: %v", err)
		}
		if _, err := cl.Room(ctx, "talk"); !errors.Is(err, fsm.ErrNotFound) {
			t.Fatalf("room after the drain: %v", err)
		}
	})
}
