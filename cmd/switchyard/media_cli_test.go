package main_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/proccluster"
	"github.com/switchyard/switchyard/internal/testcluster"
	"github.com/switchyard/switchyard/pki"
)

// TestMediaCommand runs `switchyard media` as its own process against a
// cluster: bad flags exit 2; a good start registers the node with its
// base URL, serves the demo page, and SIGTERM drains it, deregisters it and
// exits 0.
func TestMediaCommand(t *testing.T) {
	bin := proccluster.BuildBinary(t)
	if _, e, code := run(t, bin, "media", "--capacity", "3"); code != 2 || !strings.Contains(e, "--id") {
		t.Fatalf("media without --id: exit %d, %s", code, e)
	}
	if _, e, code := run(t, bin, "media", "--id", "x", "--capacity", "3", "--quic-allocators", "127.0.0.1:1"); code != 2 || !strings.Contains(e, "tls") {
		t.Fatalf("media --quic-allocators without TLS: exit %d, %s", code, e)
	}
	c := testcluster.New(t, 3)
	httpAddr := testcluster.FreeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// Over the plain HTTP API the media node acts with a media token bound
	// to its id (SWITCHYARD_TOKEN), as it must where ACLs are on.
	proc := startStreamedEnv(t, ctx, []string{api.TokenEnv + "=" + c.MediaToken("mx")}, bin, "media", "--id", "mx", "--allocators", strings.Join(c.Addrs(), ","),
		"--http-addr", httpAddr, "--capacity", "3", "--log-level", "warn")
	cmd, lines, stderr := proc.cmd, proc.lines, proc.stderr
	select {
	case l := <-lines:
		if !strings.Contains(l, "http://"+httpAddr+"/") {
			t.Fatalf("first line %q does not name the demo page", l)
		}
	case <-ctx.Done():
		t.Fatalf("no start line: %s", stderr.String())
	}
	cli := c.Client()
	testcluster.Eventually(t, 30*time.Second, func() error {
		ss, err := cli.Servers(ctx, false)
		if err != nil {
			return err
		}
		for _, s := range ss {
			if s.ID == "mx" && len(s.Addresses) == 1 && s.Addresses[0] == "http://"+httpAddr {
				return nil
			}
		}
		return fmt.Errorf("mx not registered with its URL: %+v", ss)
	})
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("media did not exit cleanly on SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("media did not exit within 60s of SIGTERM")
	}
	ss, err := cli.Servers(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ss {
		if s.ID == "mx" {
			t.Fatalf("mx still registered after SIGTERM: %+v", s)
		}
	}
}

// TestMediaCommandQUICAddrs runs `switchyard media` with the TLS flags and
// --allocators naming the agents by QUIC address only: the node registers
// over QUIC with its base URL and its load reports reach the cluster;
// SIGTERM still drains it and it exits 0. Without the TLS flags the same
// addresses are a usage error, and so they are for the sidecar, which
// needs the HTTP API.
func TestMediaCommandQUICAddrs(t *testing.T) {
	bin := proccluster.BuildBinary(t)
	c := testcluster.New(t, 3)
	dir := t.TempDir()
	if err := c.CA.WriteCA(dir); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := c.CA.IssueRoleFiles("mq", pki.RoleMedia, nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	quicAddrs := strings.Join(c.QUICAddrs(), ",")
	if _, e, code := run(t, bin, "media", "--id", "mq", "--capacity", "3", "--allocators", "quic://"+c.QUICAddrs()[0]); code != 2 || !strings.Contains(e, "QUIC address") {
		t.Fatalf("media with a QUIC address and no TLS flags: exit %d, %s", code, e)
	}
	tlsArgs := []string{"--tls-ca", filepath.Join(dir, pki.CACertFile), "--tls-cert", certFile, "--tls-key", keyFile}
	// The sidecar reads its rooms over HTTP: QUIC addresses alone are a
	// usage error there.
	if _, e, code := run(t, bin, append([]string{"sidecar", "--sfu", "livekit", "--id", "mq", "--capacity", "3", "--allocators", quicAddrs}, tlsArgs...)...); code != 2 || !strings.Contains(e, "name at least one agent by its HTTP address") {
		t.Fatalf("sidecar with QUIC addresses only: exit %d, %s", code, e)
	}
	httpAddr := testcluster.FreeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	proc := startStreamed(t, ctx, bin, "media", "--id", "mq", "--allocators", quicAddrs,
		"--tls-ca", filepath.Join(dir, pki.CACertFile), "--tls-cert", certFile, "--tls-key", keyFile,
		"--http-addr", httpAddr, "--capacity", "3", "--log-level", "warn")
	select {
	case l := <-proc.lines:
		if !strings.Contains(l, "http://"+httpAddr+"/") {
			t.Fatalf("first line %q does not name the demo page; stderr:\n%s", l, proc.stderr.String())
		}
	case <-ctx.Done():
		t.Fatalf("no start line: %s", proc.stderr.String())
	}
	cli := c.Client()
	testcluster.Eventually(t, 30*time.Second, func() error {
		raw, err := cli.ServersRaw(ctx, false)
		if err != nil {
			return err
		}
		for _, s := range raw {
			if s["id"] != "mq" {
				continue
			}
			addrs, _ := s["addresses"].([]any)
			load, _ := s["load"].(map[string]any)
			if len(addrs) != 1 || addrs[0] != "http://"+httpAddr {
				return fmt.Errorf("mq registered with %v", s["addresses"])
			}
			if load == nil || load["seq"] == nil || load["free_units"] != float64(3) {
				return fmt.Errorf("no load report from mq yet: %v", s["load"])
			}
			return nil
		}
		return fmt.Errorf("mq not registered: %v", raw)
	})
	_ = proc.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- proc.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("media did not exit cleanly on SIGTERM: %v\n%s", err, proc.stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("media did not exit within 60s of SIGTERM")
	}
}
