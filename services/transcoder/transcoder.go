// Package transcoder runs the stateless transcoding workers: each takes one chunk job at a
// time per slot, encodes the profile's ladder with one ffmpeg process (decoding the chunk
// once), repackages the source video and the AAC audio untouched, and hands every rendition
// on to the packagers as CMAF segments that keep the chunk's timeline.
package transcoder

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/cmaf"
	"github.com/gopcast/gopcast/pkg/media/codec"
	"github.com/gopcast/gopcast/pkg/media/ladder"
	"github.com/gopcast/gopcast/pkg/queue"
)

// Config tunes a worker.
type Config struct {
	// Concurrency is how many chunks this worker encodes at once.
	Concurrency int
	// DefaultProfile is used for chunks whose stream names none.
	DefaultProfile string
	// FFmpeg is the ffmpeg binary.
	FFmpeg string
	// TempDir holds chunk and rung files while ffmpeg runs.
	TempDir string
	// Attempts is how many times a failing encode is tried before its rungs are reported failed.
	Attempts int
	// Threads caps x264 threads per rung (0: ffmpeg decides).
	Threads int
	// Chains keeps one ffmpeg per stream across its consecutive live chunks (see chain).
	Chains bool
	// JobTimeout bounds one chunk's whole encode.
	JobTimeout time.Duration
	// Live takes chunks while they are being published (when the Queue is a LiveQueue), up
	// to three times Concurrency at once, and encodes them as they arrive.
	Live bool
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
	if c.TempDir == "" {
		c.TempDir = os.TempDir()
	}
	if c.Attempts <= 0 {
		c.Attempts = 2
	}
	if c.JobTimeout <= 0 {
		c.JobTimeout = 2 * time.Minute
	}
}

// Queue is what a worker needs from the queue.
type Queue interface {
	ConsumeChunks(ctx context.Context, n int, handler func(context.Context, *queue.Job[queue.Chunk])) error
	ChunkBytes(ctx context.Context, job *queue.Chunk) ([]byte, error)
	DeleteChunk(ctx context.Context, job *queue.Chunk) error
	// PublishSegment sends seg; it may not keep the renditions' bytes after it returns (the
	// worker reuses their memory).
	PublishSegment(ctx context.Context, seg *queue.Segment) error
}

// Service is a transcoding worker.
type Service struct {
	cfg Config
	log *slog.Logger
	q   Queue

	lq       LiveQueue // nil: no live chunks
	live     sync.WaitGroup
	liveMu   sync.Mutex
	lastLive map[string]chan struct{} // by stream: its latest live encode's exit
	chains   map[string]*chain        // by stream/session: its encoder chain here

	chainsStarted atomic.Int64
	busy          atomic.Int64
	done          atomic.Int64
	liveDone      atomic.Int64
	failures      atomic.Int64
}

// New returns a worker.
func New(cfg Config, log *slog.Logger, q Queue) *Service {
	cfg.defaults()
	s := &Service{cfg: cfg, log: log, q: q}
	if lq, ok := q.(LiveQueue); ok && cfg.Live {
		s.lq = lq
	}
	return s
}

// Run takes chunk jobs (and live chunks) until ctx ends; jobs in flight then finish (bounded
// by JobTimeout) and are acknowledged before Run returns.
func (s *Service) Run(ctx context.Context) error {
	s.log.Info("transcoder started", "concurrency", s.cfg.Concurrency, "profile", s.cfg.DefaultProfile, "live", s.lq != nil)
	liveErr := make(chan error, 1)
	if s.lq != nil {
		go func() { liveErr <- s.serveLive(ctx) }()
	} else {
		liveErr <- nil
	}
	err := s.q.ConsumeChunks(ctx, s.cfg.Concurrency, s.handle)
	if lerr := <-liveErr; err == nil && lerr != nil && ctx.Err() == nil {
		err = lerr
	}
	s.live.Wait()
	return err
}

// Stats are the worker's counters: chunks in hand (jobs and live chunks), chunks done (from
// their job or live) and chunks given up as gaps.
func (s *Service) Stats() (busy, done, failures int64) {
	return s.busy.Load(), s.done.Load() + s.liveDone.Load(), s.failures.Load()
}

// ChainsStarted is how many encoder chains (ffmpeg processes for a stream's consecutive live
// chunks) were started.
func (s *Service) ChainsStarted() int64 { return s.chainsStarted.Load() }

// LiveDone is how many chunks were done live (encoded while they were published).
func (s *Service) LiveDone() int64 { return s.liveDone.Load() }

// errPoison marks input that no retry can fix.
var errPoison = errors.New("poison chunk")

func (s *Service) handle(ctx context.Context, job *queue.Job[queue.Chunk]) {
	s.busy.Add(1)
	defer s.busy.Add(-1)
	c := &job.Body
	log := s.log.With("stream_id", c.StreamID, "session_id", c.SessionID, "seq", c.Seq)

	// Shutdown must not abandon a chunk half done: work continues on a context that is not
	// cancelled with the worker's, bounded by the job timeout.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.JobTimeout)
	defer cancel()
	stop := keepAlive(wctx, job)
	defer stop()

	if prof, _ := s.profile(c); len(prof.Rungs) == 0 {
		// Repackaging only, no ffmpeg: the slot (sized for encodes) is free for another job.
		job.Release()
	} else if s.lq != nil && c.HasBytes() && s.awaitLive(wctx, c, log) == queue.LiveDone {
		// A worker took the chunk live and its segment is out.
		if err := job.Ack(wctx); err != nil {
			log.Warn("ack failed", "err", err)
			return
		}
		_ = s.q.DeleteChunk(wctx, c)
		log.Debug("chunk transcoded", "done_live", true)
		return
	}

	start := time.Now()
	seg, err := s.transcode(wctx, c, log)
	if err != nil {
		if errors.Is(err, errPoison) || job.Delivered >= 5 {
			// Tell the packagers, so the stream shows a gap instead of waiting for this chunk.
			s.failures.Add(1)
			log.Error("chunk cannot be transcoded; reporting a gap", "err", err, "delivered", job.Delivered)
			fail := &queue.Segment{StreamID: c.StreamID, SessionID: c.SessionID, Seq: c.Seq, Start: c.Start,
				Duration: c.Duration, Last: c.Last, Record: c.Record, Failed: true, Error: err.Error(), Chunk: c.Created}
			if perr := s.q.PublishSegment(wctx, fail); perr != nil {
				log.Warn("reporting the gap failed; retrying the job", "err", perr)
				_ = job.Retry(2 * time.Second)
				return
			}
			_ = job.Reject(err.Error())
			_ = s.q.DeleteChunk(wctx, c)
			return
		}
		log.Warn("chunk failed; handing it back", "err", err, "delivered", job.Delivered)
		_ = job.Retry(time.Duration(job.Delivered) * time.Second)
		return
	}
	err = s.q.PublishSegment(wctx, seg)
	recycleFragments(seg)
	if err != nil {
		log.Warn("publishing segment failed; handing the job back", "err", err)
		_ = job.Retry(time.Second)
		return
	}
	if err := job.Ack(wctx); err != nil {
		// The segment is out; a redelivery rewrites the same objects and is de-duplicated.
		log.Warn("ack failed", "err", err)
		return
	}
	_ = s.q.DeleteChunk(wctx, c)
	s.done.Add(1)
	log.Debug("chunk transcoded", "renditions", len(seg.Renditions), "took", time.Since(start))
}

// keepAlive tells JetStream the job is still being worked on until stop is called.
func keepAlive(ctx context.Context, job interface{ InProgress() error }) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(2 * time.Second) // well inside the queue's 6 s AckWait
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = job.InProgress()
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

func (s *Service) transcode(ctx context.Context, c *queue.Chunk, log *slog.Logger) (*queue.Segment, error) {
	if !c.HasBytes() {
		// An empty last chunk only ends the session.
		return &queue.Segment{StreamID: c.StreamID, SessionID: c.SessionID, Seq: c.Seq, Start: c.Start,
			Duration: c.Duration, Last: c.Last, Record: c.Record, Chunk: c.Created}, nil
	}
	data, err := s.q.ChunkBytes(ctx, c)
	if errors.Is(err, queue.ErrNotFound) {
		return nil, fmt.Errorf("%w: chunk bytes gone: %v", errPoison, err)
	}
	if err != nil {
		return nil, err
	}
	if c.Size > 0 && len(data) != c.Size {
		// The object store checks its digest; this catches a job naming the wrong object.
		return nil, fmt.Errorf("%w: chunk object is %d bytes, the job says %d", errPoison, len(data), c.Size)
	}
	return s.transcodeData(ctx, c, data, log, nil)
}

// transcodeData makes a chunk's segment from its bytes; live, if not nil, is the chunk's encode
// that ran while it arrived, used instead of running ffmpeg when it covers the rungs.
func (s *Service) transcodeData(ctx context.Context, c *queue.Chunk, data []byte, log *slog.Logger, live *liveEncode) (*queue.Segment, error) {
	seg := &queue.Segment{StreamID: c.StreamID, SessionID: c.SessionID, Seq: c.Seq, Start: c.Start,
		Duration: c.Duration, Last: c.Last, Record: c.Record, Chunk: c.Created}
	dem, err := cmaf.Demux(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errPoison, err)
	}
	if len(dem.Video) == 0 || dem.H264 == nil {
		return nil, fmt.Errorf("%w: chunk has no video", errPoison)
	}
	rebaseVideo(dem.Video, c.Start-c.TSBase)
	rebaseAudio(dem.Audio, c.Start-c.TSBase)
	end := c.Start + c.Duration
	fragSeq := uint32(c.Seq + 1)

	// Source rendition: the publisher's own video, repackaged.
	src, err := videoRendition("source", fragSeq, *dem.H264, dem.Video, end)
	if err != nil {
		return nil, err
	}
	srcBits := src.Bytes * 8
	srcRate := int(float64(srcBits) / (float64(c.Duration) / media.Timescale))
	src.Bandwidth = srcRate
	renditions := []queue.Rendition{*src}

	if len(dem.Audio) > 0 && dem.AAC != nil {
		a, err := audioRendition(fragSeq, *dem.AAC, dem.Audio, c.AudioOrigin)
		if err != nil {
			return nil, err
		}
		renditions = append(renditions, *a)
	}

	prof, known := s.profile(c)
	if !known {
		log.Warn("unknown profile; using the default", "profile", c.Profile)
	}
	if c.SourceBitrate > 0 {
		srcRate = c.SourceBitrate // the session's, so every chunk has the same renditions
	}
	rungs := prof.Select(src.Height, srcRate)
	if len(rungs) > 0 {
		encoded := s.encodeRungs(ctx, c, data, dem, prof, rungs, fragSeq, log, live)
		renditions = append(renditions, encoded...)
	}
	seg.Renditions = renditions
	return seg, nil
}

// profile is the ladder profile a chunk names (the default one if it names none, or one
// that does not exist: known is then false).
func (s *Service) profile(c *queue.Chunk) (p ladder.Profile, known bool) {
	name := c.Profile
	if name == "" {
		name = s.cfg.DefaultProfile
	}
	if p, err := ladder.Lookup(name); err == nil {
		return p, true
	}
	p, _ = ladder.Lookup(s.cfg.DefaultProfile)
	return p, false
}

// videoRendition packages a rendition's frames as the chunk's CMAF fragment, in the rendition
// (PublishSegment sends it in the message or stores it).
func videoRendition(name string, seq uint32, cfg media.H264Config, frames []media.VideoFrame, end int64) (*queue.Rendition, error) {
	init, err := cmaf.VideoInit(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %s init: %v", errPoison, name, err)
	}
	frag, err := cmaf.AppendVideoFragment(fragmentBuffer(&videoFragments), seq, frames, end)
	if err != nil {
		return nil, fmt.Errorf("%w: %s fragment: %v", errPoison, name, err)
	}
	cs, err := codec.H264Codec(cfg.SPS)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errPoison, err)
	}
	w, h, fps, _ := codec.H264Info(cfg.SPS)
	if fps == 0 {
		fps = estimateFPS(frames)
	}
	r := &queue.Rendition{Name: name, Kind: "video", Codec: cs, Width: w, Height: h, FPS: fps,
		InitData: init, MediaData: frag, Bytes: len(frag),
		Start: minPTS(frames), Duration: end - frames[0].DTS, Timescale: media.Timescale}
	return r, nil
}

func audioRendition(seq uint32, cfg media.AACConfig, frames []media.AudioFrame, origin int64) (*queue.Rendition, error) {
	init, err := cmaf.AudioInit(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: audio init: %v", errPoison, err)
	}
	frag, err := cmaf.AppendAudioFragment(fragmentBuffer(&audioFragments), seq, frames, cfg, origin)
	if err != nil {
		return nil, fmt.Errorf("%w: audio fragment: %v", errPoison, err)
	}
	cs, err := codec.AACCodec(cfg.ASC)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errPoison, err)
	}
	_, ch, _ := codec.AACInfo(cfg.ASC)
	start, dur, ts, err := cmaf.AudioTiming(frames, cfg, origin)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errPoison, err)
	}
	r := &queue.Rendition{Name: "audio", Kind: "audio", Codec: cs, Channels: ch, SampleRate: int(ts),
		InitData: init, MediaData: frag, Bytes: len(frag), Start: start, Duration: dur, Timescale: ts,
		Bandwidth: int(float64(len(frag)*8) / (float64(dur) / float64(ts)))}
	return r, nil
}

// encodeRungs runs ffmpeg once for every rung, retrying a failed run; rungs that still fail are
// reported as failed renditions, never dropped silently.
func (s *Service) encodeRungs(ctx context.Context, c *queue.Chunk, data []byte, dem *cmaf.Demuxed, prof ladder.Profile, rungs []ladder.Rung, seq uint32, log *slog.Logger, live *liveEncode) []queue.Rendition {
	if live != nil {
		read, err := live.outputs(ctx, rungs, len(dem.Video))
		if err == nil {
			return rungRenditions(read, rungs, c, len(dem.Video), seq, log)
		}
		log.Warn("live encode not usable; encoding the chunk again", "err", err)
	}
	dir, err := os.MkdirTemp(s.cfg.TempDir, "gopcast-chunk-")
	if err != nil {
		return failed(rungs, err)
	}
	defer os.RemoveAll(dir)
	in := filepath.Join(dir, "in.ts")
	if err := os.WriteFile(in, data, 0o600); err != nil {
		return failed(rungs, err)
	}
	fps := 0.0
	if c.Video != nil {
		fps = c.Video.FPS
	}
	if fps <= 0 {
		fps = estimateFPS(dem.Video)
	}
	job := ladder.Job{Input: in, OutDir: dir, Rungs: rungs, Preset: prof.Preset,
		GOP: max(1, int(math.Round(fps*2))), Threads: s.cfg.Threads}

	var runErr error
	for attempt := 1; attempt <= s.cfg.Attempts; attempt++ {
		if runErr = runFFmpeg(ctx, s.cfg.FFmpeg, job.Args()); runErr == nil {
			break
		}
		log.Warn("ffmpeg failed", "attempt", attempt, "err", runErr)
	}
	if runErr != nil {
		return failed(rungs, runErr)
	}
	return rungRenditions(readFiles(job), rungs, c, len(dem.Video), seq, log)
}

// rungOutput returns the MPEG-TS an ffmpeg run made of a rung.
type rungOutput func(ladder.Rung) ([]byte, error)

// readFiles reads the rungs job wrote to its files.
func readFiles(job ladder.Job) rungOutput {
	return func(r ladder.Rung) ([]byte, error) { return os.ReadFile(job.Output(r)) }
}

// rungRenditions hands on the rungs a finished ffmpeg run made.
func rungRenditions(read rungOutput, rungs []ladder.Rung, c *queue.Chunk, framesIn int, seq uint32, log *slog.Logger) []queue.Rendition {
	out := make([]queue.Rendition, 0, len(rungs))
	for _, r := range rungs {
		rend, err := rungRendition(read, r, c, framesIn, seq)
		if err != nil {
			log.Error("rung failed", "rendition", r.Name, "err", err)
			out = append(out, queue.Rendition{Name: r.Name, Kind: "video", Height: r.Height, Failed: true, Error: err.Error()})
			continue
		}
		out = append(out, *rend)
	}
	return out
}

func rungRendition(read rungOutput, r ladder.Rung, c *queue.Chunk, framesIn int, seq uint32) (*queue.Rendition, error) {
	b, err := read(r)
	if err != nil {
		return nil, err
	}
	dem, err := cmaf.Demux(b)
	if err != nil {
		return nil, fmt.Errorf("ffmpeg output: %w", err)
	}
	if len(dem.Video) != framesIn {
		return nil, fmt.Errorf("ffmpeg output has %d frames for %d in", len(dem.Video), framesIn)
	}
	rebaseVideo(dem.Video, c.Start-c.TSBase)
	// The encoder's decode times run a constant reorder delay ahead of the source's, so the
	// next chunk's first decode time is this one's plus the chunk duration.
	end := dem.Video[0].DTS + c.Duration
	rend, err := videoRendition(r.Name, seq, *dem.H264, dem.Video, end)
	if err != nil {
		return nil, err
	}
	rend.Bandwidth = r.Bitrate
	return rend, nil
}

func failed(rungs []ladder.Rung, err error) []queue.Rendition {
	out := make([]queue.Rendition, len(rungs))
	for i, r := range rungs {
		out[i] = queue.Rendition{Name: r.Name, Kind: "video", Height: r.Height, Failed: true, Error: err.Error()}
	}
	return out
}

func rebaseVideo(frames []media.VideoFrame, off int64) {
	for i := range frames {
		frames[i].PTS += off
		frames[i].DTS += off
	}
}

func rebaseAudio(frames []media.AudioFrame, off int64) {
	for i := range frames {
		frames[i].PTS += off
	}
}

func minPTS(frames []media.VideoFrame) int64 {
	m := frames[0].PTS
	for _, f := range frames {
		m = min(m, f.PTS)
	}
	return m
}

func estimateFPS(frames []media.VideoFrame) float64 {
	if len(frames) < 2 {
		return 30
	}
	span := frames[len(frames)-1].DTS - frames[0].DTS
	if span <= 0 {
		return 30
	}
	return float64(len(frames)-1) * media.Timescale / float64(span)
}

// videoFragments and audioFragments recycle the memory renditions' fragments are written to:
// a chunk's are a few MB, and fresh memory for each was zeroed, faulted in and scavenged back
// to the OS again (memclr and madvise were a fifth of a passthrough worker's CPU). Video and
// audio apart, so a buffer is reused for fragments of about its size.
var videoFragments, audioFragments sync.Pool

// fragmentBuffer is an empty buffer from pool, or nil (the fragment then allocates).
func fragmentBuffer(pool *sync.Pool) []byte {
	if b, ok := pool.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return nil
}

// recycleFragments gives a published segment's fragments back: PublishSegment has copied
// them into its message (or stored them) by the time it returns, whatever it returns.
func recycleFragments(seg *queue.Segment) {
	for i := range seg.Renditions {
		r := &seg.Renditions[i]
		if cap(r.MediaData) == 0 {
			continue
		}
		b := r.MediaData[:0]
		if r.Kind == "audio" {
			audioFragments.Put(&b)
		} else {
			videoFragments.Put(&b)
		}
		r.MediaData = nil
	}
}
