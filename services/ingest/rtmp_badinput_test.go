package ingest

import (
	"crypto/rand"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/handshake"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"

	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/streams"
)

// publishClip publishes src whole (as fast as the connection takes it) and leaves cleanly.
func publishClip(t *testing.T, r *rig, key string, src *source, video, audio bool) {
	t.Helper()
	publishPaced(t, r, key, src, video, audio, nil)
}

// publishPaced publishes src whole at the pace given (nil: as fast as the connection takes
// it) and leaves cleanly.
func publishPaced(t *testing.T, r *rig, key string, src *source, video, audio bool, pace func(time.Duration)) {
	t.Helper()
	c, err := r.connect("/live/" + key)
	if err != nil {
		t.Fatalf("publish refused: %v", err)
	}
	p := newPusher(t, c, src, video, audio)
	if err := p.push(src, 0, time.Hour, 0, pace); err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// Garbage on the RTMP port ends that connection within the handshake timeout, publishes
// nothing, and leaves the server serving: a real publisher gets through afterwards.
func TestGarbageOnRTMPPort(t *testing.T) {
	t.Parallel()
	r := newRig(t, fastConfig())
	st, key := r.stream("garbage then a real publish")

	random := func(n int, first byte) []byte {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		b[0] = first
		return b
	}
	// A valid plain handshake followed by random chunk-stream bytes.
	handshakeThenJunk := append(append([]byte{3}, make([]byte, 1536*2)...), random(8<<10, 0x03)...)
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"HTTP request", []byte("GET /live/x HTTP/1.1\r\nHost: localhost\r\n\r\n")},
		{"TLS client hello", append([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}, random(512, 0)...)},
		{"random 64 KiB", random(64<<10, 0xff)},
		{"random 64 KiB with RTMP version byte", random(64<<10, 0x03)},
		{"RTMPE version byte and a junk C1", random(1537, 0x06)},
		{"handshake then junk chunks", handshakeThenJunk},
		{"32 MiB body length claimed", append(append([]byte{3}, make([]byte, 1536*2)...),
			0x03, 0, 0, 0, 0xff, 0xff, 0xff, 0x14, 0, 0, 0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", r.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			go func() { _, _ = conn.Write(tc.data) }()
			took := waitClosed(t, conn, r.cfg.HandshakeTimeout+2*time.Second)
			t.Logf("%s: closed after %v", tc.name, took.Round(10*time.Millisecond))
		})
	}
	if n := r.tap.media(); n != 0 {
		t.Fatalf("%d media messages published from garbage", n)
	}
	if n := len(r.eventsOf(queue.EventStreamLive, st.ID)); n != 0 {
		t.Fatalf("garbage made the stream live")
	}

	// Still serving.
	src := makeSource(t, 8, 30, "160x90", true)
	publishClip(t, r, key, src, true, true)
	sess := r.sessionOf(st.ID)
	checkChunks(t, r, r.waitSessionEnd(st, sess, 10*time.Second), checks{})
	if strings.Contains(r.logs.String(), key) {
		t.Fatal("the stream key appears in the log")
	}
}

// A TCP connection that never completes the handshake, or stops half way, is closed once the
// handshake timeout passes, not left open.
func TestStalledHandshakeClosedByTimeout(t *testing.T) {
	t.Parallel()
	r := newRig(t, fastConfig())
	st, key := r.stream("stalled handshakes")
	to := r.cfg.HandshakeTimeout
	c1 := make([]byte, 1536)
	for _, tc := range []struct {
		name string
		send func(t *testing.T, conn net.Conn)
	}{
		{"nothing sent", func(*testing.T, net.Conn) {}},
		{"C0 only", func(_ *testing.T, c net.Conn) { _, _ = c.Write([]byte{3}) }},
		{"C0 and half of C1", func(_ *testing.T, c net.Conn) { _, _ = c.Write(append([]byte{3}, c1[:768]...)) }},
		{"C0 C1, no C2", func(_ *testing.T, c net.Conn) { _, _ = c.Write(append([]byte{3}, c1...)) }},
		{"handshake done, no connect", func(t *testing.T, c net.Conn) {
			if _, _, err := handshake.DoClient(c, false, false); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn, err := net.Dial("tcp", r.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			start := time.Now()
			tc.send(t, conn)
			waitClosed(t, conn, to+3*time.Second)
			took := time.Since(start)
			if took < to-100*time.Millisecond {
				t.Errorf("closed after %v, before the %v handshake timeout: what ended it?", took, to)
			}
			t.Logf("closed after %v", took.Round(10*time.Millisecond))
		})
	}

	// Connected and published, but no media ever comes: the lease taken at publish time
	// must not outlive the handshake timeout.
	t.Run("publish without media", func(t *testing.T) {
		c, err := r.connect("/live/" + key)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		sw := watchStatus(c)
		eventually(t, to+3*time.Second, "the server to close the silent publisher", sw.closed)
		t.Logf("silent publisher closed after %v", time.Since(start).Round(10*time.Millisecond))
		eventually(t, 10*time.Second, "the lease to be released", func() bool { return r.live(st.ID) == nil })
		r.waitLog("reading tracks", 5*time.Second)
		if se := r.onlySession(st.ID); !strings.Contains(se.EndReason, "reading tracks") {
			t.Errorf("the session record of a publish that sent no media ends with %q", se.EndReason)
		}
	})
	if n := r.tap.media(); n != 0 {
		t.Fatalf("%d media messages published", n)
	}
}

// opusHead is a real Opus identification header (stereo, 48 kHz).
var opusHead = &opus.IDHeader{Version: 1, ChannelCount: 2, PreSkip: 312, InputSampleRate: 48000}

// Codecs other than H.264 + AAC are refused with an onStatus error that names the codec,
// the refusal is logged, the lease is released, and nothing is published.
func TestOtherCodecsRefusedByName(t *testing.T) {
	t.Parallel()
	r := newRig(t, fastConfig())
	src := makeSource(t, 8, 30, "160x90", true)
	h264Track := func() *gortmplib.Track {
		return &gortmplib.Track{Codec: &codecs.H264{SPS: src.h264.SPS, PPS: src.h264.PPS}}
	}
	for _, tc := range []struct {
		name, want string
		tracks     func() []*gortmplib.Track
		write      func(w *gortmplib.Writer, tr []*gortmplib.Track, ts time.Duration) error
	}{
		{"HEVC", "H.265/HEVC", func() []*gortmplib.Track { return []*gortmplib.Track{{Codec: &codecs.H265{}}} },
			func(w *gortmplib.Writer, tr []*gortmplib.Track, ts time.Duration) error {
				return w.WriteH265(tr[0], ts, ts, [][]byte{{0x26, 0x01, 0xaf, 0x06, 0xb8}}) // IDR_W_RADL slice
			}},
		{"AV1", "AV1", func() []*gortmplib.Track { return []*gortmplib.Track{{Codec: &codecs.AV1{}}} },
			func(w *gortmplib.Writer, tr []*gortmplib.Track, ts time.Duration) error {
				return w.WriteAV1(tr[0], ts, [][]byte{{0x32, 0x00}}) // an empty frame OBU
			}},
		{"H.264 with Opus", "Opus", func() []*gortmplib.Track {
			return []*gortmplib.Track{h264Track(), {Codec: &codecs.Opus{IDHeader: opusHead}}}
		}, func(w *gortmplib.Writer, tr []*gortmplib.Track, ts time.Duration) error {
			i := int(ts / (time.Second / 30))
			if err := w.WriteH264(tr[0], dur(src.video[i].PTS), dur(src.video[i].DTS), src.video[i].NALUs); err != nil {
				return err
			}
			return w.WriteOpus(tr[1], ts, []byte{0xfc, 0xff, 0xfe}) // a 20 ms silent packet
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, key := r.stream("codec " + tc.name)
			c, err := r.connect("/live/" + key)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			sw := watchStatus(c)
			tracks := tc.tracks()
			w := &gortmplib.Writer{Conn: c, Tracks: tracks}
			if err := w.Initialize(); err != nil {
				t.Fatal(err)
			}
			// The server decides on the codecs after two seconds of media.
			for ts := time.Duration(0); ts < 2500*time.Millisecond && !sw.closed(); ts += time.Second / 30 {
				if err := tc.write(w, tracks, ts); err != nil {
					break // refused and closed meanwhile
				}
			}
			eventually(t, 10*time.Second, "the server to close the connection", sw.closed)
			code, desc, ok := sw.errorStatus()
			if !ok {
				t.Fatalf("the client got no error status before the connection closed (%v)", sw.err)
			}
			t.Logf("client sees: %s: %s", code, desc)
			if !strings.Contains(desc, tc.want) {
				t.Errorf("refusal %q does not name %s", desc, tc.want)
			}
			r.waitLog("unsupported codec "+tc.want, 5*time.Second)
			eventually(t, 10*time.Second, "the lease to be released", func() bool { return r.live(st.ID) == nil })
			if se := r.onlySession(st.ID); se.EndedAt == nil || !strings.Contains(se.EndReason, "unsupported codec "+tc.want) {
				t.Errorf("session record: ended %v, reason %q", se.EndedAt, se.EndReason)
			}
			if n := len(r.eventsOf(queue.EventStreamLive, st.ID)); n != 0 {
				t.Errorf("a refused publish announced the stream live")
			}
		})
	}
	if n := r.tap.media(); n != 0 {
		t.Fatalf("%d media messages published", n)
	}
}

// Audio without video is refused clearly; video without audio is taken, its chunks carry no
// audio, and its live health says so.
func TestAudioOnlyRefusedVideoOnlyAccepted(t *testing.T) {
	t.Parallel()
	r := newRig(t, fastConfig())
	src := makeSource(t, 8, 30, "160x90", true)

	t.Run("audio only", func(t *testing.T) {
		st, key := r.stream("audio only")
		c, err := r.connect("/live/" + key)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sw := watchStatus(c)
		p := newPusher(t, c, src, false, true)
		_ = p.push(src, 0, 3*time.Second, 0, nil)
		eventually(t, 10*time.Second, "the server to close the connection", sw.closed)
		code, desc, ok := sw.errorStatus()
		if !ok || !strings.Contains(desc, "no H.264 video track") {
			t.Fatalf("client saw %q %q (%v), want a refusal naming the missing H.264 video", code, desc, ok)
		}
		r.waitLog("no H.264 video track", 5*time.Second)
		eventually(t, 10*time.Second, "the lease to be released", func() bool { return r.live(st.ID) == nil })
		if n := len(r.eventsOf(queue.EventStreamLive, st.ID)); n != 0 {
			t.Errorf("an audio-only publish announced the stream live")
		}
	})

	t.Run("video only", func(t *testing.T) {
		st, key := r.stream("video only")
		c, err := r.connect("/live/" + key)
		if err != nil {
			t.Fatal(err)
		}
		sw := watchStatus(c)
		p := newPusher(t, c, src, true, false)
		if err := p.push(src, 0, time.Hour, 0, nil); err != nil {
			t.Fatal(err)
		}
		// Keep the connection up past a heartbeat so the health is in the registry.
		var health *streams.Health
		eventually(t, 10*time.Second, "live health", func() bool {
			if s := r.live(st.ID); s != nil && s.Health != nil {
				health = s.Health
				return true
			}
			return false
		})
		if _, _, bad := sw.errorStatus(); bad {
			t.Fatal("video-only publish got an error status")
		}
		c.Close()
		if health.AudioCodec != "" || !containsWarning(health.Warnings, "no audio track") {
			t.Errorf("health of a video-only publish: %+v", health)
		}
		cs := r.waitSessionEnd(st, r.sessionOf(st.ID), 10*time.Second)
		checkChunks(t, r, cs, checks{})
		for _, c := range cs {
			for _, rd := range c.rec.Renditions {
				if rd.Kind != "video" {
					t.Errorf("chunk %d has a %s rendition %q", c.rec.Seq, rd.Kind, rd.Name)
				}
			}
		}
		if keys := r.keys(t, "live/"+st.ID+"/audio/"); len(keys) > 0 {
			t.Errorf("audio segments of a video-only publish: %q", keys)
		}
	})
}

func containsWarning(ws []string, substr string) bool {
	for _, w := range ws {
		if strings.Contains(w, substr) {
			return true
		}
	}
	return false
}

// A wrong key, an unknown application and a second publisher on a live stream are refused at
// publish time with an error status; the stream's live publisher is not disturbed.
func TestPublishRefusals(t *testing.T) {
	t.Parallel()
	r := newRig(t, fastConfig())
	st, key := r.stream("refusals")
	src := makeSource(t, 8, 30, "160x90", true)

	for _, path := range []string{"/live/sk_0000000000000000000000000000000000000000", "/live/", "/other/" + key, "/live"} {
		_, err := r.connect(path)
		if err == nil {
			t.Fatalf("publish to %s accepted", path)
		}
		if !strings.Contains(err.Error(), "NetStream.Publish.") {
			t.Errorf("publish to %s: %v, want an onStatus NetStream.Publish.* error", path, err)
		}
	}
	r.waitLog("unknown or revoked stream key", 5*time.Second)
	r.waitLog(`unknown application \"other\"`, 5*time.Second)
	if r.live(st.ID) != nil {
		t.Fatal("a refused publish left the stream live")
	}

	// The first publisher goes live and stays connected.
	first, err := r.connect("/live/" + key)
	if err != nil {
		t.Fatal(err)
	}
	p := newPusher(t, first, src, true, true)
	if err := p.push(src, 0, 3*time.Second, 0, nil); err != nil {
		t.Fatal(err)
	}
	live := r.waitLive(st.ID)

	_, err = r.connect("/live/" + key)
	if err == nil {
		t.Fatal("a second publisher on a live stream was accepted")
	}
	t.Logf("second publisher sees: %v", err)
	if !strings.Contains(err.Error(), "already has a publisher") {
		t.Errorf("the second publisher is not told the stream is busy: %v", err)
	}
	r.waitLog("already has a publisher", 5*time.Second)
	if s := r.live(st.ID); s == nil || s.ID != live.ID {
		t.Fatalf("the refusal disturbed the live session: %+v", s)
	}
	// The first publisher is still being read.
	if err := p.push(src, 3*time.Second, time.Hour, 0, nil); err != nil {
		t.Fatal(err)
	}
	first.Close()
	checkChunks(t, r, r.waitSessionEnd(st, live.ID, 10*time.Second), checks{})

	// With the lease released, the stream takes a publisher again.
	publishClip(t, r, key, src, true, true)
	var second string
	eventually(t, 10*time.Second, "a second session", func() bool {
		for _, rec := range r.allRecords() {
			if rec.SessionID != live.ID {
				second = rec.SessionID
				return true
			}
		}
		return false
	})
	checkChunks(t, r, r.waitSessionEnd(st, second, 10*time.Second), checks{})
	if strings.Contains(r.logs.String(), key) {
		t.Fatal("the stream key appears in the log")
	}
}
