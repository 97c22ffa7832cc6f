package testenv

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// FreePort's port was free when it returned, lies outside the kernel's ephemeral range (where
// outgoing connections would take it) and is never handed out twice. Another FreePort caller
// in a parallel test binary could still take it first, which is why a port that cannot be
// bound at once is tolerated, but not three in a row.
func TestFreePort(t *testing.T) {
	t.Parallel()
	lo, hi := portsBelowEphemeral()
	seen := map[int]bool{}
	var errs []error
	for range 3 {
		port := FreePort(t)
		if port < lo || port >= hi {
			t.Fatalf("FreePort = %d, outside [%d, %d)", port, lo, hi)
		}
		if seen[port] {
			t.Fatalf("FreePort handed out %d twice", port)
		}
		seen[port] = true
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		l.Close()
	}
	if len(errs) == 3 {
		t.Fatalf("three ports from FreePort were all taken: %v", errs)
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 && f[0] != strconv.Itoa(hi) && hi != 30000 {
			t.Fatalf("range [%d, %d) does not end where the ephemeral range %q starts", lo, hi, b)
		}
	}
}

func TestTailBuffer(t *testing.T) {
	t.Parallel()
	b := newTailBuffer(10)
	fmt.Fprint(b, "0123456")
	if got := b.String(); got != "0123456" {
		t.Fatalf("under the limit: %q", got)
	}
	fmt.Fprint(b, "789abcdef")
	if got := b.String(); got != "[... 6 earlier bytes dropped ...]\n6789abcdef" {
		t.Fatalf("over the limit: %q", got)
	}
}

func TestLockFileExcludes(t *testing.T) {
	t.Parallel()
	name := "gopcast-testenv-test-" + randomHex(4) + ".lock"
	t.Cleanup(func() { os.Remove(filepath.Join(os.TempDir(), name)) })
	unlock, err := lockFile(name)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan func(), 1)
	go func() {
		u, err := lockFile(name)
		if err != nil {
			t.Error(err)
			u = func() {}
		}
		got <- u
	}()
	select {
	case u := <-got:
		u()
		t.Fatal("a second locker got the lock while it was held")
	case <-time.After(200 * time.Millisecond): // a bounded wait for something that must not happen
	}
	unlock()
	select {
	case u := <-got:
		u()
	case <-time.After(10 * time.Second):
		t.Fatal("the second locker did not get the lock once it was released")
	}
}

func TestFFmpeg(t *testing.T) {
	t.Parallel()
	ffmpeg, ffprobe := FFmpeg(t)
	// The tools really work: encode a second of test pattern and read it back.
	out := filepath.Join(t.TempDir(), "test.mp4")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-loglevel", "error",
		"-f", "lavfi", "-i", "testsrc=size=160x90:rate=25:duration=1",
		"-c:v", "libx264", "-pix_fmt", "yuv420p", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	b, err := exec.CommandContext(ctx, ffprobe, "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=codec_name,nb_read_frames", "-of", "csv=p=0", out).Output()
	if err != nil {
		t.Fatalf("ffprobe: %v", err)
	}
	if got := strings.TrimSpace(string(b)); got != "h264,25" {
		t.Fatalf("ffprobe says %q, want h264,25", got)
	}
	// Asking again is cheap and gives the same answer.
	if f2, p2 := FFmpeg(t); f2 != ffmpeg || p2 != ffprobe {
		t.Fatalf("second call = %s, %s", f2, p2)
	}
}

func TestMinIO(t *testing.T) {
	t.Parallel()
	m := MinIO(t)
	if !strings.HasPrefix(m.Endpoint, "http://127.0.0.1:") || m.Bucket == "" || m.AccessKey == "" || m.SecretKey == "" || m.Region == "" {
		t.Fatalf("incomplete server description: %+v", m)
	}
	client, err := minio.New(strings.TrimPrefix(m.Endpoint, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""), Region: m.Region,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	put := func(key, body string) {
		t.Helper()
		if _, err := client.PutObject(ctx, m.Bucket, key, strings.NewReader(body), int64(len(body)), minio.PutObjectOptions{ContentType: "text/plain"}); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	put("live/s/0.m4s", "live segment")
	put("vod/s/x/0.m4s", "vod segment")
	put("private/secret", "not public")

	// live/ and vod/ are public, the rest of the bucket is not.
	for key, want := range map[string]int{"live/s/0.m4s": 200, "vod/s/x/0.m4s": 200, "private/secret": 403} {
		if got := anonymousGet(t, m.PublicBaseURL()+"/"+key); got != want {
			t.Errorf("anonymous GET %s = %d, want %d", key, got, want)
		}
	}

	// Stop and Start: down in between, then back on the same port with the same data.
	m.Stop()
	if _, err := http.Get(m.Endpoint + "/minio/health/live"); err == nil {
		t.Fatal("MinIO still answers after Stop")
	}
	m.Stop() // idempotent
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(); err != nil { // no-op while running
		t.Fatal(err)
	}
	if got := anonymousGet(t, m.PublicBaseURL()+"/live/s/0.m4s"); got != 200 {
		t.Fatalf("anonymous GET after restart = %d", got)
	}
	obj, err := client.GetObject(ctx, m.Bucket, "private/secret", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(obj)
	if err != nil || string(data) != "not public" {
		t.Fatalf("object after restart = %q, %v", data, err)
	}
}

// Every call gets its own server and bucket, so tests can run in parallel.
func TestMinIOIsolated(t *testing.T) {
	t.Parallel()
	a, b := MinIO(t), MinIO(t)
	if a.Endpoint == b.Endpoint || a.Bucket == b.Bucket || a.SecretKey == b.SecretKey {
		t.Fatalf("two calls share a server, bucket or secret: %s/%s and %s/%s", a.Endpoint, a.Bucket, b.Endpoint, b.Bucket)
	}
	port, err := strconv.Atoi(a.Endpoint[strings.LastIndex(a.Endpoint, ":")+1:])
	if err != nil || port == 0 {
		t.Fatalf("endpoint %q has no port", a.Endpoint)
	}
}

// The output a failing test shows is MinIO's own.
func TestMinIOOutputCaptured(t *testing.T) {
	t.Parallel()
	m := MinIO(t)
	m.Stop()
	out := m.out.String()
	if !strings.Contains(out, "starting minio") || !strings.Contains(strings.ToLower(out), "minio") || len(out) < 100 {
		t.Fatalf("captured output looks empty:\n%s", out)
	}
}

func anonymousGet(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// The build path, with a stand-in go command: it runs go install of the pinned module outside
// any module, and the result is found in GOBIN. (The real build takes minutes.)
func TestBuildMinIOWithFakeGo(t *testing.T) {
	bin, gobin := t.TempDir(), t.TempDir()
	record := filepath.Join(t.TempDir(), "args")
	fakeGo := `#!/bin/sh
if [ "$1" = env ]; then printf '%s\n%s\n' "$GOBIN" "$GOPATH"; exit 0; fi
printf '%s|%s|%s\n' "$*" "$(pwd)" "GOFLAGS=$GOFLAGS" > "` + record + `"
printf '#!/bin/sh\necho fake minio\n' > "$GOBIN/minio"
chmod +x "$GOBIN/minio"
`
	if err := os.WriteFile(filepath.Join(bin, "go"), []byte(fakeGo), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":/bin:/usr/bin") // no minio here
	t.Setenv("GOBIN", gobin)
	t.Setenv("GOFLAGS", "-mod=vendor")
	if p := findMinIO(); p != "" {
		t.Fatalf("findMinIO found %s before the build", p)
	}
	if err := buildMinIO(t); err != nil {
		t.Fatal(err)
	}
	if p := findMinIO(); p != filepath.Join(gobin, "minio") {
		t.Fatalf("findMinIO after the build = %q, want it in GOBIN %s", p, gobin)
	}
	got, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	want := "install " + MinIOModule + "|" + filepath.Clean(os.TempDir()) + "|GOFLAGS=\n"
	if string(got) != want {
		t.Fatalf("go was run as %q, want %q", got, want)
	}
}
