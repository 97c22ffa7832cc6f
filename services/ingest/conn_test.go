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
// again no sooner than the wait; a read that filled the buffer is followed at once.
func TestBatchedReaderWaitsAfterAShortRead(t *testing.T) {
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
	// Reads 0-1 came before the wait was set; reads 2 and 5 follow short reads (1 and 4).
	for _, i := range []int{2, 5} {
		if d := c.at[i].Sub(c.at[i-1]); d < wait {
			t.Errorf("read %d came %s after a short read; want at least %s", i, d, wait)
		}
	}
	if r.drained.IsZero() {
		t.Error("a short read did not mark the connection drained")
	}
	r.drained = time.Time{}
	c.sizes = []int{100, 100}
	_, _ = r.Read(buf)
	if !r.drained.IsZero() {
		t.Error("a read that filled the buffer marked the connection drained")
	}
}
