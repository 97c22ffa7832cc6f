package ingest

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// polledConn is an accepted RTMP connection. Until its session starts publishing it is the
// net.Conn, read and written through Go's network poller. Once publishing, poll takes the
// socket out of the poller and the session reads it on the ticks of a clock shared by all
// connections: a publisher sends a frame every ~13 ms (30 fps video, 48 kHz AAC), and through
// the poller every frame that arrives wakes the process (the poller is edge-triggered, so it
// reports each arrival even while nobody waits to read), and a read per frame costs a
// goroutine wakeup and two system calls. On shared ticks, one read takes the frames of the
// interval, and the sessions wake together, so the scheduler runs them in one burst.
//
// Deadlines and Close keep their net.Conn meaning in both modes: a read or write past the
// deadline fails with os.ErrDeadlineExceeded, and Close from another goroutine ends a read
// within a tick. The socket itself is closed by release, once nothing reads or writes it.
type polledConn struct {
	net.Conn // until polled; its addresses stay valid after

	mu       sync.Mutex
	fd       int // the socket, taken out of the poller; -1 until then
	tick     time.Duration
	deadline time.Time // read and write, once polled
	closed   bool

	drained bool // the last read came back short (the reader's own)
}

func newPolledConn(c net.Conn) *polledConn { return &polledConn{Conn: c, fd: -1} }

// errPollUnsupported means the connection has no socket to take out of the poller.
var errPollUnsupported = errors.New("ingest: connection cannot be polled")

// poll takes the socket out of Go's poller: from now on it is read on the ticks of a clock
// of the given period. Only the session's own goroutine calls it, between reads.
func (c *polledConn) poll(tick time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.fd >= 0 {
		return nil
	}
	fd, err := detach(c.Conn)
	if err != nil {
		return err
	}
	c.fd, c.tick = fd, tick
	return nil
}

// state is the socket (-1 while in the poller) and whether Close was called; a deadline that
// has passed is an error.
func (c *polledConn) state() (fd int, tick time.Duration, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.fd < 0:
		return -1, 0, nil
	case c.closed:
		return c.fd, c.tick, net.ErrClosed
	case !c.deadline.IsZero() && !time.Now().Before(c.deadline):
		return c.fd, c.tick, os.ErrDeadlineExceeded
	}
	return c.fd, c.tick, nil
}

func (c *polledConn) Read(p []byte) (int, error) {
	fd, tick, err := c.state()
	if fd < 0 {
		return c.Conn.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if err == nil && c.drained {
		time.Sleep(untilNextTick(time.Now(), tick))
		_, _, err = c.state()
	}
	for err == nil {
		n, rerr := readSocket(fd, p)
		switch {
		case n > 0:
			c.drained = n < len(p)
			return n, nil
		case rerr == nil:
			return 0, io.EOF
		case errors.Is(rerr, syscall.EAGAIN):
			time.Sleep(untilNextTick(time.Now(), tick))
			_, _, err = c.state()
		default:
			return 0, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: rerr}
		}
	}
	return 0, err
}

// writeRetry is how long a write waits for room in a full socket buffer before trying again.
const writeRetry = time.Millisecond

func (c *polledConn) Write(p []byte) (int, error) {
	fd, _, err := c.state()
	if fd < 0 {
		return c.Conn.Write(p)
	}
	done := 0
	for err == nil && done < len(p) {
		n, werr := writeSocket(fd, p[done:])
		switch {
		case n > 0:
			done += n
		case errors.Is(werr, syscall.EAGAIN):
			time.Sleep(writeRetry)
		case werr != nil:
			return done, &net.OpError{Op: "write", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: werr}
		default: // nothing written and no error: TCP does not do that, but looping on it would spin
			return done, io.ErrShortWrite
		}
		_, _, err = c.state()
	}
	if done == len(p) {
		return done, nil
	}
	return done, err
}

func (c *polledConn) SetDeadline(t time.Time) error {
	return c.setDeadline(t, c.Conn.SetDeadline)
}

// SetReadDeadline sets the one deadline of a polled connection (reads and writes alike).
func (c *polledConn) SetReadDeadline(t time.Time) error {
	return c.setDeadline(t, c.Conn.SetReadDeadline)
}

// SetWriteDeadline sets the one deadline of a polled connection (reads and writes alike).
func (c *polledConn) SetWriteDeadline(t time.Time) error {
	return c.setDeadline(t, c.Conn.SetWriteDeadline)
}

// setDeadline keeps a polled connection's deadline, or hands it to the poller's connection.
func (c *polledConn) setDeadline(t time.Time, inPoller func(time.Time) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return inPoller(t)
	}
	c.deadline = t
	return nil
}

// Close ends the connection. A polled socket is shut down (the peer sees it closed, and reads
// and writes fail) but stays open until release, so a read in flight never reads a reused
// descriptor.
func (c *polledConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		c.closed = true
		return c.Conn.Close()
	}
	if !c.closed {
		c.closed = true
		_ = shutdownSocket(c.fd)
	}
	return nil
}

// release closes the connection and frees its socket. It is called once its session is over,
// when nothing reads or writes it any more.
func (c *polledConn) release() {
	_ = c.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd >= 0 {
		_ = closeSocket(c.fd)
		c.fd = -2 // released: still "polled", so a late call fails rather than touching the poller
	}
}

// untilNextTick is the time from now to the next multiple of period on the wall clock.
func untilNextTick(now time.Time, period time.Duration) time.Duration {
	ns := now.UnixNano()
	return time.Duration(period.Nanoseconds() - ns%period.Nanoseconds())
}
