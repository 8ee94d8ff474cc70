package deploy_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/cluster"
	"github.com/switchyard/switchyard/internal/proccluster"
)

// upgradeFrom is the earlier release the rolling-upgrade test starts from:
// the last commit of main before the request-path rework (service layer,
// errcode, coalesced forwarding). Move it forward when the log, snapshot
// or API format changes, so every pair of adjacent formats is proven.
const upgradeFrom = "3ab365322beb8fbf1fd0a6132e37f00f30de37de"

// repoRoot is the module's root directory.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..")
}

// buildAt builds ./cmd/switchyard as of commit into dir, from `git
// archive` (the working tree is untouched). It skips the test when the
// clone does not hold the commit (a shallow clone).
func buildAt(t *testing.T, commit, dir string) string {
	t.Helper()
	root := repoRoot()
	if _, err := exec.LookPath("git"); err != nil {
		skipOrFail(t, "git is not installed: the rolling-upgrade test builds an earlier release from the repository")
	}
	if out, err := exec.Command("git", "-C", root, "cat-file", "-e", commit+"^{commit}").CombinedOutput(); err != nil {
		// A shallow clone, or a source tree without history: there is no
		// earlier release to build (not a missing program, so a skip in
		// CI as well).
		t.Skipf("commit %s is not in this clone (%v %s): the rolling-upgrade test builds that release", commit, err, out)
	}
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	archive := exec.Command("sh", "-c", fmt.Sprintf("git -C %q archive %s | tar -x -C %q", root, commit, src))
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v\n%s", commit, err, out)
	}
	bin := filepath.Join(dir, "switchyard-"+commit[:8])
	build := exec.Command("go", "build", "-o", bin, "./cmd/switchyard")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", commit, err, out)
	}
	return bin
}

func skipOrFail(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// A rolling upgrade under allocation load: three agents of the earlier
// release, replaced one at a time by this build (followers first, then the
// leader, which hands leadership over on SIGTERM). Every allocation
// acknowledged before, during and after is in the final state exactly
// once, allocations keep being granted throughout, and every node ends
// with the same state hash.
func TestRollingUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an earlier release and runs a cluster through an upgrade")
	}
	oldBin := buildAt(t, upgradeFrom, t.TempDir())
	newBin := switchyardBinary(t)
	pc := proccluster.New(t, oldBin, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if _, err := pc.WaitLeader(ctx); err != nil {
		t.Fatalf("%v\n%s", err, pc.Logs())
	}
	cl := api.NewClient(pc.Addrs()...)
	for _, id := range []string{"m1", "m2"} {
		if _, err := cl.RegisterServer(ctx, api.RegisterServerRequest{ID: id, Capacity: 1 << 30}); err != nil {
			t.Fatal(err)
		}
	}
	// The earlier release does not filter lists by state: the SDK says so
	// rather than passing its unfiltered answer off as filtered.
	draining := api.ServerListOptions{States: []string{api.ServerDraining}}
	if _, err := cl.FilteredServersPage(ctx, draining, api.PageOptions{}); !errors.Is(err, api.ErrFilterIgnored) {
		t.Fatalf("state filter on the earlier release: %v, want ErrFilterIgnored", err)
	}
	onlyM2 := api.ServerListOptions{Prefix: "m2"}
	if _, err := cl.FilteredServersPage(ctx, onlyM2, api.PageOptions{}); !errors.Is(err, api.ErrFilterIgnored) {
		t.Fatalf("id prefix filter on the earlier release: %v, want ErrFilterIgnored", err)
	}

	// Load: four clients, each spread over all agents, allocating with
	// fresh request ids until told to stop. An attempt that fails is sent
	// again with the same request id (the SDK retries retryable refusals
	// itself; this loop outlasts a whole restart).
	var (
		mu    sync.Mutex
		acked = map[string]string{} // request id -> allocation id
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := api.NewClient(pc.Addrs()...)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				rid := fmt.Sprintf("up-%d-%d", w, i)
				for {
					actx, acancel := context.WithTimeout(ctx, 20*time.Second)
					a, err := c.Allocate(actx, api.AllocateRequest{RequestID: rid, Room: fmt.Sprintf("r%d", i%5), Units: 1})
					acancel()
					if err == nil {
						mu.Lock()
						if prev, ok := acked[rid]; ok && prev != a.ID {
							t.Errorf("request %s acknowledged as %s and as %s", rid, prev, a.ID)
						}
						acked[rid] = a.ID
						mu.Unlock()
						break
					}
					if ctx.Err() != nil || !api.IsRetryable(err) && !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("allocation %s: %v", rid, err)
						return
					}
				}
			}
		}()
	}
	progress := func(what string) {
		t.Helper()
		n := count()
		for count() < n+20 {
			if ctx.Err() != nil {
				t.Fatalf("no allocations granted %s (%d acknowledged)\n%s", what, n, pc.Logs())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	progress("on the earlier release")

	leader, err := pc.WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	order := []*proccluster.Proc{}
	for _, p := range pc.Nodes {
		if p != leader {
			order = append(order, p)
		}
	}
	order = append(order, leader) // the leader last: it hands over on SIGTERM
	pc.Bin = newBin
	for _, p := range order {
		pc.Stop(p)
		progress("with " + p.ID + " down")
		pc.Start(p)
		waitCaughtUp(ctx, t, pc, p)
		progress("after " + p.ID + " was upgraded")
		t.Logf("%s upgraded; %d allocations acknowledged so far", p.ID, count())
	}
	close(stop)
	wg.Wait()

	// Every acknowledged allocation is in the state once, and nothing else
	// is: the units used equal the allocations acknowledged.
	final := api.NewClient(pc.Addrs()...)
	allocs, err := final.Allocations(ctx, api.AllocationListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]api.Allocation{}
	for _, a := range allocs {
		byID[a.ID] = a
	}
	mu.Lock()
	defer mu.Unlock()
	for rid, id := range acked {
		a, ok := byID[id]
		if !ok || a.RequestID != rid {
			t.Fatalf("acknowledged allocation %s (request %s) is missing or changed: %+v", id, rid, a)
		}
	}
	if len(allocs) != len(acked) {
		t.Fatalf("%d allocations in the state, %d acknowledged", len(allocs), len(acked))
	}
	waitSameHash(ctx, t, pc)
	// This release filters, and once every voter runs it they all list
	// its features (the leader uses them from then on).
	if pg, err := final.FilteredServersPage(ctx, draining, api.PageOptions{}); err != nil || len(pg.Items) != 0 {
		t.Fatalf("state filter after the upgrade: %+v, %v", pg, err)
	}
	if pg, err := final.FilteredServersPage(ctx, onlyM2, api.PageOptions{}); err != nil || len(pg.Items) != 1 || pg.Items[0].ID != "m2" || pg.Total != 1 {
		t.Fatalf("id prefix filter after the upgrade: %+v, %v", pg, err)
	}
	for {
		ms, err := final.Members(ctx)
		if err == nil && !slices.ContainsFunc(ms, func(m api.MemberStatus) bool { return !slices.Equal(m.Features, cluster.Features()) }) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("members' features after the upgrade: %+v, %v", ms, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("rolling upgrade from %s: %d allocations acknowledged, none lost or doubled", upgradeFrom[:8], len(acked))
}

// waitCaughtUp waits until p serves again and has applied what the leader
// has.
func waitCaughtUp(ctx context.Context, t *testing.T, pc *proccluster.Cluster, p *proccluster.Proc) {
	t.Helper()
	for {
		leader, err := pc.WaitLeader(ctx)
		if err != nil {
			t.Fatalf("%v\n%s", err, pc.Logs())
		}
		ls, lerr := pc.Status(ctx, leader)
		ps, perr := pc.Status(ctx, p)
		if lerr == nil && perr == nil && ps.ClusterID == ls.ClusterID && ps.AppliedIndex+50 >= ls.AppliedIndex {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s did not catch up (%v %v)\n%s", p.ID, lerr, perr, pc.Logs())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitSameHash waits until every node reports the same applied index and
// state hash.
func waitSameHash(ctx context.Context, t *testing.T, pc *proccluster.Cluster) {
	t.Helper()
	for {
		same, seen := true, ""
		for _, p := range pc.Nodes {
			st, err := pc.Status(ctx, p)
			key := fmt.Sprintf("%d/%s", st.AppliedIndex, st.StateHash)
			if err != nil || (seen != "" && key != seen) {
				same = false
				break
			}
			seen = key
		}
		if same {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("nodes never agreed on one state hash\n%s", pc.Logs())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
