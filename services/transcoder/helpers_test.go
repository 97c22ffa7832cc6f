package transcoder

// Test doubles and media fixtures shared by the transcoder tests: a queue whose chunk and
// rendition objects live in maps, chunks cut by the ingest's own chunker from an ffmpeg test
// pattern, fake ffmpeg scripts, and ffprobe helpers.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopcast/gopcast/internal/testenv"
	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/chunker"
	"github.com/gopcast/gopcast/pkg/media/cmaf"
	"github.com/gopcast/gopcast/pkg/media/codec"
	"github.com/gopcast/gopcast/pkg/queue"
)

// fakeQueue is the transcoder's Queue: chunk bytes from a map, segments into a slice.
type fakeQueue struct {
	mu         sync.Mutex
	chunks     map[string][]byte
	chunkErr   error // returned by ChunkBytes while set
	chunkReads int
	published  []queue.Segment
	deleted    []string
}

func newFakeQueue() *fakeQueue {
	return &fakeQueue{chunks: map[string][]byte{}}
}

func (q *fakeQueue) ConsumeChunks(ctx context.Context, _ int, _ func(context.Context, *queue.Job[queue.Chunk])) error {
	<-ctx.Done()
	return nil
}

func (q *fakeQueue) ChunkBytes(_ context.Context, job *queue.Chunk) ([]byte, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.chunkReads++
	if q.chunkErr != nil {
		return nil, q.chunkErr
	}
	b, ok := q.chunks[job.Object]
	if !ok {
		return nil, fmt.Errorf("fake queue: chunk %s: %w", job.Object, queue.ErrNotFound)
	}
	return bytes.Clone(b), nil
}

func (q *fakeQueue) DeleteChunk(_ context.Context, job *queue.Chunk) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.chunks, job.Object)
	q.deleted = append(q.deleted, job.Object)
	return nil
}

func (q *fakeQueue) PublishSegment(_ context.Context, seg *queue.Segment) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	// Like queue.Conn, keep a copy: the transcoder reuses the fragments' memory afterwards.
	out := *seg
	out.Renditions = slices.Clone(seg.Renditions)
	for i := range out.Renditions {
		out.Renditions[i].MediaData = bytes.Clone(out.Renditions[i].MediaData)
	}
	q.published = append(q.published, out)
	return nil
}

// media is a rendition's media segment, which the transcoder hands over in the segment (the
// queue decides what travels in the message and what as an object).
func (q *fakeQueue) media(t *testing.T, r queue.Rendition) []byte {
	t.Helper()
	if r.Media != "" || len(r.MediaData) == 0 {
		t.Fatalf("%s: media segment %q with %d bytes, want the bytes in the rendition", r.Name, r.Media, len(r.MediaData))
	}
	return r.MediaData
}

// initOf is a rendition's init segment, which travels in the segment message.
func initOf(t *testing.T, r queue.Rendition) []byte {
	t.Helper()
	if len(r.InitData) == 0 || r.Init != "" {
		t.Fatalf("%s: init segment not in the message (init %q, %d bytes)", r.Name, r.Init, len(r.InitData))
	}
	return r.InitData
}

func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testWriter logs through t; transcode runs synchronously, so nothing logs after the test.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// sessionStart is where the test session's first keyframe lands in its timeline: 1000 s in,
// so a timestamp that was reset to 0 (or left at TSBase) cannot pass for a right one.
const sessionStart = 1000 * media.Timescale

const testSession = "01900000-0000-7000-8000-00000000000a"

// fixture is a 4 s 1280x720 30 fps x264 (B-frames, keyframe every 60 frames) + 48 kHz stereo
// AAC test pattern at about 2.5 Mbit/s, cut into chunk jobs by the ingest's chunker.
type fixture struct {
	chunks []*chunker.Chunk
	jobs   []queue.Chunk
}

var (
	fixtureOnce, lightOnce sync.Once
	fixtureVal, lightVal   *fixture
	fixtureErr, lightErr   error
)

// sourceFixture is the 4 s, 2.5 Mbit/s fixture: two chunks, for the tests that run the real
// ladder.
func sourceFixture(t *testing.T) *fixture {
	t.Helper()
	ffmpeg, _ := testenv.FFmpeg(t)
	fixtureOnce.Do(func() { fixtureVal, fixtureErr = makeFixture(ffmpeg, "2500k", "4") })
	if fixtureErr != nil {
		t.Fatal(fixtureErr)
	}
	return fixtureVal
}

// lightFixture is the same picture for 2 s at 300 kbit/s: one chunk (the session's last),
// cheap to demux and package, for the tests that fake ffmpeg. The default ladder still skips
// 720p and encodes 480p and 360p for it.
func lightFixture(t *testing.T) *fixture {
	t.Helper()
	ffmpeg, _ := testenv.FFmpeg(t)
	lightOnce.Do(func() { lightVal, lightErr = makeFixture(ffmpeg, "300k", "2") })
	if lightErr != nil {
		t.Fatal(lightErr)
	}
	return lightVal
}

func makeFixture(ffmpeg, bitrate, seconds string) (*fixture, error) {
	ts, err := ffmpegOutput(ffmpeg, "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", seconds, "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", "60", "-keyint_min", "60",
		"-sc_threshold", "0", "-pix_fmt", "yuv420p", "-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate,
		"-c:a", "aac", "-b:a", "64k", "-ac", "2", "-f", "mpegts")
	if err != nil {
		return nil, err
	}
	return fixtureFromTS(ts)
}

// fixtureFromTS replays an MPEG-TS through the chunker the way the ingest replays RTMP: frames
// in arrival order (video by decode time, audio by presentation time), on a session timeline.
func fixtureFromTS(ts []byte) (*fixture, error) {
	d, err := cmaf.Demux(ts)
	if err != nil {
		return nil, err
	}
	if d.AAC == nil {
		return nil, fmt.Errorf("fixture has no audio")
	}
	off := sessionStart - d.Video[0].DTS
	ch, err := chunker.New(chunker.Config{Target: 2 * media.Timescale}, *d.H264, d.AAC)
	if err != nil {
		return nil, err
	}
	type event struct {
		t     int64
		video *media.VideoFrame
		audio *media.AudioFrame
	}
	var evs []event
	for i := range d.Video {
		f := d.Video[i]
		f.PTS += off
		f.DTS += off
		evs = append(evs, event{t: f.DTS, video: &f})
	}
	for i := range d.Audio {
		f := d.Audio[i]
		f.PTS += off
		evs = append(evs, event{t: f.PTS, audio: &f})
	}
	slices.SortStableFunc(evs, func(a, b event) int { return int(a.t - b.t) })
	fx := &fixture{}
	for _, e := range evs {
		var c *chunker.Chunk
		if e.video != nil {
			c, err = ch.WriteVideo(*e.video)
		} else {
			c, err = ch.WriteAudio(*e.audio)
		}
		if err != nil {
			return nil, err
		}
		if c != nil {
			fx.chunks = append(fx.chunks, c)
		}
	}
	fx.chunks = append(fx.chunks, ch.Flush()...)

	// The job messages, as the ingest fills them.
	vc, err := codec.H264Codec(d.H264.SPS)
	if err != nil {
		return nil, err
	}
	w, h, fps, err := codec.H264Info(d.H264.SPS)
	if err != nil {
		return nil, err
	}
	ac, err := codec.AACCodec(d.AAC.ASC)
	if err != nil {
		return nil, err
	}
	rate, channels, err := codec.AACInfo(d.AAC.ASC)
	if err != nil {
		return nil, err
	}
	origin, _ := ch.AudioOrigin()
	for _, c := range fx.chunks {
		job := queue.Chunk{StreamID: "st1", SessionID: testSession, Seq: c.Seq, Start: c.Start, Duration: c.Duration,
			TSBase: chunker.TSBase, AudioOrigin: origin,
			Video: &queue.VideoParams{Codec: vc, Width: w, Height: h, FPS: fps},
			Audio: &queue.AudioParams{Codec: ac, SampleRate: rate, Channels: channels},
			Last:  c.Last, Size: len(c.Data), Created: time.Unix(1700000000, 0).UTC()}
		job.Object = job.ID()
		fx.jobs = append(fx.jobs, job)
	}
	return fx, nil
}

// queueWith returns a fake queue holding the fixture's chunk bytes.
func (fx *fixture) queueWith() *fakeQueue {
	q := newFakeQueue()
	for i, c := range fx.chunks {
		q.chunks[fx.jobs[i].Object] = c.Data
	}
	return q
}

func ffmpegOutput(ffmpeg string, args ...string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "transcoder-test-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "out")
	cmd := exec.Command(ffmpeg, append(append([]string{"-nostdin", "-v", "error"}, args...), out)...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ffmpeg %s: %v\n%s", strings.Join(args, " "), err, msg)
	}
	return os.ReadFile(out)
}

// fakeFFmpeg writes an executable script standing in for ffmpeg. Each run appends its
// arguments as one line to the returned calls file, then runs body.
func fakeFFmpeg(t *testing.T, body string) (bin, calls string) {
	t.Helper()
	dir := t.TempDir()
	bin = filepath.Join(dir, "ffmpeg")
	calls = filepath.Join(dir, "calls")
	script := "#!/bin/sh\necho \"$*\" >> '" + calls + "'\n" + body + "\n"
	// Written by a child process, never opened for writing here: a parallel test forking
	// meanwhile would inherit that descriptor until its exec, and running the script then
	// fails with "text file busy" (ETXTBSY; CI saw it).
	w := exec.Command("sh", "-c", `cat > "$1" && chmod 755 "$1"`, "sh", bin)
	w.Stdin = strings.NewReader(script)
	if out, err := w.CombinedOutput(); err != nil {
		t.Fatalf("writing the fake ffmpeg: %v: %s", err, out)
	}
	return bin, calls
}

func callCount(t *testing.T, calls string) int {
	t.Helper()
	b, err := os.ReadFile(calls)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("\n"))
}

// probe is what ffprobe reports about one file.
type probe struct {
	Packets []struct {
		CodecType string `json:"codec_type"`
		PTS       int64  `json:"pts"`
		DTS       int64  `json:"dts"`
		Duration  int64  `json:"duration"`
		Flags     string `json:"flags"`
	} `json:"packets"`
	Streams []struct {
		CodecType    string `json:"codec_type"`
		CodecName    string `json:"codec_name"`
		Width        int    `json:"width"`
		Height       int    `json:"height"`
		TimeBase     string `json:"time_base"`
		NbReadFrames string `json:"nb_read_frames"`
		Channels     int    `json:"channels"`
	} `json:"streams"`
}

// ffprobe decodes every frame of the file made of parts (-count_frames) and returns its
// packets and streams; anything ffprobe reports as an error fails the test.
func ffprobe(t *testing.T, name string, parts ...[]byte) *probe {
	t.Helper()
	return runProbe(t, name, true, parts...)
}

// ffprobePackets is ffprobe without decoding: packets and streams only.
func ffprobePackets(t *testing.T, name string, parts ...[]byte) *probe {
	t.Helper()
	return runProbe(t, name, false, parts...)
}

func runProbe(t *testing.T, name string, decode bool, parts ...[]byte) *probe {
	t.Helper()
	_, bin := testenv.FFmpeg(t)
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, bytes.Join(parts, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-v", "error", "-show_packets", "-show_streams", "-of", "json", path}
	if decode {
		args = append([]string{"-count_frames"}, args...)
	}
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("ffprobe %s: %v\n%s", name, err, stderr.String())
	}
	var p probe
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Streams) != 1 {
		t.Fatalf("%s: %d streams, want 1 (CMAF: one track per file)", name, len(p.Streams))
	}
	return &p
}

func (p *probe) minPTS() int64 {
	m := p.Packets[0].PTS
	for _, k := range p.Packets {
		m = min(m, k.PTS)
	}
	return m
}
