package packager

// Regression tests of bugs found and fixed: duplicate audio CODECS, an empty last chunk, gap
// deadlines across restarts and redeliveries, a failed first chunk, and two packagers sharing
// a stream (compare-and-swap on the state).

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

func TestMasterCodecsListEachCodecOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10})
	s := h.session("st1", sessA)
	h.mustAccept(s.seg(0))
	m := h.master("st1")
	for _, sp := range ladderSpecs {
		if sp.kind != "video" {
			continue
		}
		v, _ := m.variant(sp.name + "/index.m3u8")
		if got, want := attr(v.attrs, "CODECS"), sp.codec+",mp4a.40.2"; got != want {
			t.Errorf("%s CODECS %q, want %q", sp.name, got, want)
		}
	}
}

// The ingest sends an empty last chunk (no segments, no duration, no transcoder record to wait
// for) when a session ends before its first keyframe.
func TestEmptyLastChunkEndsTheSession(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10})
	a := h.session("st1", sessA)
	h.mustAccept(a.seg(0), a.seg(1))
	// A publisher connects and leaves before sending a keyframe.
	b := h.session("st1", sessB)
	if err := h.accept(b.empty(0)); err != nil {
		t.Errorf("empty last chunk: %v", err)
	}
	// The next session must play.
	c := h.session("st1", sessC)
	if err := h.accept(c.seg(0)); err != nil {
		t.Fatalf("first chunk of the next session: %v", err)
	}
	pl := h.media("st1", "source")
	for _, seg := range pl.segs {
		if seg.dur <= 0 {
			t.Errorf("entry %s lasts %.3f s", seg.uri, seg.dur)
		}
	}
	if last := pl.segs[len(pl.segs)-1]; last.gap || !bytes.Equal(h.get("live/st1/source/"+last.uri), c.mediaBytes("source", 0)) {
		t.Errorf("the new session's chunk is not the last entry:\n%s", pl.raw)
	}
}

// A packager that restarts while a stream waits for a chunk that never comes must still list
// the gap: the chunks that wait were acknowledged and will not be redelivered.
func TestGapDeadlineSurvivesRestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10, GapTimeout: 50 * time.Millisecond})
	s := h.session("st1", sessA)
	h.mustAccept(s.seg(0), s.seg(2, last)) // 1 is lost for good
	h.restart()
	h.runGapLoop()
	eventually(t, 10*time.Second, "the gap for chunk 1 after the restart", func() bool {
		b := h.get("live/st1/source/index.m3u8")
		return b != nil && bytes.Contains(b, []byte("#EXT-X-ENDLIST"))
	})
	h.wantListing("st1", seqs(0, 2), map[string][]uint64{"*": {1}})
}

func TestRedeliveredWaitingChunkKeepsTheDeadline(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10})
	s := h.session("st1", sessA)
	h.mustAccept(s.seg(0), s.seg(2))
	// WaitingSince is wall-clock time; an hour back, a reset is plain.
	first := time.Now().Add(-time.Hour).UTC()
	h.withState("st1", func(st *state) { st.WaitingSince = first })
	h.mustAccept(s.seg(2))
	h.withState("st1", func(st *state) {
		if !st.WaitingSince.Equal(first) {
			t.Errorf("deadline restarted by a redelivery: waiting since %v, then %v", first, st.WaitingSince)
		}
	})
}

// The first chunk a stream ever has failing (a poison chunk) must not fail the job.
func TestFirstChunkOfAStreamFailed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10})
	s := h.session("st1", sessA)
	if err := h.accept(s.seg(0, failedChunk)); err != nil {
		t.Errorf("accept of a failed first chunk: %v", err)
	}
	if _, _, err := h.state.Get(context.Background(), "packager.st1"); err != nil {
		t.Errorf("state not saved: %v", err)
	}
	h.mustAccept(s.seg(1))
	h.wantListing("st1", seqs(0, 1), map[string][]uint64{"*": {0}})
}

// Packagers share one durable consumer, so one stream's messages reach several packager
// processes. They share state through the StateStore, and must not undo each other's work.
func TestTwoPackagersShareAStream(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10})
	p1, p2 := h.svc, h.newService()
	s := h.session("st1", sessA)
	ctx := context.Background()
	for i, step := range []struct {
		svc *Service
		seq uint64
	}{{p1, 0}, {p2, 1}, {p1, 2}} {
		if err := h.acceptCtx(ctx, step.svc, s.seg(step.seq)); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	h.wantListing("st1", seqs(0, 2), nil)

	// A chunk's two records handled by different packagers (one of them took over the other's
	// redelivered job): merged through the state store, listed once.
	for i, step := range []struct {
		svc *Service
		c   chunk
	}{{p2, s.ingest(3)}, {p1, s.transcoder(3)}, {p2, s.transcoder(4)}, {p1, s.ingest(4)}, {p2, s.ingest(4)}} {
		if err := h.acceptCtx(ctx, step.svc, step.c); err != nil {
			t.Fatalf("split step %d: %v", i, err)
		}
	}
	h.wantListing("st1", seqs(0, 4), nil)
	l1, _ := p1.Stats()
	l2, _ := p2.Stats()
	if l1+l2 != 5 {
		t.Errorf("listed %d + %d, want 5 in all", l1, l2)
	}
}

// Two packagers taking one stream's records at the same time, as the shared consumer hands
// them out (a chunk's two records often go to different packagers): a packager that loses the
// compare-and-swap retries on the newer state, as handle does, and every chunk is listed once,
// in order.
func TestTwoPackagersConcurrently(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 20})
	svcs := []*Service{h.svc, h.newService()}
	s := h.session("st1", sessA)
	const chunks = 10
	work := make([][]chunk, 2)
	for seq := uint64(0); seq < chunks; seq++ {
		c := s.seg(seq)
		work[seq%2] = append(work[seq%2], chunk{c[0]})
		work[(seq+1)%2] = append(work[(seq+1)%2], chunk{c[1]})
	}
	errs := make(chan error, 2)
	for i, svc := range svcs {
		go func() {
			for _, c := range work[i] {
				deadline := time.Now().Add(30 * time.Second)
				for {
					err := h.acceptCtx(context.Background(), svc, c)
					if err == nil {
						break
					}
					if !errors.Is(err, errStale) || time.Now().After(deadline) {
						errs <- err
						return
					}
				}
			}
			errs <- nil
		}()
	}
	for range svcs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	h.wantListing("st1", seqs(0, chunks-1), nil)
}
