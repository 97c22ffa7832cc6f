package transcoder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Eyevinn/mp4ff/mp4"

	"github.com/gopcast/gopcast/internal/testenv"
	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/chunker"
	"github.com/gopcast/gopcast/pkg/media/ladder"
	"github.com/gopcast/gopcast/pkg/queue"
)

func newService(t *testing.T, cfg Config, q Queue) *Service {
	t.Helper()
	if cfg.TempDir == "" {
		cfg.TempDir = t.TempDir()
	}
	return New(cfg, testLogger(t), q)
}

func names(seg *queue.Segment) []string {
	var out []string
	for _, r := range seg.Renditions {
		out = append(out, r.Name)
	}
	return out
}

func rend(t *testing.T, seg *queue.Segment, name string) queue.Rendition {
	t.Helper()
	for _, r := range seg.Renditions {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no rendition %s in %v", name, names(seg))
	return queue.Rendition{}
}

func tfdt(t *testing.T, frag []byte) uint64 {
	t.Helper()
	f, err := mp4.DecodeFile(bytes.NewReader(frag))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Segments) != 1 || len(f.Segments[0].Fragments) != 1 {
		t.Fatalf("want one fragment, got %d segments", len(f.Segments))
	}
	return f.Segments[0].Fragments[0].Moof.Traf.Tfdt.BaseMediaDecodeTime()
}

// ladderRun is the result of transcoding every fixture chunk with the default profile and the
// real ffmpeg, shared by the tests that inspect it.
type ladderRun struct {
	fx   *fixture
	q    *fakeQueue
	segs []*queue.Segment
}

var (
	ladderOnce sync.Once
	ladderVal  *ladderRun
)

func runLadder(t *testing.T) *ladderRun {
	t.Helper()
	fx := sourceFixture(t)
	ffmpeg, _ := testenv.FFmpeg(t)
	ladderOnce.Do(func() {
		q := fx.queueWith()
		dir, err := os.MkdirTemp("", "transcoder-test-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		svc := New(Config{FFmpeg: ffmpeg, TempDir: dir}, testLogger(t), q)
		run := &ladderRun{fx: fx, q: q}
		for i := range fx.jobs {
			job := fx.jobs[i]
			seg, err := svc.transcode(context.Background(), &job, svc.log)
			if err != nil {
				t.Fatalf("transcode chunk %d: %v", job.Seq, err)
			}
			run.segs = append(run.segs, seg)
		}
		ladderVal = run
	})
	if ladderVal == nil {
		t.Fatal("the shared ladder run failed in an earlier test")
	}
	return ladderVal
}

func TestFixtureIsWhatIngestProduces(t *testing.T) {
	t.Parallel()
	fx := sourceFixture(t)
	if len(fx.jobs) != 2 {
		t.Fatalf("%d chunks from 4 s with a keyframe every 2 s, want 2", len(fx.jobs))
	}
	for i, c := range fx.chunks {
		j := fx.jobs[i]
		if c.VideoFrames != 60 || c.Keyframes != 1 || c.AudioFrames == 0 {
			t.Errorf("chunk %d: %d video frames (%d keyframes), %d audio frames; want 60 (1)", i, c.VideoFrames, c.Keyframes, c.AudioFrames)
		}
		if j.Seq != uint64(i) || j.Last != (i == 1) {
			t.Errorf("chunk %d: seq %d last %v", i, j.Seq, j.Last)
		}
	}
	if fx.jobs[0].Start != sessionStart || fx.jobs[1].Start != sessionStart+2*media.Timescale {
		t.Errorf("chunk starts %d, %d; want %d and 2 s later", fx.jobs[0].Start, fx.jobs[1].Start, sessionStart)
	}
	if d := fx.jobs[0].Duration; d != 2*media.Timescale {
		t.Errorf("chunk 0 lasts %d, want 2 s", d)
	}

	light := lightFixture(t)
	if len(light.jobs) != 1 {
		t.Fatalf("light fixture: %d chunks, want 1", len(light.jobs))
	}
	if j := light.jobs[0]; !j.Last || light.chunks[0].VideoFrames != 60 || j.Start != sessionStart {
		t.Errorf("light fixture chunk %+v (%d frames), want the last, 60 frames from %d", j, light.chunks[0].VideoFrames, sessionStart)
	}
}

func TestTranscodeDefaultLadder(t *testing.T) {
	t.Parallel()
	run := runLadder(t)
	for i, seg := range run.segs {
		job := run.fx.jobs[i]
		c := run.fx.chunks[i]
		t.Run(fmt.Sprintf("chunk%d", i), func(t *testing.T) {
			if seg.StreamID != job.StreamID || seg.SessionID != job.SessionID || seg.Seq != job.Seq ||
				seg.Start != job.Start || seg.Duration != job.Duration || seg.Last != job.Last || seg.Failed ||
				!seg.Chunk.Equal(job.Created) {
				t.Errorf("segment header %+v does not match the chunk %+v", seg, job)
			}
			// A 720p source at about 2.5 Mbit/s: no 720p rung (its 3 Mbit/s would not save
			// 20 %), 480p and 360p below it.
			src := rend(t, seg, "source")
			if want := ladder.Profiles["default"].Select(720, src.Bandwidth); len(want) != 2 {
				t.Fatalf("source measured at %d bit/s; the fixture must be a 720p source the default ladder skips 720p for (got rungs %v)", src.Bandwidth, want)
			}
			if got, want := names(seg), []string{"source", "audio", "480p", "360p"}; !slices.Equal(got, want) {
				t.Fatalf("renditions %v, want %v", got, want)
			}
			if src.Bandwidth < 1_500_000 || src.Bandwidth > 3_700_000 {
				t.Errorf("source bandwidth %d, want the measured ~2.5 Mbit/s", src.Bandwidth)
			}

			wantSize := map[string][2]int{"source": {1280, 720}, "480p": {854, 480}, "360p": {640, 360}}
			wantRate := map[string]int{"480p": 1_200_000, "360p": 700_000}
			var srcFirstPTS int64
			for _, name := range []string{"source", "480p", "360p"} {
				r := rend(t, seg, name)
				if r.Failed || r.Kind != "video" || !strings.HasPrefix(r.Codec, "avc1.") || r.FPS != 30 || r.Timescale != media.Timescale {
					t.Errorf("%s: %+v", name, r)
				}
				if sz := wantSize[name]; r.Width != sz[0] || r.Height != sz[1] {
					t.Errorf("%s is %dx%d, want %dx%d", name, r.Width, r.Height, sz[0], sz[1])
				}
				if name != "source" && r.Bandwidth != wantRate[name] {
					t.Errorf("%s bandwidth %d, want the rung's %d", name, r.Bandwidth, wantRate[name])
				}
				init, frag := initOf(t, r), run.q.media(t, r)
				if r.Bytes != len(frag) {
					t.Errorf("%s: Bytes %d, fragment has %d", name, r.Bytes, len(frag))
				}

				p := ffprobe(t, name+".mp4", init, frag)
				st := p.Streams[0]
				if st.CodecName != "h264" || st.Width != wantSize[name][0] || st.Height != wantSize[name][1] || st.TimeBase != "1/90000" {
					t.Errorf("%s: ffprobe sees %+v", name, st)
				}
				if len(p.Packets) != c.VideoFrames || st.NbReadFrames != fmt.Sprint(c.VideoFrames) {
					t.Errorf("%s: %d packets, %s frames decoded; the chunk has %d frames", name, len(p.Packets), st.NbReadFrames, c.VideoFrames)
				}
				if !strings.HasPrefix(p.Packets[0].Flags, "K") {
					t.Errorf("%s does not start with a keyframe (flags %q)", name, p.Packets[0].Flags)
				}
				// The chunk's session timeline, not 0 and not the TS base.
				first := p.minPTS()
				if r.Start != first {
					t.Errorf("%s: Start %d, ffprobe's first PTS %d", name, r.Start, first)
				}
				if first < job.Start || first > job.Start+media.Timescale/2 {
					t.Errorf("%s: first PTS %d is not on the chunk's timeline (chunk starts at %d)", name, first, job.Start)
				}
				if name == "source" {
					srcFirstPTS = first
					if got := tfdt(t, frag); got != uint64(job.Start) {
						t.Errorf("source tfdt %d, want the chunk start %d", got, job.Start)
					}
					if r.Duration != job.Duration {
						t.Errorf("source duration %d, want the chunk's %d", r.Duration, job.Duration)
					}
				} else if first != srcFirstPTS {
					t.Errorf("%s starts at PTS %d, source at %d: renditions must start on the same instant", name, first, srcFirstPTS)
				}
				if d := r.Duration - job.Duration; d < -3000 || d > 3000 {
					t.Errorf("%s lasts %d, chunk %d", name, r.Duration, job.Duration)
				}
			}

			a := rend(t, seg, "audio")
			if a.Failed || a.Kind != "audio" || a.Codec != "mp4a.40.2" || a.Channels != 2 || a.Bandwidth <= 0 {
				t.Errorf("audio: %+v", a)
			}
			init, frag := initOf(t, a), run.q.media(t, a)
			p := ffprobe(t, "audio.mp4", init, frag)
			if st := p.Streams[0]; st.CodecName != "aac" || st.Channels != 2 || st.TimeBase != "1/48000" {
				t.Errorf("audio: ffprobe sees %+v", st)
			}
			if len(p.Packets) != c.AudioFrames {
				t.Errorf("audio: %d packets, chunk has %d frames", len(p.Packets), c.AudioFrames)
			}
			// Start and Duration are in the rendition's own timescale and describe the fragment.
			if a.Timescale == 0 {
				t.Fatalf("audio rendition without a timescale: %+v", a)
			}
			if got, want := a.Duration*48000, int64(c.AudioFrames)*1024*int64(a.Timescale); got != want {
				t.Errorf("audio duration %d/%d s is not %d AAC frames", a.Duration, a.Timescale, c.AudioFrames)
			}
			if first := p.Packets[0].PTS; a.Start*48000 != first*int64(a.Timescale) {
				t.Errorf("audio Start %d/%d s, fragment starts at %d/48000 s", a.Start, a.Timescale, first)
			}
			// Audio starts with the video, within the B-frame delay and one AAC frame.
			audioStart := p.Packets[0].PTS * media.Timescale / 48000
			if d := audioStart - srcFirstPTS; d < -media.Timescale/10 || d > media.Timescale/10 {
				t.Errorf("audio starts at %d, video at %d", audioStart, srcFirstPTS)
			}
		})
	}
}

// Consecutive chunks made by independent ffmpeg runs play as one track: same init segment, no
// gap or overlap over a frame where they meet.
func TestTranscodedChunksJoin(t *testing.T) {
	t.Parallel()
	run := runLadder(t)
	if len(run.segs) != 2 {
		t.Fatalf("%d segments", len(run.segs))
	}
	s0, s1 := run.segs[0], run.segs[1]
	for _, name := range []string{"source", "480p", "360p", "audio"} {
		r0, r1 := rend(t, s0, name), rend(t, s1, name)
		init0, init1 := initOf(t, r0), initOf(t, r1)
		if !bytes.Equal(init0, init1) {
			// The packager names a changed init anew and writes EXT-X-MAP each time.
			t.Errorf("%s: init segments of consecutive chunks differ", name)
		}
		f0, f1 := run.q.media(t, r0), run.q.media(t, r1)
		p := ffprobePackets(t, name+"-joined.mp4", init0, f0, f1)
		n0, n1 := run.fx.chunks[0].VideoFrames, run.fx.chunks[1].VideoFrames
		if name == "audio" {
			n0, n1 = run.fx.chunks[0].AudioFrames, run.fx.chunks[1].AudioFrames
		}
		if len(p.Packets) != n0+n1 {
			t.Fatalf("%s: joined track has %d packets, want %d + %d", name, len(p.Packets), n0, n1)
		}
		for i := 1; i < len(p.Packets); i++ {
			if p.Packets[i].DTS <= p.Packets[i-1].DTS {
				t.Fatalf("%s: DTS goes from %d to %d at packet %d", name, p.Packets[i-1].DTS, p.Packets[i].DTS, i)
			}
		}
		last, next := p.Packets[n0-1], p.Packets[n0]
		gap := next.DTS - (last.DTS + last.Duration)
		frame := last.Duration
		if gap < -frame || gap > frame {
			t.Errorf("%s: chunks meet with a gap of %d ticks (frame %d)", name, gap, frame)
		}
		if name != "audio" && r1.Start-r0.Start != s0.Duration {
			// Video renditions keep the chunk timeline: the next chunk starts a chunk later.
			t.Errorf("%s: chunk 1 starts %d after chunk 0, the chunk lasts %d", name, r1.Start-r0.Start, s0.Duration)
		}
	}
}

func TestCorruptChunkIsPoison(t *testing.T) {
	t.Parallel()
	fx := lightFixture(t)
	bin, calls := fakeFFmpeg(t, "exit 1")
	rng := rand.New(rand.NewPCG(1, 2))
	junk := make([]byte, 64*1024)
	for i := range junk {
		junk[i] = byte(rng.Uint32())
	}
	ffmpeg, _ := testenv.FFmpeg(t)
	audioOnly, err := ffmpegOutput(ffmpeg, "-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "0.5", "-c:a", "aac", "-f", "mpegts")
	if err != nil {
		t.Fatal(err)
	}
	truncated := fx.chunks[0].Data[:188*20]
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"random bytes", junk},
		{"MPEG-TS sync bytes over junk", bytes.Repeat(append([]byte{0x47}, junk[:187]...), 50)},
		{"audio only", audioOnly},
		{"first packets of a chunk", truncated},
		{"empty object", []byte{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := newFakeQueue()
			job := fx.jobs[0]
			q.chunks[job.Object] = tc.data
			svc := newService(t, Config{FFmpeg: bin}, q)
			seg, err := svc.transcode(context.Background(), &job, svc.log)
			if !errors.Is(err, errPoison) {
				t.Fatalf("err %v (segment %+v), want errPoison", err, seg)
			}
		})
	}
	if n := callCount(t, calls); n != 0 {
		t.Errorf("ffmpeg ran %d times on poison input", n)
	}
}

func TestChunkBytesErrors(t *testing.T) {
	t.Parallel()
	fx := lightFixture(t)
	bin, _ := fakeFFmpeg(t, "exit 1")
	job := fx.jobs[0]

	// Gone from the object store (expired): nothing a retry can fix.
	svc := newService(t, Config{FFmpeg: bin}, newFakeQueue())
	if _, err := svc.transcode(context.Background(), &job, svc.log); !errors.Is(err, errPoison) {
		t.Errorf("missing chunk bytes: %v, want errPoison", err)
	}
	// A transient queue error: retried, not poison.
	q := newFakeQueue()
	q.chunkErr = errors.New("nats: timeout")
	svc = newService(t, Config{FFmpeg: bin}, q)
	if _, err := svc.transcode(context.Background(), &job, svc.log); err == nil || errors.Is(err, errPoison) {
		t.Errorf("transient error: %v, want a retryable error", err)
	}
}

func TestEmptyLastChunkOnlyEndsTheSession(t *testing.T) {
	t.Parallel()
	q := newFakeQueue()
	bin, calls := fakeFFmpeg(t, "exit 1")
	svc := newService(t, Config{FFmpeg: bin}, q)
	job := queue.Chunk{StreamID: "st1", SessionID: testSession, Seq: 3, Last: true, TSBase: chunker.TSBase}
	seg, err := svc.transcode(context.Background(), &job, svc.log)
	if err != nil {
		t.Fatal(err)
	}
	if !seg.Last || seg.Seq != 3 || seg.Failed || len(seg.Renditions) != 0 {
		t.Errorf("segment %+v, want a Last segment without renditions", seg)
	}
	if q.chunkReads != 0 || callCount(t, calls) != 0 {
		t.Errorf("read chunk bytes %d times, ran ffmpeg %d times", q.chunkReads, callCount(t, calls))
	}
}

func TestPassthroughProfile(t *testing.T) {
	t.Parallel()
	fx := lightFixture(t)
	bin, calls := fakeFFmpeg(t, "exit 1")
	for _, tc := range []struct {
		name, profile, defaultProfile string
	}{
		{"named by the stream", "passthrough", "default"},
		{"the worker default", "", "passthrough"},
		{"unknown profile, passthrough default", "no-such-profile", "passthrough"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := fx.queueWith()
			svc := newService(t, Config{FFmpeg: bin, DefaultProfile: tc.defaultProfile}, q)
			job := fx.jobs[0]
			job.Profile = tc.profile
			seg, err := svc.transcode(context.Background(), &job, svc.log)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(seg); !slices.Equal(got, []string{"source", "audio"}) {
				t.Errorf("renditions %v, want source and audio only", got)
			}
		})
	}
	if n := callCount(t, calls); n != 0 {
		t.Errorf("ffmpeg ran %d times for passthrough", n)
	}
}

func TestUnknownProfileFallsBackToDefault(t *testing.T) {
	t.Parallel()
	fx := lightFixture(t)
	// ffmpeg fails, which is fast; the rungs it was asked for show which ladder was used.
	bin, calls := fakeFFmpeg(t, "exit 1")
	q := fx.queueWith()
	svc := newService(t, Config{FFmpeg: bin, Attempts: 1}, q)
	job := fx.jobs[0]
	job.Profile = "no-such-profile"
	seg, err := svc.transcode(context.Background(), &job, svc.log)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(seg); !slices.Equal(got, []string{"source", "audio", "480p", "360p"}) {
		t.Errorf("renditions %v, want the default ladder's", got)
	}
	b, err := os.ReadFile(calls)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"scale=-2:480", "scale=-2:360", "-preset veryfast"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("ffmpeg arguments lack %q: %s", want, b)
		}
	}
	if bytes.Contains(b, []byte("scale=-2:720")) {
		t.Errorf("ffmpeg asked for a 720p rung: %s", b)
	}
}

func TestFailingFFmpegReportsFailedRungs(t *testing.T) {
	t.Parallel()
	fx := lightFixture(t)
	bin, calls := fakeFFmpeg(t, "echo 'boom: simulated encoder failure' >&2\nexit 1")
	q := fx.queueWith()
	svc := newService(t, Config{FFmpeg: bin, Attempts: 2}, q)
	job := fx.jobs[0]
	seg, err := svc.transcode(context.Background(), &job, svc.log)
	if err != nil {
		t.Fatalf("a failing rung failed the whole chunk: %v", err)
	}
	if got := names(seg); !slices.Equal(got, []string{"source", "audio", "480p", "360p"}) {
		t.Fatalf("renditions %v: a failed rung must be reported, not dropped", got)
	}
	if n := callCount(t, calls); n != 2 {
		t.Errorf("ffmpeg ran %d times, want Attempts = 2", n)
	}
	for _, name := range []string{"480p", "360p"} {
		r := rend(t, seg, name)
		if !r.Failed || r.Kind != "video" || r.Height == 0 || !strings.Contains(r.Error, "ffmpeg") || !strings.Contains(r.Error, "boom") {
			t.Errorf("%s: %+v, want Failed with ffmpeg's error", name, r)
		}
		if r.Init != "" || r.Media != "" {
			t.Errorf("%s names objects although it failed: %+v", name, r)
		}
	}
	for _, name := range []string{"source", "audio"} {
		r := rend(t, seg, name)
		if r.Failed || r.Bytes == 0 {
			t.Errorf("%s: %+v, want it produced", name, r)
		}
		if len(q.media(t, r)) != r.Bytes {
			t.Errorf("%s object does not match Bytes", name)
		}
	}
}

// copyFFmpeg stands in for ffmpeg by copying its input to every output: each "rung" is the
// source chunk itself, which is enough to exercise what happens to ffmpeg's output.
const copyFFmpeg = `in=""; prev=""
for a in "$@"; do [ "$prev" = "-i" ] && in="$a"; prev="$a"; done
for a in "$@"; do case "$a" in *.ts) [ "$a" != "$in" ] && cp "$in" "$a";; esac; done`

// ffmpeg's output is read back onto the chunk's timeline, whatever ffmpeg did to it.
func TestRungOutputKeepsTheChunkTimeline(t *testing.T) {
	t.Parallel()
	fx := lightFixture(t)
	bin, _ := fakeFFmpeg(t, copyFFmpeg)
	q := fx.queueWith()
	svc := newService(t, Config{FFmpeg: bin}, q)
	job := fx.jobs[0]
	seg, err := svc.transcode(context.Background(), &job, svc.log)
	if err != nil {
		t.Fatal(err)
	}
	src := rend(t, seg, "source")
	for _, name := range []string{"480p", "360p"} {
		r := rend(t, seg, name)
		if r.Failed {
			t.Fatalf("%s failed: %s", name, r.Error)
		}
		if r.Start != src.Start || r.Duration != src.Duration {
			t.Errorf("%s: start %d duration %d, source %d %d", name, r.Start, r.Duration, src.Start, src.Duration)
		}
		if got, want := tfdt(t, q.media(t, r)), uint64(job.Start); got != want {
			t.Errorf("%s tfdt %d, want %d", name, got, want)
		}
		if !bytes.Equal(q.media(t, r), q.media(t, src)) {
			t.Errorf("%s: the same frames on the same timeline must make the same fragment", name)
		}
	}
}

// A rung whose output does not hold every frame is reported failed; the others stand.
func TestRungWithMissingFramesFails(t *testing.T) {
	t.Parallel()
	fx := lightFixture(t)
	// The 360p output is cut in half (on a TS packet boundary).
	bin, _ := fakeFFmpeg(t, copyFFmpeg+`
cut=$(( $(wc -c < "$in") / 2 / 188 * 188 ))
for a in "$@"; do case "$a" in *360p.ts) head -c "$cut" "$in" > "$a";; esac; done`)
	q := fx.queueWith()
	svc := newService(t, Config{FFmpeg: bin}, q)
	job := fx.jobs[0]
	seg, err := svc.transcode(context.Background(), &job, svc.log)
	if err != nil {
		t.Fatal(err)
	}
	// Cut inside a frame's PES the reader says so; cut between frames the count falls short.
	if r := rend(t, seg, "360p"); !r.Failed || !strings.Contains(r.Error, "frames") && !strings.Contains(r.Error, "cut short") {
		t.Errorf("360p: %+v, want Failed for missing frames", r)
	}
	if r := rend(t, seg, "480p"); r.Failed || r.Bytes == 0 {
		t.Errorf("480p: %+v, want it produced", r)
	}
}

// When the job's context ends (JobTimeout) while ffmpeg runs, ffmpeg is stopped and the
// rungs are reported failed; transcode does not hang.
func TestJobTimeoutStopsFFmpeg(t *testing.T) {
	t.Parallel()
	fx := lightFixture(t)
	started := filepath.Join(t.TempDir(), "started")
	bin, calls := fakeFFmpeg(t, "touch '"+started+"'\nexec sleep 60")
	q := fx.queueWith()
	svc := newService(t, Config{FFmpeg: bin, Attempts: 1}, q)
	job := fx.jobs[0]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if _, err := os.Stat(started); err == nil {
				cancel()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	type result struct {
		seg *queue.Segment
		err error
	}
	done := make(chan result, 1)
	go func() {
		seg, err := svc.transcode(ctx, &job, svc.log)
		done <- result{seg, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("transcode did not return after its context ended")
	}
	if res.err != nil {
		t.Fatalf("err %v", res.err)
	}
	for _, name := range []string{"480p", "360p"} {
		if r := rend(t, res.seg, name); !r.Failed {
			t.Errorf("%s not failed after the timeout", name)
		}
	}
	if n := callCount(t, calls); n != 1 {
		t.Errorf("ffmpeg ran %d times", n)
	}
}

// The rungs come from the session's bitrate named in the job, not from the chunk's own: a
// source whose rate wanders around a rung's threshold keeps the same renditions.
func TestRungsFollowTheSessionBitrate(t *testing.T) {
	t.Parallel()
	fx := lightFixture(t) // 720p at 300 kbit/s: by its own rate, no 720p rung
	bin, _ := fakeFFmpeg(t, copyFFmpeg)
	q := fx.queueWith()
	svc := newService(t, Config{FFmpeg: bin}, q)
	for _, tc := range []struct {
		rate int
		want string
	}{
		{0, "source,audio,480p,360p"},               // unknown: the chunk's own rate
		{300_000, "source,audio,480p,360p"},         // the same
		{10_000_000, "source,audio,720p,480p,360p"}, // a 10 Mbit/s session keeps its 720p rung
	} {
		job := fx.jobs[0]
		job.SourceBitrate = tc.rate
		seg, err := svc.transcode(context.Background(), &job, svc.log)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(names(seg), ","); got != tc.want {
			t.Errorf("session bitrate %d: renditions %s, want %s", tc.rate, got, tc.want)
		}
	}
}
