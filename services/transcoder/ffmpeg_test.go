package transcoder

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gopcast/gopcast/pkg/media"
)

func TestRunFFmpegKeepsTheEndOfStderr(t *testing.T) {
	t.Parallel()
	// 20 KiB of noise, then the line that explains the failure.
	bin, _ := fakeFFmpeg(t, `i=0; while [ $i -lt 400 ]; do echo "noise line $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" >&2; i=$((i+1)); done
echo "Error: the real reason" >&2
exit 3`)
	err := runFFmpeg(context.Background(), bin, []string{"-i", "x"})
	if err == nil {
		t.Fatal("no error for exit status 3")
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "ffmpeg: ") || !strings.Contains(msg, "exit status 3") || !strings.HasSuffix(msg, "Error: the real reason") {
		t.Errorf("error %q...: want ffmpeg, the exit status and the last stderr line", msg[:min(len(msg), 120)])
	}
	if len(msg) > 8<<10+100 || strings.Contains(msg, "noise line 0 ") {
		t.Errorf("error keeps %d bytes of stderr, want only the last 8 KiB", len(msg))
	}

	silent, _ := fakeFFmpeg(t, "exit 1")
	if err := runFFmpeg(context.Background(), silent, nil); err == nil || !strings.Contains(err.Error(), "(no output)") {
		t.Errorf("silent failure: %v", err)
	}
	ok, calls := fakeFFmpeg(t, "exit 0")
	if err := runFFmpeg(context.Background(), ok, []string{"-a", "b c"}); err != nil {
		t.Errorf("exit 0: %v", err)
	}
	if b, _ := os.ReadFile(calls); string(b) != "-a b c\n" {
		t.Errorf("arguments reached ffmpeg as %q", b)
	}
	if err := runFFmpeg(context.Background(), filepath.Join(t.TempDir(), "missing"), nil); err == nil {
		t.Error("no error for a missing binary")
	}
}

// Cancelling stops ffmpeg and everything it started (its process group), promptly.
func TestRunFFmpegCancelStopsTheProcessGroup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	bin, _ := fakeFFmpeg(t, "sleep 60 &\necho $! > '"+pidFile+"'\nwait")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- runFFmpeg(ctx, bin, nil) }()
	var child int
	for deadline := time.Now().Add(10 * time.Second); child == 0; {
		if b, err := os.ReadFile(pidFile); err == nil && strings.HasSuffix(string(b), "\n") {
			child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		if time.Now().After(deadline) {
			t.Fatal("the fake ffmpeg did not start its child")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Error("no error after cancellation")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("runFFmpeg did not return within 20 s of cancellation")
	}
	t.Logf("returned %v after start", time.Since(start))
	// The grandchild got SIGTERM too (it is gone, or a zombie waiting to be reaped).
	for deadline := time.Now().Add(3 * time.Second); alive(child); {
		if time.Now().After(deadline) {
			_ = syscall.Kill(child, syscall.SIGKILL)
			t.Fatalf("ffmpeg's child %d still runs after cancellation", child)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false // no such process
	}
	// The state follows the command name in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

func TestTailBuffer(t *testing.T) {
	t.Parallel()
	var b tailBuffer
	b.max = 10
	for _, s := range []string{"abc", "defghij", "klmnopqrstuvwxyz", "0"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if got := b.String(); got != "rstuvwxyz0" {
		t.Errorf("tail %q, want the last 10 bytes", got)
	}
}

type countingJob struct{ n atomic.Int64 }

func (j *countingJob) InProgress() error { j.n.Add(1); return nil }

func TestKeepAliveStops(t *testing.T) {
	t.Parallel()
	var job countingJob
	stop := keepAlive(context.Background(), &job)
	done := make(chan struct{})
	go func() { stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("stop did not return")
	}
	if n := job.n.Load(); n != 0 {
		t.Errorf("InProgress sent %d times within the first tick", n)
	}
}

func TestEstimateFPS(t *testing.T) {
	t.Parallel()
	frames := func(n int, step int64) []media.VideoFrame {
		out := make([]media.VideoFrame, n)
		for i := range out {
			out[i].DTS = 1_000_000 + int64(i)*step
			out[i].PTS = out[i].DTS + 2*step
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		frames []media.VideoFrame
		want   float64
	}{
		{"30 fps", frames(60, 3000), 30},
		{"25 fps", frames(50, 3600), 25},
		{"60 fps", frames(10, 1500), 60},
		{"one frame", frames(1, 3000), 30},
		{"no frames", nil, 30},
		{"no time passes", frames(5, 0), 30},
	} {
		if got := estimateFPS(tc.frames); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	f := frames(4, 3000)
	f[0].PTS = 5
	if got := minPTS(f); got != 5 {
		t.Errorf("minPTS %d", got)
	}
}

func TestFFmpegEnvAsksForHugePages(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"PATH=/bin"}, "GLIBC_TUNABLES=glibc.malloc.hugetlb=1"},
		{[]string{"GLIBC_TUNABLES=glibc.malloc.arena_max=2"}, "GLIBC_TUNABLES=glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"},
		{[]string{"GLIBC_TUNABLES=glibc.malloc.hugetlb=0"}, "GLIBC_TUNABLES=glibc.malloc.hugetlb=0"}, // the operator's choice
		{[]string{"GLIBC_TUNABLES="}, "GLIBC_TUNABLES=glibc.malloc.hugetlb=1"},
	} {
		got := ffmpegEnv(tc.in)
		n := 0
		for _, kv := range got {
			if strings.HasPrefix(kv, "GLIBC_TUNABLES=") {
				n++
				if kv != tc.want {
					t.Errorf("%v: %s, want %s", tc.in, kv, tc.want)
				}
			}
		}
		if n != 1 || len(got) < len(tc.in) {
			t.Errorf("%v: got %v", tc.in, got)
		}
	}
}
