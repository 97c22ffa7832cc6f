package transcoder

// The rig shared by the transcoder tests: an embedded NATS JetStream, a local bucket, the
// ingest's chunker cutting an ffmpeg test pattern into the chunks a session's feed carries,
// fake ffmpeg scripts, and ffprobe for what ends up in the bucket.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gopcast/gopcast/internal/testenv"
	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/chunker"
	"github.com/gopcast/gopcast/pkg/media/cmaf"
	"github.com/gopcast/gopcast/pkg/media/codec"
	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/segment"
	"github.com/gopcast/gopcast/pkg/storage"
)

const (
	testStream  = "st1"
	testSession = "01900000-0000-7000-8000-00000000000a"
	// sessionStart is where the test session's first keyframe lands in its timeline: 1000 s
	// in, so a timestamp that was reset to 0 (or left at TSBase) cannot pass for a right one.
	sessionStart = 1000 * media.Timescale
	// nBase is chunk 0's segment number: numbers run on across a stream's sessions, so they
	// are not the chunks' sequence numbers.
	nBase = 40
	// partBytes is the size of the parts a chunk is published in: not a multiple of 188, so
	// parts end inside MPEG-TS packets, as the ingest's may.
	partBytes = 40_000
	// waitFor bounds every wait for the worker: generous, as the machine is shared.
	waitFor = 2 * time.Minute
)

// fixture is a 5 s 854x480 30 fps x264 test pattern (B-frames, a keyframe every 30 frames)
// encoded for 2.5 Mbit/s, cut by the ingest's chunker into five 1 s chunks with their MPEG-TS.
type fixture struct {
	chunks []*chunker.Chunk
	video  queue.VideoParams
	// rate is the source bitrate as the ingest measures it: over the first chunk.
	rate int
}

var (
	fixtureOnce sync.Once
	fixtureVal  *fixture
	fixtureErr  error
)

func sourceFixture(t *testing.T) *fixture {
	t.Helper()
	ffmpeg, _ := testenv.FFmpeg(t)
	fixtureOnce.Do(func() { fixtureVal, fixtureErr = makeFixture(ffmpeg) })
	if fixtureErr != nil {
		t.Fatal(fixtureErr)
	}
	return fixtureVal
}

func makeFixture(ffmpeg string) (*fixture, error) {
	ts, err := ffmpegOutput(ffmpeg, "-f", "lavfi", "-i", "testsrc2=size=854x480:rate=30", "-t", "5",
		"-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", "30", "-keyint_min", "30", "-sc_threshold", "0",
		"-pix_fmt", "yuv420p", "-b:v", "2500k", "-maxrate", "2500k", "-bufsize", "2500k", "-f", "mpegts")
	if err != nil {
		return nil, err
	}
	d, err := cmaf.Demux(ts)
	if err != nil {
		return nil, err
	}
	// Video only: the encoder takes the video, and the audio is the ingest's.
	ch, err := chunker.New(chunker.Config{Target: media.Timescale, TS: true}, *d.H264, nil)
	if err != nil {
		return nil, err
	}
	fx := &fixture{}
	off := sessionStart - d.Video[0].DTS
	for _, f := range d.Video {
		f.PTS += off
		f.DTS += off
		c, err := ch.WriteVideo(f)
		if err != nil {
			return nil, err
		}
		if c != nil {
			fx.chunks = append(fx.chunks, c)
		}
	}
	fx.chunks = append(fx.chunks, ch.Flush()...)
	vc, err := codec.H264Codec(d.H264.SPS)
	if err != nil {
		return nil, err
	}
	w, h, fps, err := codec.H264Info(d.H264.SPS)
	if err != nil {
		return nil, err
	}
	fx.video = queue.VideoParams{Codec: vc, Width: w, Height: h, FPS: fps}
	c0 := fx.chunks[0]
	fx.rate = int(int64(c0.VideoBytes) * 8 * media.Timescale / c0.Duration)
	return fx, nil
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

// testLogger logs through t until the test ends; encoders that exit after their session
// (a skipped chunk's) are not logged then.
func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.done = true
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// rig is one test's infrastructure: its own embedded NATS, bucket and record collector.
type rig struct {
	t     *testing.T
	fx    *fixture
	log   *slog.Logger
	q     *queue.Conn
	js    jetstream.JetStream // to count what is left on the streams
	store *storage.LocalStore

	mu   sync.Mutex
	recs []queue.Segment
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{t: t, fx: sourceFixture(t), log: testLogger(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A short AckWait: a job a worker let go of without a word comes back within seconds.
	q, err := queue.Connect(ctx, queue.Config{DataDir: t.TempDir(), JobAckWait: 2 * time.Second}, r.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	r.q = q
	nc, err := nats.Connect(q.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if r.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	if r.store, err = storage.NewLocal(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	// The packagers' side: every record is kept.
	cctx, ccancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = q.ConsumeSegments(cctx, 4, func(ctx context.Context, j *queue.Job[queue.Segment]) {
			r.mu.Lock()
			r.recs = append(r.recs, j.Body)
			r.mu.Unlock()
			_ = j.Ack(ctx)
		})
	}()
	t.Cleanup(func() { ccancel(); <-done })
	return r
}

// dial is another connection to the rig's NATS, as another worker process has.
func (r *rig) dial() *queue.Conn {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, err := queue.Connect(ctx, queue.Config{URL: r.q.ClientURL(), JobAckWait: 2 * time.Second}, r.log)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(q.Close)
	return q
}

// worker is one transcoder running on the rig.
type worker struct {
	svc    *Service
	keys   *keyLog
	cancel context.CancelFunc
	done   chan struct{}
}

// start runs a transcoder with cfg (real ffmpeg and one session at a time unless cfg says
// otherwise) on the rig's queue, or on q when given.
func (r *rig) start(cfg Config, q ...Queue) *worker {
	r.t.Helper()
	if cfg.FFmpeg == "" {
		cfg.FFmpeg, _ = testenv.FFmpeg(r.t)
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 1
	}
	var wq Queue = r.q
	if len(q) > 0 {
		wq = q[0]
	}
	w := &worker{keys: &keyLog{Store: r.store}, done: make(chan struct{})}
	w.svc = New(cfg, r.log, wq, storage.NewWriter(w.keys, r.log))
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() {
		defer close(w.done)
		if err := w.svc.Run(ctx); err != nil {
			r.t.Errorf("Run: %v", err)
		}
	}()
	r.t.Cleanup(func() { w.stop(r.t) })
	return w
}

// stop stops the worker and waits for Run to return.
func (w *worker) stop(t *testing.T) {
	t.Helper()
	w.cancel()
	select {
	case <-w.done:
	case <-time.After(waitFor):
		t.Fatal("the worker did not stop")
	}
}

// waitIdle waits until the worker holds no session.
func (w *worker) waitIdle(t *testing.T) {
	t.Helper()
	eventually(t, "the worker to let go of its sessions", func() bool { busy, _, _ := w.svc.Stats(); return busy == 0 })
}

// keyLog is a store that remembers the keys a worker wrote.
type keyLog struct {
	storage.Store
	mu   sync.Mutex
	keys []string
}

func (k *keyLog) Put(ctx context.Context, key string, data []byte, opts storage.PutOptions) error {
	err := k.Store.Put(ctx, key, data, opts)
	if err == nil {
		k.mu.Lock()
		k.keys = append(k.keys, key)
		k.mu.Unlock()
	}
	return err
}

// wrote reports whether the worker wrote any segment of chunk seq.
func (k *keyLog) wrote(seq int) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	name := "/" + segment.Name(nBase+uint64(seq))
	return slices.ContainsFunc(k.keys, func(key string) bool { return strings.HasSuffix(key, name) })
}

// job publishes the session's encode job, as the ingest does when the session begins.
func (r *rig) job(profile string) {
	r.t.Helper()
	v := r.fx.video
	r.publishJob(&queue.EncodeJob{StreamID: testStream, SessionID: testSession, Profile: profile, Video: &v, Created: time.Now().UTC()})
}

func (r *rig) publishJob(j *queue.EncodeJob) {
	r.t.Helper()
	if err := r.q.PublishJob(context.Background(), j); err != nil {
		r.t.Fatal(err)
	}
}

// parts is chunk seq's MPEG-TS in the parts it is published in.
func (r *rig) parts(seq int) [][]byte {
	return split(r.fx.chunks[seq].TS)
}

func split(b []byte) [][]byte {
	var out [][]byte
	for len(b) > partBytes {
		out = append(out, b[:partBytes])
		b = b[partBytes:]
	}
	if len(b) > 0 {
		out = append(out, b)
	}
	return out
}

// sendParts publishes parts [from, to) of chunk seq, of data (the chunk's own MPEG-TS when
// nil).
func (r *rig) sendParts(seq, from, to int, data []byte) {
	r.t.Helper()
	parts := r.parts(seq)
	if data != nil {
		parts = split(data)
	}
	for i := from; i < min(to, len(parts)); i++ {
		p := queue.Part{StreamID: testStream, SessionID: testSession, Seq: uint64(seq), Index: i,
			Start: r.fx.chunks[seq].Start, Data: parts[i]}
		if err := r.q.PublishPart(context.Background(), p); err != nil {
			r.t.Fatal(err)
		}
	}
}

// end is what chunk seq's end message says, as the ingest fills it in for data (the chunk's
// own MPEG-TS when nil).
func (r *rig) end(seq int, last bool, data []byte) *queue.Chunk {
	c := r.fx.chunks[seq]
	if data == nil {
		data = c.TS
	}
	return &queue.Chunk{StreamID: testStream, SessionID: testSession, Seq: uint64(seq), N: nBase + uint64(seq),
		Start: c.Start, Duration: c.Duration, TSBase: chunker.TSBase, SourceBitrate: r.fx.rate, Frames: len(c.Video),
		Last: last, Size: len(data), CRC: crc32.Checksum(data, queue.ChunkCRC), Created: time.Now().UTC()}
}

func (r *rig) sendEnd(e *queue.Chunk) {
	r.t.Helper()
	if err := r.q.PublishChunk(context.Background(), e); err != nil {
		r.t.Fatal(err)
	}
}

// send publishes chunk seq whole: its parts, then its end.
func (r *rig) send(seq int, last bool) {
	r.t.Helper()
	r.sendParts(seq, 0, len(r.parts(seq)), nil)
	r.sendEnd(r.end(seq, last, nil))
}

// session publishes the job and chunks 0 to n-1, the last flagged so.
func (r *rig) session(n int) {
	r.t.Helper()
	r.job("default")
	for i := range n {
		r.send(i, i == n-1)
	}
}

func (r *rig) records() []queue.Segment {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.recs)
}

// bySeq is the transcoder's records by chunk.
func bySeq(recs []queue.Segment) map[uint64][]queue.Segment {
	out := map[uint64][]queue.Segment{}
	for _, s := range recs {
		if s.From == queue.FromTranscoder {
			out[s.Seq] = append(out[s.Seq], s)
		}
	}
	return out
}

// eventually polls cond until it holds, failing the test after waitFor.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitRecords waits until every chunk of seqs has a transcoder record and returns them, one
// per chunk (the first).
func (r *rig) waitRecords(seqs ...int) map[uint64]queue.Segment {
	r.t.Helper()
	eventually(r.t, fmt.Sprintf("records of chunks %v", seqs), func() bool {
		got := bySeq(r.records())
		for _, s := range seqs {
			if len(got[uint64(s)]) == 0 {
				return false
			}
		}
		return true
	})
	out := map[uint64]queue.Segment{}
	for seq, recs := range bySeq(r.records()) {
		out[seq] = recs[0]
	}
	return out
}

// waitEnded waits until the session is over: its job acknowledged and its chunk messages
// purged.
func (r *rig) waitEnded() {
	r.t.Helper()
	eventually(r.t, "the session's job to be acknowledged and its chunks purged", func() bool {
		return r.jobs() == 0 && r.chunkMsgs() == 0
	})
}

// jobs is how many encode jobs are still on the jobs stream.
func (r *rig) jobs() uint64 {
	r.t.Helper()
	n, err := r.q.Waiting(context.Background(), queue.JobsStream)
	if err != nil {
		r.t.Fatal(err)
	}
	return n
}

// chunkMsgs is how many messages are left on the chunk stream.
func (r *rig) chunkMsgs() uint64 {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := r.js.Stream(ctx, queue.ChunksStream)
	if err != nil {
		r.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	return info.State.Msgs
}

// media is the media segment of rendition name of chunk seq in the bucket.
func (r *rig) media(seq int, name string) []byte {
	r.t.Helper()
	b, err := r.store.Get(context.Background(), segment.Key(testStream, name, nBase+uint64(seq)))
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

// absent reports whether chunk seq has no segment of rendition name in the bucket.
func (r *rig) absent(seq int, name string) bool {
	_, err := r.store.Get(context.Background(), segment.Key(testStream, name, nBase+uint64(seq)))
	return errors.Is(err, storage.ErrNotFound)
}

func names(seg queue.Segment) []string {
	var out []string
	for _, r := range seg.Renditions {
		out = append(out, r.Name)
	}
	return out
}

func rend(t *testing.T, seg queue.Segment, name string) queue.Rendition {
	t.Helper()
	for _, r := range seg.Renditions {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("chunk %d: no rendition %s in %v", seg.Seq, name, names(seg))
	return queue.Rendition{}
}

// fakeFFmpeg writes an executable script standing in for ffmpeg. Each run writes its
// arguments to a file of its own in the returned calls directory (runs may overlap), then
// runs body.
func fakeFFmpeg(t *testing.T, body string) (bin, calls string) {
	t.Helper()
	dir := t.TempDir()
	bin = filepath.Join(dir, "ffmpeg")
	calls = filepath.Join(dir, "calls")
	if err := os.Mkdir(calls, 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho \"$*\" > '" + calls + "'/$$\n" + body + "\n"
	// Written by a child process, never opened for writing here: a parallel test forking
	// meanwhile would inherit that descriptor until its exec, and running the script then
	// fails with "text file busy" (ETXTBSY).
	w := exec.Command("sh", "-c", `cat > "$1" && chmod 755 "$1"`, "sh", bin)
	w.Stdin = strings.NewReader(script)
	if out, err := w.CombinedOutput(); err != nil {
		t.Fatalf("writing the fake ffmpeg: %v: %s", err, out)
	}
	return bin, calls
}

// callArgs is the arguments of each run of a fake ffmpeg, in no particular order.
func callArgs(t *testing.T, calls string) []string {
	t.Helper()
	files, err := os.ReadDir(calls)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(calls, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, strings.TrimSuffix(string(b), "\n"))
	}
	return out
}

// copyFFmpeg stands in for ffmpeg by copying its input, once it has all of it, to every
// output (pipe:3 and on) but those of the rung whose height is in $half, which get the first
// half of it (cut on a packet boundary). Each "rung" is then the chunk's own video, which is
// enough to exercise what happens to ffmpeg's output.
func copyFFmpeg(dir string) string {
	return `h=""; full=""; half=""
for a in "$@"; do
	case "$a" in
	scale=-2:*) h="${a#scale=-2:}";;
	pipe:0) ;;
	pipe:*) if [ "$h" = "$HALF" ]; then half="$half ${a#pipe:}"; else full="$full ${a#pipe:}"; fi;;
	esac
done
tmp='` + dir + `'/in.$$
cat > "$tmp"
for fd in $full; do eval "cat \"\$tmp\" >&$fd"; done
n=$(( $(wc -c < "$tmp") / 2 / 188 * 188 ))
for fd in $half; do eval "head -c $n \"\$tmp\" >&$fd"; done
rm -f "$tmp"`
}

// probe is what ffprobe reports about one file.
type probe struct {
	Packets []struct {
		PTS      int64  `json:"pts"`
		DTS      int64  `json:"dts"`
		Duration int64  `json:"duration"`
		Flags    string `json:"flags"`
	} `json:"packets"`
	Streams []struct {
		CodecType    string `json:"codec_type"`
		CodecName    string `json:"codec_name"`
		Width        int    `json:"width"`
		Height       int    `json:"height"`
		TimeBase     string `json:"time_base"`
		NbReadFrames string `json:"nb_read_frames"`
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
	if len(p.Streams) != 1 || len(p.Packets) == 0 {
		t.Fatalf("%s: %d streams and %d packets, want one track (CMAF) with packets", name, len(p.Streams), len(p.Packets))
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

// oneJob is the queue of a worker that takes one job only and says when it let go of it:
// jobs that come after are handed straight back.
type oneJob struct {
	Queue
	taken atomic.Bool
	done  chan struct{}
}

func newOneJob(q Queue) *oneJob { return &oneJob{Queue: q, done: make(chan struct{})} }

func (o *oneJob) ConsumeJobs(ctx context.Context, n int, h func(context.Context, *queue.Job[queue.EncodeJob])) error {
	return o.Queue.ConsumeJobs(ctx, n, func(ctx context.Context, j *queue.Job[queue.EncodeJob]) {
		if !o.taken.CompareAndSwap(false, true) {
			_ = j.Retry(0)
			return
		}
		h(ctx, j)
		close(o.done)
	})
}
