package faults

import (
	"testing"
	"time"
)

// Publishers at the edges of what encoders send: a session that ends on a keyframe with no
// audio after it, and a source without B-frames under a ladder that has them. (Both lost a
// segment to a gap until fixed; these tests found them.)

// TestLastChunkWithoutAudio: a session that ends just after a keyframe, before any audio at or
// after it: the chunker opens a chunk at the keyframe and no audio comes, so it writes that
// chunk video-only (a declared audio stream without data made the chunk unreadable and the
// session's last segment a gap). The last video frame is kept; the audio playlist says its
// last segment has no audio (EXT-X-GAP), which is the truth: the publisher's audio ended first.
//
// Here ffmpeg publishes exactly 181 video frames (keyframes every 60: the last frame is the
// keyframe at 6.0 s) and audio that ends at 5.9 s.
func TestLastChunkWithoutAudio(t *testing.T) {
	c := newCluster(t, clusterConfig{transcoders: 1, packagers: 1})
	s := c.createStream("ends on a keyframe", "passthrough")
	w := newWatcher(t, s.base(), 100*time.Millisecond).start()
	pub := startPublisher(t, c.ffmpeg, []string{"-hide_banner", "-loglevel", "error", "-nostdin", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
		"-f", "lavfi", "-t", "5.9", "-i", "sine=frequency=440:sample_rate=48000",
		"-frames:v", "181", "-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-pix_fmt", "yuv420p",
		"-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
		"-c:a", "aac", "-b:a", "64k", "-ar", "48000", "-ac", "2", "-f", "flv", c.publishURL(s)})
	if err := pub.wait(time.Minute); err != nil {
		t.Fatalf("publisher: %v", err)
	}
	w.waitEnded(60 * time.Second)
	w.check(c, checkOpts{minSegments: 3, frames: 181, audioEndsEarly: true})
}

// TestRungsWithoutSourceBFrames: a publisher that sends no B-frames (x264's ultrafast preset or
// zerolatency tuning, the baseline profile, many hardware encoders) under the default ladder,
// whose rungs have B-frames: a rung's decode times start two frames before its presentation
// times, which for a session starting at 0 were negative and lost every rung's first segment.
// Sessions now start at media.SessionOrigin (10 s), and every segment of every rung is there.
func TestRungsWithoutSourceBFrames(t *testing.T) {
	c := newCluster(t, clusterConfig{transcoders: 1, packagers: 1, profile: "default"})
	s := c.createStream("no B-frames", "default")
	w := newWatcher(t, s.base(), 250*time.Millisecond).start()
	pub := startPublisher(t, c.ffmpeg, publishArgsB(c.publishURL(s), 6, 0))
	if err := pub.wait(time.Minute); err != nil {
		t.Fatalf("publisher: %v", err)
	}
	w.waitEnded(60 * time.Second)
	w.check(c, checkOpts{minSegments: 3, frames: 180, rungs: []string{"360p"}})
}
