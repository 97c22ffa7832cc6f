package ingest

import (
	"bytes"
	"context"
	"errors"
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
	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/gopcast/gopcast/internal/testenv"
	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/cmaf"
	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/streams"
)

// rig is one ingest Service running in-process on 127.0.0.1:0 against real infrastructure: an
// embedded JetStream (queue.Connect), the streams registry on its KV, and the queue Conn as the
// Publisher. It records every chunk job that reaches JetStream (through the transcoders'
// consumer, as a transcoder sees it) and every lifecycle event.
type rig struct {
	t    *testing.T
	q    *queue.Conn
	reg  *streams.Registry
	svc  *Service
	addr string
	logs *logBuffer
	cfg  Config

	mu     sync.Mutex
	chunks []chunkSeen
	events []queue.Event

	runDone chan struct{}
	runErr  error
	stop    context.CancelFunc
}

// chunkSeen is a chunk job as consumed from JetStream, with its bytes.
type chunkSeen struct {
	job  queue.Chunk
	data []byte
}

// fastConfig keeps every timeout short so faults show within a test's budget.
func fastConfig() Config {
	return Config{
		Addr:             "127.0.0.1:0",
		ChunkTarget:      2 * time.Second,
		HandshakeTimeout: 2 * time.Second, // covers the key check, the lease and two seconds of media
		ReadTimeout:      1500 * time.Millisecond,
		ReadBatch:        20 * time.Millisecond, // gopcast's default: publishers read on ticks
	}
}

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	q, err := queue.Connect(ctx, queue.Config{DataDir: t.TempDir()}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	reg, err := streams.Open(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, q: q, reg: reg, logs: &logBuffer{}, cfg: cfg, runDone: make(chan struct{})}
	log := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	// Everything the ingest publishes, seen from the other side of JetStream.
	cctx, ccancel := context.WithCancel(context.Background())
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		_ = q.ConsumeChunks(cctx, 4, func(ctx context.Context, j *queue.Job[queue.Chunk]) {
			var data []byte
			if j.Body.HasBytes() {
				b, err := q.ChunkBytes(ctx, &j.Body)
				if err != nil && ctx.Err() == nil {
					t.Errorf("chunk %s: bytes: %v", j.Body.ID(), err)
				}
				data = b
			}
			_ = j.Ack(ctx)
			r.mu.Lock()
			r.chunks = append(r.chunks, chunkSeen{job: j.Body, data: data})
			r.mu.Unlock()
		})
	}()
	if err := q.SubscribeEvents(cctx, "", func(ev queue.Event) {
		r.mu.Lock()
		r.events = append(r.events, ev)
		r.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}

	r.svc = New(cfg, log, reg, q)
	sctx, scancel := context.WithCancel(context.Background())
	r.stop = scancel
	go func() { defer close(r.runDone); r.runErr = r.svc.Run(sctx) }()
	r.addr = r.svc.Addr().String()
	t.Cleanup(func() {
		scancel()
		select {
		case <-r.runDone:
			if r.runErr != nil {
				t.Errorf("ingest Run: %v", r.runErr)
			}
		case <-time.After(40 * time.Second):
			t.Errorf("ingest Run did not return after shutdown")
		}
		ccancel()
		<-consumed
		if t.Failed() {
			t.Logf("ingest log:\n%s", r.logs.String())
		}
		if strings.Contains(r.logs.String(), "panicked") {
			t.Errorf("an RTMP connection panicked:\n%s", r.logs.String())
		}
	})
	return r
}

// stream creates a stream and returns it with its key.
func (r *rig) stream(name string) (*streams.Stream, string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, key, err := r.reg.Create(ctx, name, "default", false)
	if err != nil {
		r.t.Fatal(err)
	}
	return st, key
}

func (r *rig) url(path string) *url.URL {
	u, err := url.Parse("rtmp://" + r.addr + path)
	if err != nil {
		r.t.Fatal(err)
	}
	return u
}

// connect runs the gortmplib client's publish handshake against the rig.
func (r *rig) connect(path string) (*gortmplib.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := &gortmplib.Client{URL: r.url(path), Publish: true}
	if err := c.Initialize(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// chunksOf returns the chunk jobs of a session seen so far, in sequence order.
func (r *rig) chunksOf(sessionID string) []chunkSeen {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []chunkSeen
	for _, c := range r.chunks {
		if c.job.SessionID == sessionID {
			out = append(out, c)
		}
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].job.Seq < out[j-1].job.Seq; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func (r *rig) allChunks() []chunkSeen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]chunkSeen(nil), r.chunks...)
}

func (r *rig) eventsOf(kind, streamID string) []queue.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []queue.Event
	for _, ev := range r.events {
		if ev.Kind == kind && ev.StreamID == streamID {
			out = append(out, ev)
		}
	}
	return out
}

// live reads the stream's live session from the registry, as the API does.
func (r *rig) live(streamID string) *streams.Session {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := r.reg.Live(ctx, streamID)
	if err != nil {
		r.t.Fatal(err)
	}
	return s
}

// endReason is the end reason in a session's record, as the API's session list shows it.
func (r *rig) endReason(streamID, sessionID string) string {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := r.reg.Sessions(ctx, streamID, 100)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, s := range list {
		if s.ID == sessionID {
			return s.EndReason
		}
	}
	r.t.Fatalf("no session record %s", sessionID)
	return ""
}

// onlySession returns the stream's one session record.
func (r *rig) onlySession(streamID string) *streams.Session {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := r.reg.Sessions(ctx, streamID, 100)
	if err != nil {
		r.t.Fatal(err)
	}
	if len(list) != 1 {
		r.t.Fatalf("%d session records, want 1", len(list))
	}
	return list[0]
}

// waitLive waits for the stream to be live (its lease taken and its media started: the
// stream.live event) and returns the session.
func (r *rig) waitLive(streamID string) *streams.Session {
	r.t.Helper()
	var s *streams.Session
	eventually(r.t, 10*time.Second, "stream to go live", func() bool {
		s = r.live(streamID)
		return s != nil && len(r.eventsOf(queue.EventStreamLive, streamID)) > 0
	})
	return s
}

// waitSessionEnd waits for the session's last chunk, the lease release and the idle event,
// and returns the session's chunks and how long the end took from since.
func (r *rig) waitSessionEnd(st *streams.Stream, sessionID string, within time.Duration) []chunkSeen {
	r.t.Helper()
	eventually(r.t, within, "the session's last chunk and every one before it", func() bool {
		cs := r.chunksOf(sessionID)
		return len(cs) > 0 && cs[len(cs)-1].job.Last && cs[len(cs)-1].job.Seq == uint64(len(cs)-1)
	})
	eventually(r.t, 10*time.Second, "the live lease to be released", func() bool { return r.live(st.ID) == nil })
	eventually(r.t, 10*time.Second, "a stream.idle event", func() bool { return len(r.eventsOf(queue.EventStreamIdle, st.ID)) > 0 })
	return r.chunksOf(sessionID)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logBuffer collects the ingest's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (r *rig) waitLog(substr string, within time.Duration) {
	r.t.Helper()
	eventually(r.t, within, fmt.Sprintf("log line %q", substr), func() bool { return strings.Contains(r.logs.String(), substr) })
}

// source is an ffmpeg-made H.264 (+ AAC) clip, decoded into frames with timestamps starting at
// zero, ready to be pushed through gortmplib's Writer as fast or as slow as a test wants.
type source struct {
	h264  media.H264Config
	asc   *mpeg4audio.AudioSpecificConfig
	video []media.VideoFrame
	audio []media.AudioFrame
}

var (
	sourcesMu sync.Mutex
	sources   = map[string]*source{}
)

// makeSource encodes seconds of a test pattern at 30 fps with a keyframe every gop frames
// (libx264 with B-frames, and 48 kHz AAC when audio is set), cached per test binary.
func makeSource(t *testing.T, seconds, gop int, size string, audio bool) *source {
	t.Helper()
	key := fmt.Sprint(seconds, gop, size, audio)
	sourcesMu.Lock()
	defer sourcesMu.Unlock()
	if s := sources[key]; s != nil {
		return s
	}
	ffmpeg, _ := testenv.FFmpeg(t)
	out := filepath.Join(t.TempDir(), "src.ts")
	args := []string{"-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=%s:rate=30", size)}
	if audio {
		args = append(args, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000")
	}
	args = append(args, "-t", fmt.Sprint(seconds),
		"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-bf", "2", "-x264-params", "rc-lookahead=0",
		"-g", fmt.Sprint(gop), "-keyint_min", fmt.Sprint(gop), "-sc_threshold", "0", "-pix_fmt", "yuv420p")
	if audio {
		args = append(args, "-c:a", "aac", "-b:a", "64k", "-ac", "2")
	}
	args = append(args, "-f", "mpegts", out)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if b, err := exec.CommandContext(ctx, ffmpeg, args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	dem, err := cmaf.Demux(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(dem.Video) == 0 || !dem.Video[0].Key {
		t.Fatalf("ffmpeg source: %d video frames, first not a keyframe", len(dem.Video))
	}
	s := &source{h264: *dem.H264, video: dem.Video, audio: dem.Audio}
	base := dem.Video[0].DTS
	for i := range s.video {
		s.video[i].DTS -= base
		s.video[i].PTS -= base
	}
	for i := range s.audio {
		s.audio[i].PTS -= base
	}
	if audio {
		var asc mpeg4audio.AudioSpecificConfig
		if err := asc.Unmarshal(dem.AAC.ASC); err != nil {
			t.Fatal(err)
		}
		s.asc = &asc
		// Audio before the first video frame cannot be placed; drop it.
		for len(s.audio) > 0 && s.audio[0].PTS < 0 {
			s.audio = s.audio[1:]
		}
	}
	sources[key] = s
	return s
}

func dur(ticks int64) time.Duration {
	return time.Duration(ticks) * time.Second / media.Timescale
}

// pusher writes a source through gortmplib's Writer, interleaving audio and video by time.
type pusher struct {
	w      *gortmplib.Writer
	vt, at *gortmplib.Track
}

func newPusher(t *testing.T, c *gortmplib.Client, src *source, withVideo, withAudio bool) *pusher {
	t.Helper()
	p := &pusher{}
	var tracks []*gortmplib.Track
	if withVideo {
		p.vt = &gortmplib.Track{Codec: &codecs.H264{SPS: src.h264.SPS, PPS: src.h264.PPS}}
		tracks = append(tracks, p.vt)
	}
	if withAudio {
		p.at = &gortmplib.Track{Codec: &codecs.MPEG4Audio{Config: src.asc}}
		tracks = append(tracks, p.at)
	}
	p.w = &gortmplib.Writer{Conn: c, Tracks: tracks}
	if err := p.w.Initialize(); err != nil {
		t.Fatal(err)
	}
	return p
}

// push sends the source's frames whose decode time is in [from, to), with every timestamp
// moved by shift. pace, if set, is called before each frame with its (shifted) time.
func (p *pusher) push(src *source, from, to, shift time.Duration, pace func(time.Duration)) error {
	ai := 0
	for _, f := range src.video {
		dts := dur(f.DTS)
		if dts < from {
			continue
		}
		if dts >= to {
			break
		}
		for p.at != nil && ai < len(src.audio) && dur(src.audio[ai].PTS) <= dts {
			a := src.audio[ai]
			ai++
			if dur(a.PTS) < from {
				continue
			}
			if err := p.w.WriteMPEG4Audio(p.at, dur(a.PTS)+shift, a.Data); err != nil {
				return err
			}
		}
		if pace != nil {
			pace(dts + shift)
		}
		if p.vt != nil {
			if err := p.w.WriteH264(p.vt, dur(f.PTS)+shift, dts+shift, f.NALUs); err != nil {
				return err
			}
		}
	}
	if p.vt == nil { // audio only
		for _, a := range src.audio {
			if pts := dur(a.PTS); pts >= from && pts < to {
				if pace != nil {
					pace(pts + shift)
				}
				if err := p.w.WriteMPEG4Audio(p.at, pts+shift, a.Data); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// realtime paces frames to the wall clock from the first call, speed times faster.
func realtime(speed float64) func(time.Duration) { return paced(speed, 0) }

// burstThen paces like an encoder that starts with a burst: the first 2.1 s at once (the ingest
// reads two seconds of media to learn the tracks, within its handshake timeout, which a loaded
// test machine must not turn into a race), then speed times real time.
func burstThen(speed float64) func(time.Duration) { return paced(speed, 2100*time.Millisecond) }

func paced(speed float64, burst time.Duration) func(time.Duration) {
	var start time.Time
	var first time.Duration
	return func(ts time.Duration) {
		if start.IsZero() {
			start, first = time.Now(), ts
			return
		}
		if ts-first < burst {
			start = time.Now().Add(-time.Duration(float64(ts-first) / speed))
			return
		}
		due := start.Add(time.Duration(float64(ts-first) / speed))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
	}
}

// statusWatcher collects the onStatus commands a publishing client receives.
type statusWatcher struct {
	mu     sync.Mutex
	status []amf0.Object
	done   chan struct{}
	err    error
}

func watchStatus(c *gortmplib.Client) *statusWatcher {
	sw := &statusWatcher{done: make(chan struct{})}
	go func() {
		defer close(sw.done)
		for {
			msg, err := c.Read()
			if err != nil {
				sw.mu.Lock()
				sw.err = err
				sw.mu.Unlock()
				return
			}
			if cmd, ok := msg.(*message.CommandAMF0); ok && cmd.Name == "onStatus" && len(cmd.Arguments) >= 2 {
				if o, ok := cmd.Arguments[1].(amf0.Object); ok {
					sw.mu.Lock()
					sw.status = append(sw.status, o)
					sw.mu.Unlock()
				}
			}
		}
	}()
	return sw
}

// errorStatus returns the first error-level onStatus: its code and description.
func (sw *statusWatcher) errorStatus() (code, description string, ok bool) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	for _, o := range sw.status {
		if lvl, _ := o.GetString("level"); lvl == "error" {
			code, _ = o.GetString("code")
			description, _ = o.GetString("description")
			return code, description, true
		}
	}
	return "", "", false
}

// closed reports whether the server closed the connection.
func (sw *statusWatcher) closed() bool {
	select {
	case <-sw.done:
		return true
	default:
		return false
	}
}

// waitClosed waits until the peer closes conn (a read returns an error) and returns how long
// that took. Bytes the server sends meanwhile (the handshake reply) are discarded.
func waitClosed(t *testing.T, conn net.Conn, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = conn.SetReadDeadline(start.Add(within))
	buf := make([]byte, 4096)
	for {
		_, err := conn.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open after %v", within)
		}
		return time.Since(start)
	}
}
