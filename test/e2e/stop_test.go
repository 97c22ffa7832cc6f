package e2e

import (
	"path"
	"strings"
	"testing"
	"time"

	"github.com/gopcast/gopcast/internal/testenv"
)

// TestStopEndsStreams: stopping `gopcast all` (as SIGTERM does) while an encoder publishes
// ends the stream before the process exits: every playlist in the bucket carries
// EXT-X-ENDLIST, every rendition lists the same contiguous segments up to the cut, and they
// decode without a gap. Nothing is left for the next start to finish.
func TestStopEndsStreams(t *testing.T) {
	ffmpeg, ffprobe := testenv.FFmpeg(t)
	minio := testenv.MinIO(t)
	g := startAll(t, minio, ffmpeg)
	s := g.createStream(t, `{"name": "stopped with the server"}`)
	w := newWatcher(t, strings.TrimSuffix(s.Playback.HLS, "master.m3u8"))
	pub := startPublisher(ffmpeg, g.rtmp+"/"+s.StreamKey, 120)
	waitFor(t, 60*time.Second, "3 segments listed in every rendition", func() bool {
		w.poll()
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.master == nil || len(w.seen) < len(w.master.variants)+1 {
			return false
		}
		for _, seen := range w.seen {
			if len(seen) < 3 {
				return false
			}
		}
		return true
	})
	time.Sleep(700 * time.Millisecond) // into a GOP: the last chunk is a partial one
	stopAt := time.Now()
	g.stop()
	t.Logf("gopcast stopped in %s", time.Since(stopAt).Round(time.Millisecond))
	pub.wait(t, 10*time.Second)

	w.poll()
	if !w.allEnded() {
		t.Fatalf("playlists without EXT-X-ENDLIST after gopcast stopped: ended %v of %d renditions", w.ended, len(w.seen))
	}
	published := stopAt.Sub(pub.startTime()).Seconds()
	count := -1
	for r, seen := range w.seen {
		ns := contiguous(t, r, seen)
		segs := make([]playlistSegment, 0, len(ns))
		for i, n := range ns {
			if seen[n].gap {
				// A last chunk cut a few frames after its keyframe may hold no audio frame
				// yet: its audio segment is a gap, listed as such.
				if last := w.seen["source"][n]; r == "audio" && i == len(ns)-1 && last.duration < 0.5 {
					t.Logf("audio: the last segment is a gap (the video's lasts %.3f s)", last.duration)
					continue
				}
				t.Errorf("%s: segment %d is a gap", r, n)
			}
			segs = append(segs, seen[n])
		}
		if count >= 0 && len(ns) != count {
			t.Errorf("%s lists %d segments, another rendition %d", r, len(ns), count)
		}
		count = len(ns)
		_, _, span := playRendition(t, ffmpeg, ffprobe, w.base, r, segs, true)
		// The publisher needs up to a second or two to connect and start; the media up to the
		// cut must all be there, the partial last chunk included.
		if span < published-2.5 || span > published+0.5 {
			t.Errorf("%s: media spans %.2f s; the publisher ran %.2f s before the stop", r, span, published)
		}
		t.Logf("%s (%s): %d segments, %.3f s of media, published %.3f s", r, path.Base(r), len(segs), span, published)
	}
}
