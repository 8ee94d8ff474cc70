// Package connlimit caps a listener's open connections, in all and per
// source address, for the HTTP servers anyone on the network can reach
// (the agents' admin API and the media nodes' WHIP/WHEP).
package connlimit

import (
	"net"
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Listener accepts at most n connections at once (further ones wait
// in the kernel's backlog until one closes), and at most perSource from
// one source: a connection over its source's share is closed at once and
// counted in refused.
type Listener struct {
	net.Listener
	sem       chan struct{}
	perSource int
	// Refused counts connections closed for being over their source's
	// share (register it where the server's metrics are).
	Refused prometheus.Counter

	mu       sync.Mutex
	bySource map[netip.Prefix]int
}

// New wraps l: at most n connections open at once, at most perSource
// (capped at n) from one source. metric names the Refused counter.
func New(l net.Listener, n, perSource int, metric string) *Listener {
	return &Listener{Listener: l, sem: make(chan struct{}, n), perSource: min(perSource, n), bySource: map[netip.Prefix]int{},
		Refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metric,
			Help: "Connections closed on accept because their source (an IPv4 address or an IPv6 /64) held its share of the connection cap.",
		})}
}

// Source names the source of a remote address ("host:port"): its IPv4
// address, or its IPv6 /64 (one host usually holds a whole /64, so
// counting by address would give it billions of shares). ok is false for
// what is not an IP address and port.
func Source(addr string) (p netip.Prefix, ok bool) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return netip.Prefix{}, false
	}
	ip := ap.Addr().Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, err = ip.Prefix(bits)
	return p, err == nil
}

// Accept waits for a free slot, then returns the next connection whose
// source is within its share.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		l.sem <- struct{}{}
		c, err := l.Listener.Accept()
		if err != nil {
			<-l.sem
			return nil, err
		}
		src, ok := Source(c.RemoteAddr().String())
		if !ok {
			return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
		}
		l.mu.Lock()
		if l.bySource[src] >= l.perSource {
			l.mu.Unlock()
			l.Refused.Inc()
			_ = c.Close()
			<-l.sem
			continue
		}
		l.bySource[src]++
		l.mu.Unlock()
		return &limitConn{Conn: c, release: func() {
			l.mu.Lock()
			if l.bySource[src]--; l.bySource[src] <= 0 {
				delete(l.bySource, src)
			}
			l.mu.Unlock()
			<-l.sem
		}}, nil
	}
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
