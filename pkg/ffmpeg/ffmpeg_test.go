package ffmpeg

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRunFFmpegKeepsTheEndOfStderr(t *testing.T) {
	t.Parallel()
	// 20 KiB of noise, then the line that explains the failure.
	bin, _ := fakeFFmpeg(t, `i=0; while [ $i -lt 400 ]; do echo "noise line $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" >&2; i=$((i+1)); done
echo "Error: the real reason" >&2
exit 3`)
	err := Run(context.Background(), bin, []string{"-i", "x"})
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
	if err := Run(context.Background(), silent, nil); err == nil || !strings.Contains(err.Error(), "(no output)") {
		t.Errorf("silent failure: %v", err)
	}
	ok, calls := fakeFFmpeg(t, "exit 0")
	if err := Run(context.Background(), ok, []string{"-a", "b c"}); err != nil {
		t.Errorf("exit 0: %v", err)
	}
	if b, _ := os.ReadFile(calls); string(b) != "-a b c\n" {
		t.Errorf("arguments reached ffmpeg as %q", b)
	}
	if err := Run(context.Background(), filepath.Join(t.TempDir(), "missing"), nil); err == nil {
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
	go func() { done <- Run(ctx, bin, nil) }()
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
	var b Tail
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
		got := env(tc.in)
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

// fakeFFmpeg writes a shell script standing in for ffmpeg: it records its arguments in calls,
// one line per run, then runs body.
func fakeFFmpeg(t *testing.T, body string) (bin, calls string) {
	t.Helper()
	dir := t.TempDir()
	bin = filepath.Join(dir, "ffmpeg")
	calls = filepath.Join(dir, "calls")
	script := "#!/bin/sh\necho \"$*\" >> '" + calls + "'\n" + body + "\n"
	// Written by a child process, never opened for writing here: a parallel test forking
	// meanwhile would inherit that descriptor until its exec, and running the script then
	// fails with "text file busy" (ETXTBSY; CI saw it).
	w := exec.Command("sh", "-c", `cat > "$1" && chmod 755 "$1"`, "sh", bin)
	w.Stdin = strings.NewReader(script)
	if out, err := w.CombinedOutput(); err != nil {
		t.Fatalf("writing the fake ffmpeg: %v: %s", err, out)
	}
	return bin, calls
}
