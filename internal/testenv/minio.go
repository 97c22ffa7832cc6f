package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// MinIOModule is the MinIO release the harness builds when no minio binary is installed.
const MinIOModule = "github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c"

const (
	minioReadyTimeout = 60 * time.Second
	minioStopTimeout  = 10 * time.Second
	minioBuildTimeout = 20 * time.Minute
	minioOutputMax    = 64 << 10
)

// MinIOServer is a MinIO server of one test, listening on 127.0.0.1 with a bucket of its own.
// Objects under live/ and vod/ in the bucket are readable anonymously, as in a deployment where
// players fetch straight from the bucket: GET PublicBaseURL()+"/"+key.
type MinIOServer struct {
	Endpoint  string // http://127.0.0.1:PORT
	Bucket    string // unique per MinIO call
	AccessKey string
	SecretKey string
	Region    string

	bin         string
	dataDir     string
	certsDir    string
	addr        string // host:port of the S3 API
	consoleAddr string
	out         *tailBuffer

	mu      sync.Mutex
	proc    *minioProc
	started int
}

type minioProc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, valid after done
}

// MinIO starts a MinIO server on free ports with a data directory under t.TempDir(), creates
// a bucket and makes live/* and vod/* publicly readable. The server is stopped when the test
// ends, and its output (the last 64 KiB) is logged if the test failed.
//
// The minio binary is looked up in PATH, then in $(go env GOBIN) and $(go env GOPATH)/bin;
// if there is none it is built with go install (about four minutes, once per machine: run
// the first go test with -timeout 20m).
func MinIO(t testing.TB) *MinIOServer {
	t.Helper()
	m := &MinIOServer{
		AccessKey: "gopcast-test",
		SecretKey: randomHex(16),
		Region:    "us-east-1",
		bin:       minioBinary(t),
		dataDir:   t.TempDir(),
		certsDir:  t.TempDir(), // empty: plain HTTP, whatever ~/.minio/certs holds
		out:       newTailBuffer(minioOutputMax),
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testenv: output of minio at %s:\n%s", m.Endpoint, m.out)
		}
	})
	// A port found free can be taken before MinIO binds it; MinIO then exits at once, and
	// another pair of ports is tried.
	var err error
	for range 3 {
		m.addr = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
		m.consoleAddr = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
		m.Endpoint = "http://" + m.addr
		if err = m.Start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("testenv: %v\nminio output:\n%s", err, m.out)
	}
	t.Cleanup(m.Stop)

	m.Bucket = "gopcast-" + randomHex(6)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := m.createBucket(ctx); err != nil {
		t.Fatalf("testenv: minio at %s: %v\nminio output:\n%s", m.Endpoint, err, m.out)
	}
	return m
}

// PublicBaseURL is where anonymous clients (players, tests playing their part) read objects:
// PublicBaseURL()+"/live/ID/master.m3u8".
func (m *MinIOServer) PublicBaseURL() string {
	return m.Endpoint + "/" + m.Bucket
}

// Start starts the server again after Stop, on the same port and with the same data, and
// waits until it serves requests. It does nothing if the server is running. It may be called
// from any goroutine.
func (m *MinIOServer) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc != nil {
		select {
		case <-m.proc.done: // crashed: start a new one
		default:
			return nil
		}
	}
	m.started++
	fmt.Fprintf(m.out, "--- testenv: starting minio (start %d) at %s ---\n", m.started, time.Now().Format(time.TimeOnly))
	cmd := exec.Command(m.bin, "server", m.dataDir,
		"--address", m.addr,
		"--console-address", m.consoleAddr,
		"--certs-dir", m.certsDir)
	cmd.Env = append(envWithout("MINIO_"),
		"MINIO_ROOT_USER="+m.AccessKey,
		"MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_UPDATE=off",
		"MINIO_CI_CD=1",
	)
	cmd.Stdout = m.out
	cmd.Stderr = m.out
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start minio: %w", err)
	}
	p := &minioProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	m.proc = p
	if err := m.waitReady(p); err != nil {
		_ = cmd.Process.Kill()
		<-p.done
		m.proc = nil
		return err
	}
	return nil
}

// Stop stops the server: SIGTERM, then SIGKILL after 10 s. Requests fail until Start. It does
// nothing if the server is not running. It may be called from any goroutine.
func (m *MinIOServer) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.proc
	if p == nil {
		return
	}
	m.proc = nil
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(minioStopTimeout)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		fmt.Fprintf(m.out, "--- testenv: minio ignored SIGTERM for %s, killing it ---\n", minioStopTimeout)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	fmt.Fprintf(m.out, "--- testenv: minio stopped at %s ---\n", time.Now().Format(time.TimeOnly))
}

// waitReady polls the liveness endpoint until MinIO answers it with its object layer up.
func (m *MinIOServer) waitReady(p *minioProc) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.NewTimer(minioReadyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	url := m.Endpoint + "/minio/health/live"
	for {
		resp, err := client.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			// MinIO answers 200 before its object layer is initialised, saying so only in
			// this header; requests made then fail with "Server not initialized".
			if resp.StatusCode == http.StatusOK && resp.Header.Get("X-Minio-Server-Status") != "offline" {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("minio at %s exited before it was ready: %v", m.Endpoint, p.err)
		case <-deadline.C:
			return fmt.Errorf("minio at %s not ready after %s (last error: %v)", m.Endpoint, minioReadyTimeout, err)
		case <-tick.C:
		}
	}
}

func (m *MinIOServer) createBucket(ctx context.Context) error {
	client, err := minio.New(m.addr, &minio.Options{
		Creds:  credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""),
		Secure: false,
		Region: m.Region,
	})
	if err != nil {
		return err
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err = client.MakeBucket(ctx, m.Bucket, minio.MakeBucketOptions{Region: m.Region})
		if err == nil || minio.ToErrorResponse(err).Code == "BucketAlreadyOwnedByYou" {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("create bucket %s: %w", m.Bucket, err)
		case <-tick.C: // MinIO can refuse requests for a moment after it says it is live
		}
	}
	policy := fmt.Sprintf(`{
  "Version": "2012-10-17",
  "Statement": [{
    "Effect": "Allow",
    "Principal": {"AWS": ["*"]},
    "Action": ["s3:GetObject"],
    "Resource": ["arn:aws:s3:::%[1]s/live/*", "arn:aws:s3:::%[1]s/vod/*"]
  }]
}`, m.Bucket)
	if err := client.SetBucketPolicy(ctx, m.Bucket, policy); err != nil {
		return fmt.Errorf("set public-read policy on %s: %w", m.Bucket, err)
	}
	return nil
}

var (
	minioBinMu sync.Mutex
	minioBin   string
)

// minioBinary finds the minio binary, building it if there is none.
func minioBinary(t testing.TB) string {
	t.Helper()
	minioBinMu.Lock()
	defer minioBinMu.Unlock()
	if minioBin != "" {
		return minioBin
	}
	if p := findMinIO(); p != "" {
		minioBin = p
		return p
	}
	// Another test binary may be building it: wait for its lock, then look again.
	t.Logf("testenv: no minio binary in PATH or %s; waiting for the build lock", strings.Join(goBinDirs(), ", "))
	unlock, err := lockFile("gopcast-testenv-minio.lock")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer unlock()
	if p := findMinIO(); p != "" {
		minioBin = p
		return p
	}
	if err := buildMinIO(t); err != nil {
		t.Fatalf("testenv: build minio: %v\nInstall it yourself with: go install %s", err, MinIOModule)
	}
	p := findMinIO()
	if p == "" {
		t.Fatalf("testenv: go install %s succeeded but no minio binary is in %s", MinIOModule, strings.Join(goBinDirs(), ", "))
	}
	minioBin = p
	return p
}

func buildMinIO(t testing.TB) error {
	t.Logf("testenv: building minio with go install %s (about 4 minutes, once per machine)", MinIOModule)
	goTool, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("the go command is not in PATH: %w", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), minioBuildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "install", MinIOModule)
	// Outside any module and without the caller's GOFLAGS (-mod=vendor would break it).
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	out := newTailBuffer(16 << 10)
	cmd.Stdout = out
	cmd.Stderr = out
	start := time.Now()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(30 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				t.Logf("testenv: still building minio (%s)", time.Since(start).Round(time.Second))
			}
		}
	})
	err = cmd.Run()
	close(done)
	wg.Wait()
	if err != nil {
		return fmt.Errorf("%w\n%s", err, out)
	}
	t.Logf("testenv: built minio in %s", time.Since(start).Round(time.Second))
	return nil
}

// findMinIO returns the path of an executable minio, or "".
func findMinIO() string {
	if p, err := exec.LookPath("minio"); err == nil {
		return p
	}
	for _, dir := range goBinDirs() {
		p := filepath.Join(dir, "minio")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// goBinDirs are where go install puts binaries: GOBIN if set, else GOPATH's bin directories.
func goBinDirs() []string {
	gobin, gopath := os.Getenv("GOBIN"), os.Getenv("GOPATH")
	if out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output(); err == nil {
		lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
		if len(lines) == 2 {
			gobin, gopath = strings.TrimSpace(lines[0]), strings.TrimSpace(lines[1])
		}
	}
	if gobin != "" {
		return []string{gobin}
	}
	if gopath == "" {
		if home, err := os.UserHomeDir(); err == nil {
			gopath = filepath.Join(home, "go")
		}
	}
	var dirs []string
	for _, p := range filepath.SplitList(gopath) {
		if p != "" {
			dirs = append(dirs, filepath.Join(p, "bin"))
		}
	}
	return dirs
}

// envWithout is the environment minus variables starting with prefix, so a developer's own
// MINIO_* settings do not change the test server.
func envWithout(prefix string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, prefix) {
			env = append(env, kv)
		}
	}
	return env
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(errors.New("crypto/rand failed")) // unreachable: crypto/rand never fails
	}
	return hex.EncodeToString(b)
}
