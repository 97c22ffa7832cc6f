package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/gopcast/gopcast/pkg/queue"
)

// liveSink records one live chunk as a transcoder receives it.
type liveSink struct {
	mu    sync.Mutex
	data  bytes.Buffer
	parts int
	job   *queue.Chunk
	err   error
	ended bool
}

func (s *liveSink) Part(p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data.Write(p)
	s.parts++
}

func (s *liveSink) End(job *queue.Chunk, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.job, s.err, s.ended = job, err, true
}

// liveTaker takes every live chunk offered on q, as a transcoder with free slots would.
type liveTaker struct {
	mu    sync.Mutex
	sinks map[string]*liveSink // by chunk id
}

func takeLive(t *testing.T, q *queue.Conn) *liveTaker {
	t.Helper()
	tk := &liveTaker{sinks: map[string]*liveSink{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = q.ServeLive(ctx, func(lc *queue.LiveChunk) queue.LiveSink {
			tk.mu.Lock()
			defer tk.mu.Unlock()
			s := &liveSink{}
			tk.sinks[lc.Offer.ID()] = s
			return s
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	time.Sleep(100 * time.Millisecond) // the subscription reaches the server
	return tk
}

func (tk *liveTaker) sink(id string) *liveSink {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	return tk.sinks[id]
}

// With live chunks on, every chunk is also streamed to a transcoder while it is being written:
// what the transcoder receives is exactly the chunk JetStream carries, in many parts (not in
// one piece at the end), with the same job; a session's bytes are offered chunk by chunk.
func TestLiveChunksAreThePublishedChunks(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.Live = true
	r := newRig(t, cfg)
	tk := takeLive(t, r.q)
	src := makeSource(t, 7, 60, "640x360", true) // 360p: the default ladder has a rung to encode
	st, key := r.stream("live chunks")
	c, err := r.connect("/live/" + key)
	if err != nil {
		t.Fatal(err)
	}
	p := newPusher(t, c, src, true, true)
	if err := p.push(src, 0, 7*time.Second, 0, burstThen(2)); err != nil {
		t.Fatal(err)
	}
	live := r.waitLive(st.ID)
	c.Close()
	cs := r.waitSessionEnd(st, live.ID, 10*time.Second)
	checkChunks(t, cs, 0)
	if len(cs) < 3 {
		t.Fatalf("%d chunks from 7 s with a keyframe every 2 s", len(cs))
	}
	for _, c := range cs {
		if !c.job.HasBytes() {
			continue // the session's empty end marker carries no bytes
		}
		// Every chunk names the session's bitrate, measured on the first chunk's video.
		if c.job.SourceBitrate != cs[0].job.SourceBitrate || c.job.SourceBitrate <= 0 || c.job.SourceBitrate > len(cs[0].data)*8 {
			t.Errorf("chunk %d: source bitrate %d, the first chunk's %d (%d bytes in 2 s)", c.job.Seq, c.job.SourceBitrate, cs[0].job.SourceBitrate, len(cs[0].data))
		}
		var s *liveSink
		eventually(t, 5*time.Second, "chunk "+c.job.ID()+" live", func() bool {
			s = tk.sink(c.job.ID())
			if s == nil {
				return false
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.ended
		})
		s.mu.Lock()
		if s.err != nil || s.job == nil {
			t.Errorf("chunk %d: live chunk ended with %v", c.job.Seq, s.err)
		} else {
			got, _ := json.Marshal(s.job)
			want, _ := json.Marshal(c.job)
			if !bytes.Equal(got, want) {
				t.Errorf("chunk %d: live job %s, JetStream's %s", c.job.Seq, got, want)
			}
		}
		if !bytes.Equal(s.data.Bytes(), c.data) {
			t.Errorf("chunk %d: live bytes (%d) are not the chunk's (%d)", c.job.Seq, s.data.Len(), len(c.data))
		}
		if c.job.Seq > 0 && s.parts < 10 {
			// The first chunk comes in the publisher's opening burst; later ones in real time.
			t.Errorf("chunk %d came in %d parts: not streamed as it was written", c.job.Seq, s.parts)
		}
		s.mu.Unlock()
	}
}

func TestMayEncode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		profile string
		height  int
		want    bool
	}{
		{"", 1080, true},               // the transcoders' default, which they judge
		{"no-such-profile", 240, true}, // the transcoders fall back to their default
		{"default", 1080, true},
		{"default", 360, true},
		{"default", 240, false}, // below every rung
		{"passthrough", 1080, false},
	} {
		if got := mayEncode(tc.profile, tc.height); got != tc.want {
			t.Errorf("mayEncode(%q, %d) = %v, want %v", tc.profile, tc.height, got, tc.want)
		}
	}
}
