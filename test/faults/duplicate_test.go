package faults

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTranscodersFinishSameChunk: of two transcoders, the one encoding is frozen (SIGSTOP, with
// its ffmpeg) for longer than a chunk's AckWait, so JetStream hands its chunk to the other.
//
// "jobs": the transcoders take no live chunks, so every chunk is a job and an ffmpeg runs only
// while one is encoded: the frozen one is caught in the middle of a job. The other finishes
// that job; then the frozen one is let go and finishes the same chunk too. Its segment message
// carries the same Nats-Msg-Id and is de-duplicated, its late ack is refused: the chunk's
// segments are written once and listed once, and nothing else changes.
//
// "live": chunks are encoded live, on an encoder chain (one ffmpeg for the stream's
// consecutive chunks), which runs between chunks too. The frozen one holds the chain, and
// perhaps a live chunk or a job; whether it finishes its chunk again after the resume depends
// on whether the other worker's status request outlasted the freeze (CI saw both), so this
// mode asks only what a viewer sees: the other transcoder takes over while the first is
// frozen, and every segment is listed once, none lost.
func TestTranscodersFinishSameChunk(t *testing.T) {
	t.Run("jobs", func(t *testing.T) { finishSameChunk(t, false) })
	t.Run("live", func(t *testing.T) { finishSameChunk(t, true) })
}

func finishSameChunk(t *testing.T, live bool) {
	c := newCluster(t, clusterConfig{transcoders: 2, packagers: 1, profile: "default",
		transcoderArgs: []string{"--transcoder-concurrency", "1", "--encode-arriving=" + strconv.FormatBool(live), "--log-level", "debug"}})
	trans := []*proc{c.procByName("transcoder-1"), c.procByName("transcoder-2")}
	s := c.createStream("same chunk twice", "default")
	const seconds = 30
	w := newWatcher(t, s.base(), 250*time.Millisecond).start()
	pub := startPublisher(t, c.ffmpeg, publishArgs(c.publishURL(s), seconds))
	waitFor(t, 30*time.Second, "the first segment listed", func() bool { return w.listed("source") > 0 })

	// Freeze whichever transcoder is running ffmpeg (t1), with its ffmpeg; t2 is the other.
	// Stopped first and looked at after, so the encode cannot end in between.
	var t1, t2 *proc
	var kids []int
	waitFor(t, 30*time.Second, "a transcoder frozen mid-encode", func() bool {
		for i, p := range trans {
			if !p.running() || len(descendants(p.pid())) == 0 {
				continue
			}
			p.signal(syscall.SIGSTOP)
			if kids = descendants(p.pid()); len(kids) == 0 {
				p.signal(syscall.SIGCONT) // the encode ended meanwhile
				continue
			}
			for _, k := range kids {
				_ = syscall.Kill(k, syscall.SIGSTOP)
			}
			t1, t2 = p, trans[1-i]
			return true
		}
		return false
	})
	t.Logf("froze %s mid-encode; %s stays", t1.name, t2.name)
	frozen := time.Now()
	done2, _ := t2.metric("gopcast_transcoder_chunks_total")
	// AckWait is 6 s: the job goes to t2, which finishes it.
	hold(t.Context(), 9*time.Second)
	t1.logs.mark("resumed")
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGCONT)
	}
	t1.signal(syscall.SIGCONT)
	t.Logf("%s frozen mid-encode for %s", t1.name, time.Since(frozen).Round(100*time.Millisecond))
	if after, _ := t2.metric("gopcast_transcoder_chunks_total"); after <= done2 {
		t.Errorf("%s transcoded no chunk while %s was frozen (%v -> %v)", t2.name, t1.name, done2, after)
	}
	if !live {
		// The frozen one finishes its encode and publishes the same segment.
		waitFor(t, 30*time.Second, "the frozen transcoder done with the chunk", func() bool {
			l := t1.logsSince("resumed")
			return strings.Contains(l, "ack failed") || strings.Contains(l, "chunk transcoded")
		})
	}
	// JetStream answers a late ack of a message already acked from its redelivery with an
	// OK (or an error: "ack failed"); either way the job is done once.
	late := t1.logsSince("resumed")
	t.Logf("%s after the resume: ack refused %v", t1.name, strings.Contains(late, "ack failed"))

	if err := pub.wait(time.Minute); err != nil {
		t.Fatalf("publisher: %v", err)
	}
	w.waitEnded(60 * time.Second)
	res := w.check(c, checkOpts{minSegments: seconds / 2, frames: seconds * 30, align: true, rungs: []string{"360p"}})
	pk := c.procByName("packager-1")
	listed, err := pk.metric("gopcast_packager_segments_listed_total")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := t1.metric("gopcast_transcoder_chunks_total")
	b, _ := t2.metric("gopcast_transcoder_chunks_total")
	t.Logf("FIGURES transcoder frozen 9 s (live chunks %v): %d segments per rendition, %.0f listed by the packager, "+
		"the frozen and the other transcoder finished %.0f + %.0f chunks, %d lost, longest wait between source playlist updates %s",
		live, res.segments, listed, a, b, res.lost, longestStall(w.updates("source")).Round(100*time.Millisecond))
	if !live && int(a+b) <= res.segments && !strings.Contains(late, "ack failed") {
		t.Errorf("transcoders finished %.0f chunks for %d segments: the frozen chunk was not finished twice", a+b, res.segments)
	}
	if int(listed) != res.segments {
		t.Errorf("the packager listed %.0f segments for %d chunks: a duplicate was listed", listed, res.segments)
	}
}
