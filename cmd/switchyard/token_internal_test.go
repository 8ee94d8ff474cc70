package main

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// refreshLimiter: concurrent callers share one load; callers within the
// interval of the last one do not load again; after it they do.
func TestRefreshLimiter(t *testing.T) {
	l := &refreshLimiter{every: time.Hour}
	var loads int
	var mu sync.Mutex
	release := make(chan struct{})
	load := func() error {
		mu.Lock()
		loads++
		mu.Unlock()
		<-release
		return errors.New("agents unreachable")
	}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = l.do(load) }()
	}
	time.Sleep(10 * time.Millisecond) // let them queue; the outcome does not depend on it
	close(release)
	wg.Wait()
	failed := 0
	for _, err := range errs {
		if err != nil {
			failed++
		}
	}
	if loads != 1 || failed != 1 {
		t.Fatalf("%d loads, %d callers saw the failure; want 1 and 1", loads, failed)
	}
	l.last = time.Now().Add(-2 * time.Hour)
	if err := l.do(load); err == nil || loads != 2 {
		t.Fatalf("after the interval: %d loads, %v", loads, err)
	}
}
