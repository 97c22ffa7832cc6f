package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gopcast/gopcast/internal/testenv"
)

// TestReconnectContinuesURLs: a publisher that reconnects starts a new session on the same
// live URLs: HLS numbering runs on with a discontinuity, DASH opens a second Period.
func TestReconnectContinuesURLs(t *testing.T) {
	ffmpeg, _ := testenv.FFmpeg(t)
	minio := testenv.MinIO(t)
	g := startAll(t, minio, ffmpeg, "--profile", "passthrough")
	s := g.createStream(t, `{"name": "flaky uplink"}`)
	w := newWatcher(t, strings.TrimSuffix(s.Playback.HLS, "master.m3u8"))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := publish(ctx, ffmpeg, g.rtmp+"/"+s.StreamKey, 6); err != nil {
		t.Fatalf("first session: %v %s", err, out)
	}
	waitEnded(t, w, 30*time.Second)
	first := len(w.seen["source"])

	p := startPublisher(ffmpeg, g.rtmp+"/"+s.StreamKey, 8)
	var pl []byte
	waitFor(t, 30*time.Second, "the second session listed", func() bool {
		b, code, _ := httpGet(w.base + "source/index.m3u8")
		pl = b
		return code == 200 && strings.Contains(string(b), "#EXT-X-DISCONTINUITY") && !strings.Contains(string(b), "#EXT-X-ENDLIST")
	})
	var mpd []byte
	waitFor(t, 20*time.Second, "a second DASH Period", func() bool {
		b, _, _ := httpGet(s.Playback.DASH)
		mpd = b
		return strings.Count(string(b), "<Period") == 2 && strings.Contains(string(b), `type="dynamic"`)
	})
	p.wait(t, 60*time.Second)
	waitEnded(t, w, 30*time.Second)

	// Segment numbers continue: the second session's first segment follows the first's last.
	seen := w.seen["source"]
	for n := uint64(0); n < uint64(len(seen)); n++ {
		if _, ok := seen[n]; !ok {
			t.Fatalf("segment %d missing across the reconnect: %d seen", n, len(seen))
		}
	}
	if len(seen) < first+3 {
		t.Errorf("second session added %d segments", len(seen)-first)
	}
	t.Logf("playlist during the second session:\n%s", pl)
	if strings.Count(string(mpd), "<Period") != 2 {
		t.Errorf("MPD:\n%s", mpd)
	}
}
