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
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/codecs"

	"github.com/gopcast/gopcast/internal/testenv"
	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/storage"
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

// nopQueue takes every message; the fuzz is about the connection, not the queue.
type nopQueue struct{}

func (nopQueue) PublishJob(context.Context, *queue.EncodeJob) error   { return nil }
func (nopQueue) PublishPart(context.Context, queue.Part) error        { return nil }
func (nopQueue) PublishChunk(context.Context, *queue.Chunk) error     { return nil }
func (nopQueue) PublishSegment(context.Context, *queue.Segment) error { return nil }
func (nopQueue) PublishEvent(context.Context, queue.Event) error      { return nil }

// discardStore is a bucket that takes every write and keeps nothing, so a long fuzz run does
// not fill the disk with segments.
type discardStore struct{}

func (discardStore) Put(context.Context, string, []byte, storage.PutOptions) error { return nil }
func (discardStore) Get(context.Context, string) ([]byte, error)                   { return nil, storage.ErrNotFound }
func (discardStore) Delete(context.Context, string) error                          { return nil }
func (discardStore) List(context.Context, string) ([]string, error)                { return nil, nil }
func (discardStore) Check(context.Context) error                                   { return nil }

// fuzzService is an ingest Service (never Run: its connection handler is driven directly)
// with short timeouts, on an embedded JetStream, writing its segments nowhere.
func fuzzService(t testing.TB, logs io.Writer, q Queue, timeout time.Duration) *Service {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	conn, err := queue.Connect(ctx, queue.Config{DataDir: t.TempDir()}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	reg, err := streams.Open(ctx, conn)
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
	log := slog.New(slog.NewTextHandler(logs, nil))
	return New(cfg, log, fuzzRegistry{reg, st}, q, storage.NewWriter(discardStore{}, quiet))
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
	svc := fuzzService(f, logs, nopQueue{}, 500*time.Millisecond)
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
	rec := &recQueue{}
	svc := fuzzService(t, io.Discard, rec, 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = svc.Run(ctx) }()
	target := svc.Addr().String()
	dir := filepath.Join("testdata", "fuzz", "FuzzRTMPConnection")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}

	// waitFree waits for the fuzz stream's lease to be released: the next publish must find
	// the stream free again.
	waitFree := func() {
		fr := svc.reg.(fuzzRegistry)
		eventually(t, 10*time.Second, "the lease to be released", func() bool {
			s, err := fr.Live(ctx, fr.st.ID)
			return err == nil && s == nil
		})
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
		waitFree()
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

	runFFmpeg := func(addr, path, size string) {
		cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
		defer ccancel()
		out, err := exec.CommandContext(cctx, ffmpeg, "-hide_banner", "-loglevel", "error",
			"-f", "lavfi", "-i", "testsrc2=size="+size+":rate=10", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
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

	capture("ffmpeg-h264-aac", func(addr string) { runFFmpeg(addr, "/live/"+fuzzKey, "64x64") })
	// Not a seed (the connection is like the one above), but a session with a rung to
	// encode: its job and records seed pkg/queue's message fuzz targets.
	runFFmpeg(target, "/live/"+fuzzKey, "640x360")
	waitFree()
	defer func() {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		writeMessageSeeds(t, rec.jobs, rec.records)
	}()
	capture("ffmpeg-wrong-app", func(addr string) { runFFmpeg(addr, "/app/"+fuzzKey, "64x64") })
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

// recQueue keeps the encode jobs and segment records a capture session publishes.
type recQueue struct {
	nopQueue
	mu      sync.Mutex
	jobs    []queue.EncodeJob
	records []queue.Segment
}

func (q *recQueue) PublishJob(_ context.Context, job *queue.EncodeJob) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.jobs = append(q.jobs, *job)
	return nil
}

func (q *recQueue) PublishSegment(_ context.Context, seg *queue.Segment) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.records = append(q.records, *seg) // Init bytes are the record's own, never reused
	return nil
}

// writeMessageSeeds saves real encode jobs and segment records of the ingest as seeds for
// pkg/queue's message fuzz targets, named rtmp-capture-* so that they never replace the seeds
// taken there from the whole pipeline.
func writeMessageSeeds(t *testing.T, jobs []queue.EncodeJob, records []queue.Segment) {
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
		save("FuzzJobMessage", fmt.Sprintf("rtmp-capture-%d", i), j)
	}
	for i, rec := range records {
		if i >= 8 {
			break
		}
		save("FuzzSegmentMessage", fmt.Sprintf("rtmp-capture-%d", i), rec)
	}
}

// The committed seeds still are what they were captured as, against the ingest as it is now:
// the publishes of H.264 (and AAC) reach the media and publish segment records, the others are
// refused for the reason they were made for. A seed that no longer gets past the handshake
// would leave the fuzzer exploring nothing of the media path.
func TestRTMPSeedsReachTheMedia(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	q := &recordingQueue{}
	svc := fuzzService(t, logs, q, 2*time.Second)
	for _, tc := range []struct {
		seed string
		want string // a log line of the session; "" for a publish that makes records
	}{
		{"ffmpeg-h264-aac", ""},
		{"gortmplib-h264-aac", ""},
		{"gortmplib-32bit-wrap", ""},
		{"gortmplib-h264-multitrack", ""},
		{"gortmplib-h264-opus-multitrack", "unsupported codec Opus"},
		{"gortmplib-hevc", "unsupported codec H.265/HEVC"},
		{"gortmplib-play", "playback over RTMP is not offered"},
		{"ffmpeg-wrong-app", `unknown application \"app\"`},
	} {
		b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzRTMPConnection", tc.seed))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitN(string(b), "\n", 3)
		if len(lines) < 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") {
			t.Fatalf("%s: not a fuzz corpus file", tc.seed)
		}
		data, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", tc.seed, err)
		}
		logs.reset()
		before := len(q.messages("segment"))
		svc.handle(context.Background(), &halfClosedConn{r: bytes.NewReader([]byte(data))})
		records := len(q.messages("segment")) - before
		t.Logf("%s: %d bytes, %d segment records", tc.seed, len(data), records)
		if tc.want == "" && (records == 0 || !strings.Contains(logs.String(), "publish started")) {
			t.Errorf("%s: %d segment records; log:\n%s", tc.seed, records, logs.String())
		}
		if tc.want != "" && (records != 0 || !strings.Contains(logs.String(), tc.want)) {
			t.Errorf("%s: %d segment records, want none and %q in the log:\n%s", tc.seed, records, tc.want, logs.String())
		}
	}
}
