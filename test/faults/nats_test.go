package faults

import (
	"testing"
	"time"
)

// TestNATSRestart: the standalone `gopcast nats` server is killed (SIGKILL) mid-stream, between
// two jobs, and started again 6 s later on the same port with the same data directory. Every
// role reconnects on its own; the ingest buffers chunks meanwhile (up to 30) and keeps its
// publisher: a lease heartbeat that timed out during the outage but was applied after the
// reconnect is recognised as this session's own (it used to read as "lease lost" and cut
// every publisher). No playlist may be corrupt (every listed segment decodes, timelines
// continuous, nothing lost), and the pipeline must resume: segments cut after the restart are
// listed, and the stream ends with EXT-X-ENDLIST.
func TestNATSRestart(t *testing.T) {
	runNATSRestart(t, 6*time.Second)
}

func runNATSRestart(t *testing.T, outage time.Duration) {
	c := newCluster(t, clusterConfig{transcoders: 1, packagers: 1})
	s := c.createStream("nats restart", "passthrough")
	const seconds = 36
	w := newWatcher(t, s.base(), 100*time.Millisecond).start()
	started := time.Now()
	pub := startPublisher(t, c.ffmpeg, publishArgs(c.publishURL(s), seconds))
	waitFor(t, 30*time.Second, "4 segments listed", func() bool { return w.listed("source") >= 4 })

	// Kill it between jobs (TestNATSRestartMidJob kills it during one).
	c.waitQuiet(t)
	before := w.listed("source")
	down := time.Now()
	c.nats.kill()
	t.Logf("%5.1fs: NATS killed between jobs with %d segments listed", time.Since(started).Seconds(), before)
	hold(t.Context(), outage)
	c.nats.start()
	c.nats.waitReady(30 * time.Second)
	up := time.Now()
	t.Logf("%5.1fs: NATS up again after %s", time.Since(started).Seconds(), up.Sub(down).Round(time.Millisecond))
	for _, p := range []*proc{c.api, c.ingest, c.procByName("transcoder-1"), c.procByName("packager-1")} {
		p.waitReady(30 * time.Second) // NATS reconnected
	}
	reconnected := time.Since(up)

	// The pipeline resumes: a segment cut after the restart is listed.
	after := before + int(time.Since(down)/(2*time.Second)) + 1
	waitFor(t, 60*time.Second, "segments listed after the restart", func() bool {
		return w.listed("source") > after || pub.exited()
	})
	resumed := time.Since(up)
	if pub.exited() {
		t.Errorf("the publisher was dropped after the NATS restart (ffmpeg: %v); the ingest's log:\n%s", pub.err, c.ingest.logs.tail(4<<10))
	}
	pubErr := pub.wait(time.Minute)
	w.waitEnded(60 * time.Second)
	o := checkOpts{minSegments: seconds / 2}
	if pubErr == nil {
		o.frames = seconds * 30 // kept all along: every frame published is there
	}
	res := w.check(c, o)
	t.Logf("FIGURES NATS kill -9 + restart: down %s, roles ready %s after, segment %d listed %s after the restart; publisher kept: %v; "+
		"%d segments x %d renditions, %d lost, test took %s",
		up.Sub(down).Round(10*time.Millisecond), reconnected.Round(10*time.Millisecond), after, resumed.Round(10*time.Millisecond),
		pubErr == nil, res.segments, len(res.renditions), res.lost, time.Since(started).Round(time.Second))
}

// TestNATSRestartMidJob: NATS is killed while the only transcoder is in the middle of a job (a
// ladder stream's session, whose chunks it reads and whose job it keeps alive, so its NATS
// requests are in flight), and is back 1.5 s later; the stream must go on within 20 s. A
// request whose server died never gets its reply and nats.go does not fail it on reconnect:
// every JetStream call has its own deadline (queue.CallTimeout), so the call fails fast and is
// retried, where it used to wait out the job's whole timeout (and the packager ended the
// session meanwhile).
func TestNATSRestartMidJob(t *testing.T) {
	c := newCluster(t, clusterConfig{transcoders: 1, packagers: 1})
	tr := c.procByName("transcoder-1")
	s := c.createStream("nats restart mid-job", "default")
	w := newWatcher(t, s.base(), 100*time.Millisecond).start()
	pub := startPublisher(t, c.ffmpeg, publishArgs(c.publishURL(s), 60))
	waitFor(t, 30*time.Second, "3 segments listed", func() bool { return w.listed("source") >= 3 })
	if !poll(30*time.Second, 2*time.Millisecond, func() bool {
		b, err := tr.metric("gopcast_transcoder_busy_slots")
		return err == nil && b > 0
	}) {
		t.Fatal("the transcoder was never seen busy in 30 s")
	}
	c.nats.kill()
	before := w.listed("source")
	down := time.Now()
	hold(t.Context(), 1500*time.Millisecond)
	c.nats.start()
	c.nats.waitReady(30 * time.Second)
	t.Logf("NATS killed with the transcoder busy and %d segments listed, back after %s", before, time.Since(down).Round(time.Millisecond))
	if !poll(20*time.Second, 100*time.Millisecond, func() bool { return w.listed("source") > before+1 }) {
		t.Errorf("no new segment listed within 20 s of NATS coming back")
	}
	ok := poll(3*time.Minute, time.Second, func() bool { return w.listed("source") > before+1 })
	t.Logf("the stream went on %s after the restart (%v)", time.Since(down).Round(time.Second), ok)
	pub.kill()
}

// waitQuiet waits for a moment with no job in flight: no transcoder busy, no chunk or segment
// message handed out and not acknowledged.
func (c *cluster) waitQuiet(t *testing.T) {
	t.Helper()
	quiet := func() bool {
		c.mu.Lock()
		procs := append([]*proc(nil), c.procs...)
		c.mu.Unlock()
		for _, p := range procs {
			if p.role == "transcoder" && p.running() {
				if b, err := p.metric("gopcast_transcoder_busy_slots"); err != nil || b > 0 {
					return false
				}
			}
		}
		for _, sc := range [][2]string{{"GOPCAST_JOBS", "transcoders"}, {"GOPCAST_SEGMENTS", "packagers"}} {
			if n, err := c.ackPending(sc[0], sc[1]); err != nil || n > 0 {
				return false
			}
		}
		return true
	}
	waitFor(t, 30*time.Second, "a moment with no job in flight", func() bool {
		// Twice in a row, 100 ms apart: not just between two calls of one job.
		return quiet() && func() bool { time.Sleep(100 * time.Millisecond); return quiet() }()
	})
}
