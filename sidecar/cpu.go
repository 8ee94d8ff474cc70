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

// cpuMeter measures one process's CPU use from /proc/<pid>/stat: a fixed
// pid, or the one a pid file names, read again at every sample so that a
// restarted SFU is followed.
type cpuMeter struct {
	pid     int
	pidFile string
	ticks   uint64
	at      time.Time
}

func newCPUMeter(pid int, pidFile string) *cpuMeter {
	m := &cpuMeter{pid: pid, pidFile: pidFile}
	if pidFile != "" {
		m.pid, _ = readPIDFile(pidFile)
	}
	m.ticks, _ = procTicks(m.pid)
	m.at = time.Now()
	return m
}

// maxPIDFile bounds what is read of a pid file.
const maxPIDFile = 64

// readPIDFile returns the process id a pid file holds (decimal, surrounding
// space allowed).
func readPIDFile(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	b := make([]byte, maxPIDFile)
	n, _ := f.Read(b)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%w: pid file %s does not hold a process id", ErrBadAnswer, path)
	}
	return pid, nil
}

// sample returns the process's CPU use since the last sample as a fraction
// of all cores (0 when it cannot be read, and for the first sample of a
// new process the pid file names).
func (m *cpuMeter) sample() float64 {
	if m.pidFile != "" {
		if pid, err := readPIDFile(m.pidFile); err == nil && pid != m.pid {
			m.pid = pid
			m.ticks, _ = procTicks(pid)
			m.at = time.Now()
			return 0
		}
	}
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
