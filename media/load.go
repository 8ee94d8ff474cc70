package media

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/self/stat; it is
// 100 on every Linux ABI Go supports.
const clockTicks = 100

// loadSampler turns cumulative counters into rates between samples.
type loadSampler struct {
	mu        sync.Mutex
	at        time.Time
	cpuTicks  int64
	in, out   int64
	seq       uint64
	last      Load
	hasSample bool
}

// procCPUTicks reads this process's user+system CPU time in clock ticks.
func procCPUTicks() (int64, error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may contain spaces) start after ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/self/stat: no ')'")
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/self/stat: %d fields", len(f))
	}
	// f[0] is state (field 3); utime is field 14, stime field 15.
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/self/stat: bad utime/stime")
	}
	return ut + st, nil
}

// sample measures the node now: rates are over the time since the previous
// sample (zero on the first).
func (n *Node) sample() Load {
	now := time.Now()
	ticks, err := procCPUTicks()
	if err != nil {
		n.log.Debug("cpu sample", "err", err)
	}
	in, out := n.meter.in.Load(), n.meter.out.Load()
	l := n.snapshotLoad()
	ls := &n.load
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.hasSample {
		if dt := now.Sub(ls.at).Seconds(); dt > 0 {
			l.CPU = float64(ticks-ls.cpuTicks) / clockTicks / dt
			l.IngressBps = int64(float64(in-ls.in) * 8 / dt)
			l.EgressBps = int64(float64(out-ls.out) * 8 / dt)
		}
	}
	ls.at, ls.cpuTicks, ls.in, ls.out, ls.hasSample = now, ticks, in, out, true
	ls.seq++
	l.Seq = ls.seq
	ls.last = l
	return l
}

// snapshotLoad fills the counts of a Load from the node's bookkeeping.
func (n *Node) snapshotLoad() Load {
	n.mu.Lock()
	defer n.mu.Unlock()
	l := Load{Server: n.cfg.ID, Cores: runtime.NumCPU(), Peers: int64(len(n.sessions)), UsedUnits: n.used, Capacity: n.cfg.Capacity, Draining: n.draining}
	for name, r := range n.rooms {
		l.Rooms = append(l.Rooms, name)
		l.Tracks += int64(len(r.tracks))
		for _, s := range r.viewers {
			l.Subscribed += int64(s.tracks)
		}
		for _, s := range r.outs {
			l.Subscribed += int64(s.tracks)
		}
		if r.pub != nil && r.pub.allocID != "" {
			l.Allocs = append(l.Allocs, r.pub.allocID)
		}
	}
	sort.Strings(l.Rooms)
	sort.Strings(l.Allocs)
	return l
}

// currentLoad returns the last reported load (measuring one if none yet).
func (n *Node) currentLoad() Load {
	n.load.mu.Lock()
	l, ok := n.load.last, n.load.hasSample && n.load.seq > 1
	n.load.mu.Unlock()
	if ok {
		return l
	}
	return n.sample()
}

// reportLoop samples and reports load every ReportInterval until Close.
func (n *Node) reportLoop() {
	t := time.NewTicker(n.cfg.ReportInterval)
	defer t.Stop()
	n.sample()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
			n.cl.Report(n.sample())
		}
	}
}
