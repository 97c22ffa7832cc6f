// Package testenv starts the real infrastructure gopcast's tests run against — a MinIO server
// with a fresh bucket, ffmpeg and ffprobe — and hands out free ports. Tools that are missing are
// installed (MinIO built with go install, ffmpeg from apt on Debian as root) under a file lock,
// so parallel test binaries install them once. A test that cannot get what it needs fails with
// a message saying how to fix it; it never skips.
//
// It is for tests only (unit and end-to-end); nothing else imports it.
package testenv

import (
	"net"
	"testing"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. Prefer binding port 0
// directly; use this only for programs that must be told their port.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: find a free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatalf("testenv: find a free port: %v", err)
	}
	return port
}
