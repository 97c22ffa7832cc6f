package packager

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/storage"
)

func TestInOrderChunksAreListed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10})
	s := h.session("st1", sessA)
	for seq := uint64(0); seq < 4; seq++ {
		mark := h.store.mark()
		h.mustAccept(s.seg(seq))
		h.wantListing("st1", seqs(0, seq), nil)

		// The packager writes the init segments the records bring, then the media playlists,
		// then the multivariant playlist (other manifests, like DASH's, may follow it).
		puts := h.store.since(mark)
		firstManifest := slices.IndexFunc(puts, func(p putRecord) bool { return isManifest(p.key) })
		if firstManifest < 0 {
			t.Fatalf("seq %d: no playlist written", seq)
		}
		master := slices.IndexFunc(puts, func(p putRecord) bool { return p.key == "live/st1/master.m3u8" })
		if master < 0 {
			master = len(puts) // unchanged since the last chunk: not rewritten
		}
		for i, p := range puts {
			switch {
			case (i < firstManifest) == isManifest(p.key):
				t.Errorf("seq %d: write %d is %s: segments must all come before manifests", seq, i, p.key)
			case strings.HasSuffix(p.key, "/index.m3u8") && i > master:
				t.Errorf("seq %d: %s written after the multivariant playlist", seq, p.key)
			}
		}
		if seq == 0 && master == len(puts) {
			t.Errorf("seq %d: multivariant playlist not written", seq)
		}
		// The packager writes no media segment (the writers did): only each rendition's init
		// segment, once, with the session's first chunk.
		want := 0
		if seq == 0 {
			want = len(ladderSpecs)
		}
		if n := firstManifest; n != want {
			t.Errorf("seq %d: %d segment writes, want %d", seq, n, want)
		}
		for _, p := range puts[:firstManifest] {
			if !strings.HasSuffix(p.key, "/init.mp4") {
				t.Errorf("seq %d: the packager wrote %s", seq, p.key)
			}
		}
	}

	// Init segments hold the records' bytes, media segments the writers'.
	for _, sp := range ladderSpecs {
		if got := h.get("live/st1/" + sp.name + "/init.mp4"); !bytes.Equal(got, s.initBytes(sp.name)) {
			t.Errorf("%s/init.mp4 = %q, want %q", sp.name, got, s.initBytes(sp.name))
		}
		for seq := uint64(0); seq < 4; seq++ {
			key := fmt.Sprintf("live/st1/%s/%d.m4s", sp.name, seq)
			if got := h.get(key); !bytes.Equal(got, s.mediaBytes(sp.name, seq)) {
				t.Errorf("%s: %d bytes, not the rendition's %d", key, len(got), len(s.mediaBytes(sp.name, seq)))
			}
		}
	}

	for _, sp := range ladderSpecs {
		pl := h.media("st1", sp.name)
		if pl.version != 7 || pl.target != 2 || pl.mediaSeq != 0 || pl.discSeq != 0 || pl.ended || pl.topMap != "init.mp4" {
			t.Errorf("%s header: version %d target %d media seq %d disc seq %d ended %v map %q:\n%s",
				sp.name, pl.version, pl.target, pl.mediaSeq, pl.discSeq, pl.ended, pl.topMap, pl.raw)
		}
		for i, seg := range pl.segs {
			want := s.rendSeconds(sp.kind, uint64(i))
			if math.Abs(seg.dur-want) > 0.0005 {
				t.Errorf("%s %s: EXTINF %.3f, want the rendition's %.4f", sp.name, seg.uri, seg.dur, want)
			}
			if seg.gap || seg.disc || seg.mapTag != "" {
				t.Errorf("%s %s: unexpected tags %+v", sp.name, seg.uri, seg)
			}
		}
	}

	m := h.master("st1")
	if len(m.audio) != 1 {
		t.Fatalf("want one EXT-X-MEDIA, got %q", m.audio)
	}
	a := m.audio[0]
	for _, want := range []string{"TYPE=AUDIO", `GROUP-ID="audio"`, `URI="audio/index.m3u8"`, `CHANNELS="2"`, "DEFAULT=YES"} {
		if !strings.Contains(a, want) {
			t.Errorf("audio rendition %q lacks %s", a, want)
		}
	}
	if got := slices.Sorted(slices.Values(m.uris())); !slices.Equal(got, []string{"360p/index.m3u8", "480p/index.m3u8", "source/index.m3u8"}) {
		t.Errorf("variants %v: want every video rendition and no audio-only variant", got)
	}
	if !slices.IsSortedFunc(m.variants, func(a, b variant) int { return a.bandwidth - b.bandwidth }) {
		t.Errorf("variants not in ascending bandwidth:\n%s", m.raw)
	}
	for _, sp := range ladderSpecs {
		if sp.kind != "video" {
			continue
		}
		v, ok := m.variant(sp.name + "/index.m3u8")
		if !ok {
			continue
		}
		// The exact CODECS value is checked by TestMasterCodecsListEachCodecOnce.
		if got := attr(v.attrs, "CODECS"); !strings.HasPrefix(got, sp.codec+",mp4a.40.2") {
			t.Errorf("%s CODECS %q, want the video codec then the audio codec", sp.name, got)
		}
		if got, want := attr(v.attrs, "RESOLUTION"), fmt.Sprintf("%dx%d", sp.width, sp.height); got != want {
			t.Errorf("%s RESOLUTION %q, want %q", sp.name, got, want)
		}
		if attr(v.attrs, "AUDIO") != "audio" || attr(v.attrs, "FRAME-RATE") != "30.000" {
			t.Errorf("%s: AUDIO/FRAME-RATE wrong in %q", sp.name, v.attrs)
		}
		if v.bandwidth < sp.bandwidth {
			t.Errorf("%s BANDWIDTH %d below its nominal %d", sp.name, v.bandwidth, sp.bandwidth)
		}
		avg, err := strconv.Atoi(attr(v.attrs, "AVERAGE-BANDWIDTH"))
		if err != nil || avg <= 0 || avg > v.bandwidth {
			t.Errorf("%s AVERAGE-BANDWIDTH %q outside 1..%d", sp.name, attr(v.attrs, "AVERAGE-BANDWIDTH"), v.bandwidth)
		}
	}
	// The source's BANDWIDTH is its measured peak plus the audio's: 5000 bytes in the shortest
	// (2.000 s) segment, 500 audio bytes in the shortest audio segment (2.005 s), rounded up
	// to the 50 kbit/s step the playlist uses to stay stable.
	audioBits, audioSecs := 500*8, 2.005
	wantSource := roundUp(5000*8/2+int(float64(audioBits)/audioSecs), 50_000)
	if v, _ := m.variant("source/index.m3u8"); v.bandwidth != wantSource {
		t.Errorf("source BANDWIDTH %d, want %d", v.bandwidth, wantSource)
	}

	if listed, gaps := h.svc.Stats(); listed != 4 || gaps != 0 || h.svc.w.Failures() != 0 {
		t.Errorf("stats: listed %d gaps %d put failures %d, want 4 0 0", listed, gaps, h.svc.w.Failures())
	}
	// The state is saved, so a restart continues from here.
	b, _, err := h.state.Get(context.Background(), "packager.st1")
	if err != nil {
		t.Fatal(err)
	}
	var saved struct {
		NextN   uint64 `json:"next_n"`
		NextMSN uint64 `json:"next_msn"`
		NextSeq uint64 `json:"next_seq"`
		Session string `json:"session"`
	}
	if err := json.Unmarshal(b, &saved); err != nil || saved.NextN != 4 || saved.NextMSN != 4 || saved.NextSeq != 4 || saved.Session != sessA {
		t.Errorf("saved state %+v (%v), want next_n 4, next_msn 4, next_seq 4, session %s", saved, err, sessA)
	}
}

func TestOutOfOrderChunksWaitForEarlierOnes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10})
	s := h.session("st1", sessA)

	h.mustAccept(s.seg(2))
	if b := h.get("live/st1/source/index.m3u8"); b != nil {
		t.Fatalf("seq 2 listed before 0 and 1 arrived:\n%s", b)
	}
	if b := h.get("live/st1/master.m3u8"); b != nil {
		t.Fatalf("multivariant playlist written before anything could be listed:\n%s", b)
	}
	h.mustAccept(s.seg(0))
	h.wantListing("st1", seqs(0, 0), nil)
	h.mustAccept(s.seg(1))
	h.wantListing("st1", seqs(0, 2), nil)
	for seq := uint64(0); seq <= 2; seq++ {
		key := fmt.Sprintf("live/st1/source/%d.m4s", seq)
		if !bytes.Equal(h.get(key), s.mediaBytes("source", seq)) {
			t.Errorf("%s does not hold chunk %d", key, seq)
		}
	}
	// Nothing waits any more, so no gap deadline runs.
	h.withState("st1", func(st *state) {
		if len(st.Pending) != 0 || !st.WaitingSince.IsZero() {
			t.Errorf("pending %v, waiting since %v: want nothing pending", st.Pending, st.WaitingSince)
		}
	})
}

func TestGapDeadlineStartsWhenAChunkIsMissing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10})
	s := h.session("st1", sessA)
	h.mustAccept(s.seg(0))
	h.withState("st1", func(st *state) {
		if !st.WaitingSince.IsZero() {
			t.Errorf("waiting since %v with nothing pending", st.WaitingSince)
		}
	})
	before := time.Now()
	h.mustAccept(s.seg(2))
	h.withState("st1", func(st *state) {
		if st.WaitingSince.Before(before) {
			t.Errorf("waiting since %v, want when chunk 2 arrived (after %v)", st.WaitingSince, before)
		}
	})
}

// Whatever order the records arrive in (each chunk's ingest and transcoder records among the
// other chunks'), and however often they are redelivered, each playlist lists the longest
// complete run from 0, each chunk once.
func TestRandomArrivalOrderAndRedelivery(t *testing.T) {
	t.Parallel()
	const chunks = 8
	rng := rand.New(rand.NewPCG(7, 11))
	for trial := range 6 {
		order := rng.Perm(2 * chunks) // record r is chunk r/2's, the ingest's when r is even
		// Redeliver a few records again later.
		for range 4 {
			order = slices.Insert(order, rng.IntN(len(order)+1), rng.IntN(2*chunks))
		}
		t.Run(fmt.Sprint(order), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, Config{Window: chunks})
			s := h.session("st1", sessA)
			done := map[int]bool{}
			for _, r := range order {
				seq := uint64(r / 2)
				var mods []func(*queue.Segment)
				if seq == chunks-1 {
					mods = append(mods, last)
				}
				c := s.ingest(seq, mods...)
				if r%2 == 1 {
					c = s.transcoder(seq, mods...)
				}
				h.mustAccept(c)
				done[r] = true
				run := 0
				for done[2*run] && done[2*run+1] {
					run++
				}
				if run == 0 {
					if b := h.get("live/st1/source/index.m3u8"); b != nil {
						t.Fatalf("after %v: playlist exists before chunk 0 is complete:\n%s", order, b)
					}
					continue
				}
				pl := h.media("st1", "source")
				if want := seqs(0, uint64(run-1)); fmt.Sprint(pl.uris()) != fmt.Sprint(uriList(want)) {
					t.Fatalf("trial %d: after record %d: lists %v, want %v", trial, r, pl.uris(), uriList(want))
				}
				if pl.ended != (run == chunks) {
					t.Fatalf("ended %v with %d of %d chunks listed", pl.ended, run, chunks)
				}
			}
			h.wantListing("st1", seqs(0, chunks-1), nil)
			if listed, _ := h.svc.Stats(); listed != chunks {
				t.Errorf("listed %d, want %d", listed, chunks)
			}
		})
	}
}

func uriList(ns []uint64) []string {
	out := []string{}
	for _, n := range ns {
		out = append(out, strconv.FormatUint(n, 10)+".m4s")
	}
	return out
}

func TestRedeliveredChunkIsListedOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10})
	s := h.session("st1", sessA)
	h.mustAccept(s.seg(0), s.seg(1))

	// Redelivered after it was listed: nothing is written at all.
	mark := h.store.mark()
	h.mustAccept(s.seg(1))
	if puts := h.store.since(mark); len(puts) != 0 {
		t.Errorf("redelivery of a listed chunk wrote %d objects, first %s", len(puts), puts[0].key)
	}
	// Redelivered while waiting for an earlier chunk.
	h.mustAccept(s.seg(3), s.seg(3))
	h.wantListing("st1", seqs(0, 1), nil)
	h.mustAccept(s.seg(2), s.seg(2), s.seg(3))
	h.wantListing("st1", seqs(0, 3), nil)
	if listed, _ := h.svc.Stats(); listed != 4 {
		t.Errorf("listed %d, want 4", listed)
	}
	// Redeliveries of listed chunks retire nothing: their segments are listed.
	h.withState("st1", func(st *state) {
		if len(st.Retired) != 0 {
			t.Errorf("retired %+v", st.Retired)
		}
	})
}

func TestSlidingWindow(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 3})
	s := h.session("st1", sessA)
	for seq := uint64(0); seq < 10; seq++ {
		h.mustAccept(s.seg(seq))
		from := uint64(0)
		if seq >= 3 {
			from = seq - 2
		}
		h.wantListing("st1", seqs(from, seq), nil)
		for _, name := range renditionNames {
			pl := h.media("st1", name)
			if pl.mediaSeq != from {
				t.Errorf("seq %d %s: media sequence %d, want %d", seq, name, pl.mediaSeq, from)
			}
			if pl.topMap != "init.mp4" {
				t.Errorf("seq %d %s: map %q", seq, name, pl.topMap)
			}
		}
	}
	h.withState("st1", func(st *state) {
		if len(st.Window) != 3 {
			t.Errorf("state keeps %d entries, want the window of 3", len(st.Window))
		}
	})
}

func TestLastChunkEndsThePlaylists(t *testing.T) {
	t.Parallel()
	t.Run("in order", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, Config{Window: 10})
		s := h.session("st1", sessA)
		h.mustAccept(s.seg(0), s.seg(1))
		if h.media("st1", "source").ended {
			t.Fatal("ended before the last chunk")
		}
		h.mustAccept(s.seg(2, last))
		h.wantListing("st1", seqs(0, 2), nil)
		for _, name := range renditionNames {
			if pl := h.media("st1", name); !pl.ended {
				t.Errorf("%s has no EXT-X-ENDLIST:\n%s", name, pl.raw)
			}
		}
		// A finished session's manifests may be cached longer.
		for _, p := range h.store.all() {
			if p.key == "live/st1/master.m3u8" {
				if p.opts.CacheControl == "" {
					t.Errorf("master without Cache-Control")
				}
			}
		}
		puts := h.store.puts()
		if lastMaster := puts[len(puts)-1]; lastMaster.opts != storage.HeadersFor(lastMaster.key, false) {
			t.Errorf("final %s headers %+v, want the finished-session ones", lastMaster.key, lastMaster.opts)
		}
		// After the end, stray messages of the same session change nothing.
		mark := h.store.mark()
		h.mustAccept(s.seg(2, last), s.seg(3), s.seg(1))
		if puts := h.store.since(mark); len(puts) != 0 {
			t.Errorf("messages after the end wrote %d objects, first %s", len(puts), puts[0].key)
		}
	})
	t.Run("last arrives first", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, Config{Window: 10})
		s := h.session("st1", sessA)
		h.mustAccept(s.seg(2, last), s.seg(0))
		if pl := h.media("st1", "source"); pl.ended || len(pl.segs) != 1 {
			t.Fatalf("want only chunk 0, not ended:\n%s", pl.raw)
		}
		h.mustAccept(s.seg(1))
		h.wantListing("st1", seqs(0, 2), nil)
		if pl := h.media("st1", "audio"); !pl.ended {
			t.Errorf("audio not ended:\n%s", pl.raw)
		}
	})
}

func TestFailedChunkIsListedAsGap(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10})
	s := h.session("st1", sessA)
	h.mustAccept(s.seg(0), s.seg(2)) // 2 waits for 1
	h.mustAccept(s.seg(1, failedChunk))
	h.wantListing("st1", seqs(0, 2), map[string][]uint64{"*": {1}})
	for _, name := range renditionNames {
		pl := h.media("st1", name)
		g, _ := pl.seg("1.m4s")
		if want := float64(chunkDuration(1)) / media.Timescale; math.Abs(g.dur-want) > 0.0005 {
			t.Errorf("%s gap lasts %.3f s, want the chunk's %.3f s", name, g.dur, want)
		}
		if h.get("live/st1/"+name+"/1.m4s") != nil {
			t.Errorf("%s/1.m4s written for a failed chunk", name)
		}
	}
	if listed, gaps := h.svc.Stats(); listed != 2 || gaps != 1 {
		t.Errorf("listed %d gaps %d, want 2 and 1", listed, gaps)
	}
}

func TestFailedRenditionIsAGapInItsPlaylistOnly(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10})
	s := h.session("st1", sessA)
	h.mustAccept(s.seg(0), s.seg(1, failRendition("480p")), s.seg(2))
	h.wantListing("st1", seqs(0, 2), map[string][]uint64{"480p": {1}})
	if h.get("live/st1/480p/1.m4s") != nil {
		t.Error("480p/1.m4s written for a failed rendition")
	}
	if _, ok := h.master("st1").variant("480p/index.m3u8"); !ok {
		t.Error("480p left the multivariant playlist after one failed segment")
	}
	// A rendition that has failed from the start is listed once it works, with gaps before.
	h2 := newHarness(t, Config{Window: 10})
	s2 := h2.session("st2", sessA)
	h2.mustAccept(s2.seg(0, failRendition("360p")))
	if b := h2.get("live/st2/360p/index.m3u8"); b != nil {
		t.Errorf("playlist for a rendition that never worked:\n%s", b)
	}
	if _, ok := h2.master("st2").variant("360p/index.m3u8"); ok {
		t.Error("multivariant playlist offers a rendition that has no segment")
	}
	h2.mustAccept(s2.seg(1))
	h2.wantListing("st2", seqs(0, 1), map[string][]uint64{"360p": {0}})
	if _, ok := h2.master("st2").variant("360p/index.m3u8"); !ok {
		t.Error("360p not offered once it has a segment")
	}
}

func TestMissingChunkBecomesGapAfterTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10, GapTimeout: time.Hour})
	s := h.session("st1", sessA)
	h.mustAccept(s.seg(0), s.seg(2), s.seg(3))
	// A second stream waits too, but not for long yet: it must keep waiting.
	s2 := h.session("st2", sessA)
	h.mustAccept(s2.seg(0), s2.seg(2))
	h.wantListing("st1", seqs(0, 0), nil)

	// Chunk 1 of st1 has been missing for longer than the timeout.
	h.withState("st1", func(st *state) { st.WaitingSince = time.Now().Add(-2 * time.Hour) })
	stop := h.runGapLoop()
	eventually(t, 20*time.Second, "the gap pass", func() bool {
		// The pass is done with st1 once it saved the state, after every manifest.
		return h.savedNextSeq("st1") == 4
	})
	stop() // the pass that listed the gap has finished, st2 included
	h.wantListing("st1", seqs(0, 3), map[string][]uint64{"*": {1}})
	h.wantListing("st2", seqs(0, 0), nil)
	g, _ := h.media("st1", "source").seg("1.m4s")
	if g.dur <= 0 {
		t.Errorf("gap EXTINF %.3f", g.dur)
	}
	if _, gaps := h.svc.Stats(); gaps != 1 {
		t.Errorf("gaps %d, want 1", gaps)
	}

	// The missing chunk turning up late changes nothing; later chunks flow on.
	mark := h.store.mark()
	h.mustAccept(s.seg(1))
	if puts := h.store.since(mark); len(puts) != 0 {
		t.Errorf("late chunk wrote %d objects, first %s", len(puts), puts[0].key)
	}
	h.mustAccept(s.seg(4))
	h.wantListing("st1", seqs(0, 4), map[string][]uint64{"*": {1}})
}

func TestGapTimeoutListsOneMissingChunkPerDeadline(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10, GapTimeout: 20 * time.Millisecond})
	s := h.session("st1", sessA)
	h.mustAccept(s.seg(0), s.seg(3)) // 1 and 2 never come
	h.runGapLoop()
	eventually(t, 20*time.Second, "both gaps", func() bool { return h.savedNextSeq("st1") == 4 })
	h.wantListing("st1", seqs(0, 3), map[string][]uint64{"*": {1, 2}})
}

func TestNewSessionContinuesNumbering(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10})
	a := h.session("st1", sessA)
	h.mustAccept(a.seg(0), a.seg(1), a.seg(2))

	b := h.session("st1", sessB)
	h.mustAccept(b.seg(0), b.seg(1))
	h.wantListing("st1", seqs(0, 4), nil)
	for _, name := range renditionNames {
		pl := h.media("st1", name)
		for _, seg := range pl.segs {
			if seg.disc != (seg.uri == "3.m4s") {
				t.Errorf("%s %s: discontinuity %v; want one, before the new session's first segment:\n%s", name, seg.uri, seg.disc, pl.raw)
			}
		}
	}
	if got := h.get("live/st1/source/3.m4s"); !bytes.Equal(got, b.mediaBytes("source", 0)) {
		t.Error("3.m4s does not hold the new session's first chunk")
	}

	// The old session's stragglers (redeliveries of its listed chunks) are ignored now.
	mark := h.store.mark()
	h.mustAccept(a.seg(2), a.seg(1), a.seg(0))
	if puts := h.store.since(mark); len(puts) != 0 {
		t.Errorf("an older session's messages wrote %d objects, first %s", len(puts), puts[0].key)
	}
	h.wantListing("st1", seqs(0, 4), nil)

	// A session that ended, then a new one: numbering still continues, the end is lifted.
	h.mustAccept(b.seg(2, last))
	if !h.media("st1", "source").ended {
		t.Fatal("session B did not end")
	}
	c := h.session("st1", sessC)
	h.mustAccept(c.seg(0))
	h.wantListing("st1", seqs(0, 6), nil)
	pl := h.media("st1", "source")
	if pl.ended {
		t.Error("a new session's playlist still has EXT-X-ENDLIST")
	}
	if seg, _ := pl.seg("6.m4s"); !seg.disc {
		t.Errorf("no discontinuity before the third session:\n%s", pl.raw)
	}
}

func TestNewSessionDropsTheOldSessionsWaitingChunks(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10})
	a := h.session("st1", sessA)
	h.mustAccept(a.seg(0), a.seg(2)) // 2 waits for 1
	// The new session's numbers come after the old one's: 2 was written.
	b := h.session("st1", sessB)
	h.mustAccept(b.seg(0), b.seg(1))
	h.wantListing("st1", []uint64{0, 3, 4}, nil)
	if pl := h.media("st1", "source"); pl.mediaSeq != 0 {
		t.Errorf("media sequence %d, want 0:\n%s", pl.mediaSeq, pl.raw)
	}
	// The old session's 1 turns up: too late.
	h.mustAccept(a.seg(1))
	h.wantListing("st1", []uint64{0, 3, 4}, nil)
	if got := h.get("live/st1/source/3.m4s"); !bytes.Equal(got, b.mediaBytes("source", 0)) {
		t.Error("3.m4s does not hold the new session's chunk 0")
	}
	// The old session's 1 and 2 will never be listed: their segments go after the grace.
	h.withState("st1", func(st *state) {
		if got := retiredSet(st); fmt.Sprint(got) != "map[1:[360p 480p audio source] 2:[360p 480p audio source]]" {
			t.Errorf("retired %v, want every rendition of 1 and 2", got)
		}
	})
}

func TestDiscontinuitySequenceCountsDiscontinuitiesThatLeft(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 2})
	a := h.session("st1", sessA)
	h.mustAccept(a.seg(0), a.seg(1))
	b := h.session("st1", sessB)
	h.mustAccept(b.seg(0)) // n=2, discontinuity
	if pl := h.media("st1", "source"); pl.discSeq != 0 || !pl.segs[1].disc {
		t.Fatalf("want the discontinuity on 2.m4s and sequence 0:\n%s", pl.raw)
	}
	h.mustAccept(b.seg(1)) // window 2,3: the discontinuity is first
	h.mustAccept(b.seg(2)) // window 3,4: it left
	pl := h.media("st1", "source")
	if pl.discSeq != 1 || pl.mediaSeq != 3 {
		t.Errorf("after the discontinuity left the window: disc seq %d media seq %d, want 1 and 3:\n%s", pl.discSeq, pl.mediaSeq, pl.raw)
	}
}

func TestRestartContinuesFromSavedState(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 3})
	a := h.session("st1", sessA)
	h.mustAccept(a.seg(0), a.seg(1), a.seg(2), a.seg(3), a.seg(4), a.seg(6)) // 6 waits for 5
	rev := h.state.revision("packager.st1")

	h.restart()
	// Redelivery of a chunk listed before the restart: still listed once.
	h.mustAccept(a.seg(4))
	h.wantListing("st1", seqs(2, 4), nil)
	// The chunk 6 that waited survives the restart.
	h.mustAccept(a.seg(5))
	h.wantListing("st1", seqs(4, 6), nil)
	if h.state.revision("packager.st1") <= rev {
		t.Error("state not saved after the restart")
	}

	h.restart()
	// The old session's ingest died holding 7: the new session starts at 8.
	b := h.sessionAt("st1", sessB, 8)
	h.mustAccept(b.seg(0))
	h.wantListing("st1", []uint64{5, 6, 8}, nil)
	pl := h.media("st1", "source")
	if seg, _ := pl.seg("8.m4s"); !seg.disc || pl.mediaSeq != 5 {
		t.Errorf("want media sequence 5 and a discontinuity for the session that started after a restart:\n%s", pl.raw)
	}
	// A message of the old session after the restart is still ignored.
	h.restart()
	h.mustAccept(a.seg(7, last))
	h.wantListing("st1", []uint64{5, 6, 8}, nil)
}

func TestRestartAfterStateSaveFailed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10})
	a := h.session("st1", sessA)
	h.mustAccept(a.seg(0))
	h.state.setPutErr(errors.New("kv unavailable"))
	if err := h.accept(a.seg(1)); err == nil {
		t.Fatal("accept succeeded although the state could not be saved")
	}
	h.state.setPutErr(nil)
	// The job is redelivered to a packager that restarted from the older state: the same
	// segment number is listed again, once.
	h.restart()
	h.mustAccept(a.seg(1), a.seg(2))
	h.wantListing("st1", seqs(0, 2), nil)
}

func TestChangedInitGetsANewName(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 4})
	a := h.session("st1", sessA)
	h.mustAccept(a.seg(0), a.seg(1))

	// The publisher reconnects at another resolution: the source init changes, the rungs' do
	// not.
	b := h.session("st1", sessB)
	b.initV["source"] = "v2"
	h.mustAccept(b.seg(0), b.seg(1))

	src := h.media("st1", "source")
	s2, _ := src.seg("2.m4s")
	if s2.mapTag != "init-2.mp4" || !s2.disc {
		t.Errorf("want EXT-X-DISCONTINUITY and EXT-X-MAP init-2.mp4 before 2.m4s:\n%s", src.raw)
	}
	if s3, _ := src.seg("3.m4s"); s3.mapTag != "" || s3.mapURI != "init-2.mp4" {
		t.Errorf("3.m4s: map tag %q in force %q, want init-2.mp4 in force without a new tag", s3.mapTag, s3.mapURI)
	}
	if got := h.get("live/st1/source/init.mp4"); !bytes.Equal(got, a.initBytes("source")) {
		t.Errorf("init.mp4 overwritten: %q", got)
	}
	if got := h.get("live/st1/source/init-2.mp4"); !bytes.Equal(got, b.initBytes("source")) {
		t.Errorf("init-2.mp4 = %q, want %q", got, b.initBytes("source"))
	}
	for _, name := range []string{"480p", "360p", "audio"} {
		pl := h.media("st1", name)
		for _, seg := range pl.segs {
			if seg.mapTag != "" || seg.mapURI != "init.mp4" {
				t.Errorf("%s %s: map %q/%q, want init.mp4 throughout", name, seg.uri, seg.mapTag, seg.mapURI)
			}
		}
	}

	// Once the old session has left the window the playlist starts with the new init.
	h.mustAccept(b.seg(2), b.seg(3))
	if src := h.media("st1", "source"); src.topMap != "init-2.mp4" {
		t.Errorf("window 2..5 starts with map %q, want init-2.mp4:\n%s", src.topMap, src.raw)
	}

	// Back to the first resolution: it gets a fresh name rather than reusing a name a player
	// may hold with other bytes.
	c := h.session("st1", sessC)
	h.mustAccept(c.seg(0))
	src = h.media("st1", "source")
	s6, _ := src.seg("6.m4s")
	if s6.mapTag == "" || s6.mapTag == "init-2.mp4" {
		t.Fatalf("no new EXT-X-MAP before 6.m4s:\n%s", src.raw)
	}
	if got := h.get("live/st1/source/" + s6.mapTag); !bytes.Equal(got, c.initBytes("source")) {
		t.Errorf("%s = %q, want %q", s6.mapTag, got, c.initBytes("source"))
	}
	// Every listed segment's init in force holds the bytes of the session that made it.
	inits := map[uint64][]byte{2: b.initBytes("source"), 3: b.initBytes("source"), 4: b.initBytes("source"),
		5: b.initBytes("source"), 6: c.initBytes("source")}
	for _, seg := range src.segs {
		n, _ := strconv.ParseUint(strings.TrimSuffix(seg.uri, ".m4s"), 10, 64)
		if got := h.get("live/st1/source/" + seg.mapURI); !bytes.Equal(got, inits[n]) {
			t.Errorf("%s plays with %s = %q, want %q", seg.uri, seg.mapURI, got, inits[n])
		}
	}
}

func TestInitChangeWithinASession(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10})
	a := h.session("st1", sessA)
	h.mustAccept(a.seg(0), a.seg(1))
	a.initV["480p"] = "v2"
	h.mustAccept(a.seg(2))
	pl := h.media("st1", "480p")
	s2, _ := pl.seg("2.m4s")
	if s2.mapTag != "init-2.mp4" || s2.disc {
		t.Errorf("2.m4s: map %q disc %v, want EXT-X-MAP init-2.mp4 and no discontinuity:\n%s", s2.mapTag, s2.disc, pl.raw)
	}
	if got := h.get("live/st1/480p/init-2.mp4"); !bytes.Equal(got, a.initBytes("480p")) {
		t.Errorf("init-2.mp4 = %q", got)
	}
}

func TestStorageFailuresAreRetried(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10})
	s := h.session("st1", sessA)
	// The first two writes (the source's init segment) fail, then the first chunk's source
	// playlist fails once.
	failedPlaylist := false
	h.store.setFail(func(key string, attempt int) error {
		if attempt <= 2 {
			return errInjected
		}
		if key == "live/st1/source/index.m3u8" && h.svc.listed.Load() == 1 && !failedPlaylist {
			failedPlaylist = true
			return errInjected
		}
		return nil
	})
	h.mustAccept(s.seg(0), s.seg(1))
	h.wantListing("st1", seqs(0, 1), nil)
	if fails := h.svc.w.Failures(); fails != 3 {
		t.Errorf("put failures %d, want 3", fails)
	}
	for _, sp := range ladderSpecs {
		if got := h.get("live/st1/" + sp.name + "/init.mp4"); !bytes.Equal(got, s.initBytes(sp.name)) {
			t.Errorf("%s init.mp4 = %q, want %q", sp.name, got, s.initBytes(sp.name))
		}
	}
}

func TestStorageDownFailsTheJobAndListsNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10})
	s := h.session("st1", sessA)
	h.store.setFail(func(string, int) error { return errInjected })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := h.acceptCtx(ctx, h.svc, s.seg(0))
	if err == nil {
		t.Fatal("accept succeeded with storage down")
	}
	if errors.Is(err, errPoison) {
		t.Errorf("storage outage classified as poison: %v", err)
	}
	if b := h.get("live/st1/source/index.m3u8"); b != nil {
		t.Errorf("playlist written:\n%s", b)
	}
	if listed, _ := h.svc.Stats(); listed != 0 {
		t.Errorf("listed %d with storage down", listed)
	}
	// The redelivered job succeeds once storage is back.
	h.store.setFail(nil)
	h.mustAccept(s.seg(0))
	h.wantListing("st1", seqs(0, 0), nil)
}

// The design: "Manifests are uploaded only after every segment they list", and a job whose
// playlists could not be written is retried. The retried job must then write them.
func TestPlaylistWriteFailureIsRepublishedOnRedelivery(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10})
	s := h.session("st1", sessA)
	h.mustAccept(s.seg(0))
	h.store.setFail(func(key string, _ int) error {
		if strings.HasSuffix(key, ".m3u8") {
			return errInjected
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := h.acceptCtx(ctx, h.svc, s.seg(1, last)); err == nil {
		t.Fatal("accept succeeded although no playlist could be written")
	}
	h.store.setFail(nil)
	// JetStream redelivers the job.
	h.mustAccept(s.seg(1, last))
	h.wantListing("st1", seqs(0, 1), nil)
	if pl := h.media("st1", "source"); !pl.ended {
		t.Errorf("the session's end was never published:\n%s", pl.raw)
	}
}

func TestUndecodableOrIncompleteMessages(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10})
	for _, seg := range []queue.Segment{{StreamID: "st1", Seq: 0}, {SessionID: sessA, Seq: 0},
		{StreamID: "st1", SessionID: sessA, Seq: 3, N: 2}} { // a number below the chunk's seq
		if err := h.accept(chunk{seg}); !errors.Is(err, errPoison) {
			t.Errorf("%+v: err %v, want errPoison", seg, err)
		}
	}
	// A rendition without its init segment: poison, not listed.
	s := h.session("st1", sessA)
	c := s.seg(0)
	c[0].Renditions[1].Init = nil
	if err := h.accept(c); !errors.Is(err, errPoison) || !strings.Contains(err.Error(), "init") {
		t.Errorf("rendition without init bytes: err %v, want errPoison", err)
	}
	if b := h.get("live/st1/source/index.m3u8"); b != nil {
		t.Errorf("listed without its audio:\n%s", b)
	}
	h.mustAccept(s.seg(0))
	h.wantListing("st1", seqs(0, 0), nil)
}

func TestTargetDurationFollowsLongChunks(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10, ChunkTarget: 2 * time.Second})
	s := h.session("st1", sessA)
	long := func(seg *queue.Segment) {
		seg.Duration = 4*media.Timescale + media.Timescale/2 // a 4.5 s GOP
		for i, r := range seg.Renditions {
			seg.Renditions[i].Duration = seg.Duration * int64(r.Timescale) / media.Timescale
		}
	}
	h.mustAccept(s.seg(0), s.seg(1, long), s.seg(2))
	for _, name := range renditionNames {
		if pl := h.media("st1", name); pl.target != 5 {
			t.Errorf("%s target %d, want 5 for a 4.5 s segment", name, pl.target)
		}
	}
}

func TestStateSurvivesJSON(t *testing.T) {
	t.Parallel()
	// The state that restarts depend on round-trips through its JSON form.
	h := newHarness(t, Config{Window: 4})
	a := h.session("st1", sessA)
	h.mustAccept(a.seg(0), a.seg(1, failRendition("480p")), a.seg(3))
	var before []byte
	h.withState("st1", func(st *state) {
		var err error
		if before, err = json.Marshal(st); err != nil {
			t.Fatal(err)
		}
	})
	saved, _, err := h.state.Get(context.Background(), "packager.st1")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(saved, before) {
		t.Errorf("saved state differs from the live one:\n%s\n%s", saved, before)
	}
	st := newState("st1", 2*time.Second)
	if err := json.Unmarshal(saved, st); err != nil {
		t.Fatal(err)
	}
	again, _ := json.Marshal(st)
	if !bytes.Equal(again, saved) {
		t.Errorf("state does not round-trip:\n%s\n%s", saved, again)
	}
	if len(st.Pending) != 1 || st.Pending[3] == nil || st.WaitingSince.IsZero() {
		t.Errorf("pending chunk or its deadline lost: %+v", st)
	}
	for _, name := range renditionNames {
		b1, err1 := st.mediaPlaylist(name)
		var b2 []byte
		var err2 error
		h.withState("st1", func(live *state) { b2, err2 = live.mediaPlaylist(name) })
		if err1 != nil || err2 != nil || !bytes.Equal(b1, b2) {
			t.Errorf("%s: restored state renders differently (%v, %v)", name, err1, err2)
		}
	}
}

// A backlog listed in one update (the chunks that waited behind one whose transcoder died)
// stays in the live playlists for a window's duration, even past the window's length: trimmed
// straight to the window, its first segments would be in no playlist a player ever fetched.
func TestBacklogStaysListed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 3, ListedHold: time.Hour})
	a := h.session("st1", sessA)
	h.mustAccept(a.seg(0))
	// 1 is late; 2..7 wait for it and are listed together with it.
	h.mustAccept(a.seg(2), a.seg(3), a.seg(4), a.seg(5), a.seg(6), a.seg(7))
	h.wantListing("st1", seqs(0, 0), nil)
	h.mustAccept(a.seg(1))
	h.wantListing("st1", seqs(0, 7), nil)

	// Once entries have been listed for the hold, the window is back to 3.
	h2 := newHarness(t, Config{Window: 3, ListedHold: time.Nanosecond})
	b := h2.session("st1", sessA)
	h2.mustAccept(b.seg(0), b.seg(2), b.seg(3), b.seg(4), b.seg(5), b.seg(6), b.seg(7))
	time.Sleep(time.Millisecond)
	h2.mustAccept(b.seg(1))
	h2.wantListing("st1", seqs(5, 7), nil)
}

// The records carry each rendition's init segment: the packager writes it once per session
// and rendition (again only when it changes), under the name the playlists give it.
func TestInitSegmentsFromTheRecords(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 4})
	s := h.session("st1", sessA)
	h.mustAccept(s.seg(0), s.seg(1), s.seg(2))
	h.wantListing("st1", seqs(0, 2), nil)
	writes := map[string]int{}
	for _, p := range h.store.puts() {
		if strings.HasSuffix(p.key, ".mp4") {
			writes[p.key]++
		}
	}
	for _, sp := range s.specs {
		pl := h.media("st1", sp.name)
		if pl.topMap != "init.mp4" {
			t.Errorf("%s: map %q, want init.mp4", sp.name, pl.topMap)
		}
		key := "live/st1/" + sp.name + "/init.mp4"
		if got := h.get(key); !bytes.Equal(got, s.initBytes(sp.name)) {
			t.Errorf("%s = %q, want %q", key, got, s.initBytes(sp.name))
		}
		if writes[key] != 1 {
			t.Errorf("%s written %d times, want once", key, writes[key])
		}
	}
	if len(writes) != len(s.specs) {
		t.Errorf("init writes %v, want one per rendition", writes)
	}
}
