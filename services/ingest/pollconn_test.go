package ingest

import (
	"net"
	"testing"
	"time"
)

func TestUntilNextTick(t *testing.T) {
	const period = 20 * time.Millisecond
	for _, tc := range []struct {
		at   time.Duration // after a tick
		want time.Duration
	}{{0, period}, {time.Millisecond, 19 * time.Millisecond}, {period - time.Nanosecond, time.Nanosecond}} {
		now := time.Unix(1700000000, 0).Add(tc.at)
		if got := untilNextTick(now, period); got != tc.want {
			t.Errorf("untilNextTick(tick+%s) = %s, want %s", tc.at, got, tc.want)
		}
	}
}

// tcpPair is a loopback TCP connection: the accepted side wrapped as the ingest wraps it, and
// the dialing side.
func tcpPair(t *testing.T) (*polledConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	pc := newPolledConn(server)
	t.Cleanup(func() { pc.release(); client.Close() })
	return pc, client
}
