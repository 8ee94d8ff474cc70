package main

import (
	"path/filepath"
	"testing"

	"github.com/switchyard/switchyard/fsm"
)

// The example policy the README points to reads as `policy set --file`
// reads it and passes the cluster's validation.
func TestExamplePolicyFile(t *testing.T) {
	p, err := readPolicyFile(filepath.Join("..", "..", "testdata", "policies", "example.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := fsm.ValidatePolicy(p.ToPB()); err != nil {
		t.Fatal(err)
	}
	if p.Strategy != "least-loaded" || p.Weights.CPU != 2 || len(p.Distances) != 1 || p.Provisioning.MinPool != 2 {
		t.Fatalf("read %+v", p)
	}
}
