package ingest

import (
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/segment"
	"github.com/gopcast/gopcast/pkg/streams"
)

// A chunk's segment number is the session's base plus its seq, and a stream's numbers run on
// across its sessions: the second session's first chunk takes the number after the first
// session's last, with no number used twice and none skipped after a clean end. The records,
// the end messages and the bucket's keys agree.
func TestSegmentNumbersRunOnAcrossSessions(t *testing.T) {
	t.Parallel()
	r := newRig(t, fastConfig())
	st, key := r.stream("numbers")
	src := makeSource(t, 8, 30, "640x360", true) // with a rung: the end messages carry numbers too

	var sessions [][]chunkSeen
	for k := range 2 {
		publishClip(t, r, key, src, true, true)
		var id string
		eventually(t, 10*time.Second, "a new session's records", func() bool {
			for _, rec := range r.allRecords() {
				if rec.StreamID == st.ID && (k == 0 || rec.SessionID != sessions[0][0].rec.SessionID) {
					id = rec.SessionID
					return true
				}
			}
			return false
		})
		cs := r.waitSessionEnd(st, id, 10*time.Second)
		checkChunks(t, r, cs, checks{})
		sessions = append(sessions, cs)
	}
	next := uint64(0) // a new stream's numbers start at 0
	for k, cs := range sessions {
		for _, c := range cs {
			if c.rec.N != next {
				t.Errorf("session %d chunk %d: segment number %d, want %d", k, c.rec.Seq, c.rec.N, next)
			}
			if c.end == nil || c.end.N != c.rec.N {
				t.Errorf("session %d chunk %d: end message %+v, record number %d", k, c.rec.Seq, c.end, c.rec.N)
			}
			next++
		}
	}
	// Each number's segments were written once, and no other numbers were.
	for _, rendition := range []string{"source", "audio"} {
		keys := r.keys(t, "live/"+st.ID+"/"+rendition+"/")
		var want []string
		for _, cs := range sessions {
			for _, c := range cs {
				if len(c.rec.Renditions) > 0 {
					want = append(want, segment.Key(st.ID, rendition, c.rec.N))
				}
			}
		}
		if strings.Join(keys, " ") != strings.Join(slices.Sorted(slices.Values(want)), " ") {
			t.Errorf("%s segments in the bucket: %q, want %q", rendition, keys, want)
		}
		for _, k := range keys {
			if n := r.store.writes(k); n != 1 {
				t.Errorf("%s written %d times", k, n)
			}
		}
	}
}

// A passthrough stream has no rungs to encode: its sessions publish no encode job, no chunk
// part and no chunk end, only a segment record per chunk and the live and idle events, however
// tall the source. The same source on the default profile feeds the transcoders.
func TestPassthroughPublishesNoFeed(t *testing.T) {
	t.Parallel()
	r := newRig(t, fastConfig())
	src := makeSource(t, 8, 30, "640x360", true)
	for _, tc := range []struct {
		profile string
		encode  bool
	}{{"passthrough", false}, {"default", true}} {
		t.Run(tc.profile, func(t *testing.T) {
			st, key := r.streamWith("profile "+tc.profile, tc.profile)
			publishClip(t, r, key, src, true, true)
			sess := r.sessionOf(st.ID)
			cs := r.waitSessionEnd(st, sess, 10*time.Second)
			checkChunks(t, r, cs, checks{})
			jobs, parts, ends := r.tap.count("PublishJob", sess), r.tap.count("PublishPart", sess), r.tap.count("PublishChunk", sess)
			records, events := r.tap.count("PublishSegment", sess), r.tap.count("PublishEvent", sess)
			t.Logf("%s: %d chunks; messages: %d jobs, %d parts, %d ends, %d records, %d events", tc.profile, len(cs), jobs, parts, ends, records, events)
			if records != len(cs) || events != 2 {
				t.Errorf("%d records and %d events for %d chunks, want one record per chunk and 2 events", records, events, len(cs))
			}
			if !tc.encode {
				if jobs+parts+ends != 0 {
					t.Errorf("a passthrough session published %d jobs, %d parts and %d chunk ends", jobs, parts, ends)
				}
				if r.feedOf(sess) != nil {
					t.Error("the transcoders got a job for a passthrough session")
				}
				for _, c := range cs {
					if c.rec.Encoding {
						t.Errorf("chunk %d's record says a transcoder's follows", c.rec.Seq)
					}
				}
				return
			}
			if jobs != 1 || ends != len(cs) || parts < len(cs)-1 {
				t.Errorf("%d jobs, %d parts, %d ends for %d chunks: want one job and an end per chunk", jobs, parts, ends, len(cs))
			}
		})
	}
}

// A backlog that stays full (the queue or the bucket unreachable for MaxBacklog chunks) drops
// the publisher: the server hangs up, the session record ends with the reason, the lease is
// released once the session's outbox gives up what it holds. Nothing of the dropped session
// reaches the other roles after the outage, nothing it published lists a segment that is not
// in the bucket, and the stream's next session runs normally, with numbers after the first
// session's.
func TestFullBacklogDropsPublisher(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		size string // a rung to encode (a feed) or not
		down func(r *rig, down bool)
		idle int // stream.idle events that get out: the first is lost with the queue
	}{
		{"queue unreachable", "640x360", func(r *rig, down bool) { r.tap.fail.Store(down) }, 1},
		{"storage unreachable", "160x90", func(r *rig, down bool) { r.store.fail.Store(down) }, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := fastConfig()
			cfg.MaxBacklog = 2
			r := newRig(t, cfg)
			st, key := r.stream("backlog " + tc.name)
			src := makeSource(t, 8, 30, tc.size, true)

			tc.down(r, true)
			c, err := r.connect("/live/" + key)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			sw := watchStatus(c)
			p := newPusher(t, c, src, true, true)
			_ = p.push(src, 0, time.Hour, 0, nil) // four chunks: two fit in the backlog
			// The session holds what it could not deliver for up to 30 s before it gives up.
			var first *streams.Session
			eventually(t, 60*time.Second, "the session to end", func() bool {
				list := r.sessions(st.ID)
				if len(list) == 1 && list[0].EndedAt != nil {
					first = list[0]
					return true
				}
				return false
			})
			t.Logf("session ended: %q", first.EndReason)
			if !strings.Contains(first.EndReason, "chunk backlog over 2 chunks") {
				t.Errorf("session record ends with %q, want the full backlog", first.EndReason)
			}
			eventually(t, 10*time.Second, "the server to hang up", sw.closed)
			eventually(t, 10*time.Second, "the lease to be released", func() bool { return r.live(st.ID) == nil })
			r.waitLog("chunk backlog not delivered before timeout; dropping it", time.Second)
			if tc.name == "queue unreachable" && r.tap.failures("PublishSegment") == 0 {
				t.Error("no segment record publish failed")
			}
			if tc.name == "storage unreachable" && r.store.failures() == 0 {
				t.Error("no storage write failed")
			}
			written := r.keys(t, "live/"+st.ID+"/source/")

			// Back up: the stream takes a new session, whose numbers follow every number the
			// first one may have written. It is published in real time, as encoders do (a
			// burst of four chunks at once would overflow a backlog of two by itself).
			tc.down(r, false)
			publishPaced(t, r, key, src, true, true, realtime(1))
			var second string
			eventually(t, 10*time.Second, "the second session's records", func() bool {
				for _, rec := range r.allRecords() {
					if rec.StreamID == st.ID && rec.SessionID != first.ID {
						second = rec.SessionID
						return true
					}
				}
				return false
			})
			cs := r.waitSessionEnd(st, second, 10*time.Second)
			checkChunks(t, r, cs, checks{})
			for _, k := range written {
				n, err := strconv.ParseUint(strings.TrimSuffix(path.Base(k), ".m4s"), 10, 64)
				if err != nil {
					t.Fatalf("segment key %q", k)
				}
				if n >= cs[0].rec.N {
					t.Errorf("the second session starts at number %d; the first wrote %s", cs[0].rec.N, k)
				}
			}
			if got := r.endReason(st.ID, second); got != "publisher left" {
				t.Errorf("the second session ends with %q", got)
			}
			// Nothing of the first session arrived, late or otherwise.
			if n := len(r.chunksOf(first.ID)); n != 0 {
				t.Errorf("%d records of the dropped session reached the packagers", n)
			}
			if f := r.feedOf(first.ID); f != nil && (len(f.parts) > 0 || len(f.ends) > 0) {
				t.Errorf("chunks of the dropped session reached a transcoder: %d with parts, %d ends", len(f.parts), len(f.ends))
			}
			if n := r.tap.count("PublishSegment", first.ID) + r.tap.count("PublishChunk", first.ID) + r.tap.count("PublishPart", first.ID); n != 0 {
				t.Errorf("%d media messages of the dropped session got through", n)
			}
			if n := len(r.eventsOf(queue.EventStreamIdle, st.ID)); n != tc.idle {
				t.Errorf("%d stream.idle events, want %d", n, tc.idle)
			}
		})
	}
}
