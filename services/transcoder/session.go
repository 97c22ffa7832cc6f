package transcoder

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"math"
	"slices"
	"sync/atomic"
	"time"

	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/cmaf"
	"github.com/gopcast/gopcast/pkg/media/ladder"
	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/segment"
)

// A session's encode on a worker is two goroutines: read takes the session's chunk messages as
// they land and feeds each chunk to its encoder while it arrives; finish takes the chunks whose
// bytes are all in, in order, waits for their rungs, writes them to the bucket, publishes their
// records and purges them from the chunk stream. The first chunk left on the stream is where a
// worker taking the session over goes on.

// sessionResult is how a session's encode ended on this worker.
type sessionResult int

const (
	sessionEnded   sessionResult = iota // its last chunk is done, or its chunks stopped coming
	sessionTaken                        // another worker holds its job now
	sessionStopped                      // this worker is stopping: the job goes back
)

// readyChunks bounds the complete chunks waiting for the finisher: a finisher held up (storage
// down) stops the reader, and what waits stays in JetStream, not in memory.
const readyChunks = 4

// encodeSession is one session's encode on this worker.
type encodeSession struct {
	s        *Service
	job      *queue.EncodeJob
	delivery uint64
	log      *slog.Logger
	prof     ladder.Profile
	tmpl     ladder.Job // preset, GOP and threads of every encoder of the session
	fps      float64
	reader   *queue.ChunkReader

	// The reader's.
	chunks  map[uint64]*chunk // chunks being received
	srcRate int               // the session's source bits/s, once a chunk's end said it
	chain   *chain            // the session's current encoder chain
	// behind says the last chunk end read was so old that the chunks arriving now are older
	// than Stale too: a worker catching a session up does not encode them while they arrive.
	behind bool

	ready chan *chunk
	taken atomic.Bool
}

// chunk is one chunk of the session on this worker.
type chunk struct {
	seq   uint64
	start int64
	next  int      // the next part index due
	parts [][]byte // its bytes, as they came (kept, unchanged, to encode it again)
	crc   uint32
	size  int
	// skip says the chunk is not encoded here, and why: finished by another worker (its first
	// parts are gone), or too old.
	skip   string
	broken string // a part went missing: encoded again from nothing is impossible
	rungs  []ladder.Rung
	chain  *chain // the encoder it was fed to while it arrived, and its place there
	mem    *member
	end    *queue.Chunk
	last   uint64 // stream sequence of its end message
}

func (s *Service) newSession(ctx context.Context, job *queue.EncodeJob, delivery uint64, log *slog.Logger) (*encodeSession, error) {
	if job.Video == nil || job.Video.Height <= 0 {
		return nil, fmt.Errorf("%w: the job says nothing of the video", errPoison)
	}
	if delivery > 1 {
		// Said before reading, so a worker this one replaces (frozen, or cut off from NATS)
		// reads it after the chunk it was on, and stops.
		if err := s.q.MarkTakeover(ctx, job.StreamID, job.SessionID, delivery); err != nil {
			return nil, err
		}
		log.Info("taking a session over", "delivery", delivery)
	}
	r, err := s.q.ReadChunks(ctx, job.StreamID, job.SessionID)
	if err != nil {
		return nil, err
	}
	prof := s.profile(job.Profile)
	fps := job.Video.FPS
	if fps <= 0 {
		fps = 30
	}
	return &encodeSession{s: s, job: job, delivery: delivery, log: log, prof: prof, fps: fps, reader: r,
		tmpl:   ladder.Job{Preset: prof.Preset, GOP: max(1, int(math.Round(fps*2))), Threads: s.cfg.Threads},
		chunks: map[uint64]*chunk{}, ready: make(chan *chunk, readyChunks)}, nil
}

// run encodes the session until it ends, is taken over, or the worker stops.
func (se *encodeSession) run(ctx context.Context) sessionResult {
	defer se.reader.Close()
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		se.finish(ctx)
	}()
	res := se.read(ctx)
	// Chunks still arriving are given up: their encoders are told, so the chunks before them
	// in a chain still get their outputs.
	for _, c := range se.chunks {
		if c.mem != nil {
			c.chain.end(c.mem, false, errors.New("the session's encode stopped here"))
		}
	}
	if se.chain != nil {
		se.chain.stopInput()
	}
	close(se.ready)
	<-finished
	if se.taken.Load() {
		return sessionTaken
	}
	return res
}

// read takes the session's messages until its last chunk ends.
func (se *encodeSession) read(ctx context.Context) sessionResult {
	failures := 0
	for {
		ictx, cancel := context.WithTimeout(ctx, se.s.cfg.Idle)
		m, err := se.reader.Next(ictx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return sessionStopped
		case errors.Is(err, context.DeadlineExceeded):
			se.log.Warn("no chunk for the session in a while: ending it (its ingest may have died)", "idle", se.s.cfg.Idle)
			return sessionEnded
		case err != nil:
			// The ordered consumer recreates itself after a NATS outage; a reader that keeps
			// failing hands the session to another worker.
			if failures++; failures > 10 {
				se.log.Warn("reading the session's chunks keeps failing; handing it back", "err", err)
				return sessionStopped
			}
			se.log.Warn("reading the session's chunks failed; retrying", "err", err)
			sleepCtx(ctx, time.Second)
			continue
		}
		failures = 0
		switch m.Kind {
		case queue.TakeoverMsg:
			if m.Delivery > se.delivery {
				se.taken.Store(true)
				return sessionTaken
			}
		case queue.PartMsg:
			se.part(m)
		case queue.EndMsg:
			c := se.endOf(m)
			select {
			case se.ready <- c:
			case <-ctx.Done():
				return sessionStopped
			}
			if m.End.Last {
				return sessionEnded
			}
		}
	}
}

// part takes a chunk's next bytes.
func (se *encodeSession) part(m *queue.ChunkMsg) {
	c := se.chunks[m.Seq]
	if c == nil {
		se.orphans(m.Seq)
		c = &chunk{seq: m.Seq, start: m.Start}
		se.chunks[m.Seq] = c
		if m.Part != 0 {
			c.skip = "its first parts are gone: another worker finished it"
			return
		}
		se.begin(c)
	}
	switch {
	case c.skip != "" || c.broken != "":
		return
	case m.Part < c.next:
		return // a publish the ingest retried: stored twice
	case m.Part > c.next:
		c.broken = fmt.Sprintf("part %d came where %d was due", m.Part, c.next)
		if c.mem != nil {
			c.chain.end(c.mem, false, errors.New(c.broken))
			c.mem = nil
		}
		return
	}
	c.next++
	c.parts = append(c.parts, m.Data)
	c.size += len(m.Data)
	c.crc = crc32.Update(c.crc, queue.ChunkCRC, m.Data)
	if c.mem != nil {
		c.chain.part(c.mem, m.Data)
	}
}

// orphans gives up the chunks before seq still being received when seq's first part comes:
// the ingest ends a chunk before it sends the next one's bytes, so their ends are gone (the
// worker this one took over from finished them and purged them). Kept, a chunk on the
// session's chain would hold every chunk after it behind its missing bytes.
func (se *encodeSession) orphans(seq uint64) {
	for s, c := range se.chunks {
		if s >= seq {
			continue
		}
		delete(se.chunks, s)
		if c.mem != nil {
			se.log.Info("chunk given up: its end is gone (another worker finished it)", "seq", s)
			c.chain.end(c.mem, false, errors.New("its end is gone: another worker finished it"))
		}
	}
}

// begin decides how a chunk that starts is encoded: by the session's chain, by an encoder of
// its own (while the rungs are not final, or without chains), or once it is complete.
func (se *encodeSession) begin(c *chunk) {
	rungs, final := se.rungs(se.srcRate)
	c.rungs = rungs
	if len(rungs) == 0 || !se.s.cfg.Arriving {
		return
	}
	if se.behind {
		// Most likely stale at its end, so skipped: encoded while it arrives, it would cost
		// the CPU anyway and hold the fresh chunks after it behind it on the chain. If it is
		// fresh after all, it is encoded once complete.
		return
	}
	if se.s.cfg.Chains && final {
		if se.chain != nil {
			if m := se.chain.join(c.seq, c.start, rungs); m != nil {
				c.chain, c.mem = se.chain, m
				return
			}
			se.chain.stopInput() // it cannot take this chunk: it ends with the one before
		}
		ch, m, err := se.s.startChain(se.job, rungs, se.tmpl, c.seq, c.start, se.fps)
		if err != nil {
			se.log.Warn("could not start an encoder; the chunk is encoded once complete", "seq", c.seq, "err", err)
			se.chain = nil
			return
		}
		se.chain, c.chain, c.mem = ch, ch, m
		return
	}
	ch, m, err := se.s.startChain(se.job, rungs, se.tmpl, c.seq, c.start, se.fps)
	if err != nil {
		se.log.Warn("could not start an encoder; the chunk is encoded once complete", "seq", c.seq, "err", err)
		return
	}
	c.chain, c.mem = ch, m
}

// rungs are the rungs to encode for the session's source at bitrate (0: not known yet), and
// whether they are final: a rung at the source's height is dropped once the bitrate shows it
// saves nothing, so until then the chunk is encoded with it, alone, and only the final rungs
// are kept.
func (se *encodeSession) rungs(bitrate int) ([]ladder.Rung, bool) {
	h := se.job.Video.Height
	rungs := se.prof.Select(h, bitrate)
	return rungs, bitrate > 0 || slices.Equal(rungs, se.prof.Select(h, 1))
}

// endOf ends a chunk's parts: the chunk is complete (or known to be broken) and goes to the
// finisher.
func (se *encodeSession) endOf(m *queue.ChunkMsg) *chunk {
	e := m.End
	c := se.chunks[e.Seq]
	delete(se.chunks, e.Seq)
	if c == nil {
		c = &chunk{seq: e.Seq}
		if e.Size > 0 {
			c.skip = "its parts are gone: another worker finished it"
		}
	}
	c.end, c.last = e, m.StreamSeq
	if se.srcRate == 0 && e.SourceBitrate > 0 {
		se.srcRate = e.SourceBitrate
	}
	if c.skip == "" && c.broken == "" && (c.size != e.Size || c.crc != e.CRC) {
		c.broken = fmt.Sprintf("received %d bytes (crc %08x), the ingest sent %d (crc %08x)", c.size, c.crc, e.Size, e.CRC)
	}
	age := time.Since(e.Created)
	if c.skip == "" && age > se.s.cfg.Stale {
		c.skip = fmt.Sprintf("finished by the ingest %s ago: the packager listed its gap", age.Round(time.Second))
	}
	// The next chunk ends about a chunk later than this one: stale as well if this one is
	// older than Stale by more than that (twice this chunk's length, for chunks that vary).
	se.behind = age > se.s.cfg.Stale+2*time.Duration(e.Duration)*time.Second/media.Timescale
	if c.mem != nil {
		var err error
		if c.broken != "" {
			err = errors.New(c.broken)
		}
		// A chunk's own encoder (not the session's chain) ends with it.
		c.chain.end(c.mem, e.Last || c.chain != se.chain, err)
	}
	return c
}

// finish delivers the complete chunks in order until the reader stops; after a takeover it
// stops after the chunk in hand.
func (se *encodeSession) finish(ctx context.Context) {
	for c := range se.ready {
		if se.taken.Load() {
			continue
		}
		// A stopping worker still finishes a chunk it has whole, on a context of its own. It
		// has no deadline of its own: every wait for an encoder is bounded by ChunkTimeout and
		// every write by the Writer's retries, while one deadline over the whole would leave
		// nothing for the record after a stuck encoder and its attempts used it up.
		se.deliver(context.WithoutCancel(ctx), ctx, c)
	}
}

// deliver makes a complete chunk's rungs, writes them, publishes its record and purges it.
func (se *encodeSession) deliver(ctx, outer context.Context, c *chunk) {
	log := se.log.With("seq", c.seq)
	e := c.end
	switch {
	case c.skip != "":
		log.Info("chunk not encoded here", "why", c.skip)
		se.purge(ctx, c)
		return
	case e.Size == 0:
		se.purge(ctx, c) // the empty last chunk: it only ends the session
		return
	}
	start := time.Now()
	rec := &queue.Segment{StreamID: e.StreamID, SessionID: e.SessionID, Seq: e.Seq, N: e.N, Start: e.Start, Duration: e.Duration,
		Last: e.Last, Record: se.job.Record, From: queue.FromTranscoder, Chunk: e.Created}
	var frags []*segment.Fragment
	switch {
	case c.broken != "":
		log.Error("chunk arrived damaged; its rungs are gaps", "err", c.broken)
		rec.Failed, rec.Error = true, c.broken
	default:
		frags = se.encodeSafely(ctx, c, rec, log)
	}
	if rec.Failed || slices.ContainsFunc(rec.Renditions, func(r queue.Rendition) bool { return r.Failed }) {
		se.s.failures.Add(1)
	}
	defer func() {
		for _, f := range frags {
			f.Release()
		}
	}()
	for attempt := 1; ; attempt++ {
		err := se.put(ctx, frags, e)
		if err == nil {
			err = se.s.q.PublishSegment(ctx, rec)
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil || outer.Err() != nil {
			log.Warn("chunk not delivered: stopping; the session's next worker makes it again", "err", err)
			return
		}
		log.Warn("delivering the chunk's rungs failed; retrying", "attempt", attempt, "err", err)
		sleepCtx(outer, min(time.Duration(attempt)*time.Second, 5*time.Second))
	}
	se.s.done.Add(1)
	log.Debug("chunk transcoded", "renditions", len(rec.Renditions), "took", time.Since(start))
	se.purge(ctx, c)
}

// encodeSafely is encode, with a panic in the Go code that packages a chunk's outputs failing
// that chunk rather than the worker: the encode itself runs in ffmpeg, so no chunk can kill a
// worker, and a session's job never has to be given up for one.
func (se *encodeSession) encodeSafely(ctx context.Context, c *chunk, rec *queue.Segment, log *slog.Logger) (frags []*segment.Fragment) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("packaging the chunk's rungs panicked; its rungs are gaps", "panic", r)
			for _, f := range frags {
				f.Release()
			}
			frags, rec.Renditions = nil, nil
			rec.Failed, rec.Error = true, fmt.Sprint("packaging panicked: ", r)
		}
	}()
	return se.encode(ctx, c, rec, log)
}

// put writes the fragments not written yet.
func (se *encodeSession) put(ctx context.Context, frags []*segment.Fragment, e *queue.Chunk) error {
	for _, f := range frags {
		if f.Media == nil {
			continue
		}
		if err := f.Put(ctx, se.s.w, e.StreamID, e.N); err != nil {
			return err
		}
	}
	return nil
}

// purge removes a finished chunk's messages (and what came before them) from the stream.
func (se *encodeSession) purge(ctx context.Context, c *chunk) {
	if err := se.s.q.PurgeChunks(ctx, se.job.StreamID, se.job.SessionID, c.last+1); err != nil {
		se.log.Warn("purging a finished chunk failed; the session's next worker makes it again", "seq", c.seq, "err", err)
	}
}

// encode makes the chunk's final rungs, from the encoder it was fed to as it arrived or, for the rungs that did not
// come out whole, by encoding the chunk again on its own; rungs that cannot be made are
// described as failed, and the others stand.
func (se *encodeSession) encode(ctx context.Context, c *chunk, rec *queue.Segment, log *slog.Logger) []*segment.Fragment {
	final, _ := se.rungs(c.end.SourceBitrate)
	if len(final) == 0 {
		return nil
	}
	pieces, errs := map[string][]byte{}, map[string]error{}
	missing := func() []ladder.Rung {
		var out []ladder.Rung
		for _, r := range final {
			if _, ok := pieces[r.Name]; !ok {
				out = append(out, r)
			}
		}
		return out
	}
	if c.mem != nil {
		se.outputs(ctx, c.chain, c.mem, final, c.end.Frames, pieces, errs)
		if m := missing(); len(m) > 0 {
			log.Warn("the encode as it arrived is not usable; encoding the chunk again", "rungs", len(m), "err", errs[m[0].Name])
		}
	}
	for attempt := 1; attempt <= se.s.cfg.Attempts; attempt++ {
		m := missing()
		if len(m) == 0 {
			break
		}
		se.encodeAlone(ctx, c, m, pieces, errs)
		if m = missing(); len(m) > 0 {
			log.Warn("ffmpeg failed", "attempt", attempt, "rungs", len(m), "err", errs[m[0].Name])
		}
	}
	var frags []*segment.Fragment
	for _, r := range final {
		var f *segment.Fragment
		p, ok := pieces[r.Name]
		rerr := errs[r.Name]
		if ok {
			f, rerr = rungRendition(p, r, c.end)
		} else if rerr == nil {
			rerr = fmt.Errorf("rung %s was not encoded", r.Name)
		}
		if rerr != nil {
			log.Error("rung failed", "rendition", r.Name, "err", rerr)
			rec.Renditions = append(rec.Renditions, queue.Rendition{Name: r.Name, Kind: "video", Height: r.Height, Failed: true, Error: rerr.Error()})
			continue
		}
		rec.Renditions = append(rec.Renditions, f.Rendition)
		frags = append(frags, f)
	}
	return frags
}

// encodeAlone encodes a complete chunk's rungs with an encoder of its own, into pieces and
// errs as outputs does.
func (se *encodeSession) encodeAlone(ctx context.Context, c *chunk, rungs []ladder.Rung, pieces map[string][]byte, errs map[string]error) {
	ch, m, err := se.s.startChain(se.job, rungs, se.tmpl, c.seq, c.start, se.fps)
	if err != nil {
		for _, r := range rungs {
			errs[r.Name] = err
		}
		return
	}
	for _, p := range c.parts {
		ch.part(m, p)
	}
	ch.end(m, true, nil)
	se.outputs(ctx, ch, m, rungs, c.end.Frames, pieces, errs)
}

// outputs waits for a chunk's outputs from its encoder and puts each rung's that is whole in
// pieces, by name, and why the others are not in errs.
func (se *encodeSession) outputs(ctx context.Context, ch *chain, m *member, rungs []ladder.Rung, frames int, pieces map[string][]byte, errs map[string]error) {
	wctx, cancel := context.WithTimeout(ctx, se.s.cfg.ChunkTimeout)
	defer cancel()
	got, counts, err := m.wait(wctx)
	if err != nil {
		if wctx.Err() != nil {
			// ffmpeg has kept the chunk past its time: stuck, it would hold the session's
			// chain (and every chunk after) for good.
			ch.stop()
		}
		for _, r := range rungs {
			errs[r.Name] = fmt.Errorf("encoder: %w", err)
		}
		return
	}
	for _, r := range rungs {
		switch i := slices.Index(ch.rungs, r); {
		case i < 0:
			errs[r.Name] = fmt.Errorf("rung %s was not encoded", r.Name)
		case counts[i] != frames:
			errs[r.Name] = fmt.Errorf("rung %s has %d frames for %d in", r.Name, counts[i], frames)
		default:
			pieces[r.Name] = got[i]
			delete(errs, r.Name)
		}
	}
}

// rungRendition packages a rung's MPEG-TS output for the chunk as its CMAF fragment.
func rungRendition(ts []byte, r ladder.Rung, c *queue.Chunk) (*segment.Fragment, error) {
	dem, err := cmaf.Demux(ts)
	if err != nil {
		return nil, fmt.Errorf("ffmpeg output: %w", err)
	}
	if len(dem.Video) == 0 || dem.H264 == nil {
		return nil, errors.New("ffmpeg output has no video")
	}
	if c.Frames > 0 && len(dem.Video) != c.Frames {
		return nil, fmt.Errorf("ffmpeg output has %d frames for %d in", len(dem.Video), c.Frames)
	}
	off := c.Start - c.TSBase
	for i := range dem.Video {
		dem.Video[i].PTS += off
		dem.Video[i].DTS += off
	}
	// The encoder's decode times run a constant reorder delay ahead of the source's, so the
	// next chunk's first decode time is this one's plus the chunk duration.
	end := dem.Video[0].DTS + c.Duration
	f, err := segment.Video(r.Name, uint32(c.Seq+1), *dem.H264, dem.Video, end)
	if err != nil {
		return nil, err
	}
	f.Bandwidth = r.Bitrate
	return f, nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
