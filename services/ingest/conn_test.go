package ingest

import (
	"net"
	"testing"
	"time"
)

// scriptedConn returns reads of the scripted sizes and records when each was asked for.
type scriptedConn struct {
	net.Conn
	sizes []int
	at    []time.Time
}

func (c *scriptedConn) Read(p []byte) (int, error) {
	c.at = append(c.at, time.Now())
	n := min(c.sizes[0], len(p))
	c.sizes = c.sizes[1:]
	return n, nil
}

// Once its wait is set, a drained connection (a read that did not fill the buffer) is read
// again on the next tick of the shared clock; a read that filled the buffer is followed at once.
func TestBatchedReaderWaitsForTheNextTickAfterAShortRead(t *testing.T) {
	const wait = 30 * time.Millisecond
	c := &scriptedConn{sizes: []int{10, 10, 100, 100, 10, 10}}
	r := &batchedReader{conn: c}
	buf := make([]byte, 100)
	_, _ = r.Read(buf) // short, but no wait set yet
	_, _ = r.Read(buf)
	if d := c.at[1].Sub(c.at[0]); d >= wait {
		t.Errorf("without a wait, the second read came %s after the first", d)
	}
	r.wait = wait
	for range 4 {
		_, _ = r.Read(buf)
	}
	tick := func(at time.Time) int64 { return at.UnixNano() / int64(wait) }
	// Reads 0-1 came before the wait was set; reads 2 and 5 follow short reads (1 and 4), and
	// read 4 follows a full one (3).
	for _, i := range []int{2, 5} {
		if tick(c.at[i]) <= tick(c.at[i-1]) {
			t.Errorf("read %d came %s after a short read, in the same tick", i, c.at[i].Sub(c.at[i-1]))
		}
	}
	if d := c.at[4].Sub(c.at[3]); d >= wait/2 {
		t.Errorf("a read that filled the buffer was followed after %s", d)
	}
	if !r.drained {
		t.Error("a short read did not mark the connection drained")
	}
	c.sizes = []int{100, 100}
	_, _ = r.Read(buf)
	if r.drained {
		t.Error("a read that filled the buffer marked the connection drained")
	}
}

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
