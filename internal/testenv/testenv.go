// Package testenv starts the real infrastructure gopcast's tests run against — a MinIO server
// with a fresh bucket, ffmpeg and ffprobe — and hands out free ports. Tools that are missing are
// installed (MinIO built with go install, ffmpeg from apt on Debian as root) under a file lock,
// so parallel test binaries install them once. A test that cannot get what it needs fails with
// a message saying how to fix it; it never skips.
//
// It is for tests only (unit and end-to-end); nothing else imports it.
package testenv

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. Prefer binding port 0
// directly; use this only for programs that must be told their port (and may be restarted on
// it).
//
// The port is chosen below the kernel's ephemeral range (net.ipv4.ip_local_port_range), where
// neither outgoing connections nor listeners on port 0 ever land, so only another FreePort
// caller could take it before the program binds it; a process never hands out a port twice,
// and test binaries running side by side draw at random from some 20 000 ports. A port from the
// ephemeral range, as before, was lost now and then to an outgoing connection of a parallel
// test (a packager's HTTP port taken by some client's socket).
func FreePort(t testing.TB) int {
	t.Helper()
	lo, hi := portsBelowEphemeral()
	for range 200 {
		port := lo + rand.IntN(hi-lo)
		portsMu.Lock()
		taken := portsGiven[port]
		portsMu.Unlock()
		if taken {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		if err := l.Close(); err != nil {
			t.Fatalf("testenv: find a free port: %v", err)
		}
		portsMu.Lock()
		portsGiven[port] = true
		portsMu.Unlock()
		return port
	}
	t.Fatalf("testenv: no free port in %d-%d after 200 tries", lo, hi)
	return 0
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// portsBelowEphemeral returns the range [lo, hi) FreePort draws from: from 10000 up to the
// start of the ephemeral range, or 20000-30000 if that range cannot be read or leaves too
// little room below it.
func portsBelowEphemeral() (lo, hi int) {
	lo, hi = 10000, 30000
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return lo, hi
	}
	start, err := strconv.Atoi(f[0])
	if err != nil || start-lo < 5000 {
		return lo, hi
	}
	return lo, start
}
