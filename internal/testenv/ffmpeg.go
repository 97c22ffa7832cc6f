package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	ffMu        sync.Mutex
	ffmpegPath  string
	ffprobePath string
)

// FFmpeg returns the paths of ffmpeg and ffprobe, checked to run. If they are missing and the
// test runs as root on Debian, ffmpeg is installed with apt-get (once, under a file lock);
// otherwise the test fails saying how to install them.
func FFmpeg(t testing.TB) (ffmpeg, ffprobe string) {
	t.Helper()
	ffMu.Lock()
	defer ffMu.Unlock()
	if ffmpegPath != "" {
		return ffmpegPath, ffprobePath
	}
	ffmpeg, ffprobe = lookFFmpeg()
	if ffmpeg == "" || ffprobe == "" {
		if err := installFFmpeg(t); err != nil {
			t.Fatalf("testenv: ffmpeg and ffprobe are required and not in PATH: %v", err)
		}
		if ffmpeg, ffprobe = lookFFmpeg(); ffmpeg == "" || ffprobe == "" {
			t.Fatalf("testenv: installed ffmpeg but ffmpeg and ffprobe are still not both in PATH (ffmpeg %q, ffprobe %q)", ffmpeg, ffprobe)
		}
	}
	for _, bin := range []string{ffmpeg, ffprobe} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, bin, "-hide_banner", "-version").CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("testenv: %s -version: %v\n%s", bin, err, out)
		}
	}
	ffmpegPath, ffprobePath = ffmpeg, ffprobe
	return ffmpeg, ffprobe
}

func lookFFmpeg() (ffmpeg, ffprobe string) {
	ffmpeg, _ = exec.LookPath("ffmpeg")
	ffprobe, _ = exec.LookPath("ffprobe")
	return ffmpeg, ffprobe
}

// installFFmpeg runs apt-get when that can work unattended: as root on Debian or Ubuntu.
func installFFmpeg(t testing.TB) error {
	const hint = "install ffmpeg (Debian/Ubuntu: apt-get install ffmpeg; macOS: brew install ffmpeg)"
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		return errors.New(hint)
	}
	if _, err := os.Stat("/etc/debian_version"); err != nil {
		return errors.New("not Debian: " + hint)
	}
	aptGet, err := exec.LookPath("apt-get")
	if err != nil {
		return errors.New("no apt-get: " + hint)
	}
	unlock, err := lockFile("gopcast-testenv-apt.lock")
	if err != nil {
		return err
	}
	defer unlock()
	if ffmpeg, ffprobe := lookFFmpeg(); ffmpeg != "" && ffprobe != "" {
		return nil // another test binary installed it while we waited
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Minute)
	defer cancel()
	for _, args := range [][]string{
		{"update", "-q"},
		// Wait for dpkg's own lock if something else is using apt.
		{"install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=600", "ffmpeg"},
	} {
		t.Logf("testenv: ffmpeg not found; running apt-get %s", strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, aptGet, args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out := newTailBuffer(16 << 10)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w\n%s", args[0], err, out)
		}
	}
	return nil
}
