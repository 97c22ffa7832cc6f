package transcoder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/gopcast/gopcast/pkg/media/ladder"
	"github.com/gopcast/gopcast/pkg/queue"
)

// LiveQueue is the optional part of a Queue for live chunks (see queue.LiveOffer); *queue.Conn
// has it.
type LiveQueue interface {
	ServeLive(ctx context.Context, take func(*queue.LiveChunk) queue.LiveSink) error
	LiveStatus(ctx context.Context, job *queue.Chunk) (queue.LiveState, error)
}

// serveLive takes live chunks while ctx lasts, on up to three per slot. A live encode runs at
// the pace the chunk arrives, so one stream keeps about one busy; but a stream's next chunk
// begins while the previous one's encode is finishing, and a chunk that arrived in a burst (a
// publisher's first seconds arrive at once, read ahead while the tracks are learnt) is encoded
// at full speed while the next one starts. A chunk declined here is encoded from its job, on
// this worker's CPUs as likely as another's, only later.
func (s *Service) serveLive(ctx context.Context) error {
	slots := make(chan struct{}, 3*s.cfg.Concurrency)
	return s.lq.ServeLive(ctx, func(lc *queue.LiveChunk) queue.LiveSink {
		if e := s.takeLive(lc, slots); e != nil {
			return e
		}
		return nil // not a nil *liveEncode in an interface
	})
}

// takeLive starts encoding an offered chunk if it has rungs to encode and a slot is free.
func (s *Service) takeLive(lc *queue.LiveChunk, slots chan struct{}) *liveEncode {
	o := &lc.Offer
	if o.Video == nil || o.Video.Height <= 0 {
		return nil
	}
	prof, _ := s.profile(&queue.Chunk{Profile: o.Profile})
	rungs := prof.Select(o.Video.Height, o.Bitrate)
	if len(rungs) == 0 {
		return nil
	}
	select {
	case slots <- struct{}{}:
	default:
		s.log.Debug("live chunk declined: live slots busy", "chunk", o.ID())
		return nil // the ingest offers it to another worker
	}
	e, err := s.startLive(lc, prof, rungs, func() { <-slots })
	if err != nil {
		<-slots
		s.log.Warn("live chunk: ffmpeg did not start", "chunk", o.ID(), "err", err)
		return nil
	}
	return e
}

// liveEncode is a chunk encoded while it arrives: its bytes go to ffmpeg's stdin as they come
// and are kept, so the chunk can be finished like a job's once it is complete.
type liveEncode struct {
	s       *Service
	lc      *queue.LiveChunk
	log     *slog.Logger
	rungs   []ladder.Rung
	job     ladder.Job
	cancel  context.CancelFunc
	after   <-chan struct{} // the stream's previous live encode here, which goes first
	exited  chan struct{}   // closed when ffmpeg has exited; runErr is then set
	runErr  error
	release func()
	// chain and mem are set when the chunk is encoded by a stream's chain (see chain) rather
	// than by an ffmpeg of its own.
	chain *chain
	mem   *member

	mu     sync.Mutex
	data   bytes.Buffer
	stdin  io.WriteCloser // nil until ffmpeg has started
	closed bool           // the chunk's bytes are all in
	wErr   error          // starting or feeding ffmpeg failed: its output is unusable, the bytes are still kept
}

func (s *Service) startLive(lc *queue.LiveChunk, prof ladder.Profile, rungs []ladder.Rung, release func()) (*liveEncode, error) {
	o := &lc.Offer
	dir, err := os.MkdirTemp(s.cfg.TempDir, "gopcast-live-")
	if err != nil {
		return nil, err
	}
	fps := o.Video.FPS
	if fps <= 0 {
		fps = 30
	}
	job := ladder.Job{Stream: true, OutDir: dir, Rungs: rungs, Preset: prof.Preset,
		GOP: max(1, int(math.Round(fps*2))), Threads: s.cfg.Threads}
	// A chunk taken is finished even when the worker is shutting down (within JobTimeout), as
	// a job in hand is: it is seconds of work at most, and dropping it would delay the stream.
	ectx, cancel := context.WithTimeout(context.Background(), s.cfg.JobTimeout)
	e := &liveEncode{s: s, lc: lc, rungs: rungs, job: job, cancel: cancel, exited: make(chan struct{}),
		release: release, log: s.log.With("stream_id", o.StreamID, "session_id", o.SessionID, "seq", o.Seq, "live", true)}
	if o.Bitrate > 0 {
		e.data.Grow(o.Bitrate / 8 * 5 / 2) // about a 2 s chunk and a little more
	}
	s.live.Add(1)
	s.busy.Add(1)
	// A chain starts once the offer knows the stream's bitrate: before (a session's first
	// chunk or two) the rungs chosen may include one at the source's height that the stream's
	// measured bitrate then rules out, and a chain cannot drop a rung; those chunks are
	// encoded one ffmpeg each, as without chains.
	if s.cfg.Chains && chainable(o) && o.Bitrate > 0 {
		err := s.joinChain(e, o, rungs, fps)
		if err == nil {
			return e, nil
		}
		e.log.Warn("live chunk: could not start an encoder chain; encoding it alone", "err", err)
	}
	e.after = s.queueLive(o.StreamID, e.exited)
	// ffmpeg starts beside the offer's answer, which must not wait for a fork and exec on a
	// loaded machine; the bytes that arrive meanwhile are kept and fed once it runs.
	go e.run(ectx)
	return e, nil
}

// joinChain makes e a member of its stream's chain on this worker: the running one if it can
// take the chunk, else a new one. A chain that cannot take the chunk is left to close itself
// (its last chunk ends it, or the wait for a next one).
func (s *Service) joinChain(e *liveEncode, o *queue.LiveOffer, rungs []ladder.Rung, fps float64) error {
	key := chainKey(o)
	s.liveMu.Lock()
	c := s.chains[key]
	s.liveMu.Unlock()
	if c != nil {
		if m := c.join(o.Seq, o.Start, rungs); m != nil {
			e.chain, e.mem = c, m
			close(e.exited)
			return nil
		}
	}
	c, err := s.newChain(key, rungs, e.job, o.Start, fps)
	if err != nil {
		return err
	}
	c.mu.Lock()
	m := c.add(o.Seq, o.Start)
	c.mu.Unlock()
	s.liveMu.Lock()
	if s.chains == nil {
		s.chains = make(map[string]*chain)
	}
	s.chains[key] = c
	s.liveMu.Unlock()
	s.chainsStarted.Add(1)
	go func() {
		<-c.exited
		s.liveMu.Lock()
		if s.chains[key] == c {
			delete(s.chains, key)
		}
		s.liveMu.Unlock()
		if c.runErr != nil {
			s.log.Warn("encoder chain ended with an error", "chain", key, "err", c.runErr)
		}
	}()
	e.chain, e.mem = c, m
	close(e.exited)
	return nil
}

// queueLive records exited as the stream's latest live encode here and returns the one before
// it (closed if none runs); close forgets it.
func (s *Service) queueLive(streamID string, exited chan struct{}) <-chan struct{} {
	s.liveMu.Lock()
	defer s.liveMu.Unlock()
	if s.lastLive == nil {
		s.lastLive = make(map[string]chan struct{})
	}
	prev, ok := s.lastLive[streamID]
	s.lastLive[streamID] = exited
	if !ok {
		return noTurn
	}
	return prev
}

// noTurn is the turn of a stream with no earlier live encode here: no wait.
var noTurn = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// run starts ffmpeg once the stream's previous chunk's ffmpeg here has exited, feeds it what
// has arrived, and waits for it.
//
// A stream's chunks are encoded one after the other, not side by side: a chunk whose bytes
// are all in finishes first, and its successor, which has until its own end, catches up after.
// Side by side they share the CPU and both finish late: a publisher's first chunk arrives in a
// burst (the RTMP reader reads 2 s ahead to learn the tracks), and with the next one encoding
// beside it the first segments were listed 3-4.4 s after their end instead of ~2 s.
func (e *liveEncode) run(ctx context.Context) {
	defer close(e.exited)
	select {
	case <-e.after:
	case <-ctx.Done():
	}
	cmd, stderr := ffmpegCmd(ctx, e.s.cfg.FFmpeg, e.job.Args())
	stdin, err := cmd.StdinPipe()
	if err == nil {
		err = cmd.Start()
	}
	e.mu.Lock()
	if err != nil {
		e.wErr, e.runErr = err, err
		e.mu.Unlock()
		return
	}
	e.stdin = stdin
	if e.data.Len() > 0 {
		_, e.wErr = stdin.Write(e.data.Bytes())
	}
	if e.closed {
		_ = stdin.Close()
	}
	e.mu.Unlock()
	e.runErr = ffmpegErr(cmd.Wait(), stderr)
}

// Part feeds the chunk's next bytes to ffmpeg.
func (e *liveEncode) Part(p []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.data.Write(p)
	if e.chain != nil {
		e.chain.part(e.mem, p)
		return
	}
	if e.stdin != nil && e.wErr == nil {
		_, e.wErr = e.stdin.Write(p)
	}
}

// End finishes the chunk: with its job, as the job would be (from this encode if it went
// well), or gives it up to the job's worker.
func (e *liveEncode) End(job *queue.Chunk, err error) {
	e.mu.Lock()
	e.closed = true
	if e.stdin != nil {
		_ = e.stdin.Close()
	}
	e.mu.Unlock()
	if e.chain != nil {
		e.chain.end(e.mem, job != nil && job.Last, err)
	}
	if err != nil {
		e.log.Info("live chunk given up; its job will be encoded", "err", err)
		e.cancel()
		go e.close(false)
		return
	}
	go e.finish(job)
}

func (e *liveEncode) finish(job *queue.Chunk) {
	ok := false
	defer func() { e.close(ok) }()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), e.s.cfg.JobTimeout)
	defer cancel()
	seg, err := e.s.transcodeData(ctx, job, e.data.Bytes(), e.log, e)
	if err != nil {
		e.log.Warn("live chunk failed; its job will be encoded", "err", err)
		return
	}
	err = e.s.q.PublishSegment(ctx, seg)
	recycleFragments(seg)
	if err != nil {
		e.log.Warn("live chunk: publishing its segment failed; its job will be encoded", "err", err)
		return
	}
	ok = true
	e.s.liveDone.Add(1)
	e.log.Debug("chunk transcoded", "renditions", len(seg.Renditions), "after_end", time.Since(start))
}

// close reports the outcome once ffmpeg is gone and frees the chunk's slot and files.
func (e *liveEncode) close(ok bool) {
	<-e.exited
	e.s.liveMu.Lock()
	if e.s.lastLive[e.lc.Offer.StreamID] == e.exited {
		delete(e.s.lastLive, e.lc.Offer.StreamID)
	}
	e.s.liveMu.Unlock()
	e.cancel()
	os.RemoveAll(e.job.OutDir)
	e.lc.Done(ok)
	e.release()
	e.s.busy.Add(-1)
	e.s.live.Done()
}

// outputs waits for the encode and, if it covers rungs with framesIn frames each, returns
// what reads each rung's output; an error says why the chunk must be encoded again instead.
func (e *liveEncode) outputs(ctx context.Context, rungs []ladder.Rung, framesIn int) (rungOutput, error) {
	for _, r := range rungs {
		if !slices.Contains(e.rungs, r) {
			return nil, fmt.Errorf("rung %s was not encoded live (the ladder chosen at the chunk's start differs)", r.Name)
		}
	}
	if e.chain != nil {
		// Half the job's time at most, so the chunk can still be encoded again here.
		wctx, cancel := context.WithTimeout(ctx, e.s.cfg.JobTimeout/2)
		defer cancel()
		pieces, frames, err := e.mem.wait(wctx)
		if err != nil {
			if wctx.Err() != nil {
				// ffmpeg has kept the chunk past the job's time: stuck, it would hold the
				// stream's chain (and every chunk after) for good.
				e.chain.stop()
			}
			return nil, fmt.Errorf("encoder chain: %w", err)
		}
		for i, r := range e.chain.rungs {
			if frames[i] != framesIn {
				return nil, fmt.Errorf("encoder chain: rung %s has %d frames for %d in", r.Name, frames[i], framesIn)
			}
		}
		return func(r ladder.Rung) ([]byte, error) {
			return pieces[slices.Index(e.chain.rungs, r)], nil
		}, nil
	}
	<-e.exited
	e.mu.Lock()
	wErr := e.wErr
	e.mu.Unlock()
	if wErr != nil {
		return nil, fmt.Errorf("feeding ffmpeg: %w (%v)", wErr, e.runErr)
	}
	if e.runErr != nil {
		return nil, e.runErr
	}
	return readFiles(e.job), nil
}

// awaitLive waits while a live chunk's taker works on it, and reports its outcome: LiveDone
// means the segment is out and the job is done.
func (s *Service) awaitLive(ctx context.Context, c *queue.Chunk, log *slog.Logger) queue.LiveState {
	for {
		st, err := s.lq.LiveStatus(ctx, c)
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				log.Debug("live chunk status unknown; encoding the job", "err", err)
			}
			return queue.LiveNone
		}
		if st != queue.LiveWorking {
			return st
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return queue.LiveNone
		case <-t.C:
		}
	}
}
