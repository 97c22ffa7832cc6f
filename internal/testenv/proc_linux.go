//go:build linux

package testenv

import "syscall"

// childAttr makes the kernel kill the child when the test binary dies (a panic or go test's
// -timeout), so no MinIO outlives its test.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
