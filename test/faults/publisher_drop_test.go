package faults

import (
	"sync"
	"testing"
	"time"
)

// TestPublisherDropped: two publishers vanish without a goodbye (no deleteStream, no FCUnpublish)
// mid-GOP: one's connection is reset (ffmpeg killed, the ingest gets a TCP RST), the other's
// goes silent (ffmpeg killed, a black hole between it and the ingest: no FIN, no RST, so only
// the ingest's read timeout, 10 s, notices). For each, the session must end, every playlist get
// EXT-X-ENDLIST, the stream be idle again in the API, with nothing lost before the cut.
func TestPublisherDropped(t *testing.T) {
	c := newCluster(t, clusterConfig{transcoders: 1, packagers: 1})
	type drop struct {
		mode  string
		s     *stream
		proxy *rtmpProxy
		pub   *publisher
		w     *watcher
		cut   time.Time
		ended time.Duration // cut to EXT-X-ENDLIST seen
		idle  time.Duration // cut to status idle
		res   result
	}
	drops := []*drop{{mode: "reset"}, {mode: "blackhole"}}
	for _, d := range drops {
		d.s = c.createStream("dropped publisher, "+d.mode, "passthrough")
		d.proxy = newRTMPProxy(t, c.rtmpAddr)
		d.w = newWatcher(t, d.s.base(), 100*time.Millisecond).start()
		d.pub = startPublisher(t, c.ffmpeg, publishArgs("rtmp://"+d.proxy.addr()+"/live/"+d.s.StreamKey, 120))
	}
	started := time.Now()
	for _, d := range drops {
		waitFor(t, 30*time.Second, d.mode+": 3 segments listed", func() bool { return d.w.listed("source") >= 3 })
		if st, err := c.streamStatus(d.s.ID); err != nil || st != "live" {
			t.Fatalf("%s: stream status %q (%v), want live", d.mode, st, err)
		}
	}
	// Cut mid-GOP, away from a chunk boundary (a session that ends just after a keyframe has
	// no audio in its last segment: TestLastChunkWithoutAudio).
	hold(t.Context(), time.Until(drops[0].proxy.midGOP()))
	for _, d := range drops {
		d.proxy.setMode(d.mode)
		d.pub.kill()
		d.cut = time.Now()
	}
	t.Logf("%5.1fs: publishers killed", time.Since(started).Seconds())

	var wg sync.WaitGroup
	for _, d := range drops {
		wg.Go(func() {
			// Read timeout (10 s) plus packaging, on a loaded machine.
			if !poll(45*time.Second, 100*time.Millisecond, d.w.allEnded) {
				t.Errorf("%s: no EXT-X-ENDLIST within 45 s of the cut", d.mode)
				return
			}
			d.ended = time.Since(d.cut)
			if !poll(30*time.Second, 100*time.Millisecond, func() bool {
				st, err := c.streamStatus(d.s.ID)
				return err == nil && st == "idle"
			}) {
				t.Errorf("%s: stream not idle within 30 s of EXT-X-ENDLIST", d.mode)
				return
			}
			d.idle = time.Since(d.cut)
		})
	}
	wg.Wait()
	for _, d := range drops {
		sess, err := c.sessions(d.s.ID)
		switch {
		case err != nil:
			t.Errorf("%s: sessions: %v", d.mode, err)
		case len(sess) != 1 || sess[0].Status != "ended" || sess[0].EndedAt == nil:
			t.Errorf("%s: sessions %+v, want one ended", d.mode, sess)
		default:
			t.Logf("%s: session ended: %q", d.mode, sess[0].EndReason)
		}
		d.res = d.w.check(c, checkOpts{minSegments: 3, abruptEnd: true})
	}
	for _, d := range drops {
		t.Logf("FIGURES publisher dropped (%s): EXT-X-ENDLIST %s after the cut, idle %s after; %d segments x %d renditions, %d lost, %d tail holes",
			d.mode, d.ended.Round(10*time.Millisecond), d.idle.Round(10*time.Millisecond), d.res.segments, len(d.res.renditions),
			d.res.lost, d.res.tailHoles)
	}
	if drops[1].ended > 0 && drops[1].ended < 9*time.Second {
		t.Errorf("the silent publisher's session ended %s after the cut, before the read timeout: did the black hole leak a FIN?", drops[1].ended)
	}
}
