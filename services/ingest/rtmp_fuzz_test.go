package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/codecs"

	"github.com/gopcast/gopcast/internal/testenv"
	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/streams"
)

// fuzzKey is the one stream key the fuzz registry knows; the seed captures publish with it.
const fuzzKey = "sk_fuzz"

// fuzzRegistry is the real registry (JetStream KV: Claim, heartbeats, Release) with a fixed key,
// so captured sessions, and their mutations, get past the key check to the media.
type fuzzRegistry struct {
	*streams.Registry
	st *streams.Stream
}

func (f fuzzRegistry) Authorize(_ context.Context, key string) (*streams.Stream, error) {
	if key == fuzzKey {
		return f.st, nil
	}
	return nil, streams.ErrUnknownKey
}

// nopPublisher takes every chunk and event; the fuzz is about the connection, not the queue.
type nopPublisher struct{}

func (nopPublisher) PublishChunk(context.Context, *queue.Chunk, []byte) error { return nil }
func (nopPublisher) PublishEvent(context.Context, queue.Event) error          { return nil }

// fuzzService is an ingest Service (never Run: its connection handler is driven directly)
// with short timeouts, on an embedded JetStream.
func fuzzService(t testing.TB, logs io.Writer, pub Publisher, timeout time.Duration) *Service {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, err := queue.Connect(ctx, queue.Config{DataDir: t.TempDir()}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	reg, err := streams.Open(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := reg.Create(ctx, "fuzz", "default", false)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Addr:             "127.0.0.1:0",
		HandshakeTimeout: timeout,
		ReadTimeout:      timeout,
		MaxChunkBytes:    4 << 20,
		MaxBacklog:       8,
	}
	return New(cfg, slog.New(slog.NewTextHandler(logs, nil)), fuzzRegistry{reg, st}, pub)
}

// FuzzRTMPConnection feeds arbitrary bytes to the ingest's connection handler as one client's
// whole side of a TCP connection (then its FIN): handshake, chunk stream, AMF0 commands, FLV
// tags and codec configuration, media. Whatever comes, the handler must not panic (its recover
// would log "panicked") and must return promptly once the client is done.
//
// Seeds in testdata/fuzz/FuzzRTMPConnection are client bytes captured from real publishes
// (ffmpeg, gortmplib with H.264/AAC, HEVC, Opus, multitrack, play, wrong app); regenerate with
// GOPCAST_CAPTURE_RTMP_SEEDS=1 go test -run TestCaptureRTMPSeeds ./services/ingest/.
func FuzzRTMPConnection(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{3})
	f.Add(append([]byte{3}, make([]byte, 3072)...))
	f.Add(append([]byte{6}, make([]byte, 1536)...))
	logs := &logBuffer{}
	svc := fuzzService(f, logs, nopPublisher{}, 500*time.Millisecond)
	f.Fuzz(func(t *testing.T, data []byte) {
		logs.reset()
		conn := &halfClosedConn{r: bytes.NewReader(data)}
		done := make(chan struct{})
		start := time.Now()
		go func() {
			defer close(done)
			svc.handle(context.Background(), conn)
		}()
		// The client has sent everything and hung up its side: the handler must wind up with
		// what it got, in bounded time (it waits on nothing but the key-value store).
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("connection handler still running %v after the client finished", time.Since(start))
		}
		if out := logs.String(); strings.Contains(out, "panicked") {
			t.Fatalf("the connection handler panicked:\n%s", out)
		}
	})
}

// halfClosedConn is the server's end of a TCP connection whose client sent r and then shut
// down its sending side (FIN): reads return r, then EOF; the server's writes (handshake
// replies, results, acknowledgements, refusals) all succeed, as they would into a socket
// buffer. Unlike net.Pipe, the server gets to answer everything the client sent.
type halfClosedConn struct {
	r *bytes.Reader
}

func (c *halfClosedConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *halfClosedConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *halfClosedConn) Close() error                     { return nil }
func (c *halfClosedConn) LocalAddr() net.Addr              { return fuzzAddr{} }
func (c *halfClosedConn) RemoteAddr() net.Addr             { return fuzzAddr{} }
func (c *halfClosedConn) SetDeadline(time.Time) error      { return nil }
func (c *halfClosedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *halfClosedConn) SetWriteDeadline(time.Time) error { return nil }

type fuzzAddr struct{}

func (fuzzAddr) Network() string { return "fuzz" }
func (fuzzAddr) String() string  { return "fuzz" }

func (b *logBuffer) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}

// TestCaptureRTMPSeeds regenerates FuzzRTMPConnection's seed corpus from real publishes
// recorded through a proxy. It only runs when GOPCAST_CAPTURE_RTMP_SEEDS is set.
func TestCaptureRTMPSeeds(t *testing.T) {
	if os.Getenv("GOPCAST_CAPTURE_RTMP_SEEDS") == "" {
		t.Skip("set GOPCAST_CAPTURE_RTMP_SEEDS=1 to regenerate testdata/fuzz/FuzzRTMPConnection")
	}
	ffmpeg, _ := testenv.FFmpeg(t)
	rec := &recPublisher{}
	svc := fuzzService(t, io.Discard, rec, 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = svc.Run(ctx) }()
	target := svc.Addr().String()
	dir := filepath.Join("testdata", "fuzz", "FuzzRTMPConnection")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}

	// capture runs client against a recording proxy and saves what it sent.
	capture := func(name string, client func(addr string)) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		got := make(chan []byte, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				got <- nil
				return
			}
			defer c.Close()
			s, err := net.Dial("tcp", target)
			if err != nil {
				got <- nil
				return
			}
			defer s.Close()
			go func() { _, _ = io.Copy(c, s); _ = c.Close() }()
			var buf strings.Builder
			_, _ = io.Copy(io.MultiWriter(s, &buf), c)
			got <- []byte(buf.String())
		}()
		client(ln.Addr().String())
		// The next capture must find the stream free again.
		fr := svc.reg.(fuzzRegistry)
		eventually(t, 10*time.Second, "the lease to be released", func() bool {
			s, err := fr.Live(ctx, fr.st.ID)
			return err == nil && s == nil
		})
		var data []byte
		select {
		case data = <-got:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: no capture", name)
		}
		if len(data) == 0 {
			t.Fatalf("%s: nothing captured", name)
		}
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d bytes", name, len(data))
	}

	runFFmpeg := func(addr, path string) {
		cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
		defer ccancel()
		out, err := exec.CommandContext(cctx, ffmpeg, "-hide_banner", "-loglevel", "error",
			"-f", "lavfi", "-i", "testsrc2=size=64x64:rate=10", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
			"-t", "2.3", "-c:v", "libx264", "-preset", "ultrafast", "-g", "10", "-b:v", "50k",
			"-c:a", "aac", "-b:a", "24k", "-ac", "1", "-f", "flv", "rtmp://"+addr+path).CombinedOutput()
		t.Logf("ffmpeg %s: %v %s", path, err, out)
	}
	src := makeSource(t, 3, 10, "32x32", true)
	gortmp := func(addr string, publish bool, path string, write func(c *gortmplib.Client)) {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		u, _ := url.Parse("rtmp://" + addr + path)
		c := &gortmplib.Client{URL: u, Publish: publish}
		if err := c.Initialize(cctx); err != nil {
			t.Logf("%s: %v", path, err)
			return
		}
		if write != nil {
			write(c)
		}
		_ = c.NetConn().(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, c.NetConn())
		c.Close()
	}
	clip := func(to, shift time.Duration) func(c *gortmplib.Client) {
		return func(c *gortmplib.Client) {
			p := newPusher(t, c, src, true, true)
			_ = p.push(src, 0, to, shift, nil)
		}
	}

	capture("ffmpeg-h264-aac", func(addr string) { runFFmpeg(addr, "/live/"+fuzzKey) })
	defer func() {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		writeMessageSeeds(t, rec.jobs)
	}()
	capture("ffmpeg-wrong-app", func(addr string) { runFFmpeg(addr, "/app/"+fuzzKey) })
	capture("gortmplib-h264-aac", func(addr string) { gortmp(addr, true, "/live/"+fuzzKey, clip(2300*time.Millisecond, 0)) })
	capture("gortmplib-32bit-wrap", func(addr string) {
		gortmp(addr, true, "/live/"+fuzzKey, clip(3*time.Second, rtmpWrap-2500*time.Millisecond))
	})
	capture("gortmplib-play", func(addr string) { gortmp(addr, false, "/live/"+fuzzKey, nil) })
	capture("gortmplib-hevc", func(addr string) {
		gortmp(addr, true, "/live/"+fuzzKey, func(c *gortmplib.Client) {
			tr := &gortmplib.Track{Codec: &codecs.H265{}}
			w := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{tr}}
			if err := w.Initialize(); err != nil {
				return
			}
			for ts := time.Duration(0); ts < 2200*time.Millisecond; ts += 100 * time.Millisecond {
				_ = w.WriteH265(tr, ts, ts, [][]byte{{0x26, 0x01, 0xaf, 0x06, 0xb8}})
			}
		})
	})
	capture("gortmplib-h264-opus-multitrack", func(addr string) {
		gortmp(addr, true, "/live/"+fuzzKey, func(c *gortmplib.Client) {
			v1 := &gortmplib.Track{Codec: &codecs.H264{SPS: src.h264.SPS, PPS: src.h264.PPS}}
			v2 := &gortmplib.Track{Codec: &codecs.H264{SPS: src.h264.SPS, PPS: src.h264.PPS}}
			a := &gortmplib.Track{Codec: &codecs.Opus{IDHeader: opusHead}}
			w := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{v1, v2, a}}
			if err := w.Initialize(); err != nil {
				return
			}
			for _, f := range src.video[:70] {
				_ = w.WriteH264(v1, dur(f.PTS), dur(f.DTS), f.NALUs)
				_ = w.WriteH264(v2, dur(f.PTS), dur(f.DTS), f.NALUs)
				_ = w.WriteOpus(a, dur(f.DTS), []byte{0xfc, 0xff, 0xfe})
			}
		})
	})
	capture("gortmplib-h264-multitrack", func(addr string) {
		gortmp(addr, true, "/live/"+fuzzKey, func(c *gortmplib.Client) {
			v1 := &gortmplib.Track{Codec: &codecs.H264{SPS: src.h264.SPS, PPS: src.h264.PPS}}
			v2 := &gortmplib.Track{Codec: &codecs.H264{SPS: src.h264.SPS, PPS: src.h264.PPS}}
			w := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{v1, v2}}
			if err := w.Initialize(); err != nil {
				return
			}
			for _, f := range src.video[:70] {
				_ = w.WriteH264(v1, dur(f.PTS), dur(f.DTS), f.NALUs)
				_ = w.WriteH264(v2, dur(f.PTS), dur(f.DTS), f.NALUs)
			}
		})
	})
}

// recPublisher keeps the job messages a capture session publishes, as queue.Conn sends them
// when the bytes travel in the message (with the size it sets; the bytes are not kept).
type recPublisher struct {
	mu   sync.Mutex
	jobs []queue.Chunk
}

func (p *recPublisher) PublishChunk(_ context.Context, job *queue.Chunk, data []byte) error {
	job.Object, job.Size = "", len(data)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.jobs = append(p.jobs, *job)
	return nil
}

func (p *recPublisher) PublishEvent(context.Context, queue.Event) error { return nil }

// writeMessageSeeds saves real chunk jobs, and the segment messages the transcoder makes of
// them (same shape as services/transcoder: source, audio and encoded rungs, a failed rung, a
// gap, an empty last), as seeds for pkg/queue's message fuzz targets.
func writeMessageSeeds(t *testing.T, jobs []queue.Chunk) {
	t.Helper()
	save := func(target, name string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join("..", "..", "pkg", "queue", "testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, j := range jobs {
		if i >= 8 {
			break
		}
		save("FuzzChunkMessage", fmt.Sprintf("ingest-%d", i), j)
		seg := queue.Segment{StreamID: j.StreamID, SessionID: j.SessionID, Seq: j.Seq, Start: j.Start, Duration: j.Duration,
			Last: j.Last, Record: j.Record, Chunk: j.Created}
		switch {
		case !j.HasBytes():
			// an empty last chunk: no renditions
		case i%3 == 2:
			seg.Failed, seg.Error = true, "poison chunk: chunk has no video"
		default:
			prefix := j.ID() + "/"
			src := queue.Rendition{Name: "source", Kind: "video", Codec: j.Video.Codec, Width: j.Video.Width, Height: j.Video.Height,
				FPS: j.Video.FPS, Init: prefix + "source/init.mp4", Media: prefix + "source/media.m4s", Bytes: j.Size * 9 / 10,
				Start: j.Start, Duration: j.Duration, Timescale: 90000, Bandwidth: int(float64(j.Size*8) / (float64(j.Duration) / 90000))}
			seg.Renditions = append(seg.Renditions, src)
			if j.Audio != nil {
				seg.Renditions = append(seg.Renditions, queue.Rendition{Name: "audio", Kind: "audio", Codec: j.Audio.Codec,
					Channels: j.Audio.Channels, SampleRate: j.Audio.SampleRate, Init: prefix + "audio/init.mp4", Media: prefix + "audio/media.m4s",
					Bytes: j.Size / 10, Start: j.Start * int64(j.Audio.SampleRate) / 90000, Duration: j.Duration * int64(j.Audio.SampleRate) / 90000,
					Timescale: uint32(j.Audio.SampleRate)})
			}
			seg.Renditions = append(seg.Renditions,
				queue.Rendition{Name: "240p", Kind: "video", Codec: "avc1.64000d", Width: 426, Height: 240, FPS: 30, Bandwidth: 400000,
					Init: prefix + "240p/init.mp4", Media: prefix + "240p/media.m4s", Bytes: j.Size / 2, Start: j.Start, Duration: j.Duration, Timescale: 90000},
				queue.Rendition{Name: "360p", Kind: "video", Height: 360, Failed: true, Error: "ffmpeg: exit status 1"})
		}
		save("FuzzSegmentMessage", fmt.Sprintf("transcoder-%d", i), seg)
	}
}
