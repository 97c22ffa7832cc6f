package faults

import (
	"strings"
	"testing"
	"time"
)

// TestGracefulShutdown stops each role with SIGTERM while a stream is encoded with the default
// ladder (two transcoders, two packagers), as an orchestrator does on a rollout:
//   - a transcoder in the middle of a chunk, with a replacement started at once: it finishes
//     the chunk (or hands it back) and exits 0, and no segment is missing;
//   - a packager (the other one carries on), then started again;
//   - the api, then started again: the stream is still live in it;
//   - the ingest, mid-GOP, with the publisher connected: it ends the session cleanly (the last,
//     partial chunk flushed), so every playlist gets EXT-X-ENDLIST with nothing lost, and the
//     stream is idle once a new ingest is up;
//   - the NATS server, once the stream has ended.
//
// Every process must exit with status 0, saying "gopcast stopped cleanly", within 30 s.
func TestGracefulShutdown(t *testing.T) {
	c := newCluster(t, clusterConfig{transcoders: 2, packagers: 2, profile: "default",
		transcoderArgs: []string{"--transcoder-concurrency", "1", "--log-level", "debug"}})
	s := c.createStream("graceful", "default")
	w := newWatcher(t, s.base(), 250*time.Millisecond).start()
	started := time.Now()
	proxy := newRTMPProxy(t, c.rtmpAddr) // forwards; tells when the publisher's media clock started
	pub := startPublisher(t, c.ffmpeg, publishArgs("rtmp://"+proxy.addr()+"/live/"+s.StreamKey, 120))
	waitFor(t, 30*time.Second, "3 segments listed", func() bool { return w.listed("source") >= 3 })

	type stop struct {
		name string
		took time.Duration
	}
	var stops []stop
	stopped := func(p *proc, took time.Duration, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s exited with %v after SIGTERM", p.name, err)
		}
		if !strings.Contains(p.logsSince("signal terminated"), "gopcast stopped cleanly") {
			t.Errorf("%s did not log a clean stop", p.name)
		}
		stops = append(stops, stop{p.name, took})
		t.Logf("%5.1fs: %s stopped by SIGTERM in %s", time.Since(started).Seconds(), p.name, took.Round(time.Millisecond))
	}

	// Transcoder, mid-chunk; a replacement starts at once.
	var victim *proc
	busy := func(p *proc) bool {
		b, err := p.metric("gopcast_transcoder_busy_slots")
		return err == nil && b > 0
	}
	waitFor(t, 30*time.Second, "a transcoder busy with a chunk", func() bool {
		for _, name := range []string{"transcoder-1", "transcoder-2"} {
			if p := c.procByName(name); busy(p) {
				victim = p
				return true
			}
		}
		return false
	})
	at := time.Now()
	victim.sigterm()
	c.add("transcoder")
	err := victim.waitExit(30 * time.Second)
	stopped(victim, time.Since(at), err)
	after := victim.logsSince("signal terminated")
	finished := strings.Count(after, `msg="chunk transcoded"`)
	handedBack := strings.Count(after, "handing it back")
	if finished+handedBack == 0 {
		t.Errorf("%s neither finished nor handed back the chunk it was encoding:\n%s", victim.name, after)
	}

	// Packager, while the other one runs; then started again.
	pk := c.procByName("packager-1")
	d, err := pk.term(30 * time.Second)
	stopped(pk, d, err)
	pk.start()
	pk.waitReady(30 * time.Second)

	// API; then started again.
	d, err = c.api.term(30 * time.Second)
	stopped(c.api, d, err)
	c.api.start()
	c.api.waitReady(30 * time.Second)
	if st, err := c.streamStatus(s.ID); err != nil || st != "live" {
		t.Errorf("after the api restart the stream is %q (%v), want live", st, err)
	}

	// Ingest, mid-GOP (a second after a keyframe), with the publisher connected.
	waitFor(t, 60*time.Second, "12 segments listed", func() bool { return w.listed("source") >= 12 })
	hold(t.Context(), time.Until(proxy.midGOP()))
	d, err = c.ingest.term(30 * time.Second)
	stopped(c.ingest, d, err)
	if !poll(10*time.Second, 100*time.Millisecond, pub.exited) {
		t.Errorf("the publisher is still connected after the ingest stopped")
	}
	w.waitEnded(60 * time.Second)
	c.ingest.start()
	c.ingest.waitReady(30 * time.Second)
	waitFor(t, 30*time.Second, "the stream idle", func() bool {
		st, err := c.streamStatus(s.ID)
		return err == nil && st == "idle"
	})
	sess, err := c.sessions(s.ID)
	if err != nil || len(sess) != 1 || sess[0].EndedAt == nil {
		t.Errorf("sessions %+v (%v), want one ended", sess, err)
	} else {
		t.Logf("session ended: %q", sess[0].EndReason)
	}

	// NATS, with nothing going on.
	d, err = c.nats.term(30 * time.Second)
	stopped(c.nats, d, err)

	res := w.check(c, checkOpts{minSegments: 12, align: true, rungs: []string{"360p"}, abruptEnd: true})
	var took []string
	for _, st := range stops {
		took = append(took, st.name+" "+st.took.Round(10*time.Millisecond).String())
	}
	t.Logf("FIGURES graceful shutdown (SIGTERM): %s; transcoder in-flight chunks finished %d, handed back %d; "+
		"%d segments x %d renditions, %d lost, %d tail holes, test took %s",
		strings.Join(took, ", "), finished, handedBack, res.segments, len(res.renditions), res.lost, res.tailHoles, time.Since(started).Round(time.Second))
}
