// Package e2e runs gopcast the way a user does: MinIO and `gopcast all` on loopback, a stream
// created through the API, ffmpeg publishing over RTMP, and a player's view of the bucket
// checked with ffprobe.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopcast/gopcast/internal/app"
	"github.com/gopcast/gopcast/internal/testenv"
)

const apiToken = "e2e-test-token"

// gopcast is one running `gopcast all` process, in-process.
type gopcast struct {
	app    *app.App
	api    string // http://127.0.0.1:PORT
	rtmp   string // rtmp://127.0.0.1:PORT/live
	public string
	logs   *syncBuffer
	stop   func() // stops it as SIGTERM does, and waits (at most 60 s); once
}

func startAll(t *testing.T, minio *testenv.MinIOServer, ffmpeg string, extra ...string) *gopcast {
	t.Helper()
	var args []string
	if minio != nil {
		args = []string{
			"--s3-endpoint", minio.Endpoint, "--s3-bucket", minio.Bucket, "--s3-region", minio.Region,
			"--s3-access-key", minio.AccessKey, "--s3-secret-key", minio.SecretKey,
			"--public-base-url", minio.PublicBaseURL(),
		}
	}
	args = append(append(args,
		"--rtmp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--data-dir", t.TempDir(), "--api-token", apiToken, "--ffmpeg", ffmpeg,
		"--log-format", "text", "--log-level", "debug",
	), extra...)
	cfg, err := app.Parse("all", args, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	a := app.New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	g := &gopcast{app: a, logs: logs}
	g.stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("gopcast all: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("gopcast all did not stop within 60s")
		}
	})
	t.Cleanup(func() {
		g.stop()
		if t.Failed() {
			t.Logf("gopcast logs:\n%s", logs.String())
		}
	})
	g.api = "http://" + a.HTTPAddr()
	g.public = g.api + "/media"
	if minio != nil {
		g.public = minio.PublicBaseURL()
	}
	g.rtmp = "rtmp://" + a.RTMPAddr() + "/live"
	waitFor(t, 30*time.Second, "gopcast ready", func() bool {
		resp, err := http.Get(g.api + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return g
}

type createdStream struct {
	ID         string `json:"id"`
	StreamKey  string `json:"stream_key"`
	RTMPURL    string `json:"rtmp_url"`
	PublishURL string `json:"publish_url"`
	Playback   struct {
		HLS  string `json:"hls"`
		DASH string `json:"dash"`
	} `json:"playback"`
	Status string `json:"status"`
}

func (g *gopcast) createStream(t *testing.T, body string) createdStream {
	t.Helper()
	req, _ := http.NewRequest("POST", g.api+"/v1/streams", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /v1/streams: %d %s", resp.StatusCode, b)
	}
	var s createdStream
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// publish runs ffmpeg sending seconds of a 1280x720 30 fps test pattern (2 s GOP, B-frames,
// AAC) to url in real time, and returns its error and stderr.
func publish(ctx context.Context, ffmpeg, url string, seconds int) (string, error) {
	args := []string{"-hide_banner", "-loglevel", "error", "-nostdin", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", fmt.Sprint(seconds),
		"-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-b:v", "2500k",
		"-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
		"-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2",
		"-f", "flv", url}
	cmd := exec.CommandContext(ctx, ffmpeg, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	return stderr.String(), err
}

func httpGet(url string) ([]byte, int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return b, resp.StatusCode, err
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestMain(m *testing.M) {
	os.Exit(m.Run())
}
