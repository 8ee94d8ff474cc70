package connlimit

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestSource(t *testing.T) {
	tests := []struct {
		addr string
		want string
	}{
		{"127.0.0.1:5000", "127.0.0.1/32"},
		{"[::ffff:10.1.2.3]:80", "10.1.2.3/32"},
		{"[2001:db8:1:2:aaaa::1]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:bbbb::9]:443", "2001:db8:1:2::/64"},
	}
	for _, tc := range tests {
		got, ok := Source(tc.addr)
		if !ok || got != netip.MustParsePrefix(tc.want) {
			t.Errorf("Source(%s) = %v, %v; want %s", tc.addr, got, ok, tc.want)
		}
	}
}

// One source holds at most its share of the connections: one more is
// closed at once and counted, and a slot freed is taken again.
func TestLimitListenerCapsEachSource(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(inner, 8, 2, "test_refused_total")
	defer l.Close()
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	wait := func() net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			return c
		case <-time.After(30 * time.Second):
			t.Fatal("connection not accepted")
			return nil
		}
	}
	dial()
	first := wait()
	dial()
	wait()
	// The third from the same address is closed by the listener.
	over := dial()
	_ = over.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := over.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("a connection over the source's share: read %v, want it closed", err)
	}
	if n := testutil.ToFloat64(l.Refused); n != 1 {
		t.Fatalf("refused counter %v, want 1", n)
	}
	select {
	case c := <-accepted:
		t.Fatalf("a connection over the share was handed out: %v", c.RemoteAddr())
	default:
	}
	// A slot freed is available again.
	first.Close()
	dial()
	wait()
}

// isReset reports a connection the peer reset (not a read deadline).
func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}
