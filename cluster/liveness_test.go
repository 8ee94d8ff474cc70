package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/testcluster"
)

// busyEnv makes the test binary spin instead of testing (see TestBusyLoop).
const busyEnv = "SWITCHYARD_TEST_BUSY_LOOP"

// TestBusyLoop is not a test: started by startBusy as a child process
// with busyEnv set, it burns one core until its parent kills it.
func TestBusyLoop(t *testing.T) {
	if os.Getenv(busyEnv) == "" {
		t.Skip("helper process for the liveness test")
	}
	deadline := time.Now().Add(2 * time.Minute) // gone even if its parent dies
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
}

// startBusy starts n CPU-bound processes (the neighbours a shared CI
// machine has); they stop when the test ends.
func startBusy(t *testing.T, n int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestBusyLoop$", "-test.count=1")
		cmd.Env = append(os.Environ(), busyEnv+"=1")
		if err := cmd.Start(); err != nil {
			t.Fatalf("start busy loop: %v", err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = cmd.Wait() }()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// TestElectionsStayLiveUnderCPUStarvation runs a 3-node cluster beside
// a busy process (beside the neighbours a shared machine already has:
// more would starve the other packages `go test ./...` runs meanwhile),
// with clients
// allocating through every node, and asserts progress: every allocation
// is acknowledged (each request id granted once) and leadership is held.
// The longest stretch without a leader is logged, not asserted.
func TestElectionsStayLiveUnderCPUStarvation(t *testing.T) {
	startBusy(t, 1)
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := c.Client().RegisterServer(ctx, api.RegisterServerRequest{ID: "m1", Capacity: 1 << 30}); err != nil {
		t.Fatalf("register: %v", err)
	}

	// Watch for leaderless stretches (logged for the record).
	var (
		stop    = make(chan struct{})
		watchWG sync.WaitGroup
		longest time.Duration
		changes int
	)
	watchWG.Add(1)
	go func() {
		defer watchWG.Done()
		t0, last := time.Now(), ""
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			cur := ""
			for _, nd := range c.Running() {
				if nd.Agent.Node.IsLeader() {
					cur = nd.ID
				}
			}
			if cur != "" {
				if cur != last {
					changes++ // a new leader, or the old one again after a gap
				}
				last, t0 = cur, time.Now()
				continue
			}
			last = ""
			if d := time.Since(t0); d > longest {
				longest = d
			}
		}
	}()

	const rounds, perRound = 6, 160
	var acked atomic.Int64
	for r := 0; r < rounds; r++ {
		var wg sync.WaitGroup
		errs := make(chan error, perRound)
		for i := 0; i < perRound; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				nd := c.Nodes[(r+i)%len(c.Nodes)]
				rctx, rcancel := context.WithTimeout(ctx, 45*time.Second)
				defer rcancel()
				_, err := api.NewClient(nd.Cfg.HTTPAddr).WithToken(c.Token).Allocate(rctx, api.AllocateRequest{RequestID: fmt.Sprintf("live-%d-%d", r, i), Room: "r", Units: 1})
				if err != nil {
					errs <- fmt.Errorf("round %d request %d via %s: %w", r, i, nd.ID, err)
					return
				}
				acked.Add(1)
			}()
		}
		wg.Wait()
		close(errs)
		var all []error
		for err := range errs {
			all = append(all, err)
		}
		if len(all) > 0 {
			close(stop)
			watchWG.Wait()
			t.Fatalf("round %d: %d of %d allocations not acknowledged (longest leaderless stretch so far %v): %v", r, len(all), perRound, longest, errors.Join(all...))
		}
	}
	close(stop)
	watchWG.Wait()
	t.Logf("%d allocations acknowledged beside %d busy processes; leaderships %d, longest stretch without a ready leader %v",
		acked.Load(), runtime.NumCPU(), changes, longest.Round(time.Millisecond))
	c.WaitConverged(30 * time.Second)
	for _, nd := range c.Running() {
		s, _ := nd.Agent.Node.FSM().Server("m1")
		if s.UsedUnits != rounds*perRound {
			t.Fatalf("%s: %d units used, want %d (each request granted once)", nd.ID, s.UsedUnits, rounds*perRound)
		}
	}
}
