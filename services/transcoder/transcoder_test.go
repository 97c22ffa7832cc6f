package transcoder

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/Eyevinn/mp4ff/mp4"

	"github.com/gopcast/gopcast/internal/testenv"
	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/ladder"
	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/segment"
)

// live is the production setup: chunks encoded while they arrive, on one encoder per session.
func live() Config { return Config{Arriving: true, Chains: true} }

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

// The default ladder's rungs for the fixture's 480p source at its 2.5 to 3 Mbit/s.
var (
	wantSize = map[string][2]int{"480p": {854, 480}, "360p": {640, 360}}
	wantRate = map[string]int{"480p": 1_200_000, "360p": 700_000}
)

// checkChunk checks chunk seq's record and its rungs' segments in the bucket: every frame of
// the chunk, decodable, starting with a keyframe, on the chunk's own timeline.
func checkChunk(t *testing.T, r *rig, seg queue.Segment, seq int, last bool, rungs ...string) {
	t.Helper()
	c := r.fx.chunks[seq]
	if seg.StreamID != testStream || seg.SessionID != testSession || seg.Seq != uint64(seq) || seg.N != nBase+uint64(seq) ||
		seg.Start != c.Start || seg.Duration != c.Duration || seg.Last != last || seg.Failed || seg.From != queue.FromTranscoder ||
		seg.Chunk.IsZero() {
		t.Errorf("chunk %d: record %+v does not match the chunk", seq, seg)
	}
	if got := names(seg); !slices.Equal(got, rungs) {
		t.Fatalf("chunk %d: renditions %v, want %v", seq, got, rungs)
	}
	srcFirst := segment.MinPTS(c.Video)
	for _, name := range rungs {
		rn := rend(t, seg, name)
		if rn.Failed || rn.Kind != "video" || !strings.HasPrefix(rn.Codec, "avc1.") || rn.FPS != 30 || rn.Timescale != media.Timescale {
			t.Errorf("chunk %d %s: %+v", seq, name, rn)
		}
		if sz := wantSize[name]; rn.Width != sz[0] || rn.Height != sz[1] {
			t.Errorf("chunk %d: %s is %dx%d, want %dx%d", seq, name, rn.Width, rn.Height, sz[0], sz[1])
		}
		if rn.Bandwidth != wantRate[name] {
			t.Errorf("chunk %d: %s bandwidth %d, want the rung's %d", seq, name, rn.Bandwidth, wantRate[name])
		}
		frag := r.media(seq, name)
		if rn.Bytes != len(frag) || len(rn.Init) == 0 {
			t.Errorf("chunk %d %s: Bytes %d, the segment has %d; init %d bytes", seq, name, rn.Bytes, len(frag), len(rn.Init))
		}
		p := ffprobe(t, fmt.Sprintf("%s-%d.mp4", name, seq), rn.Init, frag)
		st := p.Streams[0]
		if st.CodecName != "h264" || st.Width != wantSize[name][0] || st.Height != wantSize[name][1] || st.TimeBase != "1/90000" {
			t.Errorf("chunk %d %s: ffprobe sees %+v", seq, name, st)
		}
		if len(p.Packets) != len(c.Video) || st.NbReadFrames != strconv.Itoa(len(c.Video)) {
			t.Errorf("chunk %d %s: %d packets, %s frames decoded; the chunk has %d frames", seq, name, len(p.Packets), st.NbReadFrames, len(c.Video))
		}
		if !strings.HasPrefix(p.Packets[0].Flags, "K") {
			t.Errorf("chunk %d: %s does not start with a keyframe (flags %q)", seq, name, p.Packets[0].Flags)
		}
		// On the chunk's session timeline (not 0, not the TS base), starting on the instant
		// the source's rendition of the chunk starts.
		if first := p.minPTS(); rn.Start != first || first != srcFirst {
			t.Errorf("chunk %d %s: Start %d, ffprobe's first PTS %d, the source's %d", seq, name, rn.Start, first, srcFirst)
		}
		if d := rn.Duration - c.Duration; d < -3000 || d > 3000 {
			t.Errorf("chunk %d: %s lasts %d, the chunk %d", seq, name, rn.Duration, c.Duration)
		}
	}
}

// checkJoined checks that the rung's segments of chunks seqs, made by whatever encoders, play
// as one track: the same init segment, every frame, no gap or overlap over a frame where they
// meet, each a chunk after the one before.
func checkJoined(t *testing.T, r *rig, recs map[uint64]queue.Segment, rung string, seqs ...int) {
	t.Helper()
	init := rend(t, recs[uint64(seqs[0])], rung).Init
	parts := [][]byte{init}
	var bounds []int // index of each chunk's first packet
	frames := 0
	for i, seq := range seqs {
		rn := rend(t, recs[uint64(seq)], rung)
		if !bytes.Equal(rn.Init, init) {
			// The packager names a changed init anew and lists a discontinuity.
			t.Errorf("%s: the init segment of chunk %d differs from chunk %d's", rung, seq, seqs[0])
		}
		if i > 0 {
			prev := rend(t, recs[uint64(seqs[i-1])], rung)
			if d := r.fx.chunks[seqs[i-1]].Duration; rn.Start-prev.Start != d {
				t.Errorf("%s: chunk %d starts %d after chunk %d, which lasts %d", rung, seq, rn.Start-prev.Start, seqs[i-1], d)
			}
		}
		parts = append(parts, r.media(seq, rung))
		bounds = append(bounds, frames)
		frames += len(r.fx.chunks[seq].Video)
	}
	p := ffprobePackets(t, rung+"-joined.mp4", parts...)
	if len(p.Packets) != frames {
		t.Fatalf("%s: the joined track has %d packets, the chunks %d frames", rung, len(p.Packets), frames)
	}
	for i := 1; i < len(p.Packets); i++ {
		if p.Packets[i].DTS <= p.Packets[i-1].DTS {
			t.Fatalf("%s: DTS goes from %d to %d at packet %d", rung, p.Packets[i-1].DTS, p.Packets[i].DTS, i)
		}
	}
	for _, b := range bounds[1:] {
		last, next := p.Packets[b-1], p.Packets[b]
		if gap := next.DTS - (last.DTS + last.Duration); gap < -last.Duration || gap > last.Duration {
			t.Errorf("%s: chunks meet at packet %d with a gap of %d ticks (frame %d)", rung, b, gap, last.Duration)
		}
		if !strings.HasPrefix(next.Flags, "K") {
			t.Errorf("%s: the chunk at packet %d does not start with a keyframe", rung, b)
		}
	}
}

func TestFixtureIsWhatIngestProduces(t *testing.T) {
	t.Parallel()
	fx := sourceFixture(t)
	if len(fx.chunks) != 5 {
		t.Fatalf("%d chunks from 5 s with a keyframe every second, want 5", len(fx.chunks))
	}
	for i, c := range fx.chunks {
		if len(c.Video) != 30 || c.Keyframes != 1 || len(c.TS) == 0 || c.Seq != uint64(i) || c.Last != (i == 4) {
			t.Errorf("chunk %d: seq %d, %d frames (%d keyframes), %d TS bytes, last %v", i, c.Seq, len(c.Video), c.Keyframes, len(c.TS), c.Last)
		}
		if want := sessionStart + int64(i)*media.Timescale; c.Start != want || c.Duration != media.Timescale {
			t.Errorf("chunk %d starts at %d and lasts %d, want %d and 1 s", i, c.Start, c.Duration, want)
		}
		if len(split(c.TS)) < 3 {
			t.Errorf("chunk %d is %d bytes: fewer than 3 parts", i, len(c.TS))
		}
	}
	if fx.video.Width != 854 || fx.video.Height != 480 || fx.video.FPS != 30 {
		t.Errorf("video %+v, want 854x480 at 30 fps", fx.video)
	}
	// A 480p source the default ladder keeps its 480p rung for (1.2 Mbit/s saves over 20 %),
	// with 360p below it, and which would lose the 480p rung at under 1.5 Mbit/s.
	p := ladder.Profiles["default"]
	if got := p.Select(480, fx.rate); len(got) != 2 || len(p.Select(480, 1)) != 1 {
		t.Fatalf("source measured at %d bit/s gives rungs %v; the fixture must keep 480p and 360p", fx.rate, got)
	}
}

// A whole session through the default ladder, with the encoders of every setup: the records,
// the rungs in the bucket, and the chunks joining as one track whatever encoded them.
func TestSessionEncodesTheDefaultLadder(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  Config
		// minChains to maxChains encoders may start: on a chain, chunk 0 alone (its rungs
		// depend on the bitrate its end tells) and then one for the rest.
		minChains, maxChains int64
	}{
		{"live on one chain", live(), 1, 2},
		{"live with an encoder per chunk", Config{Arriving: true}, 5, 5},
		{"each chunk once complete", Config{Chains: true}, 5, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			w := r.start(tc.cfg)
			r.session(5)
			recs := r.waitRecords(0, 1, 2, 3, 4)
			r.waitEnded()
			for seq := range 5 {
				if n := len(bySeq(r.records())[uint64(seq)]); n != 1 {
					t.Errorf("chunk %d has %d records, want 1", seq, n)
				}
				checkChunk(t, r, recs[uint64(seq)], seq, seq == 4, "480p", "360p")
			}
			for _, rung := range []string{"480p", "360p"} {
				checkJoined(t, r, recs, rung, 0, 1, 2, 3, 4)
			}
			if n := w.svc.ChainsStarted(); n < tc.minChains || n > tc.maxChains {
				t.Errorf("%d encoders started for 5 chunks, want %d to %d", n, tc.minChains, tc.maxChains)
			}
			w.waitIdle(t)
			if _, done, failures := w.svc.Stats(); done != 5 || failures != 0 {
				t.Errorf("stats: %d done, %d failures; want 5, 0", done, failures)
			}
		})
	}
}

// The rungs come from the session's bitrate (the chunk ends carry it), not from each chunk's
// own: a rung at the source's height is dropped when it saves nothing. Chunk 0 starts before
// its end tells the bitrate, so it is encoded alone with every rung it may need; the chain
// takes the chunks after it with the final rungs.
func TestRungsFollowTheSessionBitrate(t *testing.T) {
	t.Parallel()
	ffmpegBin, _ := testenv.FFmpeg(t)
	bin, calls := fakeFFmpeg(t, `exec '`+ffmpegBin+`' "$@"`)
	r := newRig(t)
	cfg := live()
	cfg.FFmpeg = bin
	w := r.start(cfg)
	r.job("default")
	for seq := range 3 {
		r.sendParts(seq, 0, len(r.parts(seq)), nil)
		e := r.end(seq, seq == 2, nil)
		e.SourceBitrate = 1_000_000 // 480p at 1.2 Mbit/s would not save 20 %
		r.sendEnd(e)
	}
	recs := r.waitRecords(0, 1, 2)
	r.waitEnded()
	for seq := range 3 {
		checkChunk(t, r, recs[uint64(seq)], seq, seq == 2, "360p")
		if !r.absent(seq, "480p") {
			t.Errorf("chunk %d: a 480p segment was written", seq)
		}
	}
	checkJoined(t, r, recs, "360p", 0, 1, 2)
	args := callArgs(t, calls)
	if len(args) != 2 || w.svc.ChainsStarted() != 2 {
		t.Fatalf("%d ffmpeg runs (%d chains), want 2: chunk 0 alone, then one chain\n%s", len(args), w.svc.ChainsStarted(), strings.Join(args, "\n"))
	}
	// The two may start in either order (a script logs when it runs).
	superset := slices.IndexFunc(args, func(a string) bool { return strings.Contains(a, "scale=-2:480") })
	if superset < 0 || !strings.Contains(args[superset], "scale=-2:360") {
		t.Errorf("chunk 0 was not encoded with every rung the bitrate may keep:\n%s", strings.Join(args, "\n"))
	} else if a := args[1-superset]; strings.Contains(a, "scale=-2:480") || !strings.Contains(a, "scale=-2:360") {
		t.Errorf("the chain does not encode the final rungs (360p only): %s", a)
	}
}

// A worker that stops mid-session hands its job back; the next worker goes on from the first
// chunk it did not finish, so every chunk has its record and the chunk stream ends empty.
func TestStoppedWorkerHandsTheSessionOn(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a := r.start(live())
	r.job("default")
	r.send(0, false)
	r.send(1, false)
	half := len(r.parts(2)) / 2
	r.sendParts(2, 0, half, nil)
	r.waitRecords(0)
	a.stop(t) // the chunk in hand: 2, or 1 if its record is not out yet
	if r.jobs() != 1 {
		t.Fatalf("%d jobs after the worker stopped, want its job handed back", r.jobs())
	}

	b := r.start(live(), r.dial())
	r.sendParts(2, half, len(r.parts(2)), nil)
	r.sendEnd(r.end(2, false, nil))
	r.send(3, false)
	r.send(4, true)
	recs := r.waitRecords(0, 1, 2, 3, 4)
	r.waitEnded()
	dups := 0
	for seq, rs := range bySeq(r.records()) {
		if len(rs) > 1 {
			dups++
			if seq != 1 && seq != 2 {
				t.Errorf("chunk %d has %d records: only the chunk in hand may be made twice", seq, len(rs))
			}
		}
	}
	if dups > 1 {
		t.Errorf("%d chunks made twice, at most the one in hand may be", dups)
	}
	for seq := range 5 {
		checkChunk(t, r, recs[uint64(seq)], seq, seq == 4, "480p", "360p")
	}
	for _, rung := range []string{"480p", "360p"} {
		checkJoined(t, r, recs, rung, 0, 1, 2, 3, 4)
	}
	if !b.keys.wrote(4) || a.keys.wrote(3) {
		t.Errorf("the second worker did not make the session's end")
	}
}

// A worker that reads that another took its session over (a higher delivery of its job)
// stops after the chunk in hand; the one holding the job now makes the rest.
func TestTakeoverStopsTheOlderWorker(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	q := newOneJob(r.q)
	a := r.start(live(), q)
	r.job("default")
	r.send(0, false)
	r.waitRecords(0)
	r.send(1, false)
	// What a worker given the job's next delivery says first.
	if err := r.q.MarkTakeover(context.Background(), testStream, testSession, 2); err != nil {
		t.Fatal(err)
	}
	r.send(2, false)
	r.send(3, true)
	select {
	case <-q.done:
	case <-time.After(waitFor):
		t.Fatal("the older worker kept the session")
	}
	a.stop(t)
	for _, seq := range []int{2, 3} {
		if a.keys.wrote(seq) || len(bySeq(r.records())[uint64(seq)]) > 0 {
			t.Errorf("the older worker made chunk %d, after the takeover", seq)
		}
	}
	// Its job was left for the worker that took over (JetStream hands it on after AckWait).
	r.start(live(), r.dial())
	recs := r.waitRecords(0, 1, 2, 3)
	r.waitEnded()
	for seq, rs := range bySeq(r.records()) {
		if len(rs) > 1 && seq != 1 {
			t.Errorf("chunk %d has %d records: only the chunk in hand may be made twice", seq, len(rs))
		}
	}
	for seq := range 4 {
		checkChunk(t, r, recs[uint64(seq)], seq, seq == 3, "480p", "360p")
	}
}

// A chunk that arrives damaged (a part missing, or bytes that are not what the ingest sent)
// gets a failed record; the session goes on.
func TestDamagedChunkFailsAlone(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	w := r.start(live())
	r.job("default")
	r.send(0, false)
	// Chunk 1 loses its second part.
	n := len(r.parts(1))
	r.sendParts(1, 0, 1, nil)
	r.sendParts(1, 2, n, nil)
	r.sendEnd(r.end(1, false, nil))
	// Chunk 2's end disagrees with its bytes.
	r.sendParts(2, 0, len(r.parts(2)), nil)
	e := r.end(2, false, nil)
	e.CRC++
	r.sendEnd(e)
	r.send(3, true)
	recs := r.waitRecords(0, 1, 2, 3)
	r.waitEnded()
	for seq, want := range map[uint64]string{1: "part 2 came where 1 was due", 2: "crc"} {
		rec := recs[seq]
		if !rec.Failed || !strings.Contains(rec.Error, want) || len(rec.Renditions) != 0 || rec.N != nBase+seq {
			t.Errorf("chunk %d: record %+v, want Failed saying %q", seq, rec, want)
		}
		for _, rung := range []string{"480p", "360p"} {
			if !r.absent(int(seq), rung) {
				t.Errorf("chunk %d: a %s segment was written", seq, rung)
			}
		}
	}
	checkChunk(t, r, recs[0], 0, false, "480p", "360p")
	checkChunk(t, r, recs[3], 3, true, "480p", "360p")
	if _, done, failures := w.svc.Stats(); done != 4 || failures != 2 {
		t.Errorf("stats: %d done, %d failures; want 4, 2", done, failures)
	}
}

// A chunk whose end never comes (another worker finished it and purged its end, or it was
// lost) is given up when the next chunk begins: the chunks after it are not held behind it on
// the session's encoder, waiting out a ChunkTimeout (set beyond the test's patience here).
func TestChunkWithoutEndIsGivenUp(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	cfg := live()
	cfg.ChunkTimeout = time.Hour
	r.start(cfg)
	r.job("default")
	r.send(0, false)
	r.sendParts(1, 0, len(r.parts(1))-1, nil)
	r.send(2, false)
	r.waitRecords(2) // while the session goes on
	r.send(3, true)
	recs := r.waitRecords(0, 2, 3)
	r.waitEnded()
	if rs := bySeq(r.records())[1]; len(rs) != 0 {
		t.Errorf("the chunk without an end has records %+v", rs)
	}
	checkChunk(t, r, recs[0], 0, false, "480p", "360p")
	checkChunk(t, r, recs[2], 2, false, "480p", "360p")
	checkChunk(t, r, recs[3], 3, true, "480p", "360p")
	checkJoined(t, r, recs, "360p", 2, 3)
}

// A session whose chunks stop coming without a last one (its ingest died) ends after Idle:
// the chunks complete by then are made, the one cut off is not, and the job and the chunk
// stream are cleared. Only a live encode starts on a chunk before it is complete.
func TestSessionEndsWhenChunksStop(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		cfg    Config
		chains int64 // encoders started, the cut-off chunk's included
	}{
		{"live", live(), 2},                        // chunk 0 alone, then 1 and 2 on a chain
		{"once complete", Config{Chains: true}, 2}, // chunks 0 and 1, and never 2
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			tc.cfg.Idle = 3 * time.Second
			w := r.start(tc.cfg)
			r.job("default")
			r.send(0, false)
			r.send(1, false)
			r.sendParts(2, 0, len(r.parts(2))-1, nil)
			recs := r.waitRecords(0, 1)
			r.waitEnded()
			w.waitIdle(t)
			if n := len(bySeq(r.records())); n != 2 {
				t.Errorf("records for %d chunks, want 2 (the cut-off chunk has none)", n)
			}
			checkChunk(t, r, recs[0], 0, false, "480p", "360p")
			checkChunk(t, r, recs[1], 1, false, "480p", "360p")
			if n := w.svc.ChainsStarted(); n != tc.chains {
				t.Errorf("%d encoders started, want %d", n, tc.chains)
			}
		})
	}
}

// Chunks finished by the ingest longer than Stale ago are skipped (the packager listed them
// as gaps already), and not encoded at all once the worker sees it is behind: it catches up
// with the session's live edge; the chunks after them are encoded.
func TestStaleChunksAreSkipped(t *testing.T) {
	t.Parallel()
	// An ffmpeg that counts the bytes it is fed.
	ffmpegBin, _ := testenv.FFmpeg(t)
	fed := t.TempDir()
	bin, _ := fakeFFmpeg(t, `cat | tee '`+fed+`'/$$ | '`+ffmpegBin+`' "$@"`)
	r := newRig(t)
	cfg := live()
	cfg.FFmpeg, cfg.Stale = bin, time.Minute
	w := r.start(cfg)
	r.job("default")
	for seq := range 3 {
		r.sendParts(seq, 0, len(r.parts(seq)), nil)
		e := r.end(seq, false, nil)
		e.Created = time.Now().Add(-time.Hour + time.Duration(seq)*time.Second).UTC()
		r.sendEnd(e)
	}
	r.send(3, false)
	r.send(4, true)
	recs := r.waitRecords(3, 4)
	r.waitEnded()
	for seq := range 3 {
		if rs := bySeq(r.records())[uint64(seq)]; len(rs) != 0 {
			t.Errorf("stale chunk %d has records %+v", seq, rs)
		}
		if !r.absent(seq, "480p") || !r.absent(seq, "360p") {
			t.Errorf("stale chunk %d: its rungs were written", seq)
		}
	}
	checkChunk(t, r, recs[3], 3, false, "480p", "360p")
	checkChunk(t, r, recs[4], 4, true, "480p", "360p")
	checkJoined(t, r, recs, "360p", 3, 4)
	// Chunk 0 was encoded while it arrived (nothing said the session was behind yet); after
	// its end, only the fresh chunks 3 and 4 were.
	files, err := os.ReadDir(fed)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(fed, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		total += len(b)
	}
	if want := len(r.fx.chunks[0].TS) + len(r.fx.chunks[3].TS) + len(r.fx.chunks[4].TS); total != want {
		t.Errorf("ffmpeg was fed %d bytes in %d runs, want %d: chunks 0, 3 and 4 once each", total, len(files), want)
	}
	w.waitIdle(t)
	if _, done, _ := w.svc.Stats(); done != 2 {
		t.Errorf("stats: %d done, want 2", done)
	}
}

// Chunk bytes that are not a chunk's video give failed rungs, not a crash; the session ends
// as it should.
func TestCorruptChunkGivesFailedRungs(t *testing.T) {
	t.Parallel()
	fx := sourceFixture(t)
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
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"random bytes", junk},
		{"MPEG-TS sync bytes over junk", bytes.Repeat(append([]byte{0x47}, junk[:187]...), 50)},
		{"audio only", audioOnly},
		{"first packets of a chunk", fx.chunks[0].TS[:188*20]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			cfg := live()
			cfg.Attempts = 1
			r.start(cfg)
			r.job("default")
			r.sendParts(0, 0, len(split(tc.data)), tc.data)
			r.sendEnd(r.end(0, true, tc.data))
			recs := r.waitRecords(0)
			r.waitEnded()
			rec := recs[0]
			if got := names(rec); !slices.Equal(got, []string{"480p", "360p"}) {
				t.Fatalf("renditions %v: failed rungs are reported, not dropped", got)
			}
			for _, rn := range rec.Renditions {
				if !rn.Failed || rn.Error == "" || rn.Kind != "video" || rn.Height != wantSize[rn.Name][1] || len(rn.Init) != 0 {
					t.Errorf("%s: %+v, want Failed with why", rn.Name, rn)
				}
				if !r.absent(0, rn.Name) {
					t.Errorf("%s: a segment was written", rn.Name)
				}
			}
		})
	}
}

// An empty last chunk only ends the session: no record, no encoder.
func TestEmptyLastChunkOnlyEndsTheSession(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	w := r.start(live())
	r.job("default")
	r.send(0, false)
	r.sendEnd(&queue.Chunk{StreamID: testStream, SessionID: testSession, Seq: 1, N: nBase + 1, Start: r.fx.chunks[1].Start,
		SourceBitrate: r.fx.rate, Last: true, Created: time.Now().UTC()})
	recs := r.waitRecords(0)
	r.waitEnded()
	checkChunk(t, r, recs[0], 0, false, "480p", "360p")
	if rs := bySeq(r.records())[1]; len(rs) != 0 {
		t.Errorf("the empty last chunk has records %+v", rs)
	}
	if n := w.svc.ChainsStarted(); n != 1 {
		t.Errorf("%d encoders started, want 1 (chunk 0's)", n)
	}
}

// oneChunk runs a session of chunk 0 alone (its last) on a worker with cfg and returns the
// chunk's record.
func oneChunk(t *testing.T, cfg Config, profile string) (*rig, *worker, queue.Segment) {
	t.Helper()
	r := newRig(t)
	w := r.start(cfg)
	r.job(profile)
	r.send(0, true)
	recs := r.waitRecords(0)
	r.waitEnded()
	return r, w, recs[0]
}

func TestPassthroughProfile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, profile, defaultProfile string
	}{
		{"named by the job", "passthrough", "default"},
		{"unknown profile, passthrough default", "no-such-profile", "passthrough"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bin, calls := fakeFFmpeg(t, "exit 1")
			cfg := live()
			cfg.FFmpeg, cfg.DefaultProfile = bin, tc.defaultProfile
			_, w, rec := oneChunk(t, cfg, tc.profile)
			if len(rec.Renditions) != 0 || rec.Failed || !rec.Last {
				t.Errorf("record %+v, want the last, without renditions", rec)
			}
			if n := len(callArgs(t, calls)); n != 0 || w.svc.ChainsStarted() != 0 {
				t.Errorf("ffmpeg ran %d times for passthrough", n)
			}
		})
	}
}

func TestUnknownProfileFallsBackToDefault(t *testing.T) {
	t.Parallel()
	// ffmpeg fails, which is fast; the rungs it was asked for show which ladder was used.
	bin, calls := fakeFFmpeg(t, "exit 1")
	cfg := live()
	cfg.FFmpeg, cfg.Attempts = bin, 1
	_, _, rec := oneChunk(t, cfg, "no-such-profile")
	if got := names(rec); !slices.Equal(got, []string{"480p", "360p"}) {
		t.Errorf("renditions %v, want the default ladder's", got)
	}
	args := strings.Join(callArgs(t, calls), "\n")
	for _, want := range []string{"scale=-2:480", "scale=-2:360", "-preset veryfast"} {
		if !strings.Contains(args, want) {
			t.Errorf("ffmpeg arguments lack %q: %s", want, args)
		}
	}
	if strings.Contains(args, "scale=-2:720") {
		t.Errorf("ffmpeg asked for a 720p rung above the source: %s", args)
	}
}

func TestFailingFFmpegReportsFailedRungs(t *testing.T) {
	t.Parallel()
	bin, calls := fakeFFmpeg(t, "echo 'boom: simulated encoder failure' >&2\nexit 1")
	cfg := live()
	cfg.FFmpeg, cfg.Attempts = bin, 2
	r, w, rec := oneChunk(t, cfg, "default")
	if got := names(rec); !slices.Equal(got, []string{"480p", "360p"}) || rec.Failed {
		t.Fatalf("renditions %v (record failed: %v): a failed rung is reported, not dropped", got, rec.Failed)
	}
	// The live encode, then Attempts encodes of the chunk on its own.
	if n := len(callArgs(t, calls)); n != 1+cfg.Attempts {
		t.Errorf("ffmpeg ran %d times, want 1 + Attempts = %d", n, 1+cfg.Attempts)
	}
	for _, rn := range rec.Renditions {
		if !rn.Failed || rn.Kind != "video" || rn.Height == 0 || !strings.Contains(rn.Error, "ffmpeg") || !strings.Contains(rn.Error, "boom") {
			t.Errorf("%s: %+v, want Failed with ffmpeg's error", rn.Name, rn)
		}
		if len(rn.Init) != 0 || !r.absent(0, rn.Name) {
			t.Errorf("%s: an init or a segment although it failed", rn.Name)
		}
	}
	if _, done, failures := w.svc.Stats(); done != 1 || failures != 1 {
		t.Errorf("stats: %d done, %d failures; want 1, 1", done, failures)
	}
}

// ffmpeg's output is read back onto the chunk's timeline, whatever the encoder's clock.
func TestRungOutputKeepsTheChunkTimeline(t *testing.T) {
	t.Parallel()
	bin, _ := fakeFFmpeg(t, "HALF=none\n"+copyFFmpeg(t.TempDir()))
	cfg := live()
	cfg.FFmpeg = bin
	r, _, rec := oneChunk(t, cfg, "default")
	c := r.fx.chunks[0]
	var frags [][]byte
	for _, name := range []string{"480p", "360p"} {
		rn := rend(t, rec, name)
		if rn.Failed {
			t.Fatalf("%s failed: %s", name, rn.Error)
		}
		if rn.Start != segment.MinPTS(c.Video) || rn.Duration != c.Duration {
			t.Errorf("%s: start %d duration %d, the chunk's video %d %d", name, rn.Start, rn.Duration, segment.MinPTS(c.Video), c.Duration)
		}
		frag := r.media(0, name)
		if got := tfdt(t, frag); got != uint64(c.Start) {
			t.Errorf("%s tfdt %d, want the chunk start %d", name, got, c.Start)
		}
		p := ffprobePackets(t, name+".mp4", rn.Init, frag)
		if len(p.Packets) != len(c.Video) {
			t.Fatalf("%s: %d packets for %d frames", name, len(p.Packets), len(c.Video))
		}
		for i, k := range p.Packets {
			if f := c.Video[i]; k.PTS != f.PTS || k.DTS != f.DTS {
				t.Fatalf("%s frame %d at PTS %d DTS %d, the chunk's at %d %d", name, i, k.PTS, k.DTS, f.PTS, f.DTS)
			}
		}
		frags = append(frags, frag)
	}
	if !bytes.Equal(frags[0], frags[1]) {
		t.Error("the same frames on the same timeline must make the same fragment")
	}
}

// A rung whose output lacks frames is reported failed; the others stand.
func TestRungWithMissingFramesFails(t *testing.T) {
	t.Parallel()
	bin, calls := fakeFFmpeg(t, "HALF=360\n"+copyFFmpeg(t.TempDir()))
	cfg := live()
	cfg.FFmpeg = bin
	r, _, rec := oneChunk(t, cfg, "default")
	// Cut inside a frame's PES, the count of frames falls short.
	if rn := rend(t, rec, "360p"); !rn.Failed || !strings.Contains(rn.Error, "frames") || !r.absent(0, "360p") {
		t.Errorf("360p: %+v, want Failed for missing frames", rn)
	}
	if rn := rend(t, rec, "480p"); rn.Failed || rn.Bytes == 0 || len(r.media(0, "480p")) != rn.Bytes {
		t.Errorf("480p: %+v, want it made", rn)
	}
	// Encoded again: only the rung that failed.
	args := callArgs(t, calls)
	if len(args) != 1+2 {
		t.Fatalf("ffmpeg ran %d times, want the live encode and Attempts (2) more", len(args))
	}
	if n := len(slices.DeleteFunc(args, func(a string) bool { return !strings.Contains(a, "scale=-2:480") })); n != 1 {
		t.Errorf("480p encoded %d times: a rung that was made is not encoded again", n)
	}
}

// An encode that does not finish within ChunkTimeout is stopped (its ffmpeg killed) and the
// chunk's rungs reported failed; the session does not hang.
func TestStuckEncodeIsStoppedByChunkTimeout(t *testing.T) {
	t.Parallel()
	pids := filepath.Join(t.TempDir(), "pids")
	bin, calls := fakeFFmpeg(t, "echo $$ >> '"+pids+"'\nexec sleep 600")
	cfg := live()
	cfg.FFmpeg, cfg.Attempts, cfg.ChunkTimeout = bin, 1, time.Second
	_, _, rec := oneChunk(t, cfg, "default")
	for _, rn := range rec.Renditions {
		if !rn.Failed {
			t.Errorf("%s not failed after the timeout: %+v", rn.Name, rn)
		}
	}
	if got := names(rec); !slices.Equal(got, []string{"480p", "360p"}) {
		t.Errorf("renditions %v", got)
	}
	if n := len(callArgs(t, calls)); n != 2 {
		t.Errorf("ffmpeg ran %d times, want the live encode and one attempt", n)
	}
	b, err := os.ReadFile(pids)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, fmt.Sprintf("the stuck ffmpeg %d to be gone", pid), func() bool {
			return syscall.Kill(pid, 0) == syscall.ESRCH
		})
	}
}

// A job that says nothing of the video can never be encoded: it is rejected, not handed back
// again and again, and its chunks are dropped.
func TestJobWithoutVideoIsRejected(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	// The chunk goes first, so it is there to be dropped when the job is rejected.
	r.send(0, true)
	r.publishJob(&queue.EncodeJob{StreamID: testStream, SessionID: testSession, Profile: "default", Created: time.Now().UTC()})
	w := r.start(live())
	r.waitEnded()
	if n := len(r.records()); n != 0 || w.svc.ChainsStarted() != 0 {
		t.Errorf("%d records, %d encoders for a job without video", n, w.svc.ChainsStarted())
	}
}
