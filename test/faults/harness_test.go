package faults

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gopcast/gopcast/internal/testenv"
)

const apiToken = "faults-test-token"

// gopcastBin is the gopcast binary built by TestMain.
var gopcastBin string

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "gopcast-faults-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	gopcastBin = filepath.Join(dir, "gopcast")
	start := time.Now()
	// Built without -race even when the tests are: a dozen race-instrumented processes would
	// not keep up with real-time video on a 2-core machine.
	cmd := exec.Command("go", "build", "-trimpath", "-o", gopcastBin, "github.com/gopcast/gopcast/cmd/gopcast")
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "faults: go build ./cmd/gopcast: %v\n%s", err, out)
		return 1
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "faults: built gopcast in %s\n", time.Since(start).Round(time.Millisecond))
	}
	return m.Run()
}

// logBuffer keeps the last max bytes of a process's output, across its restarts.
type logBuffer struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped int64
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.dropped += int64(over)
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *logBuffer) mark(format string, a ...any) {
	fmt.Fprintf(b, "--- faults %s: %s ---\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// tail is the last n bytes, for a failure message.
func (b *logBuffer) tail(n int) string {
	s := b.String()
	if len(s) > n {
		return "[...]\n" + s[len(s)-n:]
	}
	return s
}

// proc is one gopcast process (a role), which can be killed and started again with the same
// arguments, ports and data directory.
type proc struct {
	t        *testing.T
	name     string // e.g. "transcoder-1"
	role     string
	args     []string
	httpAddr string
	tmp      string // TMPDIR
	logs     *logBuffer

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error
	starts  int
}

// start starts the process; it does not wait for readiness.
func (p *proc) start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
		default:
			p.t.Fatalf("%s: started while running", p.name)
		}
	}
	p.starts++
	p.logs.mark("start #%d: gopcast %s %s", p.starts, p.role, strings.Join(p.args, " "))
	cmd := exec.Command(gopcastBin, append([]string{p.role}, p.args...)...)
	// Temporary files (a transcoder's chunk directories, which a killed one leaves behind) go
	// to a directory removed with the test.
	cmd.Env = append(envWithout("GOPCAST_"), "TMPDIR="+p.tmp)
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	// The kernel kills the role if the test binary dies (panic, -timeout), so none outlives it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("%s: start: %v", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.exitErr = cmd, done, nil
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		if p.cmd == cmd {
			p.exitErr = err
		}
		p.mu.Unlock()
		p.logs.mark("exited: %v", errOrOK(err))
		close(done)
	}()
}

func errOrOK(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// running reports whether the process is running.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// waitReady polls /readyz until it answers 200.
func (p *proc) waitReady(timeout time.Duration) {
	p.t.Helper()
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get("http://" + p.httpAddr + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-done:
			p.t.Fatalf("%s exited before it was ready: %v\n%s", p.name, p.exitErr, p.logs.tail(8<<10))
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s not ready after %s (last: %v)\n%s", p.name, timeout, err, p.logs.tail(8<<10))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill sends SIGKILL to the process and to every process it started (ffmpeg runs in its own
// process group), as the death of its container would, and waits for it to be gone. It
// returns how many descendants were killed with it.
func (p *proc) kill() int {
	p.t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return 0
	}
	select {
	case <-done:
		return 0
	default:
	}
	pid := cmd.Process.Pid
	// Freeze it first, so it cannot start a child between the scan and the kill.
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	kids := descendants(pid)
	p.logs.mark("kill -9 (with %d descendants)", len(kids))
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.t.Fatalf("%s survived SIGKILL", p.name)
	}
	return len(kids)
}

// term sends SIGTERM and waits up to timeout for the process to exit; it returns the exit
// error and how long the shutdown took. A process still running after timeout is killed and
// the test fails.
func (p *proc) term(timeout time.Duration) (time.Duration, error) {
	p.t.Helper()
	start := time.Now()
	p.sigterm()
	err := p.waitExit(timeout)
	return time.Since(start), err
}

// sigterm sends SIGTERM, without waiting.
func (p *proc) sigterm() {
	p.signal(syscall.SIGTERM)
}

// waitExit waits up to timeout for the process to exit and returns its exit error. A process
// still running after timeout is killed and the test fails.
func (p *proc) waitExit(timeout time.Duration) error {
	p.t.Helper()
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
	case <-time.After(timeout):
		p.kill()
		p.t.Errorf("%s did not exit within %s", p.name, timeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// logsSince is the process's output after the last mark containing what.
func (p *proc) logsSince(what string) string {
	s := p.logs.String()
	if i := strings.LastIndex(s, what+" ---"); i >= 0 {
		return s[i:]
	}
	return ""
}

// metric reads one unlabelled sample from the process's /metrics.
func (p *proc) metric(name string) (float64, error) {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + p.httpAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	return 0, fmt.Errorf("%s: no metric %s", p.name, name)
}

// signal sends sig to the process (not its children).
func (p *proc) signal(sig syscall.Signal) {
	if pid := p.pid(); pid != 0 {
		p.logs.mark("signal %v", sig)
		_ = syscall.Kill(pid, sig)
	}
}

// cpuSeconds is the CPU time the process and the children it waited for used so far.
func (p *proc) cpuSeconds() float64 {
	pid := p.pid()
	if pid == 0 {
		return 0
	}
	return procCPU(pid)
}

// procCPU reads utime+stime+cutime+cstime of a process, in seconds.
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return 0
	}
	var ticks float64
	for _, k := range []int{11, 12, 13, 14} { // utime stime cutime cstime
		v, _ := strconv.ParseFloat(f[k], 64)
		ticks += v
	}
	return ticks / 100 // USER_HZ is 100 on Linux
}

// descendants lists every process below pid, from /proc.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		children[pp] = append(children[pp], n)
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		for _, k := range children[c] {
			out = append(out, k)
			queue = append(queue, k)
		}
	}
	return out
}

// envWithout is the environment minus variables starting with prefix, so a developer's own
// GOPCAST_* settings do not change the processes under test.
func envWithout(prefix string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, prefix) {
			env = append(env, kv)
		}
	}
	return env
}

// cluster is one deployment: MinIO, a `gopcast nats` server and the roles, each a process.
type cluster struct {
	t       *testing.T
	ffmpeg  string
	ffprobe string
	minio   *testenv.MinIOServer

	natsAddr string // 127.0.0.1:PORT, fixed across restarts
	nats     *proc

	mu    sync.Mutex
	procs []*proc
	n     map[string]int

	api      *proc
	ingest   *proc
	rtmpAddr string // 127.0.0.1:PORT
	rtmp     string // rtmp://127.0.0.1:PORT/live

	// Extra flags for every role of a kind, added at creation.
	roleArgs map[string][]string
}

// clusterConfig says what to start.
type clusterConfig struct {
	transcoders int
	packagers   int
	// profile is the transcoders' and the API's default ladder.
	profile string
	// transcoderArgs and packagerArgs are added to those roles' flags.
	transcoderArgs []string
	packagerArgs   []string
	ingestArgs     []string
}

// newCluster starts MinIO, the NATS server, the api and ingest roles and the transcoders and
// packagers asked for, and waits until every one is ready. Everything is stopped (SIGKILL,
// with descendants) when the test ends, and the logs of every process are shown if it failed.
func newCluster(t *testing.T, cfg clusterConfig) *cluster {
	t.Helper()
	ffmpeg, ffprobe := testenv.FFmpeg(t)
	c := &cluster{t: t, ffmpeg: ffmpeg, ffprobe: ffprobe, n: map[string]int{}, roleArgs: map[string][]string{}}
	if cfg.profile == "" {
		cfg.profile = "passthrough"
	}
	c.minio = testenv.MinIO(t)
	t.Cleanup(c.shutdown)

	// Every role that writes media has the bucket: the ingest (source and audio segments), the
	// transcoders (rungs), the packagers (playlists, manifests, recordings).
	s3 := []string{"--s3-endpoint", c.minio.Endpoint, "--s3-bucket", c.minio.Bucket, "--s3-region", c.minio.Region,
		"--s3-access-key", c.minio.AccessKey, "--s3-secret-key", c.minio.SecretKey}
	c.roleArgs["transcoder"] = slices.Concat(s3, []string{"--profile", cfg.profile, "--ffmpeg", ffmpeg}, cfg.transcoderArgs)
	c.roleArgs["packager"] = slices.Concat(s3, []string{
		"--ffmpeg", ffmpeg,
		// Segments stay for the whole test, so nothing a slow check fetches late is gone.
		"--segment-grace", "30m",
	}, cfg.packagerArgs)
	c.roleArgs["api"] = []string{"--api-token", apiToken, "--public-base-url", c.minio.PublicBaseURL(), "--profile", cfg.profile}
	c.roleArgs["ingest"] = slices.Concat(s3, []string{"--profile", cfg.profile}, cfg.ingestArgs)

	c.natsAddr = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	c.nats = c.newProc("nats", "--nats-listen", c.natsAddr)
	c.nats.start()
	c.nats.waitReady(30 * time.Second)

	// The api creates the JetStream assets first; the rest then start together.
	c.api = c.add("api")
	c.api.waitReady(30 * time.Second)
	c.rtmpAddr = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	c.rtmp = "rtmp://" + c.rtmpAddr + "/live"
	c.ingest = c.newProc("ingest", "--rtmp-addr", c.rtmpAddr)
	c.ingest.start()
	started := []*proc{c.ingest}
	for range cfg.transcoders {
		started = append(started, c.startRole("transcoder"))
	}
	for range cfg.packagers {
		started = append(started, c.startRole("packager"))
	}
	for _, p := range started {
		p.waitReady(30 * time.Second)
	}
	return c
}

// newProc prepares a process of role with the cluster's common flags, a free HTTP port and a
// data directory of its own.
func (c *cluster) newProc(role string, extra ...string) *proc {
	c.t.Helper()
	c.mu.Lock()
	c.n[role]++
	name := fmt.Sprintf("%s-%d", role, c.n[role])
	c.mu.Unlock()
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(c.t))
	args := []string{"--http-addr", httpAddr, "--data-dir", c.t.TempDir(), "--log-format", "text"}
	if role != "nats" {
		args = append(args, "--nats-url", "nats://"+c.natsAddr)
	}
	args = append(args, c.roleArgs[role]...)
	args = append(args, extra...)
	p := &proc{t: c.t, name: name, role: role, args: args, httpAddr: httpAddr, tmp: c.t.TempDir(), logs: &logBuffer{max: 8 << 20}}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p
}

// startRole starts a new process of role without waiting for it.
func (c *cluster) startRole(role string, extra ...string) *proc {
	p := c.newProc(role, extra...)
	p.start()
	return p
}

// add starts a new process of role and waits until it is ready.
func (c *cluster) add(role string, extra ...string) *proc {
	c.t.Helper()
	p := c.startRole(role, extra...)
	p.waitReady(30 * time.Second)
	return p
}

// shutdown kills every process and shows their logs if the test failed.
func (c *cluster) shutdown() {
	c.mu.Lock()
	procs := append([]*proc(nil), c.procs...)
	c.mu.Unlock()
	failed := c.t.Failed() || os.Getenv("GOPCAST_FAULT_LOGS") != ""
	if failed && c.nats != nil && c.nats.running() {
		c.t.Logf("=== JetStream state ===\n%s", c.jetStreamState())
	}
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].kill()
	}
	if failed {
		for _, p := range procs {
			c.t.Logf("=== log of %s (last 48 KiB) ===\n%s", p.name, p.logs.tail(48<<10))
		}
	}
}

// stream is a stream created through the API.
type stream struct {
	ID         string `json:"id"`
	StreamKey  string `json:"stream_key"`
	PublishURL string `json:"publish_url"`
	Playback   struct {
		HLS  string `json:"hls"`
		DASH string `json:"dash"`
	} `json:"playback"`
	Status string `json:"status"`
}

// base is the stream's live directory URL, ending in "/".
func (s *stream) base() string { return strings.TrimSuffix(s.Playback.HLS, "master.m3u8") }

// apiCall sends an authenticated request to the api role and decodes the JSON answer.
func (c *cluster) apiCall(method, path, body string, out any) (int, error) {
	req, err := http.NewRequest(method, "http://"+c.api.httpAddr+path, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+apiToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && len(b) > 0 && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %v: %s", method, path, err, b)
		}
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	return resp.StatusCode, nil
}

func (c *cluster) createStream(name, profile string) *stream {
	c.t.Helper()
	body, _ := json.Marshal(map[string]string{"name": name, "profile": profile})
	var s stream
	if _, err := c.apiCall("POST", "/v1/streams", string(body), &s); err != nil {
		c.t.Fatal(err)
	}
	if s.ID == "" || s.StreamKey == "" || !strings.HasPrefix(s.Playback.HLS, c.minio.PublicBaseURL()+"/live/") {
		c.t.Fatalf("create stream: %+v", s)
	}
	return &s
}

// publishURL is where a publisher of s sends RTMP (to the ingest directly).
func (c *cluster) publishURL(s *stream) string { return c.rtmp + "/" + s.StreamKey }

// streamStatus is GET /v1/streams/ID's status ("idle" or "live").
func (c *cluster) streamStatus(id string) (string, error) {
	var v struct {
		Status string `json:"status"`
	}
	_, err := c.apiCall("GET", "/v1/streams/"+id, "", &v)
	return v.Status, err
}

// sessionView is one entry of GET /v1/streams/ID/sessions.
type sessionView struct {
	ID        string     `json:"id"`
	Status    string     `json:"status"`
	EndedAt   *time.Time `json:"ended_at"`
	EndReason string     `json:"end_reason"`
}

func (c *cluster) sessions(id string) ([]sessionView, error) {
	var v struct {
		Sessions []sessionView `json:"sessions"`
	}
	if _, err := c.apiCall("GET", "/v1/streams/"+id+"/sessions", "", &v); err != nil {
		return nil, err
	}
	return v.Sessions, nil
}

// waitFor polls cond every 100 ms until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(timeout, 100*time.Millisecond, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// poll calls cond every interval until it holds (true) or timeout passes (false).
func poll(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// hold keeps a fault in place for d (an outage's length is the test's choice, not a condition
// to wait for), returning early if ctx ends.
func hold(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// freeAddr is a free 127.0.0.1 address for a listener of the test itself.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
