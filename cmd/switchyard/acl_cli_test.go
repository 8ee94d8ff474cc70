package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/proccluster"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// TestACLOverHTTPSWithRealProcesses runs agent processes with the TLS
// flags (so an HTTPS API) and --acl default-deny, and drives them with the
// CLI: the token contract, roles, revocation, and a media certificate that
// tries to join raft.
func TestACLOverHTTPSWithRealProcesses(t *testing.T) {
	bin := proccluster.BuildBinary(t)
	c := proccluster.NewWithOptions(t, bin, 3, proccluster.Options{QUIC: true, HTTPS: true, ACL: true})
	ca := "--tls-ca=" + filepath.Join(c.CertDir, "ca.pem")
	addr := "--addr=" + strings.Join(c.Addrs(), ",")
	op := "--token=" + c.Token

	// Without the CA (flag or environment) the CLI speaks plain HTTP, which
	// the HTTPS port does not answer.
	plain := exec.Command(bin, "cluster", "status", addr, op, "--timeout=3s")
	plain.Env = append(plain.Environ(), "SWITCHYARD_CACERT=")
	if b, err := plain.CombinedOutput(); err == nil {
		t.Fatalf("plain HTTP against HTTPS succeeded: %s", b)
	}
	if o, e, code := run(t, bin, "acl", "bootstrap", addr, ca); code != 1 || !strings.Contains(e, "already bootstrapped") {
		t.Fatalf("second bootstrap: %d %s %s", code, o, e)
	}
	o, e, code := run(t, bin, "acl", "token", "create", "--role", "allocator", "--description", "e2e", "--ttl", "1h", "--json", addr, ca, op)
	if code != 0 {
		t.Fatalf("token create: %s", e)
	}
	var tok map[string]any
	if err := json.Unmarshal([]byte(o), &tok); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "secret", "role", "description", "expires_at_unix_ms"} {
		if _, ok := tok[k]; !ok {
			t.Fatalf("token create --json lacks %q: %s", k, o)
		}
	}
	alloc := "--token=" + tok["secret"].(string)
	if _, e, code := run(t, bin, "server", "register", "--id", "m1", "--capacity", "5", addr, ca, op); code != 0 {
		t.Fatal(e)
	}
	if _, e, code := run(t, bin, "server", "register", "--id", "m9", "--capacity", "5", addr, ca, alloc); code != 1 || !strings.Contains(e, "permission denied") {
		t.Fatalf("allocator registering a server: %d %s", code, e)
	}
	if o, e, code := run(t, bin, "alloc", "request", "--room", "r", "--units", "1", "--request-id", "e1", addr, ca, alloc); code != 0 {
		t.Fatal(o, e)
	}
	// The environment works as the flag does.
	env := func(args ...string) (string, string, int) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(cmd.Environ(), "SWITCHYARD_TOKEN="+tok["secret"].(string), "SWITCHYARD_CACERT="+filepath.Join(c.CertDir, "ca.pem"))
		var so, se strings.Builder
		cmd.Stdout, cmd.Stderr = &so, &se
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return so.String(), se.String(), code
	}
	if o, e, code := env("alloc", "list", addr); code != 0 || !strings.Contains(o, "e1") {
		t.Fatalf("alloc list with env credentials: %d %s %s", code, o, e)
	}
	if o, _, code := run(t, bin, "acl", "token", "list", "--json", addr, ca, op); code != 0 || strings.Contains(o, tok["secret"].(string)) || !strings.Contains(o, "e2e") {
		t.Fatalf("token list: %d %s", code, o)
	}
	if _, e, code := run(t, bin, "acl", "token", "revoke", tok["id"].(string), addr, ca, op); code != 0 {
		t.Fatal(e)
	}
	if _, e, code := run(t, bin, "alloc", "request", "--room", "r", "--units", "1", "--request-id", "e2", addr, ca, alloc); code != 1 || !strings.Contains(e, "unauthenticated") {
		t.Fatalf("revoked token: %d %s", code, e)
	}

	// A media node's certificate cannot make an agent that joins.
	if _, e, code := run(t, bin, "tls", "cert", "create", "--ca-dir", c.CertDir, "--role", "media", "--name", "evil", "--out", c.CertDir); code != 0 {
		t.Fatal(e)
	}
	refused := func() int {
		n := 0
		for _, p := range c.Nodes {
			req, _ := http.NewRequest("GET", "https://"+p.HTTPAddr+"/metrics", nil)
			req.Header.Set("Authorization", "Bearer "+c.Token)
			tr := api.NewTransport()
			tr.TLSClientConfig = c.ClientTLS
			resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
			if err != nil {
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, `switchyard_http_refused_total{reason="permission_denied"}`) {
					v, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
					n += int(v)
				}
			}
		}
		return n
	}
	before := refused()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	evil := exec.CommandContext(ctx, bin, "agent", "--id", "evil", "--data-dir", t.TempDir(),
		"--raft-addr", testcluster.FreeAddr(t), "--http-addr", testcluster.FreeAddr(t), "--join", strings.Join(c.Addrs(), ","),
		"--tls-ca", filepath.Join(c.CertDir, "ca.pem"), "--tls-cert", filepath.Join(c.CertDir, "evil.pem"), "--tls-key", filepath.Join(c.CertDir, "evil-key.pem"), "--log-level", "debug")
	// No token in its environment: only its certificate speaks for it.
	evil.Env = append(evil.Environ(), "SWITCHYARD_TOKEN=")
	evilLog := &testcluster.LogBuffer{}
	evil.Stderr = evilLog
	if err := evil.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = evil.Process.Kill(); _ = evil.Wait() }()
	testcluster.Eventually(t, 45*time.Second, func() error {
		if n := refused(); n <= before {
			return fmt.Errorf("no join refused yet (%d); the media certificate's agent says:\n%s", n, evilLog.String())
		}
		return nil
	})
	o, e, code = run(t, bin, "cluster", "status", "--json", addr, ca, op)
	if code != 0 || strings.Contains(o, `"evil"`) {
		t.Fatalf("status after the media certificate's join: %d %s %s", code, o, e)
	}
}
