package main_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/agent"
	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/ports"
	"github.com/switchyard/switchyard/internal/proccluster"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/pki"
)

// The tls commands write a CA and certificates that an agent cluster
// trusts: loadgen, given that CA, mints a media certificate per simulated
// server, registers its servers and reports over QUIC, and the cluster
// shows their load.
func TestTLSCommandsAndLoadgen(t *testing.T) {
	bin := proccluster.BuildBinary(t)
	dir := t.TempDir()
	if _, e, code := run(t, bin, "tls", "ca", "create", "--out", dir); code != 0 {
		t.Fatal(e)
	}
	if _, e, code := run(t, bin, "tls", "ca", "create", "--out", dir); code == 0 {
		t.Fatal("overwrote an existing CA key")
	} else if !strings.Contains(e, "refusing") {
		t.Fatalf("stderr %q", e)
	}
	if _, e, code := run(t, bin, "tls", "cert", "create", "--ca-dir", dir, "--name", "lg", "--out", dir); code != 0 {
		t.Fatal(e)
	}
	for _, f := range []string{"ca.pem", "ca-key.pem", "lg.pem", "lg-key.pem"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, code := run(t, bin, "tls", "cert", "create", "--ca-dir", dir); code != 2 {
		t.Fatalf("missing flags: exit %d, want 2", code)
	}

	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := testcluster.New(t, 3, testcluster.Options{Mutate: func(i int, cfg *agent.Config) {
		certPEM, keyPEM, err := ca.Issue(cfg.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.TLS, err = pki.NewIdentity(ca.CertPEM, certPEM, keyPEM); err != nil {
			t.Fatal(err)
		}
		cfg.FailureWindow = -1
	}})
	// --allocators takes either kind of address: the first agent by its
	// HTTP API address (resolved to its QUIC address), the others by QUIC.
	mixed := append([]string{c.Addrs()[0]}, c.QUICAddrs()[1:]...)
	// Given the CA directory, loadgen mints a media certificate per
	// simulated server.
	out, e, code := run(t, bin, "loadgen", "--allocators", strings.Join(mixed, ","), "--servers", "30",
		"--interval", "100ms", "--duration", "2s", "--alloc-rate", "20", "--id-prefix", "lg-", "--ca-dir", dir)
	if code != 0 {
		t.Fatalf("loadgen exit %d: %s\n%s", code, out, e)
	}
	for _, want := range []string{"registered:   30 ok, 0 failed", "reports sent:", "allocations:"} {
		if !strings.Contains(out, want) {
			t.Fatalf("summary lacks %q:\n%s", want, out)
		}
	}
	// The same with the CA given as two files.
	out, e, code = run(t, bin, "loadgen", "--allocators", strings.Join(c.QUICAddrs(), ","), "--servers", "2",
		"--interval", "100ms", "--duration", "500ms", "--id-prefix", "lgk-",
		"--tls-ca", filepath.Join(dir, "ca.pem"), "--tls-ca-key", filepath.Join(dir, "ca-key.pem"))
	if code != 0 || !strings.Contains(out, "registered:   2 ok, 0 failed") {
		t.Fatalf("loadgen --tls-ca-key exit %d: %s\n%s", code, out, e)
	}
	// Mixing the CA key with a shared certificate is a usage error.
	if _, _, code := run(t, bin, "loadgen", "--allocators", c.QUICAddrs()[0], "--ca-dir", dir,
		"--tls-cert", filepath.Join(dir, "lg.pem"), "--tls-key", filepath.Join(dir, "lg-key.pem")); code != 2 {
		t.Fatalf("loadgen --ca-dir with --tls-cert: exit %d, want 2", code)
	}
	if _, _, code := run(t, bin, "loadgen", "--allocators", c.QUICAddrs()[0], "--tls-ca-key", filepath.Join(dir, "ca-key.pem")); code != 2 {
		t.Fatalf("loadgen --tls-ca-key without --tls-ca: exit %d, want 2", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	raw, err := c.Client().ServersRaw(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	withLoad := 0
	for _, s := range raw {
		if s["load"] != nil {
			withLoad++
		}
	}
	if len(raw) != 32 || withLoad < 30 {
		t.Fatalf("%d servers, %d with load", len(raw), withLoad)
	}
	// Without TLS flags loadgen refuses to start.
	if _, _, code := run(t, bin, "loadgen", "--allocators", c.QUICAddrs()[0]); code != 2 {
		t.Fatalf("loadgen without TLS: exit %d, want 2", code)
	}

	// A media node given the agents' HTTP addresses (the issue's contract)
	// and TLS flags finds their QUIC addresses itself and reports over QUIC.
	if _, e, code := run(t, bin, "tls", "cert", "create", "--ca-dir", dir, "--role", "media", "--name", "mq", "--out", dir); code != 0 {
		t.Fatal(e)
	}
	mctx, mcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer mcancel()
	media := exec.CommandContext(mctx, bin, "media", "--id", "mq", "--capacity", "3", "--allocators", strings.Join(c.Addrs(), ","),
		"--http-addr", ports.Free(t, "tcp"), "--log-level", "warn",
		"--tls-ca", filepath.Join(dir, "ca.pem"), "--tls-cert", filepath.Join(dir, "mq.pem"), "--tls-key", filepath.Join(dir, "mq-key.pem"))
	// It reads the member table over the plain HTTP API, where its
	// certificate does not speak for it: with a media token bound to its id.
	mtok, err := c.Client().ACLCreateToken(mctx, api.CreateTokenRequest{Role: "media", Server: "mq", Description: "media node mq"})
	if err != nil {
		t.Fatal(err)
	}
	media.Env = append(media.Environ(), api.TokenEnv+"="+mtok.Secret)
	merr := &testcluster.LogBuffer{} // read while the process writes
	media.Stderr = merr
	if err := media.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = media.Process.Kill(); _ = media.Wait() }()
	testcluster.Eventually(t, 30*time.Second, func() error {
		raw, err := c.Client().ServersRaw(mctx, false)
		if err != nil {
			return err
		}
		for _, s := range raw {
			if s["id"] == "mq" && s["load"] != nil {
				return nil
			}
		}
		return fmt.Errorf("media node mq has no load report in the leader's view yet (stderr: %s)", merr.String())
	})
}
