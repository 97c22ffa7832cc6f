package e2e

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopcast/gopcast/internal/app"
	"github.com/gopcast/gopcast/internal/testenv"
	"github.com/gopcast/gopcast/pkg/queue"
)

// apiCall sends an authenticated request and decodes the JSON answer into out (if not nil).
func apiCall(t *testing.T, api, method, path, body string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, api+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

type streamView struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	StreamKey string `json:"stream_key"`
	Live      *struct {
		SessionID string `json:"session_id"`
		Ingest    *struct {
			VideoCodec       string   `json:"video_codec"`
			AudioCodec       string   `json:"audio_codec"`
			Width            int      `json:"width"`
			Height           int      `json:"height"`
			FrameRate        float64  `json:"frame_rate"`
			BitrateKbps      float64  `json:"bitrate_kbps"`
			VideoBitrateKbps float64  `json:"video_bitrate_kbps"`
			KeyframeInterval float64  `json:"keyframe_interval_s"`
			BytesIn          uint64   `json:"bytes_in"`
			Warnings         []string `json:"warnings"`
		} `json:"ingest"`
	} `json:"live"`
}

func getStream(t *testing.T, api, id string) (streamView, int) {
	t.Helper()
	var v streamView
	code := apiCall(t, api, "GET", "/v1/streams/"+id, "", &v)
	return v, code
}

// publisher is a running ffmpeg publish whose end can be awaited.
type publisher struct {
	started time.Time
	done    chan struct{}
	err     error
	out     string
	end     time.Time
}

func startPublisher(ffmpeg, url string, seconds int) *publisher {
	p := &publisher{done: make(chan struct{}), started: time.Now()}
	go func() {
		defer close(p.done)
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds+60)*time.Second)
		defer cancel()
		p.out, p.err = publish(ctx, ffmpeg, url, seconds)
		p.end = time.Now()
	}()
	return p
}

func (p *publisher) wait(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("publisher still running after %s", timeout)
	}
}

func waitLive(t *testing.T, api, id string) streamView {
	t.Helper()
	var v streamView
	waitFor(t, 20*time.Second, "stream live", func() bool {
		v, _ = getStream(t, api, id)
		return v.Status == "live"
	})
	return v
}

// TestLiveStatusAndHealth: a publishing stream is live with health figures that match what
// the publisher sends, and its session is listed, then ended.
func TestLiveStatusAndHealth(t *testing.T) {
	ffmpeg, _ := testenv.FFmpeg(t)
	minio := testenv.MinIO(t)
	g := startAll(t, minio, ffmpeg, "--profile", "passthrough")
	s := g.createStream(t, `{"name": "health"}`)

	events := make(chan queue.Event, 100)
	subscribeEvents(t, g, events)

	p := startPublisher(ffmpeg, g.rtmp+"/"+s.StreamKey, 18)
	waitLive(t, g.api, s.ID)
	// Let the 5 s measuring window fill, past the encoder's start-up burst.
	var v streamView
	waitFor(t, 20*time.Second, "a full health window", func() bool {
		v, _ = getStream(t, g.api, s.ID)
		return v.Live != nil && v.Live.Ingest != nil && v.Live.Ingest.KeyframeInterval > 0 && v.Live.Ingest.FrameRate > 0 &&
			time.Since(p.startTime()) > 12*time.Second
	})
	h := v.Live.Ingest
	t.Logf("health: %+v", *h)
	if h.Width != 1280 || h.Height != 720 || !strings.HasPrefix(h.VideoCodec, "avc1.") || h.AudioCodec != "mp4a.40.2" {
		t.Errorf("codecs/resolution: %+v", *h)
	}
	if math.Abs(h.FrameRate-30) > 1 {
		t.Errorf("frame rate %.1f, publisher sends 30", h.FrameRate)
	}
	if math.Abs(h.KeyframeInterval-2) > 0.2 {
		t.Errorf("keyframe interval %.1f s, publisher sends 2 s", h.KeyframeInterval)
	}
	// 2500 kbit/s video + 128 kbit/s audio; x264's rate control wanders a little.
	if h.BitrateKbps < 2000 || h.BitrateKbps > 3300 {
		t.Errorf("bitrate %.0f kbps, publisher sends ~2630", h.BitrateKbps)
	}
	if h.BytesIn == 0 {
		t.Error("bytes_in is 0")
	}
	if len(h.Warnings) != 0 {
		t.Errorf("warnings for a healthy publisher: %v", h.Warnings)
	}
	var sess struct {
		Sessions []struct {
			ID      string  `json:"id"`
			Status  string  `json:"status"`
			BytesIn uint64  `json:"bytes_in"`
			Dur     float64 `json:"duration_s"`
		} `json:"sessions"`
	}
	if code := apiCall(t, g.api, "GET", "/v1/streams/"+s.ID+"/sessions", "", &sess); code != 200 || len(sess.Sessions) != 1 || sess.Sessions[0].Status != "live" {
		t.Fatalf("sessions while live: %d %+v", code, sess)
	}
	p.wait(t, 60*time.Second)
	waitFor(t, 15*time.Second, "stream idle", func() bool {
		v, _ := getStream(t, g.api, s.ID)
		return v.Status == "idle"
	})
	apiCall(t, g.api, "GET", "/v1/streams/"+s.ID+"/sessions", "", &sess)
	if len(sess.Sessions) != 1 || sess.Sessions[0].Status != "ended" || sess.Sessions[0].BytesIn < 3_000_000 ||
		math.Abs(sess.Sessions[0].Dur-18) > 3 {
		t.Errorf("sessions after the end: %+v", sess)
	}
	var kinds []string
	waitFor(t, 10*time.Second, "stream.live and stream.idle events", func() bool {
		for {
			select {
			case ev := <-events:
				if ev.StreamID == s.ID {
					kinds = append(kinds, ev.Kind)
				}
				continue
			default:
			}
			break
		}
		return strings.Contains(strings.Join(kinds, ","), "stream.live") && strings.Contains(strings.Join(kinds, ","), "stream.idle")
	})
}

func (p *publisher) startTime() time.Time { return p.started }

// TestKeyRotationAndDeletionCutPublisher: rotating the key or deleting the stream disconnects
// a live publisher within a second; the old key is refused, the new one works; a second
// publisher is refused while the first is up.
func TestKeyRotationAndDeletionCutPublisher(t *testing.T) {
	ffmpeg, _ := testenv.FFmpeg(t)
	minio := testenv.MinIO(t)
	g := startAll(t, minio, ffmpeg, "--profile", "passthrough")
	s := g.createStream(t, `{"name": "rotate me"}`)

	p := startPublisher(ffmpeg, g.rtmp+"/"+s.StreamKey, 60)
	waitLive(t, g.api, s.ID)

	// A second publisher on a live stream is refused at once.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	out, err := publish(ctx, ffmpeg, g.rtmp+"/"+s.StreamKey, 5)
	cancel()
	if err == nil {
		t.Fatalf("second publisher was accepted: %s", out)
	}
	if v, _ := getStream(t, g.api, s.ID); v.Status != "live" {
		t.Fatalf("first publisher lost by the refusal of the second: %+v", v)
	}

	var rotated streamView
	rotateAt := time.Now()
	if code := apiCall(t, g.api, "POST", "/v1/streams/"+s.ID+"/rotate-key", "", &rotated); code != 200 || rotated.StreamKey == "" || rotated.StreamKey == s.StreamKey {
		t.Fatalf("rotate-key: %d %+v", code, rotated)
	}
	p.wait(t, 10*time.Second)
	if d := p.end.Sub(rotateAt); d > 1500*time.Millisecond {
		t.Errorf("publisher cut %s after the rotation; want within a second", d)
	} else {
		t.Logf("publisher cut %s after the rotation", d)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
	if _, err := publish(ctx, ffmpeg, g.rtmp+"/"+s.StreamKey, 3); err == nil {
		t.Error("the old key still publishes")
	}
	cancel()

	p2 := startPublisher(ffmpeg, g.rtmp+"/"+rotated.StreamKey, 60)
	waitLive(t, g.api, s.ID)
	delAt := time.Now()
	if code := apiCall(t, g.api, "DELETE", "/v1/streams/"+s.ID, "", nil); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	p2.wait(t, 10*time.Second)
	if d := p2.end.Sub(delAt); d > 1500*time.Millisecond {
		t.Errorf("publisher cut %s after the deletion; want within a second", d)
	}
	if _, code := getStream(t, g.api, s.ID); code != 404 {
		t.Errorf("deleted stream: GET %d", code)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := publish(ctx, ffmpeg, g.rtmp+"/"+rotated.StreamKey, 3); err == nil {
		t.Error("a deleted stream's key still publishes")
	}
	if strings.Contains(g.logs.String(), s.StreamKey) || strings.Contains(g.logs.String(), rotated.StreamKey) {
		t.Error("a stream key appears in the logs")
	}
}

// TestStateSharedAcrossInstances: two api processes and an ingest on one NATS see the same
// streams, keys and live status.
func TestStateSharedAcrossInstances(t *testing.T) {
	ffmpeg, _ := testenv.FFmpeg(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nats, err := queue.Connect(ctx, queue.Config{DataDir: t.TempDir()}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nats.Close)
	url := nats.ClientURL()

	start := func(role string, extra ...string) *app.App {
		args := append([]string{"--nats-url", url, "--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir(),
			"--api-token", apiToken, "--log-format", "text"}, extra...)
		cfg, err := app.Parse(role, args, func(string) string { return "" }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		a := app.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		actx, acancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); _ = a.Run(actx) }()
		t.Cleanup(func() { acancel(); wg.Wait() })
		return a
	}
	api1 := "http://" + start("api").HTTPAddr()
	api2 := "http://" + start("api").HTTPAddr()
	ing := start("ingest", "--rtmp-addr", "127.0.0.1:0")
	rtmp := "rtmp://" + ing.RTMPAddr() + "/live"

	var s streamView
	if code := apiCall(t, api1, "POST", "/v1/streams", `{"name":"shared","profile":"passthrough"}`, &s); code != 201 {
		t.Fatalf("create: %d", code)
	}
	if v, code := getStream(t, api2, s.ID); code != 200 || v.ID != s.ID {
		t.Fatalf("second api instance: %d %+v", code, v)
	}
	p := startPublisher(ffmpeg, rtmp+"/"+s.StreamKey, 60)
	waitLive(t, api2, s.ID)
	if v, _ := getStream(t, api1, s.ID); v.Status != "live" {
		t.Errorf("api1 sees %s", v.Status)
	}
	if code := apiCall(t, api2, "POST", "/v1/streams/"+s.ID+"/rotate-key", "", nil); code != 200 {
		t.Fatalf("rotate: %d", code)
	}
	p.wait(t, 10*time.Second)
	waitFor(t, 15*time.Second, "idle on both api instances", func() bool {
		v1, _ := getStream(t, api1, s.ID)
		v2, _ := getStream(t, api2, s.ID)
		return v1.Status == "idle" && v2.Status == "idle"
	})
}

func subscribeEvents(t *testing.T, g *gopcast, ch chan<- queue.Event) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, err := queue.Connect(ctx, queue.Config{URL: g.app.NATSURL()}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.SubscribeEvents(ctx, "", func(ev queue.Event) {
		select {
		case ch <- ev:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
}
