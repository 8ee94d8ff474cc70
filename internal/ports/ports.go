// Package ports hands out loopback addresses for tests that must know a
// port before they listen on it (raft peers, join lists, restarts on the
// same address).
//
// Ports come from 20000–32767, below Linux's ephemeral range (32768+): a
// port from ":0" is ephemeral, so between our probe and the real listen —
// or across a node restart — any outgoing connection on the machine may
// take it. Below the range only another explicit listener can.
package ports

import (
	"fmt"
	"math/rand/v2"
	"net"
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
		addr := fmt.Sprintf("127.0.0.1:%d", lo+rand.IntN(hi-lo))
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
