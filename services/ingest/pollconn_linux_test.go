package ingest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Once polled, a publisher's connection is read on the shared clock's ticks, one read taking
// what arrived in the interval, and its socket is no longer in Go's poller (so arrivals do not
// wake the process); before, it is an ordinary connection.
func TestPolledConnReadsOnTicks(t *testing.T) {
	pc, client := tcpPair(t)
	buf := make([]byte, 64<<10)
	if _, err := client.Write([]byte("handshake")); err != nil {
		t.Fatal(err)
	}
	if n, err := pc.Read(buf); err != nil || string(buf[:n]) != "handshake" {
		t.Fatalf("before polling: read %q, %v", buf[:n], err)
	}
	rc, err := pc.Conn.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	_ = rc.Control(func(fd uintptr) {
		if !inPoller(t, int(fd)) {
			t.Fatal("the accepted socket is not found in Go's epoll instance: the check below would prove nothing")
		}
	})
	const tick = 30 * time.Millisecond
	if err := pc.poll(tick); err != nil {
		t.Fatal(err)
	}
	if inPoller(t, pc.fd) {
		t.Fatal("the polled socket is still registered with an epoll instance")
	}
	// 40 small writes 5 ms apart (~200 ms), as a publisher sends frames.
	const writes, size = 40, 100
	go func() {
		for range writes {
			_, _ = client.Write(make([]byte, size))
			time.Sleep(5 * time.Millisecond)
		}
	}()
	var at []time.Time
	total := 0
	_ = pc.SetDeadline(time.Now().Add(5 * time.Second))
	for total < writes*size {
		n, err := pc.Read(buf)
		if err != nil {
			t.Fatalf("read after %d bytes: %v", total, err)
		}
		total += n
		at = append(at, time.Now())
	}
	// ~200 ms of writes on 30 ms ticks: about 8 reads, not 40.
	if len(at) > writes/3 {
		t.Errorf("%d reads took %d writes; want them batched per tick", len(at), writes)
	}
	tickOf := func(t time.Time) int64 { return t.UnixNano() / int64(tick) }
	for i := 1; i < len(at); i++ {
		if tickOf(at[i]) <= tickOf(at[i-1]) {
			t.Errorf("reads %d and %d came in the same tick (%s apart)", i-1, i, at[i].Sub(at[i-1]))
		}
	}
	// Writes reach the publisher (gortmplib's acknowledgements).
	if _, err := pc.Write([]byte("ack")); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := io.ReadFull(client, buf[:3]); err != nil || string(buf[:n]) != "ack" {
		t.Fatalf("the publisher read %q, %v", buf[:n], err)
	}
}

// A polled connection keeps net.Conn's deadline and Close: the read loop's timeout, the
// shutdown's deadline and a kick from another goroutine all end a read that waits.
func TestPolledConnDeadlineAndClose(t *testing.T) {
	pc, client := tcpPair(t)
	if err := pc.poll(10 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1024)
	start := time.Now()
	_ = pc.SetDeadline(start.Add(50 * time.Millisecond))
	_, err := pc.Read(buf)
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v; want a timeout", err)
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > time.Second {
		t.Errorf("the deadline ended the read after %s; want 50 ms and a tick", d)
	}

	_ = pc.SetDeadline(time.Time{})
	go func() {
		time.Sleep(50 * time.Millisecond)
		_ = pc.Close()
	}()
	start = time.Now()
	if _, err := pc.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read of a closed connection: %v; want net.ErrClosed", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close ended the read after %s", d)
	}
	// The publisher sees the connection closed at once, before release frees the socket.
	_ = client.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := client.Read(buf); err != io.EOF {
		t.Errorf("the publisher's read after Close: %v; want EOF", err)
	}
	if _, err := pc.Write([]byte("x")); err == nil {
		t.Error("a write to a closed connection succeeded")
	}
}

func TestPolledConnEOF(t *testing.T) {
	pc, client := tcpPair(t)
	if err := pc.poll(10 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	_ = client.Close()
	_ = pc.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(pc)
	if err != nil || string(b) != "last words" {
		t.Fatalf("read %q, %v; want the last bytes, then EOF", b, err)
	}
	link := fmt.Sprintf("/proc/self/fd/%d", pc.fd)
	sock, err := os.Readlink(link)
	if err != nil || !strings.HasPrefix(sock, "socket:") {
		t.Fatalf("the polled descriptor is %q, %v", sock, err)
	}
	pc.release()
	if now, _ := os.Readlink(link); now == sock {
		t.Errorf("the socket %s is still open after release", sock)
	}
}

// inPoller reports whether fd's file is registered with any epoll instance of this process.
func inPoller(t *testing.T, fd int) bool {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	ino := fmt.Sprintf("ino:%x ", st.Ino)
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range fds {
		if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); l != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		found = true
		if strings.Contains(string(info)+" ", ino) {
			return true
		}
	}
	if !found {
		t.Fatal("no epoll instance found: the check would prove nothing")
	}
	return false
}
