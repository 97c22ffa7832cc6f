package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/chunker"
	"github.com/gopcast/gopcast/pkg/media/cmaf"
	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/storage"
	"github.com/gopcast/gopcast/pkg/streams"
)

// recordingQueue is a hand-written Queue that records, in order, every message that got through
// (copies: the ingest reuses its memory). While gate is set, every publish but events waits for
// it to be closed, as publishes do while NATS is unreachable and the client buffers.
type recordingQueue struct {
	mu   sync.Mutex
	msgs []recMsg
	gate chan struct{}
}

// recMsg is one message: its kind ("job", "part", "end", "segment", "event") and body.
type recMsg struct {
	kind string
	job  queue.EncodeJob
	part queue.Part
	end  queue.Chunk
	seg  queue.Segment
}

func (q *recordingQueue) wait(ctx context.Context) error {
	q.mu.Lock()
	gate := q.gate
	q.mu.Unlock()
	if gate == nil {
		return nil
	}
	select {
	case <-gate:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (q *recordingQueue) add(ctx context.Context, m recMsg) error {
	if m.kind != "event" {
		if err := q.wait(ctx); err != nil {
			return err
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.msgs = append(q.msgs, m)
	return nil
}

// deepCopy copies v through JSON, so nothing of the caller's memory is kept.
func deepCopy[T any](v T) T {
	var out T
	b, _ := json.Marshal(v)
	_ = json.Unmarshal(b, &out)
	return out
}

func (q *recordingQueue) PublishJob(ctx context.Context, job *queue.EncodeJob) error {
	return q.add(ctx, recMsg{kind: "job", job: *job})
}

func (q *recordingQueue) PublishPart(ctx context.Context, p queue.Part) error {
	p.Data = bytes.Clone(p.Data)
	return q.add(ctx, recMsg{kind: "part", part: p})
}

func (q *recordingQueue) PublishChunk(ctx context.Context, c *queue.Chunk) error {
	return q.add(ctx, recMsg{kind: "end", end: *c})
}

func (q *recordingQueue) PublishSegment(ctx context.Context, seg *queue.Segment) error {
	return q.add(ctx, recMsg{kind: "segment", seg: deepCopy(*seg)})
}

func (q *recordingQueue) PublishEvent(ctx context.Context, _ queue.Event) error {
	return q.add(ctx, recMsg{kind: "event"})
}

// messages returns what got through so far, of one kind ("" for all).
func (q *recordingQueue) messages(kind string) []recMsg {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []recMsg
	for _, m := range q.msgs {
		if kind == "" || m.kind == kind {
			out = append(out, m)
		}
	}
	return out
}

// harness is a session's chunker and outbox driven frame by frame on a simulated clock, the
// way the session's read loop drives them (session.emit and outbox.update after each frame,
// the chunker's last chunks at the end), with a recording Queue. The stream's registry (segment numbers, the lease) is the real one on an
// embedded JetStream, the bucket a local directory.
type harness struct {
	t   *testing.T
	se  *session
	q   *recordingQueue
	now time.Time

	// What the chunker had written of each chunk's MPEG-TS after each frame, by seq, and the
	// finished chunks' MPEG-TS and frame counts.
	seen   map[uint64][]tsSeen
	final  map[uint64][]byte
	frames map[uint64]int
}

type tsSeen struct {
	at  time.Time
	len int
}

// harnessAAC is the harness's audio configuration.
var harnessAAC = media.AACConfig{ASC: []byte{0x11, 0x90}} // AAC-LC, 48 kHz, stereo

// newHarness starts a session of a new stream with rungs to encode (an encode job) and, if
// audio, an AAC track.
func newHarness(t *testing.T, maxBacklog int, audio bool, q *recordingQueue) *harness {
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
	st, _, err := reg.Create(ctx, "harness", "default", false)
	if err != nil {
		t.Fatal(err)
	}
	local, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	svc := New(Config{MaxBacklog: maxBacklog}, log, reg, q, storage.NewWriter(local, log))
	se := &session{s: svc, id: uuidString(), stream: st, profile: "default", started: time.Now(), log: log}
	if se.claim, err = reg.Claim(ctx, st.ID, se.id); err != nil {
		t.Fatal(err)
	}
	se.vcfg = media.H264Config{SPS: testSPS, PPS: testPPS}
	if audio {
		se.acfg = &harnessAAC
	}
	if se.chunker, err = chunker.New(chunker.Config{Target: 2 * media.Timescale, TS: true, Buffer: chunkBuffer}, se.vcfg, se.acfg); err != nil {
		t.Fatal(err)
	}
	se.out = &outbox{q: q, w: svc.w, claim: se.claim, log: log, max: maxBacklog, vcfg: se.vcfg, acfg: se.acfg,
		describe: se.describe, onLost: func(error) { t.Error("the session's numbers were taken over") },
		job: &queue.EncodeJob{StreamID: st.ID, SessionID: se.id, Profile: "default"}}
	octx, stop := context.WithCancel(context.Background())
	se.stopOut = stop
	se.out.start(octx)
	h := &harness{t: t, se: se, q: q, now: time.Unix(1_800_000_000, 0),
		seen: map[uint64][]tsSeen{}, final: map[uint64][]byte{}, frames: map[uint64]int{}}
	t.Cleanup(func() { stop() })
	return h
}

// frame is video frame i of a 30 fps stream with a keyframe every 60 frames (2 s chunks), of
// size bytes.
func frame(i, size int) media.VideoFrame {
	nalu := make([]byte, size)
	r := rand.New(rand.NewPCG(uint64(i), 1))
	for k := range nalu {
		nalu[k] = byte(r.Uint32())
	}
	nalu[0] = 0x41 // non-IDR slice
	if i%60 == 0 {
		nalu[0] = 0x65 // IDR slice
	}
	dts := media.SessionOrigin + int64(i)*media.Timescale/30
	return media.VideoFrame{PTS: dts, DTS: dts, Key: i%60 == 0, NALUs: [][]byte{nalu}}
}

// frameInterval is the simulated time between the harness's video frames.
const frameInterval = time.Second / 30

// video writes a video frame as the read loop does, at its time on the simulated clock.
func (h *harness) video(f media.VideoFrame) {
	h.t.Helper()
	h.now = time.Unix(1_800_000_000, 0).Add(time.Duration(f.DTS-media.SessionOrigin) * time.Second / media.Timescale)
	done, err := h.se.chunker.WriteVideo(f)
	if err != nil {
		h.t.Fatal(err)
	}
	h.emit(done)
	if !h.se.full && !h.se.out.update(h.se.chunker.Open(), h.now) {
		h.se.backlogFull()
	}
	for _, p := range h.se.chunker.Open() {
		h.seen[p.Seq] = append(h.seen[p.Seq], tsSeen{at: h.now, len: len(p.TS)})
	}
}

// audio writes an AAC frame (its payload is not decoded anywhere: random bytes will do).
func (h *harness) audio(pts int64) {
	h.t.Helper()
	done, err := h.se.chunker.WriteAudio(media.AudioFrame{PTS: pts, Data: bytes.Repeat([]byte{0x21}, 200)})
	if err != nil {
		h.t.Fatal(err)
	}
	h.emit(done)
}

func (h *harness) emit(c *chunker.Chunk) {
	if c == nil {
		return
	}
	// Seen before the outbox has it: once handed over, the chunk's memory is the outbox's.
	h.final[c.Seq] = bytes.Clone(c.TS)
	h.frames[c.Seq] = len(c.Video)
	h.seen[c.Seq] = append(h.seen[c.Seq], tsSeen{at: h.now, len: len(c.TS)})
	h.se.emit(c)
}

// end flushes the session and waits for its outbox, as the session's end does.
func (h *harness) end() {
	h.flush()
	h.se.out.close(h.se.stopOut, 30*time.Second)
}

// flush hands the chunker's last chunks to the outbox.
func (h *harness) flush() {
	for _, c := range h.se.chunker.Flush() {
		h.emit(c)
	}
}

// partsOf returns the parts of chunk seq that got through, in the order they did.
func partsOf(msgs []recMsg, seq uint64) []queue.Part {
	var out []queue.Part
	for _, m := range msgs {
		if m.kind == "part" && m.part.Seq == seq {
			out = append(out, m.part)
		}
	}
	return out
}

// The parts of a chunk being cut go out on the cadence: once its new bytes reach partBytes or
// have waited partEvery, never more often and never later (to within the frame that brings
// them), numbered from 0, part 0 with the chunk's start; each chunk's parts are its MPEG-TS and
// its end message follows them, with their size and CRC-32C.
func TestPartsFollowTheCadence(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		frameSize int
		// the bounds on a 2 s chunk's part count
		minParts, maxParts int
	}{
		// 1 KB frames (240 kbit/s): parts by time, about every 100 ms.
		{"small frames, by time", 1000, int(2*time.Second/(partEvery+frameInterval)) - 1, int(2*time.Second/partEvery) + 1},
		// 40 KB frames (9.6 Mbit/s): by size, each part at least 64 KiB, every other frame.
		{"large frames, by size", 40000, 25, 31},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			q := &recordingQueue{}
			h := newHarness(t, 30, false, q)
			const chunks = 4
			for i := range chunks*60 + 1 {
				h.video(frame(i, tc.frameSize))
			}
			h.end()
			var msgs []recMsg // the feed's, in order (the segment records go their own way)
			for _, m := range q.messages("") {
				if m.kind == "job" || m.kind == "part" || m.kind == "end" {
					msgs = append(msgs, m)
				}
			}
			if msgs[0].kind != "job" || len(q.messages("job")) != 1 {
				t.Fatalf("the encode job is not first and alone on the feed: %d jobs, first message a %s", len(q.messages("job")), msgs[0].kind)
			}
			ends := q.messages("end")
			if len(ends) != chunks+1 {
				t.Fatalf("%d chunk ends, want %d", len(ends), chunks+1)
			}
			for seq := range uint64(chunks + 1) {
				parts := partsOf(msgs, seq)
				end := ends[seq].end
				var ts []byte
				for i, p := range parts {
					if p.Index != i {
						t.Fatalf("chunk %d: part %d has index %d", seq, i, p.Index)
					}
					ts = append(ts, p.Data...)
				}
				if !bytes.Equal(ts, h.final[seq]) {
					t.Fatalf("chunk %d: %d bytes in parts, not the chunk's %d bytes of MPEG-TS", seq, len(ts), len(h.final[seq]))
				}
				if end.Seq != seq || end.Size != len(ts) || end.CRC != crc32.Checksum(ts, queue.ChunkCRC) || end.Frames != h.frames[seq] {
					t.Errorf("chunk %d: end %+v for %d bytes and %d frames", seq, end, len(ts), h.frames[seq])
				}
				if end.N != h.se.claim.Base()+seq {
					t.Errorf("chunk %d: segment number %d, base %d", seq, end.N, h.se.claim.Base())
				}
				if parts[0].Start != end.Start {
					t.Errorf("chunk %d: part 0 says start %d, the end %d", seq, parts[0].Start, end.Start)
				}
				dem, err := cmaf.Demux(ts)
				if err != nil || len(dem.Video) != end.Frames {
					t.Fatalf("chunk %d: the MPEG-TS of its parts: %v", seq, err)
				}
				// When each part went out: the first moment the chunk's MPEG-TS reached its end.
				seen := h.seen[seq]
				sentAt := func(off int) time.Time {
					for _, s := range seen {
						if s.len >= off {
							return s.at
						}
					}
					t.Fatalf("chunk %d: a part ends at %d, past the %d bytes written", seq, off, seen[len(seen)-1].len)
					return time.Time{}
				}
				off := 0
				prev := seen[0].at // the chunk's first frame
				var sent []time.Time
				for i, p := range parts {
					off += len(p.Data)
					at := sentAt(off)
					sent = append(sent, at)
					if i < len(parts)-1 && len(p.Data) < partBytes && at.Sub(prev) < partEvery {
						t.Errorf("chunk %d part %d: %d bytes %v after the part before: too soon", seq, i, len(p.Data), at.Sub(prev))
					}
					prev = at
				}
				// No byte waits longer than partEvery and the frame that sends it: the bytes a
				// frame added go out with the part that holds the last of them.
				written := 0
				for _, s := range seen {
					if s.len > written {
						k := 0
						for sumLen(parts[:k+1]) < s.len {
							k++
						}
						if wait := sent[k].Sub(s.at); wait > partEvery+frameInterval {
							t.Errorf("chunk %d: bytes %d-%d written at %v waited %v for part %d", seq, written, s.len, s.at.Sub(seen[0].at), wait, k)
						}
					}
					written = max(written, s.len)
				}
				if seq < chunks && (len(parts) < tc.minParts || len(parts) > tc.maxParts) {
					t.Errorf("chunk %d of 2 s: %d parts, want %d to %d", seq, len(parts), tc.minParts, tc.maxParts)
				}
				t.Logf("chunk %d: %d bytes in %d parts", seq, len(ts), len(parts))
			}
			// Each chunk's end follows all its parts.
			last := map[uint64]int{}
			for i, m := range msgs {
				switch m.kind {
				case "part":
					last[m.part.Seq] = i
				case "end":
					if last[m.end.Seq] > i {
						t.Errorf("chunk %d: a part after its end", m.end.Seq)
					}
				}
			}
		})
	}
}

func sumLen(parts []queue.Part) int {
	n := 0
	for _, p := range parts {
		n += len(p.Data)
	}
	return n
}

// A chunk is cut on video and finished when its audio reaches the cut (audio arrives behind
// video): its end message, all the encoder needs, goes out as soon as its video is complete,
// not once the audio closes it; its segment record waits for the audio, which it carries.
func TestChunkEndBeforeItsAudio(t *testing.T) {
	t.Parallel()
	q := &recordingQueue{}
	h := newHarness(t, 30, true, q)
	const audioLag = 300 * media.Timescale / 1000 // audio 300 ms behind video
	const aacFrame = 1024 * media.Timescale / 48000
	apts := int64(media.SessionOrigin)
	writeAudioTo := func(until int64) {
		for ; apts <= until; apts += aacFrame {
			h.audio(apts)
		}
	}
	for i := range 60 {
		f := frame(i, 2000)
		writeAudioTo(f.DTS - audioLag)
		h.video(f)
	}
	// The keyframe that cuts chunk 0: its video is complete, its audio up to 1.7 s only.
	cut := frame(60, 2000)
	writeAudioTo(cut.DTS - audioLag)
	h.video(cut)
	if open := h.se.chunker.Open(); len(open) != 2 || open[0].Seq != 0 || !open[0].Cut {
		t.Fatalf("chunk 0 is not waiting for its audio: %+v", open)
	}
	eventually(t, 10*time.Second, "chunk 0's end message", func() bool { return len(q.messages("end")) == 1 })
	end := q.messages("end")[0].end
	if end.Seq != 0 || end.Frames != 60 || end.Duration != 2*media.Timescale || end.Last {
		t.Errorf("chunk 0's end: %+v", end)
	}
	var ts []byte
	for _, p := range partsOf(q.messages(""), 0) {
		ts = append(ts, p.Data...)
	}
	if end.Size != len(ts) || end.CRC != crc32.Checksum(ts, queue.ChunkCRC) {
		t.Errorf("chunk 0's end says %d bytes, CRC %08x; its parts are %d bytes, CRC %08x", end.Size, end.CRC, len(ts), crc32.Checksum(ts, queue.ChunkCRC))
	}
	if n := len(q.messages("segment")); n != 0 {
		t.Fatalf("%d segment records before chunk 0's audio is complete", n)
	}

	// The audio reaches the cut: chunk 0 is finished, its record goes out, its end is not sent again.
	for i := 61; i < 80; i++ {
		f := frame(i, 2000)
		writeAudioTo(f.DTS - audioLag)
		h.video(f)
	}
	if _, ok := h.final[0]; !ok {
		t.Fatal("chunk 0 still not finished with its audio past the cut")
	}
	if !bytes.Equal(ts, h.final[0]) {
		t.Errorf("the parts sent at the cut are not chunk 0's finished MPEG-TS")
	}
	eventually(t, 10*time.Second, "chunk 0's segment record", func() bool { return len(q.messages("segment")) == 1 })
	rec := q.messages("segment")[0].seg
	var audio *queue.Rendition
	for i := range rec.Renditions {
		if rec.Renditions[i].Name == "audio" {
			audio = &rec.Renditions[i]
		}
	}
	if rec.Seq != 0 || !rec.Encoding || audio == nil || audio.Failed {
		t.Fatalf("chunk 0's record: %+v", rec)
	}
	// Its audio runs to the cut (within a frame), not to where the audio was at the cut.
	if audioEnd := (audio.Start + audio.Duration) * media.Timescale / int64(audio.Timescale); audioEnd < cut.PTS-aacFrame {
		t.Errorf("chunk 0's audio ends at %d, before the cut at %d", audioEnd, cut.PTS)
	}
	h.end()
	if n := len(q.messages("end")); n != 2 {
		t.Errorf("%d end messages for 2 chunks", n)
	}
	for i, m := range q.messages("end") {
		if m.end.Seq != uint64(i) {
			t.Errorf("end message %d is chunk %d's", i, m.end.Seq)
		}
	}
}

// A feed that stops taking messages (NATS unreachable) fills its backlog: the session is
// dropped with a reason that says so. Parts of the chunks dropped with it may still be queued,
// so their memory must not be handed to later chunks: when the queue comes back, every part
// that goes out is the bytes it was cut from, and no chunk that was dropped gets an end. The
// backlog fills as a chunk is finished (video only), or as it is cut on video while it waits
// for its audio (the session's end then drops it).
func TestFullFeedDropsSessionKeepsQueuedParts(t *testing.T) {
	t.Parallel()
	for _, audio := range []bool{false, true} {
		t.Run(map[bool]string{false: "video only", true: "audio behind video"}[audio], func(t *testing.T) {
			t.Parallel()
			q := &recordingQueue{gate: make(chan struct{})}
			h := newHarness(t, 1, audio, q)
			apts := int64(media.SessionOrigin)
			i := 0
			for ; i <= 120 && !h.se.full; i++ {
				f := frame(i, 3000)
				for ; audio && apts <= f.DTS-300*media.Timescale/1000; apts += 1024 * media.Timescale / 48000 {
					h.audio(apts)
				}
				h.video(f)
			}
			if !h.se.full || h.se.fail == nil || !strings.Contains(h.se.fail.Error(), "chunk backlog over 1 chunks") {
				t.Fatalf("after %d frames with the queue stuck: full %v, fail %v", i, h.se.full, h.se.fail)
			}
			h.flush() // the session ends: its last chunks are dropped
			// Later chunks (another session of the process) take what the pool has and
			// write over it.
			for range 16 {
				b := chunkBuffer(1)
				b = b[:cap(b)]
				for k := range b {
					b[k] = 0xee
				}
			}
			// The queue comes back.
			q.mu.Lock()
			close(q.gate)
			q.gate = nil
			q.mu.Unlock()
			h.se.out.close(h.se.stopOut, 30*time.Second)
			msgs := q.messages("")
			for seq, want := range h.final {
				var got []byte
				for _, p := range partsOf(msgs, seq) {
					got = append(got, p.Data...)
				}
				if !bytes.HasPrefix(want, got) {
					t.Errorf("chunk %d: the %d bytes of its parts that went out are not its MPEG-TS", seq, len(got))
				}
			}
			if len(partsOf(msgs, 1)) == 0 {
				t.Error("no part of chunk 1 went out: the test shows nothing")
			}
			var ended []uint64
			for _, m := range q.messages("end") {
				ended = append(ended, m.end.Seq)
			}
			if len(ended) != 1 || ended[0] != 0 {
				t.Errorf("ends of chunks %v; want chunk 0's only (the backlog held one)", ended)
			}
		})
	}
}
