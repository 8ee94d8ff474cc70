package main

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
)

// refreshLimiter: callers that come while a load runs share it (also when
// the load outlasts the interval: one load in all); a caller within the interval of the
// last load's end does not load; after it one does; a caller whose
// context ends stops waiting without ending the load.
func TestRefreshLimiter(t *testing.T) {
	l := &refreshLimiter{every: time.Second}
	var loads atomic.Int32
	release := make(chan struct{})
	load := func() error {
		loads.Add(1)
		<-release // longer than the interval, for as long as the test wants
		return errors.New("agents unreachable")
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	wg.Add(1)
	go func() { defer wg.Done(); errs[0] = l.do(ctx, load) }()
	for loads.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	for i := 1; i < len(errs); i++ {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = l.do(ctx, load) }()
	}
	// The load runs past the interval while the callers wait.
	time.Sleep(l.every + l.every/2)
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.do(gone, load); !errors.Is(err, context.Canceled) {
		t.Fatalf("a caller whose context ended: %v", err)
	}
	close(release)
	wg.Wait()
	if errs[0] == nil {
		t.Fatal("the caller that started the load did not see its failure")
	}
	if n := loads.Load(); n != 1 {
		t.Fatalf("%d loads for callers that came while one ran, want 1", n)
	}
	if err := l.do(ctx, load); err != nil || loads.Load() != 1 {
		t.Fatalf("within the interval of the last load: %v, %d loads", err, loads.Load())
	}
	l.mu.Lock()
	l.last = time.Now().Add(-time.Hour)
	l.mu.Unlock()
	if err := l.do(ctx, load); err == nil || loads.Load() != 2 {
		t.Fatalf("after the interval: %v, %d loads", err, loads.Load())
	}
}

// allocWatchFilter keeps the events of the allocations --room names, and
// the deletion of one it kept even when the deletion carries only the id.
func TestAllocWatchFilter(t *testing.T) {
	keep := allocWatchFilter(api.AllocationListOptions{Room: "r1"})
	ev := func(op, id, room string) api.WatchEvent {
		return api.WatchEvent{Kind: api.WatchAllocation, Op: op, ID: id, Allocation: &api.Allocation{ID: id, Room: room}}
	}
	for i, tc := range []struct {
		ev     api.WatchEvent
		inCopy bool
		want   bool
	}{
		{ev("upsert", "a1", "r1"), true, true},
		{ev("upsert", "a2", "r2"), true, false},
		{ev("delete", "a1", ""), false, true},  // kept before, id only
		{ev("delete", "a2", ""), false, false}, // never kept
		{ev("delete", "a1", ""), false, false}, // already deleted
		{ev("upsert", "a3", "r1"), false, true},
		{ev("delete", "a3", "r1"), false, true},
	} {
		if got := keep(tc.ev, tc.inCopy); got != tc.want {
			t.Errorf("event %d (%s %s room %q): kept %v, want %v", i, tc.ev.Op, tc.ev.ID, tc.ev.Allocation.Room, got, tc.want)
		}
	}
}
