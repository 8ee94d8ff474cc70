package deploy_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/proccluster"
)

// snapshotsIn lists the complete snapshots in an agent's data dir, newest
// first. The agent keeps them in raft's file snapshot store:
// <data dir>/snapshots/<term>-<index>-<millis>/meta.json, written under a
// .tmp name and renamed once complete.
func snapshotsIn(dataDir string) ([]raft.SnapshotMeta, error) {
	dir := filepath.Join(dataDir, "snapshots")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []raft.SnapshotMeta
	for _, e := range entries {
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name(), "meta.json"))
		if errors.Is(err, fs.ErrNotExist) {
			continue // reaped meanwhile (the store keeps the newest two)
		}
		if err != nil {
			return nil, err
		}
		var m raft.SnapshotMeta
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, e.Name(), "meta.json"), err)
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b raft.SnapshotMeta) int {
		if c := cmp.Compare(b.Term, a.Term); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Index, a.Index); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	return out, nil
}

// waitSnapshot waits until p (running) has taken a snapshot of more than
// min entries, so that raft compacted its log behind it, and returns the
// newest.
func waitSnapshot(ctx context.Context, t *testing.T, pc *proccluster.Cluster, p *proccluster.Proc, min uint64) raft.SnapshotMeta {
	t.Helper()
	for {
		snaps, err := snapshotsIn(p.DataDir)
		if err != nil {
			t.Fatal(err)
		}
		if len(snaps) > 0 && snaps[0].Index > min {
			return snaps[0]
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never took a snapshot of more than %d entries (snapshots: %+v)\n%s", p.ID, min, snaps, pc.Logs())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// logRange returns the first and last index of the raft log in a stopped
// agent's data dir. It reads a copy: the data dir is left as the agent
// wrote it.
func logRange(t *testing.T, dataDir string) (first, last uint64) {
	t.Helper()
	src, err := os.Open(filepath.Join(dataDir, "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	cp := filepath.Join(t.TempDir(), "raft.db")
	dst, err := os.Create(cp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	store, err := raftboltdb.NewBoltStore(cp)
	if err != nil {
		t.Fatalf("open a copy of %s: %v", filepath.Join(dataDir, "raft.db"), err)
	}
	defer store.Close()
	if first, err = store.FirstIndex(); err == nil {
		last, err = store.LastIndex()
	}
	if err != nil {
		t.Fatalf("read %s: %v", filepath.Join(dataDir, "raft.db"), err)
	}
	return first, last
}

// waitLogLine waits until p's log, from byte offset on, has a line holding
// every one of parts, and returns it.
func waitLogLine(ctx context.Context, t *testing.T, pc *proccluster.Cluster, p *proccluster.Proc, offset int64, parts ...string) string {
	t.Helper()
	for {
		data, err := os.ReadFile(p.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		if offset <= int64(len(data)) {
			for _, line := range strings.Split(string(data[offset:]), "\n") {
				if !slices.ContainsFunc(parts, func(s string) bool { return !strings.Contains(line, s) }) {
					return line
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s's log has no line with %q\n%s", p.ID, parts, pc.Logs())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// logSize is the size of p's log file (where the next process's output
// starts).
func logSize(t *testing.T, p *proccluster.Proc) int64 {
	t.Helper()
	fi, err := os.Stat(p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// transferLeadership moves leadership to `to` with POST
// /v1/operator/transfer-leader on the current leader, and returns once
// every running node names `to` as the leader. A refusal in the 4xx range
// (no such endpoint, `to` not a voter) fails the test at once; any other
// (an election under way, raft's own "leadership transfer timeout" on a
// busy machine) is asked again until ctx ends, which fails the test too.
func transferLeadership(ctx context.Context, t *testing.T, pc *proccluster.Cluster, to *proccluster.Proc) {
	t.Helper()
	var (
		last error
		by   string // the leader that answered a transfer with success
	)
	for {
		cur, err := pc.WaitLeader(ctx)
		if err != nil {
			t.Fatalf("leadership never reached %s: %v (last transfer answer: %v)\n%s", to.ID, err, last, pc.Logs())
		}
		if cur == to {
			if by == "" {
				by = "no transfer answered: an election"
			}
			t.Logf("every running agent names %s leader (handed over by %s)", to.ID, by)
			return
		}
		tctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		if last = api.NewClient(cur.HTTPAddr).TransferLeader(tctx, to.ID); last == nil {
			by = cur.ID
		}
		cancel()
		var ae *api.APIError
		if errors.As(last, &ae) && ae.Status >= 400 && ae.Status < 500 {
			t.Fatalf("%s refused to hand leadership to %s: %d %v\n%s", cur.ID, to.ID, ae.Status, last, pc.Logs())
		}
		if last != nil {
			t.Logf("hand leadership from %s to %s: %v (asking again)", cur.ID, to.ID, last)
		}
		// Wait for every running node to see the move; if the leader stays
		// put meanwhile, ask again.
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		for l, err := pc.WaitLeader(wctx); err == nil && l != to; l, err = pc.WaitLeader(wctx) {
			time.Sleep(50 * time.Millisecond)
		}
		wcancel()
	}
}
