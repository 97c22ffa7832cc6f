package transcoder

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopcast/gopcast/internal/testenv"
	"github.com/gopcast/gopcast/pkg/queue"
)

// liveRun feeds a fixture chunk to a taken live chunk in MPEG-TS-packet-sized pieces, as the
// ingest sends it while it is written, ends it with its job and waits for the outcome.
func liveRun(t *testing.T, svc *Service, slots chan struct{}, job queue.Chunk, data []byte, offer queue.LiveOffer) *queue.LiveChunk {
	t.Helper()
	lc := &queue.LiveChunk{Offer: offer}
	e := svc.takeLive(lc, slots)
	if e == nil {
		t.Fatalf("chunk %d not taken", job.Seq)
	}
	for n := 0; n < len(data); n += 7 * 188 {
		e.Part(data[n:min(n+7*188, len(data))])
	}
	e.End(&job, nil)
	waitLive(t, lc)
	return lc
}

func waitLive(t *testing.T, lc *queue.LiveChunk) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for lc.State() == queue.LiveWorking {
		if time.Now().After(deadline) {
			t.Fatalf("live chunk %s still working", lc.Offer.ID())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func offerFor(job queue.Chunk, bitrate int) queue.LiveOffer {
	return queue.LiveOffer{StreamID: job.StreamID, SessionID: job.SessionID, Seq: job.Seq, Profile: job.Profile,
		Video: job.Video, Bitrate: bitrate}
}

// settled waits until the worker's live chunks are all finished, and checks they let go of
// their slots and files.
func settled(t *testing.T, svc *Service, slots chan struct{}) {
	t.Helper()
	svc.live.Wait()
	if n := len(slots); n != 0 {
		t.Errorf("%d live slots still taken", n)
	}
	emptyDir(t, svc.cfg.TempDir)
}

// doneAfterASecondRun checks a live chunk whose live encode could not be used: it is done
// anyway, ffmpeg ran twice (runs says which), and its one segment is returned.
func doneAfterASecondRun(t *testing.T, svc *Service, lc *queue.LiveChunk, q *fakeQueue, calls, runs string) *queue.Segment {
	t.Helper()
	if st := lc.State(); st != queue.LiveDone {
		t.Fatalf("state %q, want done", st)
	}
	svc.live.Wait()
	if n := callCount(t, calls); n != 2 {
		t.Errorf("ffmpeg ran %d times, want 2 (%s)", n, runs)
	}
	if len(q.published) != 1 {
		t.Fatalf("%d segments published", len(q.published))
	}
	return &q.published[0]
}

func emptyDir(t *testing.T, dir string) {
	t.Helper()
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("%d files left in the temp dir, e.g. %s", len(left), left[0].Name())
	}
}

// A chunk taken live is encoded by one ffmpeg reading it as it arrives, and finished into the
// segment its job would have made: the same renditions with the same timeline, every frame of
// every rung decoding, and the chunks still joining without a gap.
func TestLiveChunkMakesTheJobsSegment(t *testing.T) {
	t.Parallel()
	run := runLadder(t) // the job path's segments, to compare with
	fx := run.fx
	ffmpeg, _ := testenv.FFmpeg(t)
	bin, calls := fakeFFmpeg(t, "exec '"+ffmpeg+"' \"$@\"")
	q := newFakeQueue()
	svc := newService(t, Config{FFmpeg: bin}, q)
	slots := make(chan struct{}, 3)
	bitrate := 0 // the first chunk's offer knows no bitrate yet: it encodes every rung up to the source's height
	for i, c := range fx.chunks {
		job := fx.jobs[i]
		lc := liveRun(t, svc, slots, job, c.Data, offerFor(job, bitrate))
		if st := lc.State(); st != queue.LiveDone {
			t.Fatalf("chunk %d: live state %q, want done", i, st)
		}
		bitrate = len(c.Data) * 8 / 2
	}
	settled(t, svc, slots)
	if n := callCount(t, calls); n != len(fx.chunks) {
		t.Errorf("ffmpeg ran %d times for %d live chunks", n, len(fx.chunks))
	}
	b, _ := os.ReadFile(calls)
	if strings.Count(string(b), "pipe:0") != len(fx.chunks) {
		t.Errorf("ffmpeg did not read the chunks from stdin:\n%s", b)
	}
	sameAsJobPath(t, run, q, true)
}

// A live chunk given up (a lost part, its ingest gone) publishes nothing and reports failed,
// so the job is encoded; its ffmpeg, files and slot are let go.
func TestLiveChunkGivenUp(t *testing.T) {
	t.Parallel()
	fx := lightFixture(t)
	ffmpeg, _ := testenv.FFmpeg(t)
	q := newFakeQueue()
	svc := newService(t, Config{FFmpeg: ffmpeg}, q)
	slots := make(chan struct{}, 1)
	job := fx.jobs[0]
	lc := &queue.LiveChunk{Offer: offerFor(job, 300_000)}
	e := svc.takeLive(lc, slots)
	if e == nil {
		t.Fatal("not taken")
	}
	if svc.takeLive(&queue.LiveChunk{Offer: offerFor(job, 300_000)}, slots) != nil {
		t.Fatal("a second chunk was taken with the only slot busy")
	}
	e.Part(fx.chunks[0].Data[:len(fx.chunks[0].Data)/2])
	e.End(nil, errors.New("live chunk: part 9 where 8 was due"))
	waitLive(t, lc)
	if st := lc.State(); st != queue.LiveFailed {
		t.Errorf("state %q, want failed", st)
	}
	settled(t, svc, slots)
	if len(q.published) != 0 {
		t.Errorf("%d segments published for a chunk given up", len(q.published))
	}
}

// When the rungs chosen at the chunk's start (from the previous chunk's bitrate) are not the
// ones the finished chunk needs, the taker encodes it again from the bytes it kept: the segment
// is right, only later.
func TestLiveChunkWithOtherRungsIsEncodedAgain(t *testing.T) {
	t.Parallel()
	fx := lightFixture(t)
	ffmpeg, _ := testenv.FFmpeg(t)
	bin, calls := fakeFFmpeg(t, "exec '"+ffmpeg+"' \"$@\"")
	q := newFakeQueue()
	svc := newService(t, Config{FFmpeg: bin}, q)
	job := fx.jobs[0]
	offer := offerFor(job, 300_000)
	small := *job.Video
	small.Height = 480 // so only the 360p rung is encoded live; the job needs 480p too
	offer.Video = &small
	lc := liveRun(t, svc, make(chan struct{}, 1), job, fx.chunks[0].Data, offer)
	seg := doneAfterASecondRun(t, svc, lc, q, calls, "live, then again for the missing rung")
	if got := strings.Join(names(seg), ","); got != "source,audio,480p,360p" {
		t.Errorf("renditions %s", got)
	}
	for _, name := range []string{"480p", "360p"} {
		r := rend(t, seg, name)
		p := ffprobe(t, name+".mp4", initOf(t, r), q.media(t, r))
		if r.Failed || len(p.Packets) != fx.chunks[0].VideoFrames {
			t.Errorf("%s: failed %v, %d frames", name, r.Failed, len(p.Packets))
		}
	}
	emptyDir(t, svc.cfg.TempDir)
}

// Two live chunks of one stream are encoded one after the other: the second one's ffmpeg
// starts once the first one's has exited, though both chunks' bytes are in.
func TestLiveChunksOfAStreamTakeTurns(t *testing.T) {
	t.Parallel()
	fx := sourceFixture(t)
	order := filepath.Join(t.TempDir(), "order")
	// Each run logs its start, reads the chunk from stdin, takes a moment, writes the chunk
	// as every rung (so the rungs are complete), and logs its end.
	bin, _ := fakeFFmpeg(t, `echo start >> '`+order+`'
tmp=$(mktemp); cat > "$tmp"; sleep 0.3
for a in "$@"; do case "$a" in *.ts) cp "$tmp" "$a";; esac; done
rm -f "$tmp"; echo end >> '`+order+`'`)
	q := newFakeQueue()
	svc := newService(t, Config{FFmpeg: bin}, q)
	slots := make(chan struct{}, 3)
	var lcs []*queue.LiveChunk
	var es []*liveEncode
	for i := range fx.chunks {
		job := fx.jobs[i]
		lc := &queue.LiveChunk{Offer: offerFor(job, 2_500_000)}
		e := svc.takeLive(lc, slots)
		if e == nil {
			t.Fatalf("chunk %d not taken", i)
		}
		lcs, es = append(lcs, lc), append(es, e)
	}
	for i, e := range es {
		e.Part(fx.chunks[i].Data)
		job := fx.jobs[i]
		e.End(&job, nil)
	}
	for _, lc := range lcs {
		waitLive(t, lc)
		if st := lc.State(); st != queue.LiveDone {
			t.Errorf("chunk %s: %q, want done", lc.Offer.ID(), st)
		}
	}
	svc.live.Wait()
	b, err := os.ReadFile(order)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(b)); strings.Join(got, " ") != "start end start end" {
		t.Errorf("ffmpeg runs went %v, want one after the other", got)
	}
	if len(q.published) != 2 {
		t.Errorf("%d segments published", len(q.published))
	}
}

// sameAsJobPath checks that the segments published live are the job path's: the same
// renditions and timeline (and Last flags, if last), every frame of every rung decoding from
// a keyframe, and consecutive chunks' rungs joining without a gap.
func sameAsJobPath(t *testing.T, run *ladderRun, q *fakeQueue, last bool) {
	t.Helper()
	fx := run.fx
	if len(q.published) != len(run.segs) {
		t.Fatalf("%d segments published, want %d", len(q.published), len(run.segs))
	}
	for i, seg := range q.published {
		want := run.segs[i]
		if strings.Join(names(&seg), ",") != strings.Join(names(want), ",") || seg.Seq != want.Seq || seg.Start != want.Start ||
			seg.Duration != want.Duration || (last && seg.Last != want.Last) {
			t.Fatalf("chunk %d: live segment %v (seq %d start %d duration %d last %v), job's %v (seq %d start %d duration %d last %v)",
				i, names(&seg), seg.Seq, seg.Start, seg.Duration, seg.Last, names(want), want.Seq, want.Start, want.Duration, want.Last)
		}
		for _, r := range seg.Renditions {
			w := rend(t, want, r.Name)
			if r.Failed || r.Start != w.Start || r.Duration != w.Duration || r.Width != w.Width || r.Height != w.Height ||
				r.FPS != w.FPS || r.Codec != w.Codec {
				t.Errorf("chunk %d %s: live %+v, job %+v", i, r.Name, r, w)
			}
			if r.Kind != "video" || r.Name == "source" {
				continue
			}
			p := ffprobe(t, r.Name+".mp4", initOf(t, r), q.media(t, r))
			if len(p.Packets) != fx.chunks[i].VideoFrames {
				t.Errorf("chunk %d %s: %d frames decoded, want %d", i, r.Name, len(p.Packets), fx.chunks[i].VideoFrames)
			}
			if len(p.Packets) > 0 && !strings.HasPrefix(p.Packets[0].Flags, "K") {
				t.Errorf("chunk %d %s: first frame is not a keyframe (%+v)", i, r.Name, p.Packets[0])
			}
		}
	}
	for _, name := range []string{"480p", "360p"} {
		r0, r1 := rend(t, &q.published[0], name), rend(t, &q.published[1], name)
		if r1.Start-r0.Start != q.published[0].Duration {
			t.Errorf("%s: chunk 1 starts %d after chunk 0, which lasts %d", name, r1.Start-r0.Start, q.published[0].Duration)
		}
	}
}

// takeChained takes a fixture chunk for a worker with encoder chains, offered as the ingest
// offers it: with its start, and the bitrate the rungs are chosen from.
func takeChained(t *testing.T, svc *Service, slots chan struct{}, job queue.Chunk, bitrate int) (*queue.LiveChunk, *liveEncode) {
	t.Helper()
	o := offerFor(job, bitrate)
	o.Start = job.Start
	lc := &queue.LiveChunk{Offer: o}
	e := svc.takeLive(lc, slots)
	if e == nil {
		t.Fatalf("chunk %d not taken", job.Seq)
	}
	return lc, e
}

func feed(e *liveEncode, data []byte) {
	for n := 0; n < len(data); n += 7 * 188 {
		e.Part(data[n:min(n+7*188, len(data))])
	}
}

// With encoder chains one ffmpeg encodes a stream's consecutive live chunks, and each chunk's
// segment is the one its own ffmpeg would have made: the same renditions and timeline, every
// frame of every rung decoding, the chunks joining without a gap. The chunk cut from the
// output at the next chunk's keyframe and the one that ends it (the session's last, or the
// last for a while: the wait for a next one closes the input) both come out whole.
func TestChainedLiveChunksMakeTheJobsSegments(t *testing.T) {
	t.Parallel()
	run := runLadder(t)
	fx := run.fx
	ffmpeg, _ := testenv.FFmpeg(t)
	for _, tc := range []struct {
		name string
		last bool // the second chunk is the session's last (else the input closes after chainFlush)
	}{{"last chunk", true}, {"no next chunk", false}} {
		t.Run(tc.name, func(t *testing.T) {
			bin, calls := fakeFFmpeg(t, "exec '"+ffmpeg+"' \"$@\"")
			q := newFakeQueue()
			svc := newService(t, Config{FFmpeg: bin, Chains: true}, q)
			slots := make(chan struct{}, 3)
			var lcs []*queue.LiveChunk
			for i, c := range fx.chunks {
				job := fx.jobs[i]
				if !tc.last {
					job.Last = false
				}
				lc, e := takeChained(t, svc, slots, job, 2_500_000)
				lcs = append(lcs, lc)
				feed(e, c.Data)
				e.End(&job, nil)
			}
			for i, lc := range lcs {
				waitLive(t, lc)
				if st := lc.State(); st != queue.LiveDone {
					t.Fatalf("chunk %d: live state %q, want done", i, st)
				}
			}
			svc.live.Wait()
			emptyDir(t, svc.cfg.TempDir)
			if n := callCount(t, calls); n != 1 {
				t.Errorf("ffmpeg ran %d times for %d chained chunks, want 1", n, len(fx.chunks))
			}
			if n := svc.ChainsStarted(); n != 1 {
				t.Errorf("%d chains started, want 1", n)
			}
			sameAsJobPath(t, run, q, tc.last)
		})
	}
}

// A chunk given up mid-way ends its chain: it reports failed (its job is encoded), while the
// chunk before it, already in the encoder, still comes out whole. The next chunk starts a new
// chain.
func TestChainGivenUpMidChunk(t *testing.T) {
	t.Parallel()
	fx := sourceFixture(t)
	ffmpeg, _ := testenv.FFmpeg(t)
	bin, calls := fakeFFmpeg(t, "exec '"+ffmpeg+"' \"$@\"")
	q := newFakeQueue()
	svc := newService(t, Config{FFmpeg: bin, Chains: true}, q)
	slots := make(chan struct{}, 3)
	job0, job1 := fx.jobs[0], fx.jobs[1]
	lc0, e0 := takeChained(t, svc, slots, job0, 2_500_000)
	feed(e0, fx.chunks[0].Data)
	e0.End(&job0, nil)
	lc1, e1 := takeChained(t, svc, slots, job1, 2_500_000)
	feed(e1, fx.chunks[1].Data[:len(fx.chunks[1].Data)/2/188*188])
	e1.End(nil, errors.New("live chunk: part 9 where 8 was due"))
	waitLive(t, lc0)
	waitLive(t, lc1)
	if st := lc0.State(); st != queue.LiveDone {
		t.Errorf("chunk 0: %q, want done", st)
	}
	if st := lc1.State(); st != queue.LiveFailed {
		t.Errorf("chunk 1: %q, want failed", st)
	}
	if len(q.published) != 1 || q.published[0].Seq != 0 {
		t.Fatalf("published %d segments, want chunk 0's", len(q.published))
	}
	for _, r := range q.published[0].Renditions {
		if r.Failed {
			t.Errorf("chunk 0 %s failed: %s", r.Name, r.Error)
		}
	}
	// The chunk's job is then encoded, here by a new chain for its retake.
	lc2, e2 := takeChained(t, svc, slots, job1, 2_500_000)
	feed(e2, fx.chunks[1].Data)
	e2.End(&job1, nil)
	waitLive(t, lc2)
	if st := lc2.State(); st != queue.LiveDone {
		t.Errorf("chunk 1 again: %q, want done", st)
	}
	settled(t, svc, slots)
	if n := svc.ChainsStarted(); n != 2 {
		t.Errorf("%d chains started, want 2", n)
	}
	// Two chains and nothing else: chunk 0 was not encoded again.
	if n := callCount(t, calls); n != 2 {
		t.Errorf("ffmpeg ran %d times, want 2", n)
	}
}

// An ffmpeg that keeps a chained chunk past half the job's time is killed with its chain, and
// the chunk is encoded again on its own: its segment comes out whole, later, and no process is
// left holding the stream.
func TestStuckChainIsKilled(t *testing.T) {
	t.Parallel()
	fx := lightFixture(t)
	ffmpeg, _ := testenv.FFmpeg(t)
	pids := filepath.Join(t.TempDir(), "pids")
	// The chain's ffmpeg (reading stdin) reads its input, never writes a frame and does not
	// exit when its input ends, as a wedged encoder; the chunk's own encode afterwards is the
	// real ffmpeg.
	bin, calls := fakeFFmpeg(t, `case "$*" in *pipe:0*) echo $$ >> '`+pids+`'; cat > /dev/null; sleep 600; exit 1;; esac
exec '`+ffmpeg+`' "$@"`)
	q := newFakeQueue()
	// The chain is given half the job's time, the chunk's own encode the other half: 6 s,
	// for a light chunk that takes well under a second alone (3 s was too little on a loaded
	// machine running the race detector).
	svc := newService(t, Config{FFmpeg: bin, Chains: true, JobTimeout: 12 * time.Second}, q)
	job := fx.jobs[0]
	lc, e := takeChained(t, svc, make(chan struct{}, 3), job, 300_000)
	feed(e, fx.chunks[0].Data)
	e.End(&job, nil)
	waitLive(t, lc)
	seg := doneAfterASecondRun(t, svc, lc, q, calls, "the chain, then the chunk alone")
	for _, r := range seg.Renditions {
		if r.Failed {
			t.Errorf("%s failed: %s", r.Name, r.Error)
		}
	}
	b, err := os.ReadFile(pids)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range strings.Fields(string(b)) {
		for {
			st, err := os.ReadFile("/proc/" + p + "/stat")
			if err != nil || strings.Contains(string(st), ") Z ") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the stuck chain's ffmpeg (pid %s) still runs", p)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// Feeding a chain never waits on its ffmpeg: while ffmpeg does not read (busy, or starting on a
// loaded machine), a chunk's parts are queued and the stream's next chunk is taken at once; a
// taker that waited would answer the next offer too late and the chunk would be given up.
func TestChainFeedsWithoutWaitingOnFFmpeg(t *testing.T) {
	t.Parallel()
	fx := sourceFixture(t)
	ffmpeg, _ := testenv.FFmpeg(t)
	reading := filepath.Join(t.TempDir(), "reading")
	bin, _ := fakeFFmpeg(t, `sleep 2; touch '`+reading+`'; exec '`+ffmpeg+`' "$@"`)
	q := newFakeQueue()
	svc := newService(t, Config{FFmpeg: bin, Chains: true}, q)
	slots := make(chan struct{}, 3)
	job0, job1 := fx.jobs[0], fx.jobs[1]
	lc0, e0 := takeChained(t, svc, slots, job0, 2_500_000)
	feed(e0, fx.chunks[0].Data) // far more than a pipe holds
	e0.End(&job0, nil)
	lc1, e1 := takeChained(t, svc, slots, job1, 2_500_000)
	feed(e1, fx.chunks[1].Data)
	if _, err := os.Stat(reading); err == nil {
		t.Fatal("feeding two chunks waited for ffmpeg to read")
	}
	if e1.chain != e0.chain {
		t.Fatal("the next chunk did not join the chain")
	}
	e1.End(&job1, nil)
	for _, lc := range []*queue.LiveChunk{lc0, lc1} {
		waitLive(t, lc)
		if st := lc.State(); st != queue.LiveDone {
			t.Errorf("chunk %s: %q, want done", lc.Offer.ID(), st)
		}
	}
	svc.live.Wait()
	if len(q.published) != 2 {
		t.Fatalf("%d segments published", len(q.published))
	}
	for _, seg := range q.published {
		for _, r := range seg.Renditions {
			if r.Failed {
				t.Errorf("chunk %d %s failed: %s", seg.Seq, r.Name, r.Error)
			}
		}
	}
}

// A chunk offered before the stream's bitrate is known (a session's first) is encoded alone:
// its rungs may include one the measured bitrate rules out later, which a chain could not drop.
func TestNoChainBeforeTheBitrateIsKnown(t *testing.T) {
	t.Parallel()
	fx := lightFixture(t)
	ffmpeg, _ := testenv.FFmpeg(t)
	svc := newService(t, Config{FFmpeg: ffmpeg, Chains: true}, newFakeQueue())
	lc, e := takeChained(t, svc, make(chan struct{}, 3), fx.jobs[0], 0)
	if e.chain != nil {
		t.Error("a chunk with no known bitrate started a chain")
	}
	e.End(nil, errors.New("test over"))
	waitLive(t, lc)
	svc.live.Wait()
	if n := svc.ChainsStarted(); n != 0 {
		t.Errorf("%d chains started", n)
	}
}
