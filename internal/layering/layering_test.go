// Package layering holds the test that keeps client packages free of the
// server: the Go SDK, the media node's QUIC client, the media node and the
// sidecars link wire types only.
package layering

import (
	"os/exec"
	"strings"
	"testing"
)

func TestClientsLinkNoServer(t *testing.T) {
	clients := []string{"api", "transport", "errcode", "media", "sidecar"}
	forbidden := []string{
		"github.com/hashicorp/raft",
		"github.com/hashicorp/raft-boltdb",
		"go.etcd.io/bbolt",
		"github.com/boltdb/bolt",
		"github.com/switchyard/switchyard/cluster",
		"github.com/switchyard/switchyard/fsm",
		"github.com/switchyard/switchyard/httpapi",
		"github.com/switchyard/switchyard/quicapi",
	}
	for _, c := range clients {
		t.Run(c, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", "github.com/switchyard/switchyard/"+c).CombinedOutput()
			if err != nil {
				t.Fatalf("go list: %v\n%s", err, out)
			}
			for _, dep := range strings.Fields(string(out)) {
				for _, f := range forbidden {
					if dep == f || strings.HasPrefix(dep, f+"/") && !strings.HasPrefix(dep, "github.com/switchyard/switchyard/fsm/fsmpb") {
						t.Errorf("%s links %s", c, dep)
					}
				}
			}
		})
	}
}
