package e2e

import (
	"context"
	"math"
	"net/http"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/gopcast/gopcast/internal/testenv"
)

// TestPublishToAdaptiveHLS is the spine: 20 s of 720p30 pushed over RTMP become adaptive HLS in
// the bucket that decodes without an error, with continuous timelines in every rendition.
func TestPublishToAdaptiveHLS(t *testing.T) {
	ffmpeg, ffprobe := testenv.FFmpeg(t)
	minio := testenv.MinIO(t)
	g := startAll(t, minio, ffmpeg)

	s := g.createStream(t, `{"name": "spine test"}`)
	if s.StreamKey == "" || !strings.HasPrefix(s.PublishURL, s.RTMPURL+"/") || s.Status != "idle" {
		t.Fatalf("create response: %+v", s)
	}
	wantHLS := minio.PublicBaseURL() + "/live/" + s.ID + "/master.m3u8"
	if s.Playback.HLS != wantHLS {
		t.Fatalf("playback.hls = %q, want %q", s.Playback.HLS, wantHLS)
	}

	const seconds = 20
	w := newWatcher(t, strings.TrimSuffix(s.Playback.HLS, "master.m3u8"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pubDone := make(chan error, 1)
	go func() {
		out, err := publish(ctx, ffmpeg, g.rtmp+"/"+s.StreamKey, seconds)
		if err != nil {
			t.Logf("ffmpeg publisher: %v\n%s", err, out)
		}
		pubDone <- err
	}()
	// Watch the live playlists while the publisher runs, as a player would.
	ticker := time.NewTicker(500 * time.Millisecond)
	defer ticker.Stop()
	for running := true; running; {
		select {
		case err := <-pubDone:
			if err != nil {
				t.Fatalf("publisher failed: %v", err)
			}
			running = false
		case <-ticker.C:
			w.poll()
		}
	}
	waitEnded(t, w, 90*time.Second)

	m := w.master
	if len(m.variants) < 3 {
		t.Fatalf("master lists %d variants, want source + 720p-or-lower rungs: %+v", len(m.variants), m.variants)
	}
	if m.audioURI == "" {
		t.Fatal("master lists no audio rendition")
	}
	var rends []string
	for _, v := range m.variants {
		rends = append(rends, path.Dir(v.uri))
		if !strings.Contains(v.codecs, "avc1.") || !strings.Contains(v.codecs, "mp4a.40.2") {
			t.Errorf("variant %s CODECS=%q", v.uri, v.codecs)
		}
	}
	rends = append(rends, path.Dir(m.audioURI))

	// Every rendition lists the same contiguous segment numbers from 0.
	var count int
	starts := map[string][]float64{}
	for _, r := range rends {
		seen := w.seen[r]
		ns := contiguous(t, r, seen)
		for _, n := range ns {
			if seen[n].gap {
				t.Errorf("%s: segment %d is a gap", r, n)
			}
		}
		if count == 0 {
			count = len(ns)
		} else if len(ns) != count {
			t.Errorf("%s lists %d segments, others %d", r, len(ns), count)
		}
		segs := make([]playlistSegment, len(ns))
		total := 0.0
		for i, n := range ns {
			segs[i] = seen[n]
			total += seen[n].duration
		}
		if math.Abs(total-seconds) > 2.1 {
			t.Errorf("%s: playlist durations add to %.2f s for %d s published", r, total, seconds)
		}

		pk, files, span := playRendition(t, ffmpeg, ffprobe, w.base, r, segs, false)
		if math.Abs(span-seconds) > 2.1 {
			t.Errorf("%s: media spans %.2f s for %d s published", r, span, seconds)
		}
		if r != "audio" && len(pk) != seconds*30 {
			t.Errorf("%s: %d video frames, published %d", r, len(pk), seconds*30)
		}
		for _, f := range files {
			starts[r] = append(starts[r], minPTS(probePackets(t, ffprobe, f)))
		}
		t.Logf("%s: %d segments, %d packets, %.3f s", r, len(segs), len(pk), span)
	}
	// The n-th segment of every rendition starts at the same instant (audio within a frame).
	for i := 0; i < count; i++ {
		ref := starts["source"][i]
		for _, r := range rends {
			tol := 0.5 / 30
			if r == "audio" {
				tol = 1024.0 / 48000
			}
			if d := math.Abs(starts[r][i] - ref); d > tol {
				t.Errorf("segment %d: %s starts at %.4f s, source at %.4f s", i, r, starts[r][i], ref)
			}
		}
	}
}

// TestWrongKeyRefused: a publish with an unknown key is refused at publish time, ffmpeg sees the
// refusal, and nothing is written to the bucket.
func TestWrongKeyRefused(t *testing.T) {
	ffmpeg, _ := testenv.FFmpeg(t)
	minio := testenv.MinIO(t)
	g := startAll(t, minio, ffmpeg)
	s := g.createStream(t, `{"name": "real"}`)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	out, err := publish(ctx, ffmpeg, g.rtmp+"/sk_wrong"+s.StreamKey[8:], 10)
	if err == nil {
		t.Fatalf("ffmpeg publishing with a wrong key succeeded:\n%s", out)
	}
	if time.Since(start) > 8*time.Second {
		t.Errorf("refusal took %s; it should come at publish time", time.Since(start))
	}
	t.Logf("ffmpeg saw: %v: %s", err, strings.TrimSpace(out))
	objs, _, _ := httpGet(minio.PublicBaseURL() + "/live/" + s.ID + "/master.m3u8")
	if len(objs) > 0 && strings.Contains(string(objs), "#EXTM3U") {
		t.Fatal("a playlist was written for a refused publish")
	}
	if !strings.Contains(g.logs.String(), "RTMP publish refused") {
		t.Error("the refusal is not in the logs")
	}
	if strings.Contains(g.logs.String(), s.StreamKey) {
		t.Error("a stream key appears in the logs")
	}
}

// TestAllWithLocalStorage is the first run a new user makes: `gopcast all` with no S3 and no
// NATS configured serves the media itself under /media/.
func TestAllWithLocalStorage(t *testing.T) {
	ffmpeg, ffprobe := testenv.FFmpeg(t)
	g := startAll(t, nil, ffmpeg, "--profile", "passthrough")
	s := g.createStream(t, `{"name": "laptop"}`)
	_, port, _ := strings.Cut(strings.TrimPrefix(g.api, "http://"), ":")
	if !strings.HasPrefix(s.Playback.HLS, "http://localhost:"+port+"/media/live/") {
		t.Fatalf("playback.hls %q is not served by gopcast", s.Playback.HLS)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := publish(ctx, ffmpeg, g.rtmp+"/"+s.StreamKey, 8); err != nil {
		t.Fatalf("publish: %v %s", err, out)
	}
	w := newWatcher(t, strings.TrimSuffix(s.Playback.HLS, "master.m3u8"))
	waitEnded(t, w, 60*time.Second)
	if len(w.master.variants) != 1 || w.master.audioURI == "" {
		t.Fatalf("passthrough master: %+v", w.master)
	}
	resp, err := http.Get(s.Playback.HLS)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/vnd.apple.mpegurl" {
		t.Errorf("master Content-Type %q", ct)
	}
	for _, r := range []string{"source", "audio"} {
		var segs []playlistSegment
		for n := uint64(0); n < uint64(len(w.seen[r])); n++ {
			segs = append(segs, w.seen[r][n])
		}
		whole, _ := fetchRendition(t, w.base, r, "init.mp4", segs)
		if msg := decodeErrors(t, ffmpeg, whole); msg != "" {
			t.Errorf("%s: %s", r, msg)
		}
		checkContinuity(t, r, probePackets(t, ffprobe, whole))
	}
}
