package faults

import (
	"testing"
	"time"
)

// TestTranscoderKilledEvery5s: with two transcoders encoding the default ladder (a 640x360
// source gives the 360p rung, so real ffmpeg encodes die), one of them is killed every 5 s
// during a 60 s publish (SIGKILL, with its ffmpeg, as a dying container), the two taking turns,
// each kill aimed at an ffmpeg encode in flight, and started again half a second later, so two
// keep running. JetStream hands each killed job to a worker again after its AckWait (6 s); a
// redelivered job is often killed again on the next victim.
//
// Nothing may be lost, as a live player sees it: every segment number of every rendition is
// listed by some playlist the watcher fetched (a backlog listed in one update stays in the
// playlist for a window's duration), is in the bucket and decodes, none is a gap or listed
// twice, timelines are continuous, every rendition's segment n starts on the same instant, and
// media sequence numbers never go backwards.
func TestTranscoderKilledEvery5s(t *testing.T) {
	c := newCluster(t, clusterConfig{transcoders: 2, packagers: 1, profile: "default",
		transcoderArgs: []string{"--transcoder-concurrency", "1", "--log-level", "debug"}})
	trans := []*proc{c.procByName("transcoder-1"), c.procByName("transcoder-2")}
	s := c.createStream("kill transcoders", "default")
	const seconds = 60
	w := newWatcher(t, s.base(), 250*time.Millisecond).start()
	started := time.Now()
	pub := startPublisher(t, c.ffmpeg, publishArgs(c.publishURL(s), seconds))
	waitFor(t, 30*time.Second, "the first segment listed", func() bool { return w.listed("source") > 0 })

	// encoding: busy with ffmpeg running for the ladder.
	encoding := func(p *proc) bool { return p.running() && len(descendants(p.pid())) > 0 }
	kills, midEncode := 0, 0
	for i := 0; !pub.exited(); i++ {
		next := time.Now().Add(5 * time.Second)
		victim := trans[i%2]
		// Aim at an encode in flight: wait (briefly) for the victim's ffmpeg.
		poll(2*time.Second, 20*time.Millisecond, func() bool { return encoding(victim) })
		if pub.exited() {
			break
		}
		if victim.kill() > 0 {
			midEncode++ // an ffmpeg child died with it
		}
		kills++
		t.Logf("%5.1fs: killed %s (kill %d, %d mid-encode so far)", time.Since(started).Seconds(), victim.name, kills, midEncode)
		hold(t.Context(), 500*time.Millisecond)
		victim.start()
		victim.waitReady(30 * time.Second)
		hold(t.Context(), time.Until(next))
	}
	if err := pub.wait(time.Minute); err != nil {
		t.Fatalf("publisher: %v", err)
	}
	// A job killed last comes back after AckWait (6 s), and may be killed more than once.
	w.waitEnded(90 * time.Second)
	res := w.check(c, checkOpts{minSegments: seconds / 2, frames: seconds * 30, align: true, rungs: []string{"360p"}})
	t.Logf("FIGURES transcoder kill -9 every 5 s: %d kills (%d with an ffmpeg encode running), "+
		"%d segments per rendition x %d renditions, %d lost, longest playlist stall %s, test took %s",
		kills, midEncode, res.segments, len(res.renditions), res.lost,
		longestStall(w.updates("source")).Round(100*time.Millisecond), time.Since(started).Round(time.Second))
	if kills < 8 {
		t.Errorf("only %d kills happened", kills)
	}
	if midEncode == 0 {
		t.Errorf("no kill caught an ffmpeg encode in flight")
	}
}

// longestStall is the longest time between consecutive playlist updates.
func longestStall(ups []time.Time) time.Duration {
	if len(ups) < 2 {
		return 0
	}
	d, _ := maxInterval(ups, ups[0], ups[len(ups)-1])
	return d
}

// procByName finds a process the cluster started.
func (c *cluster) procByName(name string) *proc {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		if p.name == name {
			return p
		}
	}
	c.t.Fatalf("no process %s", name)
	return nil
}
