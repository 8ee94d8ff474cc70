package fsm_test

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/switchyard/switchyard/fsm"
	"github.com/switchyard/switchyard/fsm/fsmpb"
)

// A snapshot shares the stored allocation records with the state and is
// persisted after Snapshot returns, while Apply goes on: what it persists
// is the state at the moment it was taken, however the allocations change
// meanwhile (ended, forgotten, new ones), and persisting it races with
// nothing (run with -race).
func TestSnapshotIsTheStateWhenTaken(t *testing.T) {
	a := newApplier(t)
	a.apply(register("s1", 1000), register("s2", 1000))
	var cmds []*fsmpb.Command
	for i := range 300 {
		c := alloc(fmt.Sprintf("r%d", i), fmt.Sprintf("room%d", i%9), fmt.Sprintf("s%d", 1+i%2), 1)
		c.GetAllocate().TtlMs = int64(50 + i%3*1000)
		cmds = append(cmds, c)
	}
	a.apply(cmds...)
	want := a.f.Hash()
	snap, err := a.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	sink := &memSink{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := snap.Persist(sink); err != nil {
			t.Error(err)
		}
	}()
	// Meanwhile: release some, expire others, forget tombstones, add new.
	expire := &fsmpb.Command{Cmd: &fsmpb.Command_Expire{Expire: true}}
	for i := 0; i < 300; i += 3 {
		a.apply(release(fmt.Sprintf("r%d", i)), alloc(fmt.Sprintf("n%d", i), "new", "s1", 1))
		a.f.Hash() // hashing shares the records too
	}
	a.now += 2000
	a.apply(expire)
	a.now += fsm.DefaultTombstoneRetentionMs
	a.apply(expire)
	wg.Wait()
	if a.f.Hash() == want {
		t.Fatal("the state did not change after the snapshot; the test proves nothing")
	}
	g := fsm.New()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if got := g.Hash(); got != want {
		t.Fatalf("restored snapshot hashes %s, the state when it was taken %s", got, want)
	}
}
