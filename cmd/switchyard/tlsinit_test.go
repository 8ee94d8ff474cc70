package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/pki"
)

func runTLSInit(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newTLSInitCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// TestTLSInitIsIdempotent: the first run makes the CA and certificates
// that chain to it; a second run with one more name keeps everything and
// adds that one; a partial CA is refused.
func TestTLSInitIsIdempotent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	if out, err := runTLSInit(t, "--out", dir, "--names", "n1, m1"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	ca1, _ := os.ReadFile(filepath.Join(dir, pki.CACertFile))
	n1, _ := os.ReadFile(filepath.Join(dir, "n1.pem"))
	out, err := runTLSInit(t, "--out", dir, "--names", "n1,m1,m2")
	if err != nil || !strings.Contains(out, "CA: kept") || !strings.Contains(out, "n1: kept") || !strings.Contains(out, "m2: wrote") {
		t.Fatalf("second run: %v: %s", err, out)
	}
	ca2, _ := os.ReadFile(filepath.Join(dir, pki.CACertFile))
	n1b, _ := os.ReadFile(filepath.Join(dir, "n1.pem"))
	if !bytes.Equal(ca1, ca2) || !bytes.Equal(n1, n1b) {
		t.Fatal("a second run replaced existing material")
	}
	for _, n := range []string{"n1", "m1", "m2"} {
		if _, err := pki.LoadIdentity(filepath.Join(dir, pki.CACertFile), filepath.Join(dir, n+".pem"), filepath.Join(dir, n+"-key.pem")); err != nil {
			t.Fatalf("identity %s: %v", n, err)
		}
	}
	if err := os.Remove(filepath.Join(dir, pki.CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if out, err := runTLSInit(t, "--out", dir, "--names", "n1"); err == nil || !strings.Contains(err.Error(), "partial") {
		t.Fatalf("partial CA accepted: %v %s", err, out)
	}
	if _, err := runTLSInit(t, "--out", dir, "--names", "../x"); err == nil {
		t.Fatal("a name with a path separator was accepted")
	}
}
