package cluster_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/proccluster"
)

// TestLeaderHeldBesideBusyLoops is a soak, run only when
// SWITCHYARD_SOAK names its length (e.g. 10m): three agent processes with
// the default raft timing, two CPU-bound processes beside them and a
// moderate allocation load through every agent. Every 25 ms it asks each
// agent for its status; a stretch in which no agent reports itself leader
// is leaderless. It logs the longest stretch, the number of new leader
// terms seen and the allocation rate, and fails if any allocation is not
// acknowledged or a stretch exceeds 2 s. SWITCHYARD_SOAK_ARGS adds agent
// flags (e.g. --raft-silent-failover=false, to compare).
func TestLeaderHeldBesideBusyLoops(t *testing.T) {
	length, err := time.ParseDuration(os.Getenv("SWITCHYARD_SOAK"))
	if err != nil || length <= 0 {
		t.Skip("a soak: set SWITCHYARD_SOAK=10m to run it")
	}
	bin := proccluster.BuildBinary(t)
	c := proccluster.New(t, bin, 3, strings.Fields(os.Getenv("SWITCHYARD_SOAK_ARGS"))...)
	ctx, cancel := context.WithTimeout(context.Background(), length+2*time.Minute)
	defer cancel()
	cl := api.NewClient(c.Addrs()...)
	if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 1 << 40}); err != nil {
		t.Fatalf("register: %v", err)
	}
	for range 2 {
		busy := exec.CommandContext(ctx, "sh", "-c", "while :; do :; done")
		if err := busy.Start(); err != nil {
			t.Fatalf("busy loop: %v", err)
		}
		t.Cleanup(func() { _ = busy.Process.Kill(); _ = busy.Wait() })
	}
	end := time.Now().Add(length)
	var acked, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wcl := api.NewClient(c.Addrs()...)
			for i := 0; time.Now().Before(end); i++ {
				actx, acancel := context.WithTimeout(ctx, 15*time.Second)
				_, err := wcl.Allocate(actx, api.AllocateRequest{RequestID: fmt.Sprintf("soak-%d-%d", w, i), Room: fmt.Sprintf("r%d", w), Units: 1})
				acancel()
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else {
					acked.Add(1)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	var (
		longest, current time.Duration
		since            time.Time
		changes          int
		lastTerm         uint64
		statusErrs       int
		lastErr          error
	)
	status := make([]*api.Client, len(c.Nodes))
	for i, p := range c.Nodes {
		status[i] = api.NewClient(p.HTTPAddr)
		status[i].Retry = false
	}
	for time.Now().Before(end) {
		// A sample counts only when a majority of agents answered: a
		// status call that times out on a starved machine says nothing.
		leader, term, answered := "", uint64(0), 0
		for _, s := range status {
			sctx, scancel := context.WithTimeout(ctx, time.Second)
			st, err := s.Status(sctx)
			scancel()
			if err != nil {
				statusErrs++
				lastErr = err
				continue
			}
			answered++
			if st.State == "Leader" {
				leader, term = st.ID, st.Term
			}
		}
		now := time.Now()
		switch {
		case leader == "" && answered*2 < len(status):
			// unknown
		case leader == "" && since.IsZero():
			since = now
		case leader != "" && !since.IsZero():
			current, since = now.Sub(since), time.Time{}
			longest = max(longest, current)
		}
		if leader != "" && term != lastTerm {
			if lastTerm != 0 {
				changes++
			}
			lastTerm = term
		}
		time.Sleep(25 * time.Millisecond)
	}
	if !since.IsZero() {
		longest = max(longest, time.Since(since))
	}
	wg.Wait()
	t.Logf("soak %v beside two busy loops: %d allocations acknowledged (%.0f/s), %d failed, %d new leader terms, longest stretch without a leader %v (%d status calls failed, last: %v)",
		length, acked.Load(), float64(acked.Load())/length.Seconds(), failed.Load(), changes, longest.Round(time.Millisecond), statusErrs, lastErr)
	if failed.Load() > 0 {
		t.Errorf("%d allocations failed, first: %v", failed.Load(), firstErr.Load())
	}
	if longest > 2*time.Second {
		t.Errorf("longest stretch without a leader %v, want ≤ 2 s\n%s", longest, c.Logs())
	}
}
