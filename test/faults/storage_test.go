package faults

import (
	"strings"
	"testing"
	"time"
)

// TestStorageOutage: MinIO is stopped for 10 s mid-stream, then started again on the same port
// with the same data. The roles that write retry with backoff (the ingest its segments, the
// packager its playlists; JetStream redelivers a record whose retries ran out), so nothing is
// lost or reordered, and the playlist catches up. The outage shows in the writers' logs and in
// their gopcast_storage_put_failures_total. Reported: the catch-up time, from MinIO's start to
// the playlist listing the segment that was being cut at that moment, and to the playlist's
// usual delay.
func TestStorageOutage(t *testing.T) {
	c := newCluster(t, clusterConfig{transcoders: 1, packagers: 1})
	pk := c.procByName("packager-1")
	s := c.createStream("storage outage", "passthrough")
	const seconds = 40
	const chunk = 2 * time.Second
	w := newWatcher(t, s.base(), 100*time.Millisecond).start()
	started := time.Now()
	pub := startPublisher(t, c.ffmpeg, publishArgs(c.publishURL(s), seconds))
	waitFor(t, 30*time.Second, "4 segments listed", func() bool { return w.listed("source") >= 4 })

	// The live edge before the outage: segment last was listed at lastAt.
	last := uint64(w.listed("source") - 1)
	lastAt := w.firstSeen("source", last)
	stopAt := time.Now()
	c.minio.Stop()
	t.Logf("%5.1fs: MinIO stopped (segment %d was listed %s before)", time.Since(started).Seconds(), last, stopAt.Sub(lastAt).Round(time.Millisecond))
	hold(t.Context(), 10*time.Second-time.Since(stopAt))
	if err := c.minio.Start(); err != nil {
		t.Fatalf("starting MinIO again: %v", err)
	}
	up := time.Now()
	t.Logf("%5.1fs: MinIO up again after %s", time.Since(started).Seconds(), up.Sub(stopAt).Round(time.Millisecond))

	// The segment being cut when storage came back: the pre-outage cadence, extrapolated.
	live := last + uint64(up.Sub(lastAt)/chunk)
	waitFor(t, 60*time.Second, "the playlist to catch up", func() bool { return w.listed("source") > int(live) })
	caughtUp := w.firstSeen("source", live).Sub(up)
	// Back to the usual delay: the first segment listed no later after its due time (the
	// cadence from segment last) than segment last itself was.
	var normal time.Duration
	waitFor(t, 60*time.Second, "the playlist's usual delay", func() bool {
		for n := live; n < uint64(w.listed("source")); n++ {
			due := lastAt.Add(time.Duration(n-last) * chunk)
			if at := w.firstSeen("source", n); !at.IsZero() && at.Sub(due) < 500*time.Millisecond {
				normal = at.Sub(up)
				return true
			}
		}
		return false
	})

	// A passthrough stream's segments are the ingest's to write, its playlists the
	// packager's: the outage shows in both, or at least in the one that was writing.
	var fails float64
	var logs string
	for _, p := range []*proc{c.ingest, pk} {
		f, err := p.metric("gopcast_storage_put_failures_total")
		if err != nil {
			t.Error(err)
		}
		fails += f
		logs += p.logs.String()
	}
	if fails <= 0 {
		t.Errorf("gopcast_storage_put_failures_total = %v after a 10 s outage", fails)
	}
	if !strings.Contains(logs, "storage write failed") {
		t.Errorf("neither the ingest's nor the packager's log shows the storage errors")
	}

	if err := pub.wait(time.Minute); err != nil {
		t.Fatalf("publisher: %v", err)
	}
	w.waitEnded(90 * time.Second)
	res := w.check(c, checkOpts{minSegments: seconds / 2, frames: seconds * 30})
	t.Logf("FIGURES MinIO outage 10 s: catch-up %s to the segment live at restart (%d), %s to the usual listing delay; "+
		"%v storage write failures counted, %d warnings in the log; %d segments x %d renditions, %d lost, test took %s",
		caughtUp.Round(10*time.Millisecond), live, normal.Round(10*time.Millisecond), fails,
		strings.Count(logs, "storage write failed"), res.segments, len(res.renditions), res.lost,
		time.Since(started).Round(time.Second))
}
