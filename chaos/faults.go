package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/api"
	"github.com/switchyard/switchyard/internal/proccluster"
)

// The nemeses in this file feed an agent bad input on its own disk. Each
// one must see the agent detect the fault and say so (a log line or an
// exit with a clear error); Inject fails when the agent stays silent, and
// the note it leaves in the summary quotes what the agent said. They need
// a process target (data dirs on this machine).

func procTarget(e *Env) (*ProcTarget, error) {
	pt, ok := e.Target.(*ProcTarget)
	if !ok {
		return nil, fmt.Errorf("needs a process target, have %s", e.Target.Name())
	}
	return pt, nil
}

// follower picks a running node that is not the leader.
func follower(ctx context.Context, e *Env) (*proccluster.Proc, error) {
	pt, err := procTarget(e)
	if err != nil {
		return nil, err
	}
	leader, err := pick(ctx, e, true)
	if err != nil {
		return nil, err
	}
	var cands []*proccluster.Proc
	for _, p := range pt.C.Nodes {
		if p.ID != leader && p.Running() {
			cands = append(cands, p)
		}
	}
	if len(cands) == 0 {
		return nil, errors.New("no running follower")
	}
	return cands[e.Rand.IntN(len(cands))], nil
}

// procFollower is the process target and a running follower of it, the
// victim of most bad-input faults.
func procFollower(ctx context.Context, e *Env) (*ProcTarget, *proccluster.Proc, error) {
	pt, err := procTarget(e)
	if err != nil {
		return nil, nil, err
	}
	p, err := follower(ctx, e)
	if err != nil {
		return nil, nil, err
	}
	return pt, p, nil
}

// logSince returns what p's log file holds past offset.
func logSince(p *proccluster.Proc, offset int64) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil || int64(len(b)) < offset {
		return ""
	}
	return string(b[offset:])
}

func logSize(p *proccluster.Proc) int64 {
	st, err := os.Stat(p.LogPath)
	if err != nil {
		return 0
	}
	return st.Size()
}

// waitLog polls p's log (past offset) until re matches, or, when exit is
// set, until the process has also exited. It returns the matching line.
func waitLog(ctx context.Context, p *proccluster.Proc, offset int64, re *regexp.Regexp, exit bool, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		text := logSince(p, offset)
		if loc := re.FindStringIndex(text); loc != nil && (!exit || !p.Running()) {
			start := strings.LastIndex(text[:loc[0]], "\n") + 1
			end := strings.Index(text[loc[0]:], "\n")
			line := text[start:]
			if end >= 0 {
				line = text[start : loc[0]+end]
			}
			return strings.TrimSpace(line), nil
		}
		select {
		case <-ctx.Done():
			tail := text
			if len(tail) > 1500 {
				tail = tail[len(tail)-1500:]
			}
			return "", fmt.Errorf("%s: no %q in its log (exited: %v): %w\n%s", p.ID, re, !p.Running(), ctx.Err(), tail)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// DiskFull moves a follower's data dir onto a tmpfs barely larger than
// what it holds, so the agent runs out of space under load. The agent must
// report ENOSPC; the cluster goes on with the others. Heal grows the tmpfs
// and restarts the agent if it exited, and it catches up.
type DiskFull struct{}

// Name implements Nemesis.
func (DiskFull) Name() string { return "disk-full" }

// Inject implements Nemesis.
func (d DiskFull) Inject(ctx context.Context, e *Env) (Heal, error) {
	pt, p, err := procFollower(ctx, e)
	if err != nil {
		return nil, err
	}
	if err := pt.Stop(ctx, p.ID); err != nil {
		return nil, err
	}
	mnt := filepath.Join(pt.C.Dir, p.ID+"-tmpfs")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return nil, fmt.Errorf("disk-full: %w", err)
	}
	used, err := dirSize(p.DataDir)
	if err != nil {
		return nil, err
	}
	size := used + 256<<10
	if err := run(ctx, "mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "sychaos-diskfull", mnt); err != nil {
		_ = pt.Start(ctx, p.ID)
		return nil, fmt.Errorf("disk-full needs tmpfs mounts: %w", err)
	}
	if err := run(ctx, "cp", "-a", p.DataDir+"/.", mnt+"/"); err != nil {
		_ = run(ctx, "umount", "-l", mnt)
		_ = pt.Start(ctx, p.ID)
		return nil, err
	}
	orig := p.DataDir
	p.DataDir = mnt
	off := logSize(p)
	if err := pt.Start(ctx, p.ID); err != nil {
		return nil, err
	}
	e.History.AddFault(Fault{Kind: d.Name(), Nodes: []string{p.ID}, Note: fmt.Sprintf("tmpfs of %d bytes", size)})
	line, err := waitLog(ctx, p, off, regexp.MustCompile(`(?i)no space left on device`), false, 60*time.Second)
	heal := func(ctx context.Context) error {
		e.History.AddFault(Fault{Kind: "heal-disk", Nodes: []string{p.ID}})
		// Back to its own (real) disk with what it wrote meanwhile.
		if err := pt.Stop(ctx, p.ID); err != nil {
			return err
		}
		if err := run(ctx, "cp", "-a", mnt+"/.", orig+"/"); err != nil {
			return err
		}
		p.DataDir = orig
		_ = run(ctx, "umount", "-l", mnt)
		return pt.Start(ctx, p.ID)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("disk full not reported: %w", err), heal(ctx))
	}
	e.Notes(fmt.Sprintf("disk-full on %s reported (running=%v): %s", p.ID, p.Running(), line))
	return heal, nil
}

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", dir, err)
	}
	return n, nil
}

// CorruptBolt stops a follower, overwrites both meta pages of its
// raft.db with garbage, and starts it again: the agent must refuse to
// start and say why. Heal follows the operator's procedure: remove the
// member, wipe its data dir, start it again so it rejoins as a new voter
// and catches up from the leader.
type CorruptBolt struct{}

// Name implements Nemesis.
func (CorruptBolt) Name() string { return "corrupt-bolt" }

// Inject implements Nemesis.
func (c CorruptBolt) Inject(ctx context.Context, e *Env) (Heal, error) {
	pt, p, err := procFollower(ctx, e)
	if err != nil {
		return nil, err
	}
	if err := pt.Stop(ctx, p.ID); err != nil {
		return nil, err
	}
	db := filepath.Join(p.DataDir, "raft.db")
	f, err := os.OpenFile(db, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("corrupt-bolt: %w", err)
	}
	garbage := []byte(strings.Repeat("\xde\xad\xbe\xef", 2048)) // two 4 KiB meta pages
	_, err = f.WriteAt(garbage, 0)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("corrupt-bolt: %w", err)
	}
	off := logSize(p)
	if err := pt.Start(ctx, p.ID); err != nil {
		return nil, err
	}
	e.History.AddFault(Fault{Kind: c.Name(), Nodes: []string{p.ID}})
	line, err := waitLog(ctx, p, off, regexp.MustCompile(`(?i)invalid|corrupt|checksum|version mismatch|panic`), true, 30*time.Second)
	heal := func(ctx context.Context) error {
		e.History.AddFault(Fault{Kind: "heal-rejoin", Nodes: []string{p.ID}})
		if err := pt.Kill(ctx, p.ID); err != nil {
			return err
		}
		var addrs []string
		for _, n := range pt.C.Nodes {
			if n != p {
				addrs = append(addrs, n.HTTPAddr)
			}
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := api.NewClient(addrs...).RemovePeer(rctx, p.ID); err != nil {
			return fmt.Errorf("remove %s before it rejoins: %w", p.ID, err)
		}
		if err := os.RemoveAll(p.DataDir); err != nil {
			return fmt.Errorf("wipe %s: %w", p.DataDir, err)
		}
		return pt.Start(ctx, p.ID)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("corrupted raft.db not reported: %w", err), heal(ctx))
	}
	e.Notes(fmt.Sprintf("corrupted raft.db on %s: agent exited: %s", p.ID, line))
	return heal, nil
}

// ForeignDataDir restarts a follower with a copy of another node's data
// dir: the agent must refuse it ("data dir belongs to another node or
// cluster") and exit. Heal starts it with its own data dir.
type ForeignDataDir struct{}

// Name implements Nemesis.
func (ForeignDataDir) Name() string { return "foreign-data-dir" }

// Inject implements Nemesis.
func (f ForeignDataDir) Inject(ctx context.Context, e *Env) (Heal, error) {
	pt, p, err := procFollower(ctx, e)
	if err != nil {
		return nil, err
	}
	var other *proccluster.Proc
	for _, n := range pt.C.Nodes {
		if n != p {
			other = n
			break
		}
	}
	if err := pt.Stop(ctx, p.ID); err != nil {
		return nil, err
	}
	foreign := filepath.Join(pt.C.Dir, p.ID+"-foreign")
	// The other node is running: a file it renames (node.json.tmp, a
	// snapshot being written) can vanish under cp, so try again.
	for try := 0; ; try++ {
		_ = os.RemoveAll(foreign)
		err := run(ctx, "cp", "-a", other.DataDir, foreign)
		if err == nil {
			break
		}
		if try == 4 {
			return nil, errors.Join(fmt.Errorf("foreign-data-dir: %w", err), pt.Start(ctx, p.ID))
		}
		time.Sleep(100 * time.Millisecond)
	}
	off := logSize(p)
	if err := pt.C.StartDir(p, foreign); err != nil {
		return nil, err
	}
	e.History.AddFault(Fault{Kind: f.Name(), Nodes: []string{p.ID, other.ID}})
	line, err := waitLog(ctx, p, off, regexp.MustCompile(`data dir belongs to another node`), true, 30*time.Second)
	heal := func(ctx context.Context) error {
		e.History.AddFault(Fault{Kind: "restart", Nodes: []string{p.ID}})
		if err := pt.Kill(ctx, p.ID); err != nil {
			return err
		}
		return pt.Start(ctx, p.ID)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("foreign data dir not refused: %w", err), heal(ctx))
	}
	e.Notes(fmt.Sprintf("%s started with %s's data dir: refused: %s", p.ID, other.ID, line))
	return heal, nil
}

// ClockOffset restarts a follower inside a time namespace whose monotonic
// and boot clocks are days ahead of everyone else's (unshare --time).
// CLOCK_REALTIME cannot be namespaced, and faketime's LD_PRELOAD has no
// effect on a static Go binary, so a per-node wall-clock jump is out of
// reach without changing the host clock; this covers timers and leases
// built on the monotonic clock. The cluster must keep its guarantees.
type ClockOffset struct{ Offset time.Duration }

// Name implements Nemesis.
func (ClockOffset) Name() string { return "clock-offset" }

// ClockOffsetUsable reports why time namespaces cannot be used (nil when
// they can).
func ClockOffsetUsable(ctx context.Context) error {
	if err := run(ctx, "unshare", "--time", "--fork", "--monotonic", "86400", "--boottime", "86400", "true"); err != nil {
		return fmt.Errorf("time namespaces not usable: %w", err)
	}
	return nil
}

// Inject implements Nemesis.
func (c ClockOffset) Inject(ctx context.Context, e *Env) (Heal, error) {
	pt, p, err := procFollower(ctx, e)
	if err != nil {
		return nil, err
	}
	if err := pt.Stop(ctx, p.ID); err != nil {
		return nil, err
	}
	secs := fmt.Sprint(int64(c.Offset.Seconds()))
	prev := pt.C.Prefix
	pt.C.Prefix = func(q *proccluster.Proc) []string {
		var pre []string
		if prev != nil {
			pre = prev(q)
		}
		if q == p {
			// --kill-child: a SIGKILL of unshare takes the agent with it.
			pre = append(pre, "unshare", "--time", "--fork", "--kill-child", "--monotonic", secs, "--boottime", secs)
		}
		return pre
	}
	err = pt.Start(ctx, p.ID)
	pt.C.Prefix = prev
	if err != nil {
		return nil, err
	}
	e.History.AddFault(Fault{Kind: c.Name(), Nodes: []string{p.ID}, Note: "monotonic +" + c.Offset.String()})
	return func(ctx context.Context) error {
		e.History.AddFault(Fault{Kind: "restart", Nodes: []string{p.ID}})
		// --kill-child did not always take the agent with unshare (an
		// orphan kept the ports, and the restarted agent could not bind):
		// kill the whole process group (unshare and the agent share it),
		// then wait until the agent's address is free.
		if pid := p.Pid(); pid > 0 {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
		if err := pt.Kill(ctx, p.ID); err != nil {
			return err
		}
		if err := waitPortFree(ctx, p.HTTPAddr, 15*time.Second); err != nil {
			return err
		}
		return pt.Start(ctx, p.ID)
	}, nil
}

// waitPortFree polls until nothing accepts connections on addr.
func waitPortFree(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return nil
		}
		c.Close()
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s still in use after the agent was killed: %w", addr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ClockFile is where node p's agent reads its wall-clock offset
// (--fault-clock-file); WallClockJump writes it.
func ClockFile(c *proccluster.Cluster, p *proccluster.Proc) string {
	return filepath.Join(c.Dir, p.ID+".clock")
}

// ClockFileArgs gives every agent a --fault-clock-file (see ClockFile).
func ClockFileArgs(c *proccluster.Cluster, p *proccluster.Proc) []string {
	return []string{"--fault-clock-file", ClockFile(c, p)}
}

// WallClockJump steps one running follower's wall clock by Offset
// without restarting it (through the agent's --fault-clock-file hook: a
// static Go binary ignores faketime and CLOCK_REALTIME cannot be
// namespaced). The node must report the skew. With Lead, leadership is
// then handed to it: it must say it stamps the log's time instead of its
// wall clock, and no allocation (all carry a one-hour TTL) may expire
// early, nor a released request id be forgotten early. Heal steps the
// clock back.
type WallClockJump struct {
	Offset time.Duration
	Lead   bool
}

// Name implements Nemesis.
func (w WallClockJump) Name() string {
	if w.Lead {
		return "wall-clock-jump-leader"
	}
	return "wall-clock-jump"
}

// Inject implements Nemesis.
func (w WallClockJump) Inject(ctx context.Context, e *Env) (Heal, error) {
	pt, p, err := procFollower(ctx, e)
	if err != nil {
		return nil, err
	}
	file := ClockFile(pt.C, p)
	off := logSize(p)
	if err := os.WriteFile(file, []byte(w.Offset.String()+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("wall-clock-jump: %w", err)
	}
	e.History.AddFault(Fault{Kind: w.Name(), Nodes: []string{p.ID}, Note: "wall clock " + w.Offset.String()})
	heal := func(ctx context.Context) error {
		e.History.AddFault(Fault{Kind: "heal-clock", Nodes: []string{p.ID}})
		if err := os.WriteFile(file, []byte("0s\n"), 0o644); err != nil {
			return fmt.Errorf("wall-clock-jump heal: %w", err)
		}
		return nil
	}
	line, err := waitLog(ctx, p, off, regexp.MustCompile(`clock skew: `), false, 30*time.Second)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("wall clock %v not reported: %w", w.Offset, err), heal(ctx))
	}
	e.Notes(fmt.Sprintf("wall clock of %s stepped %v: reported: %s", p.ID, w.Offset, line))
	if !w.Lead {
		return heal, nil
	}
	off = logSize(p)
	var addrs []string
	for _, n := range pt.C.Nodes {
		if n.Running() {
			addrs = append(addrs, n.HTTPAddr)
		}
	}
	// Hand leadership to p and wait for its first stamp. On a busy machine
	// another node's election can depose p before it stamps anything (it
	// logs nothing then), or the old leader can lose its lease mid-transfer
	// (raft answers "leadership transfer timeout"): hand leadership over
	// again, a few times.
	for attempt := 1; ; attempt++ {
		tctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		var err error
		if st, serr := pt.C.Status(tctx, p); serr != nil || st.State != "Leader" {
			err = api.NewClient(addrs...).TransferLeader(tctx, p.ID)
		}
		cancel()
		if err != nil {
			if attempt == 3 {
				return nil, errors.Join(fmt.Errorf("hand leadership to %s (%d attempts): %w", p.ID, attempt, err), heal(ctx))
			}
			e.Notes(fmt.Sprintf("handing leadership to %s failed (%v); handing it over again", p.ID, err))
			continue
		}
		line, err = waitLog(ctx, p, off, regexp.MustCompile(`clock jump: `), false, 10*time.Second)
		if err == nil {
			break
		}
		if attempt == 3 {
			return nil, errors.Join(fmt.Errorf("leader %s with its wall clock %v off did not guard its stamps (%d hand-overs): %w", p.ID, w.Offset, attempt, err), heal(ctx))
		}
		e.Notes(fmt.Sprintf("leadership left %s before it stamped an entry; handing it over again", p.ID))
	}
	e.Notes(fmt.Sprintf("%s leads with its wall clock %v off: %s", p.ID, w.Offset, line))
	// Lead with the stepped clock through at least two expiry passes of
	// the leader (cluster.DefaultExpireInterval is 1 s) before the heal.
	select {
	case <-ctx.Done():
	case <-time.After(2 * time.Second):
	}
	return heal, nil
}
