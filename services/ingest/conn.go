package ingest

import (
	"bufio"
	"io"
	"net"
)

// readBuffer is how much of the publisher's bytes one read from the socket may take.
// gortmplib reads through a 4 KiB bufio.Reader, one read system call per 4 KiB, and reading
// was most of the ingest's CPU (a 3 Mbit/s stream's video frames are ~13 KiB, its keyframes
// ~100 KiB). In front of it, this buffer takes what has arrived in one call.
const readBuffer = 64 << 10

// publisherConn is a publisher's connection as gortmplib reads and writes it: reads go
// through a buffer (once publishing, the socket is read on ticks; see polledConn).
type publisherConn struct {
	io.Reader
	io.Writer
}

func newPublisherConn(conn net.Conn) *publisherConn {
	return &publisherConn{Reader: bufio.NewReaderSize(conn, readBuffer), Writer: conn}
}
