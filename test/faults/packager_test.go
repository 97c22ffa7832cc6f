package faults

import (
	"syscall"
	"testing"
	"time"
)

// TestPackagerKilled: two packagers share a stream's work (state in JetStream KV with
// compare-and-swap). Each is killed once mid-stream (SIGKILL) and started again 2 s later:
// packager-1 at whatever moment the test gets to it, packager-2 while it holds a chunk (it is
// frozen until the playlist stalls, which shows it took the next chunk, then killed), the worst
// case, where the chunk comes back only after the segment AckWait (2.5 s). The playlists must go
// on, media sequence numbers never go backwards and no segment is lost. The takeover time, the
// longest interval between updates of the source playlist around each kill, is reported
// (design.md: within two segment durations).
func TestPackagerKilled(t *testing.T) {
	c := newCluster(t, clusterConfig{transcoders: 1, packagers: 2})
	p1, p2 := c.procByName("packager-1"), c.procByName("packager-2")
	s := c.createStream("kill packagers", "passthrough")
	const seconds = 44
	w := newWatcher(t, s.base(), 100*time.Millisecond).start()
	started := time.Now()
	pub := startPublisher(t, c.ffmpeg, publishArgs(c.publishURL(s), seconds))
	waitFor(t, 30*time.Second, "4 segments listed", func() bool { return w.listed("source") >= 4 })

	// Kill 1: at an arbitrary moment.
	kill1 := time.Now()
	p1.kill()
	t.Logf("%5.1fs: killed %s", time.Since(started).Seconds(), p1.name)
	hold(t.Context(), 2*time.Second)
	p1.start()
	p1.waitReady(30 * time.Second)

	// Kill 2: while holding a chunk. Freeze packager-2 half a second before the next chunk is
	// due; if packager-1 takes it (the playlist moves on), let packager-2 go and try again with
	// the next one; if the playlist stalls, the chunk is in packager-2's hands.
	lastUpdate := func() time.Time { ups := w.updates("source"); return ups[len(ups)-1] }
	frozen := time.Now()
	holding, attempts := false, 0
	for !holding && !pub.exited() && attempts < 12 {
		attempts++
		hold(t.Context(), time.Until(lastUpdate().Add(1500*time.Millisecond)))
		n := w.listed("source")
		p2.signal(syscall.SIGSTOP)
		poll(6*time.Second, 50*time.Millisecond, func() bool {
			return w.listed("source") > n || time.Since(lastUpdate()) > 3500*time.Millisecond
		})
		if w.listed("source") > n {
			p2.signal(syscall.SIGCONT)
			continue
		}
		holding = !pub.exited()
	}
	kill2 := time.Now()
	p2.kill()
	t.Logf("%5.1fs: killed %s (holding a chunk: %v, after %d attempts)", time.Since(started).Seconds(), p2.name, holding, attempts)
	hold(t.Context(), 2*time.Second)
	p2.start()
	p2.waitReady(30 * time.Second)

	if err := pub.wait(time.Minute); err != nil {
		t.Fatalf("publisher: %v", err)
	}
	w.waitEnded(60 * time.Second)
	res := w.check(c, checkOpts{minSegments: seconds / 2, frames: seconds * 30})
	ups := w.updates("source")
	normal, _ := maxInterval(ups, ups[0], kill1.Add(-2*time.Second))
	take1, _ := maxInterval(ups, kill1.Add(-3*time.Second), frozen)
	take2, at2 := maxInterval(ups, kill2.Add(-8*time.Second), kill2.Add(12*time.Second))
	next1 := firstAfter(ups, kill1).Sub(kill1)
	next2 := firstAfter(ups, kill2).Sub(kill2)
	t.Logf("FIGURES packager kill -9: takeover (longest interval between source playlist updates) %s at an arbitrary kill "+
		"(next update %s after it), %s when the victim held a chunk (%v; stall began %s before the kill, next update %s after it); "+
		"updates every <= %s before the kills; %d segments x %d renditions, %d lost, test took %s",
		take1.Round(10*time.Millisecond), next1.Round(10*time.Millisecond), take2.Round(10*time.Millisecond), holding,
		kill2.Sub(at2).Round(10*time.Millisecond), next2.Round(10*time.Millisecond), normal.Round(10*time.Millisecond),
		res.segments, len(res.renditions), res.lost, time.Since(started).Round(time.Second))
	// design.md: the playlists continue within two segment durations of a packager's death
	// (the segment AckWait is 2.5 s), with a second of slack for a loaded machine.
	for _, d := range []time.Duration{next1, next2} {
		if d > 5*time.Second {
			t.Errorf("the playlist moved on %s after a kill, want within two segment durations", d)
		}
	}
	if !holding {
		t.Errorf("packager-2 never took a chunk while frozen (%d attempts)", attempts)
	}
	if firstAfter(ups, kill2).IsZero() {
		t.Errorf("the playlist did not move after the second kill")
	}
}
