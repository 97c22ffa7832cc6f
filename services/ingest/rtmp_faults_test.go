package ingest

import (
	"context"
	"crypto/rand"
	"math"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/codecs"

	"github.com/gopcast/gopcast/internal/testenv"
	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/cmaf"
)

// A publisher that vanishes without deleteStream ends its session: the last chunk goes out
// flagged Last (at once on a reset, after ReadTimeout when the line just goes quiet), the
// live lease is released and a stream.idle event says why.
func TestPublisherDropEndsSession(t *testing.T) {
	t.Parallel()
	r := newRig(t, fastConfig())
	// Tall enough for the default profile's 360p rung: the chunks go to the transcoders too.
	src := makeSource(t, 8, 30, "640x360", true)

	// slack is the pipeline's share of the end (outbox to JetStream, lease release, the test's
	// consumer), generous for a loaded machine running with -race; how the server noticed the
	// drop is checked in its log.
	const slack = 5 * time.Second
	for _, tc := range []struct {
		name string
		drop func(c *gortmplib.Client)
		// the read error that ends the session, the end reason, and the least time it may take
		readErr, reason string
		atLeast         time.Duration
	}{
		{"TCP reset", func(c *gortmplib.Client) {
			_ = c.NetConn().(*net.TCPConn).SetLinger(0) // close sends RST
			c.Close()
		}, "connection reset by peer", "publisher left", 0},
		{"silence with the socket open", func(*gortmplib.Client) {}, "i/o timeout", "nothing received for 1.5s", r.cfg.ReadTimeout - 100*time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, key := r.stream("drop " + tc.name)
			c, err := r.connect("/live/" + key)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			p := newPusher(t, c, src, true, true)
			if err := p.push(src, 0, 4500*time.Millisecond, 0, burstThen(4)); err != nil {
				t.Fatal(err)
			}
			live := r.waitLive(st.ID)
			dropped := time.Now()
			tc.drop(c)
			cs := r.waitSessionEnd(st, live.ID, r.cfg.ReadTimeout+slack)
			took := time.Since(dropped)
			t.Logf("session ended %v after the drop: %d chunks", took.Round(10*time.Millisecond), len(cs))
			if took < tc.atLeast {
				t.Errorf("session ended %v after the drop, before the %v read timeout", took, r.cfg.ReadTimeout)
			}
			var ended string
			for _, line := range strings.Split(r.logs.String(), "\n") {
				if strings.Contains(line, live.ID) && strings.Contains(line, "publish ended") {
					ended = line
				}
			}
			if !strings.Contains(ended, tc.readErr) {
				t.Errorf("session end not caused by %q: %s", tc.readErr, ended)
			}
			checkChunks(t, r, cs, checks{})
			// Nothing decoded before the drop is lost: the chunks run to the last frame sent.
			last := cs[len(cs)-1].rec
			if end := last.Start + last.Duration - media.SessionOrigin; end < 4*media.Timescale {
				t.Errorf("chunks end at %.2f s, the publisher sent 4.5 s", float64(end)/media.Timescale)
			}
			ev := r.idleEvent(st.ID, live.ID)
			t.Logf("stream.idle: %v", ev.Data)
			if ev.SessionID != live.ID || ev.Data["reason"] != tc.reason {
				t.Errorf("idle event %+v, want reason %q", ev, tc.reason)
			}
			if got := r.endReason(st.ID, live.ID); got != tc.reason {
				t.Errorf("session record ends with %q, want %q", got, tc.reason)
			}
		})
	}
}

// ffmpeg, the encoder most people test with, killed with SIGKILL mid-stream.
func TestFFmpegKilledEndsSession(t *testing.T) {
	t.Parallel()
	ffmpeg, _ := testenv.FFmpeg(t)
	cfg := fastConfig()
	// A real-time encoder needs two seconds of media before the ingest knows its tracks.
	cfg.HandshakeTimeout = 6 * time.Second
	r := newRig(t, cfg)
	st, key := r.stream("ffmpeg killed")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-loglevel", "error", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=160x90:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-c:a", "aac", "-b:a", "64k",
		"-f", "flv", "rtmp://"+r.addr+"/live/"+key)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	live := r.waitLive(st.ID)
	// Let it cut a chunk or two first.
	eventually(t, 15*time.Second, "the first chunk", func() bool { return len(r.chunksOf(live.ID)) > 0 })
	killed := time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	cs := r.waitSessionEnd(st, live.ID, r.cfg.ReadTimeout+5*time.Second)
	t.Logf("session ended %v after kill -9: %d chunks; ffmpeg said: %q", time.Since(killed).Round(10*time.Millisecond), len(cs), stderr.String())
	checkChunks(t, r, cs, checks{})
}

// A 20 s GOP: chunks are cut only at keyframes (so they run 20 s, not 2 s), each within
// MaxChunkBytes, and the live health warns about the keyframe interval. With a MaxChunkBytes
// the GOP cannot fit in, the publisher is dropped with a message that says why, and the
// session still ends properly.
func TestLongGOP(t *testing.T) {
	t.Parallel()
	// Tall enough for a rung: each 20 s chunk also streams to the transcoders in parts.
	src := makeSource(t, 25, 600, "640x360", true)
	gopBytes := 0
	for _, f := range src.video {
		if f.DTS >= 20*media.Timescale {
			break
		}
		for _, n := range f.NALUs {
			gopBytes += len(n) + 4
		}
	}

	t.Run("within the limit", func(t *testing.T) {
		t.Parallel()
		cfg := fastConfig()
		cfg.MaxChunkBytes = 2*gopBytes + 256<<10 // the GOP, with MPEG-TS overhead and audio
		r := newRig(t, cfg)
		st, key := r.stream("long gop")
		c, err := r.connect("/live/" + key)
		if err != nil {
			t.Fatal(err)
		}
		p := newPusher(t, c, src, true, true)
		if err := p.push(src, 0, time.Hour, 0, burstThen(20)); err != nil {
			t.Fatal(err)
		}
		var warnings []string
		eventually(t, 10*time.Second, "a keyframe interval warning in the live health", func() bool {
			s := r.live(st.ID)
			if s == nil || s.Health == nil {
				return false
			}
			warnings = s.Health.Warnings
			return containsWarning(warnings, "keyframe interval")
		})
		t.Logf("health warnings: %q", warnings)
		live := r.live(st.ID)
		c.Close()
		cs := r.waitSessionEnd(st, live.ID, 10*time.Second)
		if frames := checkChunks(t, r, cs, checks{maxBytes: cfg.MaxChunkBytes}); frames != len(src.video) {
			t.Errorf("%d of %d frames reached the source segments", frames, len(src.video))
		}
		if len(cs) != 2 {
			t.Fatalf("%d chunks, want 2 (one per GOP)", len(cs))
		}
		for _, c := range cs {
			keys := 0
			dem, err := cmaf.Demux(c.ts)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range dem.Video {
				if f.Key {
					keys++
				}
			}
			t.Logf("chunk %d: start %.2f s, %.2f s long, %d bytes in %d parts, %d frames, %d keyframes", c.rec.Seq,
				float64(c.rec.Start-media.SessionOrigin)/media.Timescale, float64(c.rec.Duration)/media.Timescale, len(c.ts), c.parts, len(dem.Video), keys)
			if keys != 1 {
				t.Errorf("chunk %d holds %d keyframes: cut somewhere other than a keyframe", c.rec.Seq, keys)
			}
			// A 20 s chunk reaches its encoder while it is being cut (in parts of about
			// partBytes at most, between frames), not in one piece at its end.
			if c.parts < 2 || c.parts <= len(c.ts)/(2*partBytes) {
				t.Errorf("chunk %d: %d bytes went out in %d parts", c.rec.Seq, len(c.ts), c.parts)
			}
		}
		if got := cs[0].rec.Duration; got != 20*media.Timescale {
			t.Errorf("first chunk is %.3f s long, want the 20 s GOP", float64(got)/media.Timescale)
		}
	})

	t.Run("over the limit", func(t *testing.T) {
		t.Parallel()
		cfg := fastConfig()
		cfg.MaxChunkBytes = gopBytes / 3
		r := newRig(t, cfg)
		st, key := r.stream("long gop over the limit")
		c, err := r.connect("/live/" + key)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sw := watchStatus(c)
		p := newPusher(t, c, src, true, true)
		_ = p.push(src, 0, time.Hour, 0, burstThen(20)) // fails once the server hangs up
		eventually(t, 10*time.Second, "the publisher to be dropped", sw.closed)
		r.waitLog("no keyframe within the chunk size limit", time.Second)
		sess := r.sessionOf(st.ID)
		cs := r.waitSessionEnd(st, sess, 10*time.Second)
		checkChunks(t, r, cs, checks{maxBytes: cfg.MaxChunkBytes})
		ev := r.idleEvent(st.ID, sess)
		t.Logf("stream.idle reason: %v; chunks: %d", ev.Data["reason"], len(cs))
		if reason, _ := ev.Data["reason"].(string); !strings.Contains(reason, "chunk size limit") {
			t.Errorf("idle reason %q does not say the chunk size limit was hit", reason)
		}
	})
}

// Timestamps that jump backwards, or wrap at RTMP's 32-bit millisecond limit, crash nothing;
// the session's chunks keep sequence numbers and start times that never go backwards, and what
// happens is said in the log.
func TestTimestampsBackwardsOrWrapping(t *testing.T) {
	t.Parallel()
	r := newRig(t, fastConfig())
	// Tall enough for a rung, so the timestamps of the encoder's MPEG-TS are checked too.
	src := makeSource(t, 8, 30, "640x360", true)
	const wrap = time.Duration(1<<32) * time.Millisecond

	type part struct{ from, to, shift time.Duration }
	for _, tc := range []struct {
		name  string
		parts []part
		// whether the session ends at the jump, and the frames it keeps then
		ends         bool
		framesBefore int
	}{
		// A clock reset ends the session with a log line saying so; its chunks stop before it.
		{"jump back 2 s", []part{{0, 5 * time.Second, 0}, {5 * time.Second, 8 * time.Second, -2 * time.Second}}, true, 150},
		{"restart at zero", []part{{0, 5 * time.Second, 0}, {0, 8 * time.Second, 0}}, true, 150},
		// RTMP's 32-bit milliseconds rolling over (after 49.7 days, or sooner for encoders
		// whose clock starts high) is not a reset: the session goes on, seamless.
		{"32-bit wrap", []part{{0, 8 * time.Second, wrap - 3*time.Second}}, false, 0},
		// 90 kHz ticks of a nanosecond time.Duration overflow int64 at 28.47 hours of
		// encoder clock; crossing that instant must be seamless too.
		{"crossing 28.5 hours", []part{{0, 8 * time.Second, time.Duration(math.MaxInt64/media.Timescale) - 3*time.Second}}, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, key := r.stream("timestamps " + tc.name)
			c, err := r.connect("/live/" + key)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			p := newPusher(t, c, src, true, true)
			for _, part := range tc.parts {
				if err := p.push(src, part.from, part.to, part.shift, nil); err != nil {
					t.Logf("push stopped: %v", err)
					break
				}
			}
			c.Close()
			sess := r.sessionOf(st.ID)
			cs := r.waitSessionEnd(st, sess, 10*time.Second)
			for _, c := range cs {
				t.Logf("chunk %d: start %.3f s, duration %.3f s, %d bytes, last %v", c.rec.Seq,
					float64(c.rec.Start-media.SessionOrigin)/media.Timescale, float64(c.rec.Duration)/media.Timescale, len(c.ts), c.rec.Last)
			}
			for _, line := range strings.Split(r.logs.String(), "\n") {
				if strings.Contains(line, sess) && strings.Contains(line, "publish ended") {
					t.Logf("log: %s", line)
				}
			}
			// Decode times never go back inside a chunk (source segment and MPEG-TS), no
			// frame lies past its chunk's duration, and the chunks' timestamps run on.
			frames := checkChunks(t, r, cs, checks{})
			reason, _ := r.idleEvent(st.ID, sess).Data["reason"].(string)
			ended := strings.Contains(reason, "timestamps went backwards")
			if ended != tc.ends {
				t.Errorf("session end reason %q; want a clock reset: %v", reason, tc.ends)
			}
			if tc.ends {
				if frames != tc.framesBefore {
					t.Errorf("%d frames in the chunks, want the %d before the jump", frames, tc.framesBefore)
				}
			} else if frames != len(src.video) {
				t.Errorf("%d frames in the chunks, want all %d", frames, len(src.video))
			}
		})
	}
}

// Past the handshake timeout, a publisher that has sent more than its acknowledgement window
// (2.5 MB for gortmplib and OBS) must get its acknowledgement, not a dropped connection.
func TestLongPublishPastHandshakeTimeout(t *testing.T) {
	t.Parallel()
	r := newRig(t, fastConfig())
	st, key := r.stream("acknowledgement window")
	base := makeSource(t, 8, 30, "160x90", true)
	// 6 s at 30 fps of 30 KB frames: 5.4 MB, 7 Mbit/s.
	src := &source{h264: base.h264}
	for i := 0; i < 180; i++ {
		n := make([]byte, 30<<10)
		_, _ = rand.Read(n)
		n[0] = 0x41 // non-IDR slice
		if i%30 == 0 {
			n[0] = 0x65 // IDR slice
		}
		ts := int64(i) * media.Timescale / 30
		src.video = append(src.video, media.VideoFrame{DTS: ts, PTS: ts, Key: i%30 == 0, NALUs: [][]byte{n}})
	}
	c, err := r.connect("/live/" + key)
	if err != nil {
		t.Fatal(err)
	}
	sw := watchStatus(c) // reads the acknowledgements, as a real client does
	p := newPusher(t, c, src, true, false)
	// The first two seconds at once (the ingest reads them to learn the tracks within the
	// handshake timeout), the rest in real time: its second 2.5 MB window fills well after
	// that timeout.
	connected := time.Now()
	if err := p.push(src, 0, 2100*time.Millisecond, 0, nil); err != nil {
		t.Fatal(err)
	}
	if err := p.push(src, 2100*time.Millisecond, time.Hour, 0, realtime(1)); err != nil {
		t.Fatalf("the server hung up: %v", err)
	}
	if time.Since(connected) < r.cfg.HandshakeTimeout+time.Second {
		t.Fatalf("pushed in %v: too fast to reach past the %v handshake timeout", time.Since(connected), r.cfg.HandshakeTimeout)
	}
	if sw.closed() {
		t.Fatalf("the server hung up: %v", sw.err)
	}
	// Leave as an encoder does: FIN, then wait for the server to hang up.
	_ = c.NetConn().(*net.TCPConn).CloseWrite()
	eventually(t, 10*time.Second, "the server to close", sw.closed)
	c.Close()
	cs := r.waitSessionEnd(st, r.sessionOf(st.ID), 10*time.Second)
	// Random bytes for frames: the segments are read, not decoded.
	if frames := checkChunks(t, r, cs, checks{packetsOnly: true}); frames != len(src.video) {
		t.Errorf("%d of %d frames reached the chunks", frames, len(src.video))
	}
	for _, line := range strings.Split(r.logs.String(), "\n") {
		if strings.Contains(line, "publish ended") && !strings.Contains(line, "read_err=EOF") {
			t.Errorf("the publish did not end with the publisher leaving: %s", line)
		}
	}
}

// Enhanced RTMP multitrack (OBS's multitrack video sends a second H.264 track, some encoders a
// second audio track): the session must not crash on the extra track's data.
func TestMultitrackPublish(t *testing.T) {
	t.Parallel()
	r := newRig(t, fastConfig())
	st, key := r.stream("multitrack")
	src := makeSource(t, 8, 30, "160x90", true)
	c, err := r.connect("/live/" + key)
	if err != nil {
		t.Fatal(err)
	}
	v1 := &gortmplib.Track{Codec: &codecs.H264{SPS: src.h264.SPS, PPS: src.h264.PPS}}
	v2 := &gortmplib.Track{Codec: &codecs.H264{SPS: src.h264.SPS, PPS: src.h264.PPS}}
	a1 := &gortmplib.Track{Codec: &codecs.MPEG4Audio{Config: src.asc}}
	a2 := &gortmplib.Track{Codec: &codecs.MPEG4Audio{Config: src.asc}}
	w := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{v1, v2, a1, a2}}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	ai := 0
	for _, f := range src.video {
		for ; ai < len(src.audio) && src.audio[ai].PTS <= f.DTS; ai++ {
			for _, at := range []*gortmplib.Track{a1, a2} {
				if err := w.WriteMPEG4Audio(at, dur(src.audio[ai].PTS), src.audio[ai].Data); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, vt := range []*gortmplib.Track{v1, v2} {
			if err := w.WriteH264(vt, dur(f.PTS), dur(f.DTS), f.NALUs); err != nil {
				t.Fatalf("write: %v (the server hung up)", err)
			}
		}
	}
	c.Close()
	cs := r.waitSessionEnd(st, r.sessionOf(st.ID), 10*time.Second)
	if frames := checkChunks(t, r, cs, checks{}); frames != len(src.video) {
		t.Errorf("%d of %d first-track frames reached the chunks", frames, len(src.video))
	}
}

// Shutting the ingest down while a publisher keeps sending ends the session (last chunk out,
// lease released) and Run returns, however busy the publisher.
func TestShutdownWithBusyPublisher(t *testing.T) {
	t.Parallel()
	r := newRig(t, fastConfig())
	st, key := r.stream("shutdown")
	src := makeSource(t, 8, 30, "160x90", true)
	c, err := r.connect("/live/" + key)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := newPusher(t, c, src, true, true)
	stop := make(chan struct{})
	pushed := make(chan struct{})
	go func() {
		defer close(pushed)
		// Loop the clip, timestamps running on, at 4x real time until the server hangs up.
		pace := burstThen(4)
		for k := time.Duration(0); ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := p.push(src, 0, 8*time.Second, k*8*time.Second, pace); err != nil {
				return
			}
		}
	}()
	defer func() { close(stop); <-pushed }()
	live := r.waitLive(st.ID)
	eventually(t, 10*time.Second, "the first chunk", func() bool { return len(r.chunksOf(live.ID)) > 0 })
	stopped := time.Now()
	r.stop()
	select {
	case <-r.runDone:
	case <-time.After(r.cfg.ReadTimeout + 5*time.Second):
		t.Fatalf("Run still running %v after shutdown began, with a publisher sending", time.Since(stopped))
	}
	t.Logf("Run returned %v after shutdown began", time.Since(stopped).Round(10*time.Millisecond))
	cs := r.waitSessionEnd(st, live.ID, 10*time.Second)
	checkChunks(t, r, cs, checks{})
	r.waitLog(`reason="server shutting down"`, time.Second)
}
