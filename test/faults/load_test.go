package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestLoad: N passthrough publishers (default 50; GOPCAST_FAULT_LOAD_STREAMS) publish for 60 s
// (GOPCAST_FAULT_LOAD_SECONDS) at once, every role a process of its own, and no segment may be
// lost: every stream lists every chunk its publisher sent, in every rendition, none a gap,
// every listed segment in the bucket, every playlist ended.
//
// The publishers are cmd/loadgen's Go RTMP publisher replaying one pre-encoded FLV in real time
// (one process for all streams; it also watches every stream's playlists and counts lost
// segments). If cmd/loadgen does not build (or GOPCAST_FAULT_LOAD_PUBLISHER=ffmpeg), each
// stream gets an `ffmpeg -re -c copy` of the FLV instead (no encoding) and a watcher of the
// test's own.
func TestLoad(t *testing.T) {
	n := envInt(t, "GOPCAST_FAULT_LOAD_STREAMS", 50)
	seconds := envInt(t, "GOPCAST_FAULT_LOAD_SECONDS", 60)
	workers := envInt(t, "GOPCAST_FAULT_LOAD_WORKERS", 2)
	// Default flags: a passthrough chunk gives its transcoder slot (sized for ffmpeg encodes)
	// back, so half the CPUs' slots carry 50 streams.
	c := newCluster(t, clusterConfig{transcoders: workers, packagers: workers})
	clip := loadClip(t, c.ffmpeg, seconds)

	roles := []*proc{c.nats, c.api, c.ingest}
	for i := 1; i <= workers; i++ {
		roles = append(roles, c.procByName(fmt.Sprintf("transcoder-%d", i)), c.procByName(fmt.Sprintf("packager-%d", i)))
	}
	cpu0 := make([]float64, len(roles))
	for i, p := range roles {
		cpu0[i] = p.cpuSeconds()
	}
	minioPID := pidListening(strings.TrimPrefix(c.minio.Endpoint, "http://"))
	minio0 := procCPU(minioPID)
	started := time.Now()
	if traceWatch {
		// Where the backlog is, every 10 s: the consumers' pending counts.
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(10 * time.Second):
					t.Logf("%5.1fs: JetStream:\n%s", time.Since(started).Seconds(), c.jetStreamState())
				}
			}
		}()
	}
	var ids []string
	var lost, listed, expected int
	publisher := "cmd/loadgen"
	lg, err := buildLoadgen(t)
	switch {
	case os.Getenv("GOPCAST_FAULT_LOAD_PUBLISHER") == "ffmpeg":
		err = fmt.Errorf("GOPCAST_FAULT_LOAD_PUBLISHER=ffmpeg")
		fallthrough
	case err != nil:
		t.Logf("publishing with ffmpeg -c copy, not cmd/loadgen: %v", err)
		publisher = "ffmpeg -re -c copy"
		ids, lost, listed, expected = runFFmpegLoad(t, c, clip, n, seconds)
	default:
		ids, lost, listed, expected = runLoadgen(t, c, lg, clip, n, seconds)
	}
	// Passthrough: a source and an audio rendition, a segment per 2 s of media each.
	if want := n * seconds / 2 * 2; expected != want || listed != want {
		t.Errorf("%d segments expected and %d listed, want %d (is the report of %s what this test reads?)", expected, listed, want, publisher)
	}
	took := time.Since(started)

	// Independently of the publishers' own bookkeeping: every stream's playlists ended, and
	// every segment number up to the last is in the bucket.
	missing := 0
	for _, id := range ids {
		missing += checkBucket(t, c.minio.PublicBaseURL()+"/live/"+id+"/")
	}
	var cpu []string
	for i, p := range roles {
		cpu = append(cpu, fmt.Sprintf("%s %.0f%%", p.name, 100*(p.cpuSeconds()-cpu0[i])/took.Seconds()))
	}
	if minioPID != 0 {
		cpu = append(cpu, fmt.Sprintf("minio %.0f%%", 100*(procCPU(minioPID)-minio0)/took.Seconds()))
	}
	t.Logf("FIGURES load: %d passthrough publishers (%s) x %d s: %d of %d segments listed, %d lost, %d missing from the bucket; "+
		"CPU (of one core) over %s: %s", n, publisher, seconds, listed, expected, lost, missing, took.Round(time.Second), strings.Join(cpu, ", "))
	if lost != 0 || missing != 0 {
		t.Errorf("%d segments lost, %d missing from the bucket", lost, missing)
	}
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// loadClip encodes the publishers' input once: seconds of 640x360 30 fps H.264 (2 s GOP) and
// AAC, about 1 Mbit/s, as FLV.
func loadClip(t *testing.T, ffmpeg string, seconds int) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "clip.flv")
	out, err := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", strconv.Itoa(seconds),
		"-c:v", "libx264", "-preset", "ultrafast", "-bf", "3", "-pix_fmt", "yuv420p",
		"-b:v", "900k", "-maxrate", "900k", "-bufsize", "1800k",
		"-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
		"-c:a", "aac", "-b:a", "64k", "-ar", "48000", "-ac", "2", "-f", "flv", f).CombinedOutput()
	if err != nil {
		t.Fatalf("encoding the load clip: %v\n%s", err, out)
	}
	return f
}

var (
	loadgenOnce sync.Once
	loadgenBin  string
	loadgenErr  error
)

// buildLoadgen builds cmd/loadgen (once per run).
func buildLoadgen(t *testing.T) (string, error) {
	loadgenOnce.Do(func() {
		bin := filepath.Join(filepath.Dir(gopcastBin), "loadgen")
		cmd := exec.Command("go", "build", "-o", bin, "github.com/gopcast/gopcast/cmd/loadgen")
		cmd.Env = append(os.Environ(), "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			loadgenErr = fmt.Errorf("%v\n%s", err, out)
			return
		}
		loadgenBin = bin
	})
	return loadgenBin, loadgenErr
}

// loadgenReport is the part of loadgen's --json report the test reads.
type loadgenReport struct {
	Overall struct {
		Expected int `json:"segments_expected"`
		Listed   int `json:"segments_listed"`
		Gaps     int `json:"gaps"`
		Missing  int `json:"missing"`
		Lost     int `json:"lost"`
		Delay    struct {
			Median float64 `json:"median"`
			P99    float64 `json:"p99"`
			Max    float64 `json:"max"`
		} `json:"delay_s"`
	} `json:"overall"`
	PerStream []struct {
		ID        string `json:"id"`
		Error     string `json:"error"`
		Publisher struct {
			Chunks   int     `json:"chunks_expected"`
			MaxLagMS float64 `json:"max_write_lag_ms"`
		} `json:"publisher"`
	} `json:"per_stream"`
}

func runLoadgen(t *testing.T, c *cluster, bin, clip string, n, seconds int) (ids []string, lost, listed, expected int) {
	t.Helper()
	report := filepath.Join(t.TempDir(), "loadgen.json")
	ctx, cancel := context.WithTimeout(t.Context(), time.Duration(seconds)*time.Second+4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "run", "--api", "http://"+c.api.httpAddr, "--token", apiToken,
		"--rtmp", c.rtmp, "--input", clip, "--streams", strconv.Itoa(n), "--duration", fmt.Sprintf("%ds", seconds),
		"--profile", "passthrough", "--poll", "1s", "--stagger", fmt.Sprintf("%dms", 2000/n),
		"--end-timeout", "2m", "--json", report, "--name", "load")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("loadgen output:\n%s", out.String())
		}
	})
	b, rerr := os.ReadFile(report)
	if rerr != nil {
		t.Fatalf("loadgen: %v (no report: %v)\n%s", err, rerr, out.String())
	}
	var rep loadgenReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("loadgen report: %v", err)
	}
	if err != nil {
		t.Errorf("loadgen: %v", err)
	}
	maxLag := 0.0
	for _, s := range rep.PerStream {
		if s.Error != "" {
			t.Errorf("stream %s: %s", s.ID, s.Error)
		}
		if s.ID != "" {
			ids = append(ids, s.ID)
		}
		if s.Publisher.Chunks != seconds/2 {
			t.Errorf("stream %s: the publisher sent %d chunks' worth, want %d", s.ID, s.Publisher.Chunks, seconds/2)
		}
		maxLag = max(maxLag, s.Publisher.MaxLagMS)
	}
	if len(ids) != n {
		t.Errorf("%d streams created, want %d", len(ids), n)
	}
	o := rep.Overall
	t.Logf("loadgen: %d expected, %d listed, %d gaps, %d missing; listing delay median %.2f s, p99 %.2f s, max %.2f s; publisher write lag max %.0f ms",
		o.Expected, o.Listed, o.Gaps, o.Missing, o.Delay.Median, o.Delay.P99, o.Delay.Max, maxLag)
	return ids, o.Lost, o.Listed, o.Expected
}

// runFFmpegLoad publishes the clip to n streams with ffmpeg -re -c copy and watches them.
func runFFmpegLoad(t *testing.T, c *cluster, clip string, n, seconds int) (ids []string, lost, listed, expected int) {
	t.Helper()
	var pubs []*publisher
	var ws []*watcher
	for i := range n {
		s := c.createStream(fmt.Sprintf("load-%d", i), "passthrough")
		ids = append(ids, s.ID)
		w := newWatcher(t, s.base(), time.Second)
		w.fetch = false
		ws = append(ws, w.start())
		pubs = append(pubs, startPublisher(t, c.ffmpeg, []string{"-hide_banner", "-loglevel", "error", "-nostdin",
			"-re", "-i", clip, "-c", "copy", "-f", "flv", c.publishURL(s)}))
	}
	for _, p := range pubs {
		if err := p.wait(time.Duration(seconds)*time.Second + 2*time.Minute); err != nil {
			t.Errorf("publisher: %v", err)
		}
	}
	want := seconds / 2
	for i, w := range ws {
		if !poll(2*time.Minute, 500*time.Millisecond, w.allEnded) {
			t.Errorf("stream %s: not ended", ids[i])
		}
		w.stop()
		for _, name := range w.renditions() {
			expected += want
			got := w.listed(name)
			listed += got
			w.mu.Lock()
			r := w.rends[name]
			for k := uint64(0); k < uint64(want); k++ {
				if s := r.segs[k]; s == nil || s.gap {
					lost++
				}
			}
			w.mu.Unlock()
		}
		for _, p := range w.problems {
			t.Errorf("stream %s: player saw: %s", ids[i], p)
		}
	}
	return ids, lost, listed, expected
}

// checkBucket checks that a finished stream's playlists ended and that every segment number up
// to the last listed one is in the bucket; it returns how many are not.
func checkBucket(t *testing.T, base string) (missing int) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	get := func(u string) ([]byte, int) {
		resp, err := client.Get(u)
		if err != nil {
			return nil, 0
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return b.Bytes(), resp.StatusCode
	}
	m, code := get(base + "master.m3u8")
	if code != 200 {
		t.Errorf("%smaster.m3u8: HTTP %d", base, code)
		return 0
	}
	variants, audio, err := parseMaster(m)
	if err != nil {
		t.Errorf("%smaster.m3u8: %v", base, err)
		return 0
	}
	for _, r := range append(variants, audio) {
		b, code := get(base + r + "/index.m3u8")
		if code != 200 {
			t.Errorf("%s%s/index.m3u8: HTTP %d", base, r, code)
			continue
		}
		p, err := parseMedia(b)
		if err != nil || !p.ended || len(p.entries) == 0 {
			t.Errorf("%s%s/index.m3u8: not an ended playlist (%v):\n%s", base, r, err, b)
			continue
		}
		last := p.entries[len(p.entries)-1].n
		for k := uint64(0); k <= last; k++ {
			req, _ := http.NewRequest("HEAD", fmt.Sprintf("%s%s/%d.m4s", base, r, k), nil)
			resp, err := client.Do(req)
			if err != nil || resp.StatusCode != 200 {
				missing++
				t.Errorf("%s%s/%d.m4s is not in the bucket (%v)", base, r, k, err)
			}
			if resp != nil {
				resp.Body.Close()
			}
		}
	}
	return missing
}

// pidListening finds the process of this test whose command line names addr (MinIO's
// --address), for its CPU figures; 0 if none.
func pidListening(addr string) int {
	for _, pid := range descendants(os.Getpid()) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && bytes.Contains(b, []byte(addr)) {
			return pid
		}
	}
	return 0
}
