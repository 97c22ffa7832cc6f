package e2e

// Real players in a real browser: hls.js and dash.js pages (testdata/browser) served on
// loopback, playing what gopcast wrote to MinIO (another origin, so CORS is exercised), in
// Debian's Chromium driven headless by playwright-core (testdata/browser/play.mjs). The tests
// install Chromium and the npm packages themselves (scripts/browser-deps.sh) when missing.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gopcast/gopcast/internal/testenv"
)

const browserDir = "testdata/browser"

// TestBrowserPlays: real players in a real browser. One recorded stream with two video
// renditions (an 854x480 source and the 360p rung) plays live in hls.js and in dash.js (dynamic
// MPD with its own UTCTiming), then, once the session ended, as a recording in both: 10 s each,
// currentTime advancing, a forced switch between renditions, no player error. One pipeline
// serves all four, to keep this machine's two cores for the players.
func TestBrowserPlays(t *testing.T) {
	b := startBrowserPages(t)
	ffmpeg, _ := testenv.FFmpeg(t)
	minio := testenv.MinIO(t)
	g := startAll(t, minio, ffmpeg)
	s := g.createStream(t, `{"name": "browser", "record": true}`)
	if s.Playback.DASH == "" {
		t.Fatal("the create response has no playback.dash URL")
	}
	const seconds = 60
	pub := browserPublisher(t, ffmpeg, g.rtmp+"/"+s.StreamKey, seconds)
	browserWaitLive(t, s.Playback.HLS, 3)
	browserRequireCORS(t, s.Playback.HLS, b.origin)

	t.Run("live-hls", func(t *testing.T) {
		res := b.play(t, "hls.html", s.Playback.HLS, browserPlayOptions{seconds: 10, switchRung: true, liveMaster: s.Playback.HLS})
		if res.Live == nil || !*res.Live {
			t.Errorf("hls.js did not see a live playlist (live=%v)", res.Live)
		}
	})
	t.Run("live-dash", func(t *testing.T) {
		body, code, err := httpGet(s.Playback.DASH)
		if err != nil || code != http.StatusOK {
			t.Fatalf("live MPD %s: %d %v", s.Playback.DASH, code, err)
		}
		if !bytes.Contains(body, []byte(`type="dynamic"`)) {
			t.Errorf("live MPD is not type=\"dynamic\":\n%s", browserTruncate(body, 2000))
		}
		if !bytes.Contains(body, []byte("UTCTiming")) {
			t.Errorf("live MPD has no UTCTiming element (dash.js would ask time.akamai.com):\n%s", browserTruncate(body, 2000))
		}
		browserRequireCORS(t, s.Playback.DASH, b.origin)
		res := b.play(t, "dash.html", s.Playback.DASH, browserPlayOptions{seconds: 10, switchRung: true, liveMaster: s.Playback.HLS})
		if res.Live == nil || !*res.Live {
			t.Errorf("dash.js did not see a dynamic MPD (live=%v)", res.Live)
		}
	})

	select {
	case err := <-pub:
		if err != nil {
			t.Fatalf("publisher: %v", err)
		}
	case <-time.After(browserBudget(t, (seconds+60)*time.Second)):
		t.Fatalf("the %d s publish did not end", seconds)
	}
	rec := browserWaitRecording(t, g, s.ID, 4*time.Minute)
	t.Logf("recording %s: %.2f s, %d bytes, hls %s, dash %s", rec.SessionID, rec.Duration, rec.Bytes, rec.HLS, rec.DASH)
	for _, tc := range []struct{ name, page, src string }{
		{"recording-hls", "hls.html", rec.HLS},
		{"recording-dash", "dash.html", rec.DASH},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.src == "" {
				t.Fatalf("the recording lists no URL: %+v", rec)
			}
			src := browserResolveURL(t, g.public+"/", tc.src)
			browserRequireCORS(t, src, b.origin)
			// A recording can be buffered to its end before the switch; dash.js then only shows
			// a new quality if the buffer is replaced (hls.js's nextLevel flushes by itself).
			res := b.play(t, tc.page, src, browserPlayOptions{seconds: 10, switchRung: true, replace: true})
			if res.Live != nil && *res.Live {
				t.Errorf("%s saw the recording as live", res.Player)
			}
		})
	}
}

// browserPages serves the player pages and the players' dist files on loopback.
type browserPages struct {
	dir    string // absolute testdata/browser
	origin string // http://127.0.0.1:PORT
	node   string
}

var browserDepsMu sync.Mutex

// startBrowserPages installs Chromium and the npm packages if they are missing (it runs
// scripts/browser-deps.sh, which is quiet and quick when everything is there) and serves the
// pages for this test.
func startBrowserPages(t *testing.T) *browserPages {
	t.Helper()
	dir, err := filepath.Abs(browserDir)
	if err != nil {
		t.Fatal(err)
	}
	browserDepsMu.Lock()
	script := filepath.Join(dir, "..", "..", "..", "..", "scripts", "browser-deps.sh")
	ctx, cancel := context.WithTimeout(context.Background(), browserBudget(t, 20*time.Minute))
	start := time.Now()
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	cancel()
	browserDepsMu.Unlock()
	if err != nil {
		t.Fatalf("scripts/browser-deps.sh: %v\n%s", err, out)
	}
	if len(out) > 0 {
		t.Logf("scripts/browser-deps.sh (%s):\n%s", time.Since(start).Round(time.Second), browserTail(out, 4000))
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node (Node.js 20 or later) is required for the browser tests: %v", err)
	}

	mux := http.NewServeMux()
	files := http.FileServer(http.Dir(dir))
	for _, p := range []string{"/hls.html", "/dash.html", "/common.js",
		"/node_modules/hls.js/dist/", "/node_modules/dashjs/dist/"} {
		mux.Handle(p, files)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return &browserPages{dir: dir, origin: srv.URL, node: node}
}

type browserPlayOptions struct {
	seconds    int
	switchRung bool   // force a switch to another video rendition halfway
	replace    bool   // dash.js: replace the buffer on the switch
	liveMaster string // a live master playlist whose growth is watched while the browser plays
}

// browserPlayResult is the part of play.mjs's report the tests read; the whole report is logged on
// failure.
type browserPlayResult struct {
	OK            bool     `json:"ok"`
	Failures      []string `json:"failures"`
	Player        string   `json:"player"`
	PlayerVersion string   `json:"playerVersion"`
	Browser       string   `json:"browserVersion"`
	StartupMs     int      `json:"startupMs"`
	Advanced      float64  `json:"advanced"`
	Live          *bool    `json:"live"`
	Levels        []struct {
		ID     string `json:"id"`
		Width  int    `json:"width"`
		Height int    `json:"height"`
		Codecs string `json:"codecs"`
	} `json:"levels"`
	Switch *struct {
		From            any     `json:"from"`
		To              any     `json:"to"`
		Height          int     `json:"height"`
		RenderedAfterMs int     `json:"renderedAfterMs"`
		VideoHeight     int     `json:"videoHeight"`
		AdvancedAfter   float64 `json:"advancedAfter"`
	} `json:"switch"`
	Errors []json.RawMessage `json:"errors"`
	Final  struct {
		Stalls        int `json:"stalls"`
		DroppedFrames int `json:"droppedFrames"`
		TotalFrames   int `json:"totalFrames"`
	} `json:"final"`
}

// play opens page?src=src in Chromium through play.mjs and fails the test unless the player
// played as asked without an error event.
func (b *browserPages) play(t *testing.T, page, src string, o browserPlayOptions) browserPlayResult {
	t.Helper()
	pageURL := b.origin + "/" + page + "?src=" + url.QueryEscape(src)
	want := time.Duration(30+o.seconds+20+60) * time.Second // startup + play + switch + launch
	limit := browserBudget(t, want+30*time.Second)
	if limit < time.Duration(o.seconds+20)*time.Second {
		t.Fatalf("only %s left before the test deadline: too little to play %d s in a browser", limit, o.seconds)
	}
	profile := filepath.Join(t.TempDir(), "chromium-profile")
	if err := os.Mkdir(profile, 0o700); err != nil {
		t.Fatal(err)
	}
	args := []string{"play.mjs", "--url", pageURL, "--seconds", strconv.Itoa(o.seconds),
		"--profile-dir", profile, "--watch-stdin"}
	if o.switchRung {
		args = append(args, "--switch")
	}
	if o.replace {
		args = append(args, "--switch-replace")
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.node, args...)
	cmd.Dir = b.dir
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	// On cancel the driver gets SIGTERM and closes the browser itself; WaitDelay bounds that.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	stdin, err := cmd.StdinPipe() // held open until the driver ends: its end tells the driver we died
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	t.Logf("playing %s in %s", src, page)
	var pace func() (string, bool)
	if o.liveMaster != "" {
		pace = browserWatchPace(t, o.liveMaster)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("node play.mjs: %v", err)
	}
	runErr := cmd.Wait()
	elapsed := time.Since(start)
	paceMsg, slow := "", false
	if pace != nil {
		paceMsg, slow = pace()
		t.Log(paceMsg)
	}
	if n := browserKillLeftovers(profile); n > 0 {
		t.Logf("killed %d browser process(es) left running", n)
	}
	t.Logf("play.mjs (%s, %v):\n%s", elapsed.Round(100*time.Millisecond), runErr, browserTail(stderr.Bytes(), 4000))

	var res browserPlayResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("play.mjs printed no report (%v): %v\nstdout:\n%s", runErr, err, browserTail(stdout.Bytes(), 8000))
	}
	if !res.OK || runErr != nil {
		t.Logf("play.mjs report:\n%s", browserTail(stdout.Bytes(), 60000))
		if slow {
			t.Errorf("the live pipeline ran slower than real time while the browser played, so a live player had to stall: %s", paceMsg)
		}
		t.Errorf("%s %s in Chromium %s failed: %s", res.Player, res.PlayerVersion, res.Browser, strings.Join(res.Failures, "; "))
		t.FailNow()
	}
	msg := fmt.Sprintf("%s %s in Chromium %s: playing after %d ms, currentTime +%.2f s in %d s, %d renditions",
		res.Player, res.PlayerVersion, res.Browser, res.StartupMs, res.Advanced, o.seconds, len(res.Levels))
	if res.Switch != nil {
		msg += fmt.Sprintf(", switch %v -> %v (height %d) shown after %d ms", res.Switch.From, res.Switch.To, res.Switch.VideoHeight, res.Switch.RenderedAfterMs)
	}
	msg += fmt.Sprintf(", %d stalls, %d/%d frames dropped, 0 errors", res.Final.Stalls, res.Final.DroppedFrames, res.Final.TotalFrames)
	t.Log(msg)
	return res
}

// browserWatchPace polls the top variant of a live master playlist until the returned function
// is called, which reports how much media the pipeline listed in that wall time, and whether it
// was clearly slower than real time (a live player then stalls whatever the stream's quality).
func browserWatchPace(t *testing.T, master string) func() (string, bool) {
	t.Helper()
	base := strings.TrimSuffix(master, "master.m3u8")
	stop := make(chan struct{})
	done := make(chan struct{})
	var media float64 // seconds of media newly listed since the first poll
	seen := map[uint64]bool{}
	polls := 0
	start := time.Now()
	go func() {
		defer close(done)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			if b, code, err := httpGet(master); err == nil && code == http.StatusOK {
				m := parseMaster(t, b)
				top := -1
				for i, v := range m.variants {
					if top < 0 || v.bandwidth > m.variants[top].bandwidth {
						top = i
					}
				}
				if top >= 0 {
					if b, code, err := httpGet(base + m.variants[top].uri); err == nil && code == http.StatusOK {
						for _, s := range parseMedia(t, b).segments {
							if !seen[s.n] && polls > 0 {
								media += s.duration
							}
							seen[s.n] = true
						}
						polls++
					}
				}
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return func() (string, bool) {
		close(stop)
		<-done
		wall := time.Since(start).Seconds()
		ratio := media / wall
		msg := fmt.Sprintf("live pipeline pace while the browser ran: %.1f s of media listed in %.1f s (x%.2f of real time)", media, wall, ratio)
		return msg, polls > 1 && ratio < 0.8
	}
}

// browserKillLeftovers kills processes still running with the test's profile directory on their
// command line: a browser the driver could not close (it was killed itself). Only Linux has
// /proc; elsewhere it does nothing.
func browserKillLeftovers(profile string) int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	marker := []byte("--user-data-dir=" + profile)
	n := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, marker) {
			continue
		}
		if p, err := os.FindProcess(pid); err == nil && p.Kill() == nil {
			n++
		}
	}
	return n
}

// browserPublisher publishes seconds of the test pattern publish() sends, encoded beforehand and
// sent in real time with -c copy, in the background until it ends or the test does; the channel
// gets its result. Encoding live would take about half a core, which a 2-core CI machine needs
// for gopcast's ladder and the browser to keep up with real time.
func browserPublisher(t *testing.T, ffmpeg, url string, seconds int) <-chan error {
	t.Helper()
	pattern := browserTestPattern(t, ffmpeg, seconds)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		cmd := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
			"-i", pattern, "-c", "copy", "-f", "flv", url)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if err != nil && ctx.Err() == nil {
			t.Logf("ffmpeg publisher: %v\n%s", err, stderr.String())
		}
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
	})
	return done
}

// browserTestPattern encodes seconds of an 854x480 30 fps test pattern at 1.5 Mbit/s (2 s GOP,
// B-frames, AAC) to an FLV file, as fast as it goes. With the default ladder it gets one rung,
// 360p: two video renditions to switch between for the cost of one small encode.
func browserTestPattern(t *testing.T, ffmpeg string, seconds int) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "pattern.flv")
	ctx, cancel := context.WithTimeout(context.Background(), browserBudget(t, 5*time.Minute))
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin",
		"-f", "lavfi", "-i", "testsrc2=size=854x480:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", strconv.Itoa(seconds),
		"-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-b:v", "1500k",
		"-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
		"-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2",
		"-f", "flv", file).CombinedOutput()
	if err != nil {
		t.Fatalf("encoding the test pattern: %v\n%s", err, out)
	}
	t.Logf("encoded %d s of test pattern in %s", seconds, time.Since(start).Round(100*time.Millisecond))
	return file
}

// browserWaitLive waits until every media playlist of the master lists at least n segments.
func browserWaitLive(t *testing.T, master string, n int) {
	t.Helper()
	base := strings.TrimSuffix(master, "master.m3u8")
	var last string
	ok := browserWaitUntil(t, 90*time.Second, func() bool {
		b, code, err := httpGet(master)
		if err != nil || code != http.StatusOK {
			last = fmt.Sprintf("master: %d %v", code, err)
			return false
		}
		m := parseMaster(t, b)
		uris := []string{m.audioURI}
		for _, v := range m.variants {
			uris = append(uris, v.uri)
		}
		if len(m.variants) < 2 {
			last = fmt.Sprintf("master lists %d variants", len(m.variants))
			return false
		}
		for _, u := range uris {
			if u == "" {
				continue
			}
			b, code, err := httpGet(base + u)
			if err != nil || code != http.StatusOK {
				last = fmt.Sprintf("%s: %d %v", u, code, err)
				return false
			}
			if got := len(parseMedia(t, b).segments); got < n {
				last = fmt.Sprintf("%s lists %d segments", u, got)
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("the live playlists at %s did not list %d segments each in time (last: %s)", master, n, last)
	}
}

// browserRequireCORS fails unless the media server lets a page of origin read url: the players run on
// the pages' origin and fetch from the bucket's.
func browserRequireCORS(t *testing.T, u, origin string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Origin", origin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if acao := resp.Header.Get("Access-Control-Allow-Origin"); acao != "*" && acao != origin {
		t.Fatalf("GET %s with Origin %s: %d, Access-Control-Allow-Origin %q: a player on another origin cannot read the media (the bucket needs a CORS rule)",
			u, origin, resp.StatusCode, acao)
	}
}

type browserRecording struct {
	SessionID string  `json:"session_id"`
	HLS       string  `json:"hls"`
	DASH      string  `json:"dash"`
	MP4       string  `json:"mp4"`
	Duration  float64 `json:"duration_s"`
	Bytes     int64   `json:"bytes"`
}

// browserWaitRecording polls GET /v1/streams/{id}/recordings until it lists a recording.
func browserWaitRecording(t *testing.T, g *gopcast, id string, timeout time.Duration) browserRecording {
	t.Helper()
	var last string
	var rec browserRecording
	ok := browserWaitUntil(t, timeout, func() bool {
		req, _ := http.NewRequest(http.MethodGet, g.api+"/v1/streams/"+id+"/recordings", nil)
		req.Header.Set("Authorization", "Bearer "+apiToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			last = err.Error()
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = fmt.Sprintf("%d %s", resp.StatusCode, browserTruncate(b, 500))
		var list struct {
			Recordings []browserRecording `json:"recordings"`
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &list) != nil || len(list.Recordings) == 0 {
			return false
		}
		rec = list.Recordings[0]
		return true
	})
	if !ok {
		t.Fatalf("GET /v1/streams/%s/recordings listed no recording within %s of the session's end (last answer: %s)", id, timeout, last)
	}
	return rec
}

func browserResolveURL(t *testing.T, base, ref string) string {
	t.Helper()
	b, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	r, err := url.Parse(ref)
	if err != nil {
		t.Fatalf("bad URL %q: %v", ref, err)
	}
	return b.ResolveReference(r).String()
}

// browserBudget is want, cut to leave a minute before the test binary's deadline.
func browserBudget(t *testing.T, want time.Duration) time.Duration {
	if d, ok := t.Deadline(); ok {
		if left := time.Until(d) - time.Minute; left < want {
			return max(left, time.Second)
		}
	}
	return want
}

// browserWaitUntil polls cond every 200 ms until it holds or the (deadline-aware) timeout passes.
func browserWaitUntil(t *testing.T, timeout time.Duration, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(browserBudget(t, timeout))
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
	return true
}

func browserTruncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}

func browserTail(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return "…" + string(b[len(b)-n:])
}
