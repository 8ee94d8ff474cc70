package cluster

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// RaftALPN is the TLS application protocol of raft connections.
const RaftALPN = "switchyard-raft/1"

// TLSStreamLayer carries raft RPCs over mutual TLS on TCP. It implements
// raft.StreamLayer; pass it as Config.RaftLayer.
type TLSStreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	client    *tls.Config
}

var _ raft.StreamLayer = (*TLSStreamLayer)(nil)

// NewTLSStreamLayer listens on addr (which is also the address advertised
// to peers). server must require and verify client certificates; client is
// used to dial peers.
func NewTLSStreamLayer(addr string, server, client *tls.Config) (*TLSStreamLayer, error) {
	adv, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: raft address %q: %v", ErrBadConfig, addr, err)
	}
	ln, err := tls.Listen("tcp", addr, server)
	if err != nil {
		return nil, fmt.Errorf("listen on raft address %s: %w", addr, err)
	}
	return &TLSStreamLayer{ln: ln, advertise: adv, client: client}, nil
}

// Accept waits for the next connection. The TLS handshake runs on the
// connection's first read, in raft's per-connection goroutine, so a slow
// or hostile peer cannot hold up the accept loop.
func (l *TLSStreamLayer) Accept() (net.Conn, error) { return l.ln.Accept() }

// Close stops listening.
func (l *TLSStreamLayer) Close() error { return l.ln.Close() }

// Addr is the advertised raft address.
func (l *TLSStreamLayer) Addr() net.Addr { return l.advertise }

// Dial opens a mutual-TLS connection to a peer, handshake included, within
// timeout.
func (l *TLSStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	c, err := tls.DialWithDialer(d, "tcp", string(address), l.client)
	if err != nil {
		return nil, fmt.Errorf("dial raft peer %s: %w", address, err)
	}
	return c, nil
}
