package ingest

import (
	"net"
	"syscall"
)

// detach returns a non-blocking duplicate of the connection's socket and closes the
// connection, which takes the socket out of Go's poller (epoll) while the duplicate keeps it
// open.
func detach(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, errPollUnsupported
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) {
		// Close-on-exec from the start: the all-in-one process runs ffmpeg.
		r, _, e := syscall.Syscall(syscall.SYS_FCNTL, s, syscall.F_DUPFD_CLOEXEC, 0)
		if e != 0 {
			derr = e
			return
		}
		fd = int(r)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, derr
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		_ = syscall.Close(fd)
		return -1, err
	}
	if err := c.Close(); err != nil {
		_ = syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

func readSocket(fd int, p []byte) (int, error) {
	for {
		n, err := syscall.Read(fd, p)
		if err == syscall.EINTR {
			continue
		}
		return max(n, 0), err
	}
}

// writeSocket sends without SIGPIPE when the peer is gone: the error says it.
func writeSocket(fd int, p []byte) (int, error) {
	for {
		n, err := syscall.SendmsgN(fd, p, nil, nil, syscall.MSG_NOSIGNAL)
		if err == syscall.EINTR {
			continue
		}
		return max(n, 0), err
	}
}

// shutdownSocket ends both directions: the peer sees the connection closed, and reads and
// writes in flight fail, while the descriptor stays valid.
func shutdownSocket(fd int) error { return syscall.Shutdown(fd, syscall.SHUT_RDWR) }

func closeSocket(fd int) error { return syscall.Close(fd) }
