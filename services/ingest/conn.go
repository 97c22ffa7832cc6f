package ingest

import (
	"bufio"
	"io"
	"net"
	"time"
)

// readBuffer is how much of the publisher's bytes one read from the socket may take.
// gortmplib reads through a 4 KiB bufio.Reader, one read system call per 4 KiB, and reading
// was most of the ingest's CPU (a 3 Mbit/s stream's video frames are ~13 KiB, its keyframes
// ~100 KiB). In front of it, this buffer takes what has arrived in one call.
const readBuffer = 64 << 10

// publisherConn is a publisher's connection as gortmplib reads and writes it: reads go through
// a buffer, from a socket read at most every coalesce once publishing (see batchedReader).
type publisherConn struct {
	io.Reader
	io.Writer
	batch *batchedReader
}

func newPublisherConn(conn net.Conn) *publisherConn {
	b := &batchedReader{conn: conn}
	return &publisherConn{Reader: bufio.NewReaderSize(b, readBuffer), Writer: conn, batch: b}
}

// batchedReader reads a socket, and once its wait is set, after a read that found it drained
// (one that did not fill the buffer) it sleeps until the next tick of a clock shared by all
// connections, ticking every wait: a publisher's frames arrive ~13 ms apart (30 fps video,
// 48 kHz AAC), and reading each as it comes costs a wakeup and two system calls (the read, and
// the one that finds nothing more). Waiting lets one read take the frames of the interval, and
// the shared ticks wake the sessions together, so the scheduler runs them in one burst instead
// of waking an idle thread for each. A read that fills the buffer is followed at once.
type batchedReader struct {
	conn    net.Conn
	wait    time.Duration
	drained bool // the last read came back short
}

func (r *batchedReader) Read(p []byte) (int, error) {
	if r.wait > 0 && r.drained {
		time.Sleep(untilNextTick(time.Now(), r.wait))
	}
	n, err := r.conn.Read(p)
	r.drained = n < len(p)
	return n, err
}

// untilNextTick is the time from now to the next multiple of period on the wall clock.
func untilNextTick(now time.Time, period time.Duration) time.Duration {
	ns := now.UnixNano()
	return time.Duration(period.Nanoseconds() - ns%period.Nanoseconds())
}
