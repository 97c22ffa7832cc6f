// Package transcoder runs the stateless transcoding workers. A worker holds a session's encode
// job while the session lasts: it reads the session's chunks from the queue as the ingest
// publishes them, feeds them to one ffmpeg that encodes the profile's whole ladder (decoding
// each chunk once, and kept running from chunk to chunk: an encoder chain), cuts each rung's
// output back into the chunks, writes them to the bucket as CMAF media segments and publishes
// each chunk's segment record for the packagers. The source video and the audio are the
// ingest's; a worker only adds the rungs.
package transcoder

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/gopcast/gopcast/pkg/media/ladder"
	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/storage"
)

// Config tunes a worker.
type Config struct {
	// Concurrency is how many sessions this worker encodes at once.
	Concurrency int
	// DefaultProfile is used for jobs whose profile this worker does not know.
	DefaultProfile string
	// FFmpeg is the ffmpeg binary.
	FFmpeg string
	// Attempts is how many times a chunk's encode is tried before its rungs are reported failed.
	Attempts int
	// Threads caps x264 threads per rung (0: ffmpeg decides).
	Threads int
	// Chains keeps one ffmpeg for a session's consecutive chunks (see chain); without, each
	// chunk gets an ffmpeg of its own.
	Chains bool
	// Arriving encodes a chunk while its parts arrive; without, a chunk is encoded once it is
	// complete, with an ffmpeg of its own.
	Arriving bool
	// ChunkTimeout bounds one chunk's encode after its last byte came; an encoder that takes
	// longer is given up and the chunk encoded again on its own.
	ChunkTimeout time.Duration
	// Idle ends a session whose chunks stopped coming without a last one (its ingest died).
	Idle time.Duration
	// Stale is how old a chunk may be (since the ingest finished it) and still be encoded:
	// older ones are skipped, catching a session up to its live edge (the packager lists a
	// gap for their rungs).
	Stale time.Duration
}

func (c *Config) defaults() {
	if c.Concurrency <= 0 {
		c.Concurrency = max(1, runtime.NumCPU()/2)
	}
	if c.DefaultProfile == "" {
		c.DefaultProfile = "default"
	}
	if c.FFmpeg == "" {
		c.FFmpeg = "ffmpeg"
	}
	if c.Attempts <= 0 {
		c.Attempts = 2
	}
	if c.ChunkTimeout <= 0 {
		c.ChunkTimeout = time.Minute
	}
	if c.Idle <= 0 {
		c.Idle = queue.SessionIdle
	}
	if c.Stale <= 0 {
		c.Stale = queue.GapAfter
	}
}

// Queue is what a worker needs from the queue.
type Queue interface {
	ConsumeJobs(ctx context.Context, n int, handler func(context.Context, *queue.Job[queue.EncodeJob])) error
	ReadChunks(ctx context.Context, streamID, sessionID string) (*queue.ChunkReader, error)
	PurgeChunks(ctx context.Context, streamID, sessionID string, before uint64) error
	MarkTakeover(ctx context.Context, streamID, sessionID string, delivery uint64) error
	PublishSegment(ctx context.Context, seg *queue.Segment) error
}

// Service is a transcoding worker.
type Service struct {
	cfg Config
	log *slog.Logger
	q   Queue
	w   *storage.Writer

	chainsStarted atomic.Int64
	busy          atomic.Int64
	done          atomic.Int64
	failures      atomic.Int64
}

// New returns a worker writing its segments with w.
func New(cfg Config, log *slog.Logger, q Queue, w *storage.Writer) *Service {
	cfg.defaults()
	return &Service{cfg: cfg, log: log, q: q, w: w}
}

// Run takes encode jobs until ctx ends; the sessions in hand then finish the chunks they have
// whole and hand their jobs back before Run returns.
func (s *Service) Run(ctx context.Context) error {
	s.log.Info("transcoder started", "concurrency", s.cfg.Concurrency, "profile", s.cfg.DefaultProfile,
		"arriving", s.cfg.Arriving, "chains", s.cfg.Chains)
	return s.q.ConsumeJobs(ctx, s.cfg.Concurrency, s.handle)
}

// Stats are the worker's counters: sessions in hand, chunks done, and chunks whose rungs were
// given up as gaps.
func (s *Service) Stats() (busy, done, failures int64) {
	return s.busy.Load(), s.done.Load(), s.failures.Load()
}

// ChainsStarted is how many encoder chains (ffmpeg processes for a session's consecutive
// chunks) were started.
func (s *Service) ChainsStarted() int64 { return s.chainsStarted.Load() }

// handle holds one session's encode job until the session ends (Ack), another worker took it
// over (nothing: that one acks), or this worker stops (Retry: another goes on from the first
// chunk not done).
func (s *Service) handle(ctx context.Context, job *queue.Job[queue.EncodeJob]) {
	s.busy.Add(1)
	defer s.busy.Add(-1)
	j := &job.Body
	log := s.log.With("stream_id", j.StreamID, "session_id", j.SessionID)
	stop := job.KeepAlive()
	defer stop()
	se, err := s.newSession(ctx, j, job.Delivered, log)
	switch {
	case errors.Is(err, errPoison):
		// No worker can ever encode it: handed back, it would come again every second for
		// as long as the stream lives.
		log.Error("session cannot be encoded; rejecting its job", "err", err)
		stop()
		_ = job.Reject(err.Error())
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), queue.CallTimeout)
		defer cancel()
		if err := s.q.PurgeChunks(actx, j.StreamID, j.SessionID, 0); err != nil {
			log.Warn("purging the session's chunks failed", "err", err)
		}
		return
	case err != nil:
		log.Warn("session could not start; handing it back", "err", err)
		_ = job.Retry(time.Second)
		return
	}
	res := se.run(ctx)
	// Acknowledged on a context of its own: a stopping worker still acks a finished session.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), queue.CallTimeout)
	defer cancel()
	switch res {
	case sessionEnded:
		stop()
		if err := job.Ack(actx); err != nil {
			log.Warn("ack failed", "err", err)
		}
		// What is left on the subject (takeover marks, an unfinished chunk of a dead ingest).
		if err := s.q.PurgeChunks(actx, j.StreamID, j.SessionID, 0); err != nil {
			log.Warn("purging the session's chunks failed", "err", err)
		}
	case sessionTaken:
		log.Info("session taken over by another worker; leaving it")
	case sessionStopped:
		log.Info("stopping: handing it back to the queue (its next worker goes on from the first chunk not done)")
		_ = job.Retry(0)
	}
}

// profile is the ladder a job names (the default one if this worker does not know it).
func (s *Service) profile(name string) ladder.Profile {
	if p, err := ladder.Lookup(name); err == nil {
		return p
	}
	s.log.Warn("unknown profile; using the default", "profile", name)
	p, _ := ladder.Lookup(s.cfg.DefaultProfile)
	return p
}

// errPoison marks input that no retry can fix.
var errPoison = errors.New("poison chunk")
