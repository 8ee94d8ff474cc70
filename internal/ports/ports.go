// Package ports hands out loopback addresses for tests that must know a
// port before they listen on it (raft peers, join lists, restarts on the
// same address).
//
// Ports come from 20000–32767, below Linux's ephemeral range (32768+): a
// port from ":0" is ephemeral, so between our probe and the real listen —
// or across a node restart — any outgoing connection on the machine may
// take it. Below the range only another explicit listener can, and those
// are ours: each port handed out is reserved (an flock on a file named
// after it, held until the test ends), so neither this process nor another
// test binary running beside it is handed the same port before it listens.
package ports

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

const (
	lo = 20000
	hi = 32768
)

// Free returns "127.0.0.1:port" with a port that is free for network
// ("tcp" or "udp") right now.
func Free(t testing.TB, network string) string {
	t.Helper()
	for range 200 {
		port := lo + rand.IntN(hi-lo)
		if !reserve(t, port) {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if network == "udp" {
			if c, err := net.ListenPacket("udp", addr); err == nil {
				c.Close()
				return addr
			}
			continue
		}
		if l, err := net.Listen("tcp", addr); err == nil {
			l.Close()
			return addr
		}
	}
	t.Fatalf("no free %s port in %d-%d", network, lo, hi)
	return ""
}

// reserve takes port for t's lifetime unless another Free (in this process
// or another) holds it. Where no lock file can be made it reserves nothing
// and says yes: the listen probe alone decides, as it did before.
func reserve(t testing.TB, port int) bool {
	dir := filepath.Join(os.TempDir(), "switchyard-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return true
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return true
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return false
	}
	t.Cleanup(func() { f.Close() }) // closing the file releases the lock
	return true
}
