package packager

// Tests of the split records: a chunk's ingest record (source and audio) and its transcoder
// record (the rungs) merge into one listed entry; either may be late, missing, duplicated or
// failed. And of the numbering that comes with them: segment numbers from the records, media
// sequence numbers counted by the packager.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/streams"
)

// age moves the stream's waiting clocks back by d, as if the records had come d earlier: the
// gap timeout can then pass without the test waiting for it.
func (h *harness) age(streamID string, d time.Duration) {
	h.t.Helper()
	h.withState(streamID, func(st *state) {
		if !st.WaitingSince.IsZero() {
			st.WaitingSince = st.WaitingSince.Add(-d)
		}
		for _, p := range st.Pending {
			p.Since = p.Since.Add(-d)
		}
		for i := range st.Retired {
			st.Retired[i].At = st.Retired[i].At.Add(-d)
		}
	})
}

// A chunk is listed once both its records are in, whichever comes first, and a duplicate of
// either changes nothing.
func TestChunkWaitsForBothRecords(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		order string // i: the ingest's record, t: the transcoder's
	}{
		{"ingest first", "it"},
		{"transcoder first", "ti"},
		{"ingest twice", "iit"},
		{"transcoder twice", "tit"},
		{"both again after", "itti"},
		{"transcoder twice first", "tti"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, Config{Window: 10})
			s := h.session("st1", sessA)
			h.mustAccept(s.seg(0))
			listedAt := -1
			for i, who := range tc.order {
				c := s.ingest(1)
				if who == 't' {
					c = s.transcoder(1)
				}
				mark := h.store.mark()
				h.mustAccept(c)
				complete := strings.Contains(tc.order[:i+1], "i") && strings.Contains(tc.order[:i+1], "t")
				pl := h.media("st1", "source")
				if got := len(pl.segs); got != 1+btoi(complete) {
					t.Fatalf("after %q: %d entries, want %d:\n%s", tc.order[:i+1], got, 1+btoi(complete), pl.raw)
				}
				wrote := slices.ContainsFunc(h.store.since(mark), func(p putRecord) bool { return isManifest(p.key) })
				if complete && listedAt < 0 {
					listedAt = i
					if !wrote {
						t.Errorf("after %q: the chunk is complete but no playlist was written", tc.order[:i+1])
					}
				} else if wrote {
					t.Errorf("after %q: playlists written although nothing changed", tc.order[:i+1])
				}
			}
			h.wantListing("st1", seqs(0, 1), nil)
			if listed, gaps := h.svc.Stats(); listed != 2 || gaps != 0 {
				t.Errorf("listed %d gaps %d, want 2 and 0", listed, gaps)
			}
			h.withState("st1", func(st *state) {
				if len(st.Pending) != 0 || len(st.Retired) != 0 {
					t.Errorf("pending %v retired %v, want neither", st.Pending, st.Retired)
				}
				if e := st.Window[1]; e.Duration != float64(chunkDuration(1))/90000 || len(e.Renditions) != 4 {
					t.Errorf("entry %+v: want the ingest's duration and all four renditions", e)
				}
			})
		})
	}
}

// A chunk whose transcoder record never comes is listed after the gap timeout with the source
// and the audio; its rungs are gaps in their playlists, and DASH lists the chunk in a Period of
// its own without them. The record turning up late lists nothing and its segments are deleted
// after the grace.
func TestTranscoderRecordNeverComes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10, GapTimeout: time.Hour, DeleteGrace: time.Hour})
	s := h.session("st1", sessA)
	h.mustAccept(s.seg(0), s.ingest(1), s.seg(2))
	h.wantListing("st1", seqs(0, 0), nil)
	h.tend("st1")
	h.wantListing("st1", seqs(0, 0), nil) // not yet: the timeout has not passed

	h.age("st1", 2*time.Hour)
	h.tend("st1")
	h.wantListing("st1", seqs(0, 2), map[string][]uint64{"480p": {1}, "360p": {1}})
	if listed, gaps := h.svc.Stats(); listed != 3 || gaps != 0 {
		t.Errorf("listed %d gaps %d, want 3 and 0: the chunk plays, only its rungs are gaps", listed, gaps)
	}
	for _, name := range ingestNames {
		seg, _ := h.media("st1", name).seg("1.m4s")
		if want := s.rendSeconds(map[string]string{"source": "video", "audio": "audio"}[name], 1); seg.gap || seg.dur != roundMS(want) {
			t.Errorf("%s 1.m4s: %+v, want listed for %.3f s", name, seg, want)
		}
	}
	m := h.manifest("st1")
	if got := m.periodIDs(); fmt.Sprint(got) != fmt.Sprint([]string{sessA, sessA + "-1", sessA + "-2"}) {
		t.Errorf("Periods %v, want the session's, then one for chunk 1, then one from chunk 2:\n%s", got, m.raw)
	}
	for name, want := range map[string][]uint64{"source": {0, 1, 2}, "audio": {0, 1, 2}, "480p": {0, 2}, "360p": {0, 2}} {
		if got := m.numbers(name); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("DASH %s lists %v, want %v:\n%s", name, got, want, m.raw)
		}
	}

	// The transcoder's record comes after all: its segments are never listed.
	mark := h.store.mark()
	h.mustAccept(s.transcoder(1))
	if puts := h.store.since(mark); len(puts) != 0 {
		t.Errorf("the late record wrote %s", puts[0].key)
	}
	h.wantListing("st1", seqs(0, 2), map[string][]uint64{"480p": {1}, "360p": {1}})
	h.tend("st1")
	if gone := h.store.deletedSince(mark); len(gone) != 0 {
		t.Errorf("deleted %v before the grace", gone)
	}
	h.age("st1", 2*time.Hour)
	h.tend("st1")
	if gone := h.store.deletedSince(mark); fmt.Sprint(sortedS(gone)) != "[live/st1/360p/1.m4s live/st1/480p/1.m4s]" {
		t.Errorf("deleted %v, want the late rungs of 1", gone)
	}
}

func sortedS(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func roundMS(s float64) float64 { return float64(int64(s*1000+0.5)) / 1000 }

// A chunk whose ingest record never comes (its transcoder's did) is listed after the gap timeout
// with the rungs only.
func TestIngestRecordNeverComes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10, GapTimeout: time.Hour})
	s := h.session("st1", sessA)
	h.mustAccept(s.seg(0), s.transcoder(1), s.seg(2))
	h.wantListing("st1", seqs(0, 0), nil)
	h.age("st1", 2*time.Hour)
	h.tend("st1")
	h.wantListing("st1", seqs(0, 2), map[string][]uint64{"source": {1}, "audio": {1}})
	seg, _ := h.media("st1", "480p").seg("1.m4s")
	if seg.gap || seg.dur != roundMS(s.rendSeconds("video", 1)) {
		t.Errorf("480p 1.m4s: %+v, want listed", seg)
	}
	m := h.manifest("st1")
	for name, want := range map[string][]uint64{"source": {0, 2}, "audio": {0, 2}, "480p": {0, 1, 2}, "360p": {0, 1, 2}} {
		if got := m.numbers(name); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("DASH %s lists %v, want %v:\n%s", name, got, want, m.raw)
		}
	}
	h.withState("st1", func(st *state) {
		if e := st.Window[1]; !strings.Contains(e.Renditions["480p"].Map, "init") || e.Duration != float64(chunkDuration(1))/90000 {
			t.Errorf("entry %+v: want the transcoder's duration", e)
		}
	})
}

// A transcoder record saying the chunk could not be encoded (poison input) does not hold the
// chunk up: its rungs are gaps, the source and audio play.
func TestFailedTranscoderRecord(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10})
	s := h.session("st1", sessA)
	h.mustAccept(s.seg(0), s.seg(1, failedRecord), s.seg(2))
	h.wantListing("st1", seqs(0, 2), map[string][]uint64{"480p": {1}, "360p": {1}})
	if listed, gaps := h.svc.Stats(); listed != 3 || gaps != 0 {
		t.Errorf("listed %d gaps %d, want 3 and 0", listed, gaps)
	}
	// Failed first: the same once the ingest's record comes.
	h.mustAccept(s.transcoder(3, failedRecord))
	h.wantListing("st1", seqs(0, 2), map[string][]uint64{"480p": {1}, "360p": {1}})
	h.mustAccept(s.ingest(3), s.transcoder(3, failedRecord))
	h.wantListing("st1", seqs(0, 3), map[string][]uint64{"480p": {1, 3}, "360p": {1, 3}})
	h.withState("st1", func(st *state) {
		if e := st.Window[3]; strings.Count(e.Renditions["source"].Map, "init") != 1 || len(e.Renditions) != 2 {
			t.Errorf("entry %+v", e)
		}
	})
}

// A session whose ingest died left numbers unused: the next session's records start higher.
// The playlists' URIs are the records' numbers, EXT-X-MEDIA-SEQUENCE goes on counting entries,
// and the DASH Period of the new session addresses the files by their numbers.
func TestNumbersSkipMediaSequenceContinues(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 3})
	a := h.session("st1", sessA)
	h.mustAccept(a.seg(0), a.seg(1), a.seg(2)) // its ingest dies: no last chunk
	b := h.sessionAt("st1", sessB, 37)
	for seq, want := range []struct {
		uris     string
		mediaSeq uint64
	}{
		{"[1.m4s 2.m4s 37.m4s]", 1},
		{"[2.m4s 37.m4s 38.m4s]", 2},
		{"[37.m4s 38.m4s 39.m4s]", 3},
		{"[38.m4s 39.m4s 40.m4s]", 4},
	} {
		h.mustAccept(b.seg(uint64(seq)))
		for _, name := range renditionNames {
			pl := h.media("st1", name)
			if fmt.Sprint(pl.uris()) != want.uris || pl.mediaSeq != want.mediaSeq {
				t.Errorf("after B's chunk %d: %s lists %v from media sequence %d, want %s from %d:\n%s",
					seq, name, pl.uris(), pl.mediaSeq, want.uris, want.mediaSeq, pl.raw)
			}
		}
	}
	if pl := h.media("st1", "source"); pl.discSeq != 1 {
		t.Errorf("discontinuity sequence %d, want 1 once the discontinuity left:\n%s", pl.discSeq, pl.raw)
	}
	m := h.manifest("st1")
	if len(m.periods) != 1 || m.periods[0].id != sessB {
		t.Fatalf("Periods %v, want session B's:\n%s", m.periodIDs(), m.raw)
	}
	for _, name := range renditionNames {
		r := m.periods[0].reps[name]
		if fmt.Sprint(m.numbers(name)) != "[38 39 40]" || r.segs[0].key != name+"/38.m4s" || r.init != name+"/init.mp4" {
			t.Errorf("DASH %s: %+v, want 38..40 at %s/38.m4s...", name, r, name)
		}
	}
	b2 := h.savedState("st1")
	if b2.NextN != 41 || b2.NextMSN != 7 || b2.MSNBase != 3 || b2.Base != 37 {
		t.Errorf("saved next_n %d next_msn %d msn_base %d base %d, want 41 7 3 37", b2.NextN, b2.NextMSN, b2.MSNBase, b2.Base)
	}
	// Restarted, the packager carries on with both counts.
	h.restart()
	h.mustAccept(b.seg(4))
	if pl := h.media("st1", "source"); fmt.Sprint(pl.uris()) != "[39.m4s 40.m4s 41.m4s]" || pl.mediaSeq != 5 {
		t.Errorf("after a restart: %v from %d:\n%s", pl.uris(), pl.mediaSeq, pl.raw)
	}
}

// A record of a session that was replaced is not listed; its segments are deleted after the
// grace, unless the session is recorded. A redelivery of a record the window still lists
// deletes nothing.
func TestLateRecordOfAnEarlierSession(t *testing.T) {
	t.Parallel()
	for _, recorded := range []bool{false, true} {
		t.Run(fmt.Sprintf("recorded %v", recorded), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, Config{Window: 10, DeleteGrace: time.Hour})
			a := h.session("st1", sessA)
			a.recorded = recorded
			h.mustAccept(a.seg(0), a.seg(1))
			b := h.sessionAt("st1", sessB, 10) // A's ingest died holding 2..9
			h.mustAccept(b.seg(0))
			mark := h.store.mark()
			h.mustAccept(a.seg(2), a.seg(1))
			if puts := h.store.since(mark); len(puts) != 0 {
				t.Errorf("late records wrote %s", puts[0].key)
			}
			h.wantListing("st1", []uint64{0, 1, 10}, nil)
			h.tend("st1")
			h.age("st1", 2*time.Hour)
			h.tend("st1")
			var want []string
			if !recorded {
				for _, name := range renditionNames {
					want = append(want, "live/st1/"+name+"/2.m4s")
				}
			}
			if gone := sortedS(h.store.deletedSince(mark)); fmt.Sprint(gone) != fmt.Sprint(want) {
				t.Errorf("deleted %v, want %v", gone, want)
			}
			for _, name := range renditionNames {
				if b := h.get("live/st1/" + name + "/1.m4s"); b == nil {
					t.Errorf("%s/1.m4s, still listed, was deleted", name)
				}
			}
		})
	}
}

// A state saved by the previous release has no media sequence numbers (entries without "msn",
// next_msn 0) and pending chunks without their numbers: load makes the media sequence numbers
// the segment numbers, as they were, and numbers the pending chunks from the session's base.
func TestStateOfThePreviousReleaseLoads(t *testing.T) {
	t.Parallel()
	const sess0 = "01900000-0000-7000-8000-000000000009" // before A
	h := newHarness(t, Config{Window: 3})
	z := h.session("st1", sess0)
	h.mustAccept(z.seg(0), z.seg(1), z.seg(2), z.seg(3), z.seg(4, last))
	// A is numbered from 5; its chunk 4 (9.m4s) waits for 3.
	a := h.session("st1", sessA)
	h.mustAccept(a.seg(0), a.seg(1), a.seg(2), a.seg(4))
	if pl := h.media("st1", "source"); pl.mediaSeq != 5 || fmt.Sprint(pl.uris()) != "[5.m4s 6.m4s 7.m4s]" {
		t.Fatalf("before: %v from %d", pl.uris(), pl.mediaSeq)
	}

	// What the previous release saved: the same, without what it did not have.
	b, _, err := h.state.Get(context.Background(), stateKey("st1"))
	if err != nil {
		t.Fatal(err)
	}
	var old map[string]any
	if err := json.Unmarshal(b, &old); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"next_msn", "msn_base", "dash_opened", "period_pto"} {
		delete(old, k)
	}
	for _, e := range old["window"].([]any) {
		delete(e.(map[string]any), "msn")
		delete(e.(map[string]any), "period")
	}
	for _, p := range old["pending"].(map[string]any) {
		for _, k := range []string{"n", "ingest", "rungs", "transcoder", "forced", "since"} {
			delete(p.(map[string]any), k)
		}
	}
	b, err = json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), `"msn"`) || strings.Contains(string(b), `"ingest"`) {
		t.Fatalf("not the old form: %s", b)
	}
	h.state.set(stateKey("st1"), b)
	h.restart()

	h.mustAccept(a.seg(3)) // lists 8, and 9 that waited
	pl := h.media("st1", "source")
	if pl.mediaSeq != 7 || fmt.Sprint(pl.uris()) != "[7.m4s 8.m4s 9.m4s]" {
		t.Errorf("after the upgrade: %v from media sequence %d, want 7..9 from 7:\n%s", pl.uris(), pl.mediaSeq, pl.raw)
	}
	h.wantListing("st1", seqs(7, 9), nil)
	c := h.sessionAt("st1", sessB, 20)
	h.mustAccept(c.seg(0))
	pl = h.media("st1", "source")
	if pl.mediaSeq != 8 || fmt.Sprint(pl.uris()) != "[8.m4s 9.m4s 20.m4s]" {
		t.Errorf("next session: %v from media sequence %d, want 8, 9, 20 from 8:\n%s", pl.uris(), pl.mediaSeq, pl.raw)
	}
	st := h.savedState("st1")
	if st.NextMSN != 11 || st.Window[2].MSN != 10 || st.Window[2].N != 20 {
		t.Errorf("next_msn %d, last entry %+v: want 11, and 20.m4s at media sequence 10", st.NextMSN, st.Window[2])
	}
	if m := h.manifest("st1"); fmt.Sprint(m.periodIDs()) != fmt.Sprint([]string{sessA, sessB}) {
		t.Errorf("Periods %v:\n%s", m.periodIDs(), m.raw)
	}
}

// When the transcoders were out for longer than the gap timeout they skip the chunks that old,
// so those chunks' records never come. Every chunk that waited past the timeout is listed at
// once (rungs as gaps, a chunk missing altogether as a gap), not one per timeout: the stream
// catches up instead of falling further behind.
func TestTranscoderOutageCostsOneTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 10, GapTimeout: time.Hour})
	s := h.session("st1", sessA)
	h.mustAccept(s.seg(0), s.ingest(1), s.ingest(2), s.ingest(4), s.ingest(5)) // 3 lost for good
	h.age("st1", 2*time.Hour)
	h.mustAccept(s.ingest(6)) // still within the timeout
	h.tend("st1")
	rungGaps := []uint64{1, 2, 4, 5}
	h.wantListing("st1", seqs(0, 5), map[string][]uint64{"*": {3}, "480p": rungGaps, "360p": rungGaps})
	if listed, gaps := h.svc.Stats(); listed != 5 || gaps != 1 {
		t.Errorf("listed %d gaps %d, want 5 and 1", listed, gaps)
	}
	// The transcoders are back: 6 completes and is listed at once.
	h.mustAccept(s.transcoder(6))
	h.wantListing("st1", seqs(0, 6), map[string][]uint64{"*": {3}, "480p": rungGaps, "360p": rungGaps})
}

// A recorded session's records say so: its segments are kept when they leave the window, and
// when it ends its recording is made over them.
func TestRecordedSessionKeepsItsSegments(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 2, DeleteGrace: time.Hour})
	recs := newFakeRecordings()
	h.svc.SetRecordings(recs)
	a := h.session("st1", sessA)
	a.recorded = true
	h.mustAccept(a.seg(0), a.seg(1), a.seg(2), a.seg(3, last))
	h.withState("st1", func(st *state) {
		if len(st.Retired) != 0 {
			t.Errorf("a recorded session's segments retired: %+v", st.Retired)
		}
	})
	h.svc.jobs.Wait()
	rec := recs.get("st1", sessA)
	if rec == nil {
		t.Fatal("no recording registered")
	}
	if rec.FirstN != 0 || rec.LastN != 3 || !slices.Equal(rec.Renditions, renditionNames) {
		t.Errorf("recording %+v", rec)
	}
	vod := parseMedia(t, h.get("vod/st1/"+sessA+"/480p/index.m3u8"))
	if !vod.vod || !vod.ended || len(vod.segs) != 4 || vod.segs[0].uri != "../../../../live/st1/480p/0.m4s" {
		t.Errorf("VOD playlist:\n%s", vod.raw)
	}
	if m := parseMPD(t, h.get("vod/st1/"+sessA+"/manifest.mpd")); m.dynamic || fmt.Sprint(m.numbers("360p")) != "[0 1 2 3]" {
		t.Errorf("VOD MPD:\n%s", m.raw)
	}
	var milestones []any
	for _, ev := range h.q.eventsOf(queue.EventSegment) {
		milestones = append(milestones, ev.Data["milestone"])
	}
	if fmt.Sprint(milestones) != "[first ended]" || len(h.q.eventsOf(queue.EventRecordingReady)) != 1 {
		t.Errorf("events: milestones %v, %d recording.ready; want first, ended and one", milestones,
			len(h.q.eventsOf(queue.EventRecordingReady)))
	}

	// A later unrecorded session's segments go after the grace, not the recording's.
	b := h.session("st1", sessB)
	mark := h.store.mark()
	h.mustAccept(b.seg(0), b.seg(1), b.seg(2))
	h.age("st1", 2*time.Hour)
	h.tend("st1")
	var want []string
	for _, name := range renditionNames {
		want = append(want, "live/st1/"+name+"/4.m4s")
	}
	slices.Sort(want)
	if gone := sortedS(h.store.deletedSince(mark)); fmt.Sprint(gone) != fmt.Sprint(want) {
		t.Errorf("deleted %v, want %v", gone, want)
	}

	// Retention deletes the recording: its files and the live segments it lists.
	h.svc.cfg.RecordingRetention = time.Hour
	recs.setCreated("st1", sessA, time.Now().Add(-2*time.Hour))
	h.expired = true
	mark = h.store.mark()
	h.svc.expireRecordings(context.Background())
	if recs.get("st1", sessA) != nil {
		t.Error("expired recording still registered")
	}
	gone := h.store.deletedSince(mark)
	for _, key := range []string{"vod/st1/" + sessA + "/master.m3u8", "vod/st1/" + sessA + "/manifest.mpd", "live/st1/source/0.m4s", "live/st1/audio/3.m4s"} {
		if !slices.Contains(gone, key) || h.get(key) != nil {
			t.Errorf("%s not deleted", key)
		}
	}
	if h.get("live/st1/source/5.m4s") == nil {
		t.Error("the later session's listed segment was deleted with the recording")
	}
}

// Segments of an unrecorded stream are deleted once they left the window and the grace passed,
// never while a playlist lists them.
func TestSegmentsDeletedAfterTheGrace(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 2, DeleteGrace: time.Hour})
	s := h.session("st1", sessA)
	h.mustAccept(s.seg(0), s.seg(1), s.seg(2), s.seg(3))
	h.tend("st1")
	if gone := h.store.deletedSince(0); len(gone) != 0 {
		t.Errorf("deleted %v within the grace", gone)
	}
	h.age("st1", 2*time.Hour)
	h.mustAccept(s.seg(4)) // 2 leaves now: its grace starts now
	h.tend("st1")
	var want []string
	for _, n := range []string{"0", "1"} {
		for _, name := range renditionNames {
			want = append(want, "live/st1/"+name+"/"+n+".m4s")
		}
	}
	slices.Sort(want)
	if gone := sortedS(h.store.deletedSince(0)); fmt.Sprint(gone) != fmt.Sprint(want) {
		t.Errorf("deleted %v, want %v", gone, want)
	}
	h.wantListing("st1", seqs(3, 4), nil)
}

// fakeRecordings is the recordings registry in memory.
type fakeRecordings struct {
	mu   sync.Mutex
	recs map[string]*streams.Recording // by stream/session
	gone map[string]bool               // deleted streams
}

func newFakeRecordings() *fakeRecordings {
	return &fakeRecordings{recs: map[string]*streams.Recording{}, gone: map[string]bool{}}
}

func (f *fakeRecordings) PutRecording(_ context.Context, r *streams.Recording) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := *r
	f.recs[r.StreamID+"/"+r.SessionID] = &c
	return nil
}

func (f *fakeRecordings) ListRecordings(_ context.Context, streamID string) ([]*streams.Recording, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*streams.Recording
	for _, r := range f.recs {
		if streamID == "*" || r.StreamID == streamID {
			c := *r
			out = append(out, &c)
		}
	}
	return out, nil
}

func (f *fakeRecordings) DeleteRecording(_ context.Context, streamID, sessionID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.recs, streamID+"/"+sessionID)
	return nil
}

func (f *fakeRecordings) Exists(_ context.Context, streamID string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.gone[streamID], nil
}

func (f *fakeRecordings) get(streamID, sessionID string) *streams.Recording {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.recs[streamID+"/"+sessionID]; r != nil {
		c := *r
		return &c
	}
	return nil
}

func (f *fakeRecordings) setCreated(streamID, sessionID string, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recs[streamID+"/"+sessionID].CreatedAt = at
}

// A DASH Period keeps its id and its start while the window slides past its first segments:
// ids come from the Period's first segment, not from what is still listed.
func TestDASHPeriodIDsStayAsTheWindowSlides(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Window: 2})
	s := h.session("st1", sessA)
	for seq, want := range []string{
		"[" + sessA + "]",
		"[" + sessA + " " + sessA + "-1]", // chunk 1 without its rungs: a Period of its own
		"[" + sessA + "-1 " + sessA + "-2]",
		"[" + sessA + "-2]",
	} {
		var mods []func(*queue.Segment)
		if seq == 1 {
			mods = append(mods, failedRecord)
		}
		h.mustAccept(s.seg(uint64(seq), mods...))
		if got := fmt.Sprint(h.manifest("st1").periodIDs()); got != want {
			t.Errorf("after chunk %d: Periods %s, want %s", seq, got, want)
		}
	}
	// checkPublished holds every version to the same starts and the same Period per segment.
}
