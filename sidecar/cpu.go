package sidecar

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times (100 on
// every Linux architecture Go supports).
const clockTicks = 100

// cpuMeter measures one process's CPU use from /proc/<pid>/stat.
type cpuMeter struct {
	pid   int
	ticks uint64
	at    time.Time
}

func newCPUMeter(pid int) *cpuMeter {
	m := &cpuMeter{pid: pid}
	m.ticks, _ = procTicks(pid)
	m.at = time.Now()
	return m
}

// sample returns the process's CPU use since the last sample as a fraction
// of all cores (0 when it cannot be read).
func (m *cpuMeter) sample() float64 {
	t, err := procTicks(m.pid)
	now := time.Now()
	if err != nil {
		return 0
	}
	prev, dt := m.ticks, now.Sub(m.at).Seconds()
	m.ticks, m.at = t, now
	if dt <= 0 || t < prev {
		return 0
	}
	return float64(t-prev) / clockTicks / dt / float64(runtime.NumCPU())
}

// procTicks returns utime+stime of pid in clock ticks.
func procTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after it start
	// past the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("%w: /proc/%d/stat", ErrBadAnswer, pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("%w: /proc/%d/stat has %d fields", ErrBadAnswer, pid, len(f)+2)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%w: /proc/%d/stat times", ErrBadAnswer, pid)
	}
	return u + st, nil
}
