package transcoder

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

// runFFmpeg runs ffmpeg in its own process group under ctx: cancellation sends SIGTERM to the
// group, and a process that ignores it is killed after a grace period. The tail of stderr is
// kept for the error.
func runFFmpeg(ctx context.Context, bin string, args []string) error {
	cmd, stderr := ffmpegCmd(ctx, bin, args)
	return ffmpegErr(cmd.Run(), stderr)
}

// ffmpegCmd is ffmpeg set up as runFFmpeg runs it, with the tail of its stderr.
func ffmpegCmd(ctx context.Context, bin string, args []string) (*exec.Cmd, *tailBuffer) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = ffmpegEnv(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	}
	cmd.WaitDelay = 5 * time.Second
	stderr := &tailBuffer{max: 8 << 10}
	cmd.Stderr = stderr
	return cmd, stderr
}

// ffmpegErr is the error of an ffmpeg run, with what it said.
func ffmpegErr(err error, stderr *tailBuffer) error {
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

// ffmpegEnv is env with hugePages added to GLIBC_TUNABLES unless it sets glibc.malloc.hugetlb.
func ffmpegEnv(env []string) []string {
	out := make([]string, 0, len(env)+1)
	found := false
	for _, kv := range env {
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

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	if over := t.buf.Len() - t.max; over > 0 {
		t.buf.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}
