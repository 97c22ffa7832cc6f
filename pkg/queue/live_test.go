package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// sink records what a live chunk's taker receives.
type sink struct {
	mu   sync.Mutex
	data bytes.Buffer
	job  *Chunk
	err  error
	done chan struct{}
}

func newSink() *sink { return &sink{done: make(chan struct{})} }

func (s *sink) Part(p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data.Write(p)
}

func (s *sink) End(job *Chunk, err error) {
	s.mu.Lock()
	s.job, s.err = job, err
	s.mu.Unlock()
	close(s.done)
}

func (s *sink) wait(t *testing.T) (*Chunk, error, []byte) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the sink never heard the chunk's end")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.job, s.err, s.data.Bytes()
}

// taker serves live offers on c, taking each with a new sink while take says so.
type taker struct {
	mu     sync.Mutex
	chunks []*LiveChunk
	sinks  []*sink
	take   bool
}

func serve(t *testing.T, c *Conn, take bool) *taker {
	t.Helper()
	tk := &taker{take: take}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.ServeLive(ctx, func(l *LiveChunk) LiveSink {
			tk.mu.Lock()
			defer tk.mu.Unlock()
			if !tk.take {
				return nil
			}
			s := newSink()
			tk.chunks, tk.sinks = append(tk.chunks, l), append(tk.sinks, s)
			return s
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	// The queue subscription must be in place before an offer can reach it.
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	return tk
}

func (tk *taker) last(t *testing.T) (*LiveChunk, *sink) {
	t.Helper()
	tk.mu.Lock()
	defer tk.mu.Unlock()
	if len(tk.chunks) == 0 {
		t.Fatal("no chunk taken")
	}
	return tk.chunks[len(tk.chunks)-1], tk.sinks[len(tk.sinks)-1]
}

func liveOffer() LiveOffer {
	return LiveOffer{StreamID: "0190c0de-0000-7000-8000-000000000001", SessionID: "0190c0de-0000-7000-8000-000000000002",
		Seq: 7, Profile: "default", Video: &VideoParams{Codec: "avc1.64001f", Width: 1280, Height: 720, FPS: 30}, Bitrate: 3_000_000}
}

func liveJob(o LiveOffer) *Chunk {
	return &Chunk{StreamID: o.StreamID, SessionID: o.SessionID, Seq: o.Seq, Profile: o.Profile, Start: 123, Duration: 180000,
		TSBase: 900000, Video: o.Video, Created: time.Unix(1700000000, 0).UTC()}
}

func randomBytes(n int) []byte {
	r := rand.New(rand.NewPCG(uint64(n), 3))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// A taken chunk's bytes reach the taker whole and in order, sent as they were "written" (a
// growing buffer), with the job as the queue publishes it; the worker that gets the job then
// learns from LiveStatus whether the taker is still at it, done, or failed.
func TestLiveChunkReachesItsTaker(t *testing.T) {
	t.Parallel()
	c := connect(t, Config{})
	tk := serve(t, c, true)
	ctx := context.Background()
	o := liveOffer()
	job := liveJob(o)
	if st, err := c.LiveStatus(ctx, job); err != nil || st != LiveNone {
		t.Fatalf("status before the offer: %q, %v; want none", st, err)
	}
	feed, err := c.OfferLive(ctx, o)
	if err != nil || feed == nil {
		t.Fatalf("offer: %v, %v; want a feed", feed, err)
	}
	lc, s := tk.last(t)
	if lc.Offer.ID() != job.ID() || lc.Offer.Video.Height != 720 || lc.Offer.Bitrate != 3_000_000 {
		t.Errorf("taker got offer %+v", lc.Offer)
	}
	data := randomBytes(3<<20 + 17)
	for n := 0; n < len(data)-100_000; n += 37_000 {
		if err := feed.Write(data[feed.Sent():n]); err != nil {
			t.Fatal(err)
		}
	}
	if st, _ := c.LiveStatus(ctx, job); st != LiveWorking {
		t.Errorf("status while receiving: %q, want working", st)
	}
	if err := feed.End(job, data); err != nil {
		t.Fatal(err)
	}
	got, err, bytesGot := s.wait(t)
	if err != nil {
		t.Fatalf("sink ended with %v", err)
	}
	if !bytes.Equal(bytesGot, data) {
		t.Fatalf("taker received %d bytes, not the %d sent", len(bytesGot), len(data))
	}
	if got.ID() != job.ID() || got.Object != "" || got.Size != len(data) || len(got.Data) != 0 || got.Start != 123 || job.Size != 0 {
		t.Errorf("taker's job %+v (the ingest's copy: size %d); want the chunk's with its size, and no bytes (the taker has them)", got, job.Size)
	}
	if err := feed.Write([]byte("late")); err == nil {
		t.Error("a feed wrote after its end")
	}
	if st, _ := c.LiveStatus(ctx, job); st != LiveWorking {
		t.Errorf("status before Done: %q, want working", st)
	}
	lc.Done(true)
	if st, err := c.LiveStatus(ctx, job); err != nil || st != LiveDone {
		t.Errorf("status after Done(true): %q, %v; want done", st, err)
	}

	// The next chunk fails at its taker.
	o.Seq++
	job2 := liveJob(o)
	feed, err = c.OfferLive(ctx, o)
	if err != nil || feed == nil {
		t.Fatalf("second offer: %v, %v", feed, err)
	}
	lc2, s2 := tk.last(t)
	if err := feed.End(job2, data[:1000]); err != nil {
		t.Fatal(err)
	}
	if _, err, b := s2.wait(t); err != nil || len(b) != 1000 {
		t.Fatalf("second chunk: %v, %d bytes", err, len(b))
	}
	lc2.Done(false)
	if st, _ := c.LiveStatus(ctx, job2); st != LiveFailed {
		t.Errorf("status after Done(false): %q, want failed", st)
	}
	if st, _ := c.LiveStatus(ctx, job); st != LiveDone {
		t.Errorf("the first chunk's status changed to %q", st)
	}
}

// Without a taker, an offer comes back empty at once and the job is the only way.
func TestLiveOfferWithoutTakers(t *testing.T) {
	t.Parallel()
	c := connect(t, Config{})
	ctx := context.Background()
	start := time.Now()
	if feed, err := c.OfferLive(ctx, liveOffer()); feed != nil || err != nil {
		t.Fatalf("offer with no transcoder: %v, %v; want nil, nil", feed, err)
	}
	if d := time.Since(start); d > liveOfferTimeout {
		t.Errorf("an offer nobody listens to took %v", d)
	}
	serve(t, c, false) // every transcoder busy
	if feed, err := c.OfferLive(ctx, liveOffer()); feed != nil || err != nil {
		t.Fatalf("offer declined by every taker: %v, %v; want nil, nil", feed, err)
	}
	bad := liveOffer()
	bad.StreamID = "a.b"
	if feed, err := c.OfferLive(ctx, bad); feed != nil || err != nil {
		t.Fatalf("offer for a stream id that is no subject token: %v, %v", feed, err)
	}
}

// Every way a chunk's bytes can go wrong ends the taker's chunk with an error, so the job is
// encoded instead of a damaged chunk being used.
func TestLiveChunkDamageIsCaught(t *testing.T) {
	t.Parallel()
	c := connect(t, Config{})
	tk := serve(t, c, true)
	ctx := context.Background()
	data := randomBytes(200_000)
	for _, tc := range []struct {
		name string
		run  func(f *LiveFeed, job *Chunk) error
		want string
	}{
		{"lost part", func(f *LiveFeed, job *Chunk) error {
			_ = f.Write(data[:1000])
			f.parts++ // as if the next part were lost on the way
			_ = f.Write(data[1000:2000])
			return nil
		}, "where 1 was due"},
		{"rewritten chunk", func(f *LiveFeed, job *Chunk) error {
			_ = f.Write(data[:1000])
			other := bytes.Clone(data)
			other[10] ^= 1
			if err := f.End(job, other); err == nil {
				return errors.New("End accepted a chunk that does not begin with the bytes sent")
			}
			return nil
		}, "given up by the ingest"},
		{"given up", func(f *LiveFeed, job *Chunk) error {
			_ = f.Write(data[:1000])
			f.Abort()
			return nil
		}, "given up by the ingest"},
		{"size mismatch", func(f *LiveFeed, job *Chunk) error {
			_ = f.Write(data[:1000])
			f.sent++ // the end message then claims a byte the taker never got
			return f.end(&liveEnd{Job: job, Parts: f.parts, Size: f.sent, CRC: f.crc})
		}, "1000 bytes"},
	} {
		o := liveOffer()
		o.SessionID = "s-" + strings.ReplaceAll(tc.name, " ", "-")
		feed, err := c.OfferLive(ctx, o)
		if err != nil || feed == nil {
			t.Fatalf("%s: offer: %v, %v", tc.name, feed, err)
		}
		_, s := tk.last(t)
		if err := tc.run(feed, liveJob(o)); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		job, err, _ := s.wait(t)
		if err == nil || job != nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: sink ended with job %v, error %v; want an error with %q", tc.name, job, err, tc.want)
		}
	}
}

// A chunk whose ingest goes silent is ended, so its taker's slot comes back.
func TestLiveChunkIdle(t *testing.T) {
	c := connect(t, Config{})
	old := liveIdle
	liveIdle = 300 * time.Millisecond
	t.Cleanup(func() { liveIdle = old })
	tk := serve(t, c, true)
	feed, err := c.OfferLive(context.Background(), liveOffer())
	if err != nil || feed == nil {
		t.Fatalf("offer: %v, %v", feed, err)
	}
	_ = feed.Write([]byte("the first bytes, then nothing"))
	_, s := tk.last(t)
	if job, err, _ := s.wait(t); job != nil || err == nil || !strings.Contains(err.Error(), "no data for") {
		t.Fatalf("silent chunk ended with %v, %v", job, err)
	}
}

// The parts handler takes whatever arrives on a live chunk's subject (anyone on the NATS
// network can publish there): numbered parts, end messages with any body, in any order. It
// must never panic, end the chunk once, and hand on a job only when the parts received add up
// to the end message's count, size and CRC.
func FuzzLiveParts(f *testing.F) {
	f.Add([]byte("p0hello\x00p1world\x00e{\"job\":{\"stream_id\":\"s\",\"seq\":1},\"parts\":2,\"size\":10,\"crc\":0}"))
	f.Add([]byte("p0abc\x00p2def\x00e{}"))
	f.Add([]byte("e{\"parts\":0}"))
	f.Add([]byte("pxabc\x00e[]"))
	f.Fuzz(func(t *testing.T, in []byte) {
		s := newSink()
		ends := 0
		l := &LiveChunk{idle: time.Hour, timer: time.AfterFunc(time.Hour, func() {})}
		l.sink = sinkFunc{s, &ends}
		var want bytes.Buffer
		crcOK := false
		for _, msg := range bytes.Split(in, []byte{0}) {
			if len(msg) == 0 {
				continue
			}
			m := nats.NewMsg("gopcast.live.part.x")
			switch msg[0] {
			case 'p':
				if len(msg) < 2 {
					continue
				}
				m.Header.Set(hdrLivePart, string(msg[1:2]))
				m.Data = msg[2:]
				if !l.ended && string(msg[1:2]) == strconv.Itoa(l.next) {
					want.Write(m.Data)
				}
			case 'e':
				m.Header.Set(hdrLiveEnd, "1")
				m.Data = msg[1:]
				var e liveEnd
				if !l.ended && json.Unmarshal(m.Data, &e) == nil && e.Job != nil {
					crcOK = e.Parts == l.next && e.Size == want.Len() && e.CRC == crc32.Checksum(want.Bytes(), liveCRC)
				}
			default:
				continue
			}
			l.part(m)
		}
		if ends > 1 {
			t.Fatalf("the chunk ended %d times", ends)
		}
		if !bytes.Equal(s.data.Bytes(), want.Bytes()) {
			t.Fatalf("sink got %q, want the in-order parts %q", s.data.Bytes(), want.Bytes())
		}
		if ends == 1 && s.job != nil && !crcOK {
			t.Fatalf("a job was handed on for parts that do not match the end message")
		}
	})
}

type sinkFunc struct {
	s    *sink
	ends *int
}

func (f sinkFunc) Part(p []byte) { f.s.Part(p) }
func (f sinkFunc) End(job *Chunk, err error) {
	*f.ends++
	f.s.job, f.s.err = job, err
}

// A taker whose chunk never gets a first part (the ingest stopped waiting for the offer's
// answer) lets it go at once rather than after the idle timeout.
func TestLiveChunkWithoutParts(t *testing.T) {
	c := connect(t, Config{})
	old := liveFirstPart
	liveFirstPart = 200 * time.Millisecond
	t.Cleanup(func() { liveFirstPart = old })
	tk := serve(t, c, true)
	if feed, err := c.OfferLive(context.Background(), liveOffer()); err != nil || feed == nil {
		t.Fatalf("offer: %v, %v", feed, err)
	}
	_, s := tk.last(t)
	if job, err, _ := s.wait(t); job != nil || err == nil || !strings.Contains(err.Error(), "no data for 200ms") {
		t.Fatalf("chunk without parts ended with %v, %v", job, err)
	}
}

// An offer that prefers a taker (the one that took the stream's previous chunk) goes to it
// while it takes chunks, and to the group when it declines or is gone.
func TestLiveOfferPrefersATaker(t *testing.T) {
	t.Parallel()
	c := connect(t, Config{})
	a, b := serve(t, c, true), serve(t, c, true)
	ctx := context.Background()
	count := func(tk *taker) int {
		tk.mu.Lock()
		defer tk.mu.Unlock()
		return len(tk.chunks)
	}
	end := func(f *LiveFeed, o LiveOffer) {
		if err := f.End(liveJob(o), nil); err != nil {
			t.Fatal(err)
		}
	}
	o := liveOffer()
	f, err := c.OfferLive(ctx, o)
	if err != nil || f == nil || f.Taker() == "" {
		t.Fatalf("first offer: %v, %v", f, err)
	}
	end(f, o)
	first, other := a, b
	if count(b) == 1 {
		first, other = b, a
	}
	prefer := f.Taker()
	for i := range 20 {
		o.Seq, o.Prefer = uint64(8+i), prefer
		f, err := c.OfferLive(ctx, o)
		if err != nil || f == nil || f.Taker() != prefer {
			t.Fatalf("offer %d: %v, %v (taker %q, want %q)", i, f, err, f.Taker(), prefer)
		}
		end(f, o)
	}
	if count(first) != 21 || count(other) != 0 {
		t.Fatalf("the preferred taker got %d of 21 chunks, the other %d", count(first), count(other))
	}
	// Busy: the other one takes it.
	first.mu.Lock()
	first.take = false
	first.mu.Unlock()
	o.Seq = 40
	f, err = c.OfferLive(ctx, o)
	if err != nil || f == nil || f.Taker() == prefer || count(other) != 1 {
		t.Fatalf("offer preferring a busy taker: %v, %v; the other took %d", f, err, count(other))
	}
	end(f, o)
	// Gone (no such taker): the group gets it at once.
	o.Seq, o.Prefer = 41, "nobody"
	start := time.Now()
	f, err = c.OfferLive(ctx, o)
	if err != nil || f == nil || count(other) != 2 {
		t.Fatalf("offer preferring a taker that is gone: %v, %v", f, err)
	}
	if d := time.Since(start); d > liveOfferTimeout/2 {
		t.Errorf("offer preferring a taker that is gone took %v", d)
	}
	end(f, o)
}
