package e2e

import (
	"context"
	"math"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopcast/gopcast/internal/testenv"
)

type recordingView struct {
	SessionID string  `json:"session_id"`
	HLS       string  `json:"hls"`
	DASH      string  `json:"dash"`
	MP4       string  `json:"mp4"`
	Duration  float64 `json:"duration_s"`
	Bytes     int64   `json:"bytes"`
	MP4Bytes  int64   `json:"mp4_bytes"`
}

func waitRecording(t *testing.T, api, id string) recordingView {
	t.Helper()
	var out struct {
		Recordings []recordingView `json:"recordings"`
	}
	waitFor(t, 90*time.Second, "the recording", func() bool {
		code := apiCall(t, api, "GET", "/v1/streams/"+id+"/recordings", "", &out)
		return code == 200 && len(out.Recordings) > 0
	})
	return out.Recordings[0]
}

// TestDASHAndRecording: one set of CMAF segments serves the live HLS, the live DASH manifest,
// and the recording (VOD HLS, static MPD, MP4), all decoding cleanly with continuous timelines.
func TestDASHAndRecording(t *testing.T) {
	ffmpeg, ffprobe := testenv.FFmpeg(t)
	minio := testenv.MinIO(t)
	g := startAll(t, minio, ffmpeg, "--profile", "passthrough")
	s := g.createStream(t, `{"name": "recorded", "record": true}`)

	const seconds = 12
	p := startPublisher(ffmpeg, g.rtmp+"/"+s.StreamKey, seconds)
	// While live, the MPD is dynamic with a clock for players.
	var mpd []byte
	waitFor(t, 30*time.Second, "a live MPD", func() bool {
		b, code, _ := httpGet(s.Playback.DASH)
		mpd = b
		return code == 200 && strings.Contains(string(b), "<SegmentTimeline>") && strings.Contains(string(b), "<S ")
	})
	for _, want := range []string{`type="dynamic"`, "UTCTiming", "availabilityStartTime", "timeShiftBufferDepth", "mp4a.40.2", "avc1."} {
		if !strings.Contains(string(mpd), want) {
			t.Errorf("live MPD lacks %s:\n%s", want, mpd)
		}
	}
	p.wait(t, 60*time.Second)
	if p.err != nil {
		t.Fatalf("publisher: %v %s", p.err, p.out)
	}
	rec := waitRecording(t, g.api, s.ID)
	t.Logf("recording: %+v", rec)
	if math.Abs(rec.Duration-seconds) > 2.1 || rec.MP4Bytes == 0 || rec.Bytes <= rec.MP4Bytes {
		t.Errorf("recording figures: %+v", rec)
	}
	for _, u := range []string{rec.HLS, rec.DASH, rec.MP4} {
		if !strings.HasPrefix(u, minio.PublicBaseURL()+"/vod/"+s.ID+"/"+rec.SessionID+"/") {
			t.Errorf("recording URL %q is not under vod/ID/SESSION/", u)
		}
	}

	// The live MPD turned static at the end, and plays like the recordings.
	b, _, _ := httpGet(s.Playback.DASH)
	if !strings.Contains(string(b), `type="static"`) {
		t.Errorf("live MPD after the end is not static:\n%s", b)
	}
	// ffmpeg opens the playlists and manifests over HTTP, as a player does; each must decode
	// whole, with no gap or overlap over half a frame in video or audio.
	for _, u := range []string{rec.HLS, rec.DASH, rec.MP4} {
		t.Run(filepath.Base(u), func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "copy.ts")
			// Remux to one local file first (MPEG-TS keeps PTS and DTS exactly): ffprobe then sees what a player got.
			cmd := []string{"-hide_banner", "-nostdin", "-v", "error", "-copyts", "-i", u, "-map", "0:v:0", "-map", "0:a:0", "-c", "copy", out}
			if msg, err := runOut(ffmpeg, cmd...); err != nil || msg != "" {
				t.Fatalf("ffmpeg reading %s: %v %s", u, err, msg)
			}
			if msg := decodeErrors(t, ffmpeg, out); msg != "" {
				t.Errorf("decode errors: %s", msg)
			}
			v := probeStream(t, ffprobe, out, "v:0")
			a := probeStream(t, ffprobe, out, "a:0")
			if len(v) != seconds*30 {
				t.Errorf("%d video frames, published %d", len(v), seconds*30)
			}
			checkContinuity(t, "video", v)
			checkContinuity(t, "audio", a)
		})
	}
	// The MP4 is a plain progressive file with its index first (faststart).
	resp, err := http.Get(rec.MP4)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 64)
	_, _ = resp.Body.Read(head)
	resp.Body.Close()
	if !strings.Contains(string(head), "moov") && !strings.Contains(string(head[:40]), "ftyp") {
		t.Errorf("MP4 does not start with ftyp/moov: %q", head)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "video/mp4" {
		t.Errorf("MP4 Content-Type %q", ct)
	}
}

func runOut(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := execCommand(ctx, bin, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
