// Package ffmpeg runs the ffmpeg binary, the one way every role does: in its own process group
// under the caller's context (cancellation sends SIGTERM to the group, and a process that
// ignores it is killed after a grace period), with the tail of its stderr kept for the error
// and the environment asking glibc for huge pages. Building the arguments is the caller's
// (pure functions, golden-tested, as pkg/media/ladder's).
package ffmpeg

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Run runs ffmpeg to the end.
func Run(ctx context.Context, bin string, args []string) error {
	cmd, stderr := Command(ctx, bin, args)
	return Err(cmd.Run(), stderr)
}

// Command is ffmpeg set up as Run runs it, for a caller that wires its input and outputs
// itself, with the tail of its stderr for Err.
func Command(ctx context.Context, bin string, args []string) (*exec.Cmd, *Tail) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	}
	cmd.WaitDelay = 5 * time.Second
	stderr := &Tail{max: 8 << 10}
	cmd.Stderr = stderr
	return cmd, stderr
}

// Err is the error of an ffmpeg run (nil for none), with what it said.
func Err(err error, stderr *Tail) error {
	if err == nil {
		return nil
	}
	msg := strings.TrimSpace(stderr.String())
	if msg == "" {
		msg = "(no output)"
	}
	return fmt.Errorf("ffmpeg: %w: %s", err, msg)
}

// hugePages is the glibc tunable that backs malloc's big allocations with transparent huge
// pages (where the kernel's THP mode is "madvise", Debian's default, or "always").
//
// An ffmpeg started per chunk allocates its decoder's and three x264 encoders' frame pools
// afresh every time, and first-touch page faults on them cost more CPU than the encode's
// difference from a continuous run: over 30 chunks of 1080p, the default ladder took 91.3
// CPU-s (18.1 of them in the kernel) against 58.6 for one continuous ffmpeg; with huge
// pages 65.8 (10.3 in the kernel). A GLIBC_TUNABLES of the operator's own is kept as it is.
const hugePages = "glibc.malloc.hugetlb=1"

// env is environ with hugePages added to GLIBC_TUNABLES unless it sets glibc.malloc.hugetlb.
func env(environ []string) []string {
	out := make([]string, 0, len(environ)+1)
	found := false
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "GLIBC_TUNABLES="); ok {
			found = true
			if !strings.Contains(v, "glibc.malloc.hugetlb") {
				if v != "" {
					v += ":"
				}
				kv = "GLIBC_TUNABLES=" + v + hugePages
			}
		}
		out = append(out, kv)
	}
	if !found {
		out = append(out, "GLIBC_TUNABLES="+hugePages)
	}
	return out
}

// Tail keeps the last bytes written to it: ffmpeg's last words.
type Tail struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	if over := t.buf.Len() - t.max; over > 0 {
		t.buf.Next(over)
	}
	return len(p), nil
}

func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}
