package ingest

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"sync"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/chunker"
	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/segment"
	"github.com/gopcast/gopcast/pkg/storage"
	"github.com/gopcast/gopcast/pkg/streams"
)

// A session's chunks leave the ingest by two lanes, each a goroutine with a bounded backlog, so
// the RTMP read loop never waits on NATS or storage and one of them being slow or down does not
// hold the other up:
//
//   - the feed (sessions with rungs to encode only) publishes the session's encode job, then
//     each chunk's MPEG-TS in parts while it is being cut and the message that ends it, to the
//     chunk stream, where the session's transcoder reads them as they land;
//   - the segment lane repackages each finished chunk's source video and audio as CMAF, writes
//     the media segments to the bucket and publishes the chunk's segment record.
//
// Both retry each step with backoff until it succeeds; retries are safe (records and jobs are
// de-duplicated by id, duplicated parts dropped by their reader). A backlog that stays full
// (NATS or storage unreachable for about MaxBacklog chunks) drops the publisher rather than the
// process growing without limit.

// Part cadence: an open chunk's new bytes go out once they reach partBytes or have waited
// partEvery, so the encoder is never far behind the publisher (a keyframe goes out at once)
// while a 3 Mbit/s stream sends about ten messages a second, not one per frame.
const (
	partBytes = 64 << 10
	partEvery = 100 * time.Millisecond
)

// lane runs one of a session's outgoing lanes: items are handled in order by one goroutine.
type lane struct {
	log     *slog.Logger
	items   chan laneItem
	once    sync.Once
	done    chan struct{}
	mu      sync.Mutex
	chunks  int // chunks queued and not yet handled (the backlog)
	max     int
	lastErr error
}

type laneItem struct {
	chunk bool // counts towards the backlog
	do    func(ctx context.Context) error
	what  string
	after func() // runs once the item is handled or dropped (gives memory back)
}

func newLane(max int, log *slog.Logger) *lane {
	// The channel also takes a chunk's parts, which do not count: room for many per chunk.
	return &lane{log: log, items: make(chan laneItem, 64*max+64), done: make(chan struct{}), max: max}
}

// push queues an item; false means the backlog is full: the item was not queued, and its
// after does not run. Items queued before it may still use the memory after would give back
// (the parts of a chunk whose end did not fit), so that memory is left to the garbage
// collector rather than handed to another chunk while they go out.
func (l *lane) push(it laneItem) bool {
	l.mu.Lock()
	if it.chunk && l.chunks >= l.max {
		l.mu.Unlock()
		return false
	}
	if it.chunk {
		l.chunks++
	}
	l.mu.Unlock()
	select {
	case l.items <- it:
		return true
	default: // parts beyond every bound: the lane is stuck
		l.mu.Lock()
		if it.chunk {
			l.chunks--
		}
		l.mu.Unlock()
		return false
	}
}

func (l *lane) pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.chunks
}

func (l *lane) close() { l.once.Do(func() { close(l.items) }) }

// run handles the items in order, retrying each with backoff until it succeeds or ctx ends
// (what is left is then dropped, counted in the log).
func (l *lane) run(ctx context.Context) {
	defer close(l.done)
	dropped := 0
	for it := range l.items {
		if ctx.Err() != nil {
			dropped++
		} else {
			l.retry(ctx, it)
		}
		if it.after != nil {
			it.after()
		}
		if it.chunk {
			l.mu.Lock()
			l.chunks--
			l.mu.Unlock()
		}
	}
	if dropped > 0 {
		l.log.Error("chunk messages dropped: unreachable at shutdown", "dropped", dropped, "err", l.lastErr)
	}
}

func (l *lane) retry(ctx context.Context, it laneItem) {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := it.do(ctx)
		if err == nil {
			return
		}
		l.lastErr = err
		if ctx.Err() != nil || errors.Is(err, errGiveUp) {
			l.log.Error("dropped: "+it.what, "err", err)
			return
		}
		l.log.Warn(it.what+" failed; retrying", "attempt", attempt, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		backoff = min(backoff*2, 5*time.Second)
	}
}

// errGiveUp marks a step no retry can fix.
var errGiveUp = errors.New("given up")

// outbox is a session's two lanes and what they need to know of it.
type outbox struct {
	q      Queue
	w      *storage.Writer
	claim  *streams.Claim
	log    *slog.Logger
	max    int
	job    *queue.EncodeJob // nil: nothing to encode, no feed
	vcfg   media.H264Config
	acfg   *media.AACConfig
	record bool
	// describe gives a chunk's description once its video is complete.
	describe func(seq uint64, start, duration int64, videoBytes, frames int, last bool) queue.Chunk
	onLost   func(error) // the session's numbers were taken over: end the session
	feed     *lane
	segs     *lane
	jobSent  bool

	// The feed's progress on the chunks being cut, by seq.
	open map[uint64]*openChunk
}

type openChunk struct {
	sent  int
	parts int
	crc   uint32
	at    time.Time
	ended bool // its end message is queued
}

func (o *outbox) start(ctx context.Context) {
	o.segs = newLane(o.max, o.log.With("lane", "segments"))
	go o.segs.run(ctx)
	if o.job != nil {
		o.feed = newLane(o.max, o.log.With("lane", "feed"))
		o.open = map[uint64]*openChunk{}
		go o.feed.run(ctx)
	}
}

// update sends the new bytes of the chunks being cut, as the cadence allows, and ends a chunk
// on the feed as soon as its video is complete (its audio, which the encoder does not take,
// may still come). It is called after each frame from the read loop; false means the feed's
// backlog is full.
func (o *outbox) update(open []chunker.Partial, now time.Time) bool {
	if o.feed == nil {
		return true
	}
	for _, p := range open {
		oc := o.openChunk(p.Seq, now)
		if oc == nil {
			return false
		}
		if oc.ended {
			continue
		}
		if n := len(p.TS) - oc.sent; p.Cut || n >= partBytes || (n > 0 && now.Sub(oc.at) >= partEvery) {
			if !o.sendParts(p.Seq, p.Start, p.TS, oc, now) {
				return false
			}
		}
		if p.Cut && !o.endChunk(o.describe(p.Seq, p.Start, p.Duration, p.VideoBytes, p.Frames, false), oc, nil) {
			return false
		}
	}
	return true
}

// openChunk is the feed's record of chunk seq, made (with the session's job sent first) when
// the chunk first shows; nil if the backlog is full.
func (o *outbox) openChunk(seq uint64, now time.Time) *openChunk {
	if oc := o.open[seq]; oc != nil {
		return oc
	}
	if !o.jobSent {
		o.jobSent = true
		job := *o.job
		job.Created = now.UTC()
		if !o.feed.push(laneItem{what: "encode job", do: func(ctx context.Context) error { return o.q.PublishJob(ctx, &job) }}) {
			return nil
		}
	}
	oc := &openChunk{at: now}
	o.open[seq] = oc
	return oc
}

// sendParts queues ts[oc.sent:] as parts of chunk seq.
func (o *outbox) sendParts(seq uint64, start int64, ts []byte, oc *openChunk, now time.Time) bool {
	for oc.sent < len(ts) {
		end := min(len(ts), oc.sent+queue.MaxPart)
		p := queue.Part{StreamID: o.job.StreamID, SessionID: o.job.SessionID, Seq: seq, Index: oc.parts, Start: start, Data: ts[oc.sent:end]}
		oc.crc = crc32.Update(oc.crc, queue.ChunkCRC, p.Data)
		oc.sent, oc.parts = end, oc.parts+1
		if !o.feed.push(laneItem{what: "chunk part", do: func(ctx context.Context) error { return o.q.PublishPart(ctx, p) }}) {
			return false
		}
	}
	oc.at = now
	return true
}

// endChunk queues the message that ends a chunk's parts. Its MPEG-TS buffer is given back
// once that message is out (ts: the chunk's final buffer, when it is finished already).
func (o *outbox) endChunk(desc queue.Chunk, oc *openChunk, ts []byte) bool {
	oc.ended = true
	desc.Size, desc.CRC = oc.sent, oc.crc
	return o.feed.push(laneItem{chunk: true, what: "chunk end", after: func() { recycle(ts) },
		do: func(ctx context.Context) error {
			if err := o.reserve(ctx, desc.Seq); err != nil {
				return err
			}
			return o.q.PublishChunk(ctx, &desc)
		}})
}

// finish hands a finished chunk to the lanes (with c nil: the empty last chunk, which only
// ends the session). false means a backlog is full: the caller drops the publisher.
func (o *outbox) finish(c *chunker.Chunk, desc queue.Chunk, audioOrigin int64) bool {
	ok := true
	if o.feed != nil {
		if c == nil {
			if o.jobSent { // no job, no transcoder: nothing to end
				ok = o.endChunk(desc, &openChunk{}, nil)
			}
		} else {
			oc := o.open[c.Seq]
			delete(o.open, c.Seq)
			switch {
			case oc == nil: // cut and finished by the same frame
				oc = o.openChunk(c.Seq, time.Now())
				delete(o.open, c.Seq)
				ok = oc != nil && o.sendParts(c.Seq, c.Start, c.TS, oc, time.Now()) && o.endChunk(desc, oc, c.TS)
			case !oc.ended:
				ok = o.sendParts(c.Seq, c.Start, c.TS, oc, time.Now()) && o.endChunk(desc, oc, c.TS)
			default:
				ts := c.TS // ended at its cut: the buffer goes back once the end is out
				ok = o.feed.push(laneItem{what: "chunk buffer", do: func(context.Context) error { return nil }, after: func() { recycle(ts) }})
			}
		}
	}
	var mem []byte
	if c != nil {
		mem = c.Mem
	}
	var frags []*segment.Fragment
	made := false
	rec := &queue.Segment{StreamID: desc.StreamID, SessionID: desc.SessionID, Seq: desc.Seq, N: desc.N, Start: desc.Start,
		Duration: desc.Duration, Last: desc.Last, Record: o.record, From: queue.FromIngest, Encoding: o.feed != nil && c != nil,
		Chunk: desc.Created}
	pushed := o.segs.push(laneItem{chunk: true, what: "source and audio segments",
		after: func() {
			for _, f := range frags {
				f.Release()
			}
			recycle(mem)
		},
		do: func(ctx context.Context) error {
			if err := o.reserve(ctx, desc.Seq); err != nil {
				return err
			}
			if c != nil && !made {
				made = true
				frags = o.fragments(c, audioOrigin, rec)
			}
			for _, f := range frags {
				if f.Media == nil {
					continue // written by an earlier attempt
				}
				if err := f.Put(ctx, o.w, desc.StreamID, desc.N); err != nil {
					return fmt.Errorf("writing %s: %w", segment.Key(desc.StreamID, f.Name, desc.N), err)
				}
			}
			return o.q.PublishSegment(ctx, rec)
		}})
	return ok && pushed
}

// fragments repackages a chunk's source video and audio as CMAF, describing them in rec. A
// rendition that cannot be made is described as failed (the packager lists a gap for it).
func (o *outbox) fragments(c *chunker.Chunk, audioOrigin int64, rec *queue.Segment) []*segment.Fragment {
	var out []*segment.Fragment
	seq := uint32(c.Seq + 1)
	src, err := segment.Video("source", seq, o.vcfg, c.Video, c.Start+c.Duration)
	if err != nil {
		o.log.Error("source rendition failed", "seq", c.Seq, "err", err)
		rec.Renditions = append(rec.Renditions, queue.Rendition{Name: "source", Kind: "video", Failed: true, Error: err.Error()})
	} else {
		src.Bandwidth = int(float64(src.Bytes*8) / (float64(c.Duration) / media.Timescale))
		rec.Renditions = append(rec.Renditions, src.Rendition)
		out = append(out, src)
	}
	if o.acfg != nil && len(c.Audio) > 0 {
		a, err := segment.Audio(seq, *o.acfg, c.Audio, audioOrigin)
		if err != nil {
			o.log.Error("audio rendition failed", "seq", c.Seq, "err", err)
			rec.Renditions = append(rec.Renditions, queue.Rendition{Name: "audio", Kind: "audio", Failed: true, Error: err.Error()})
		} else {
			rec.Renditions = append(rec.Renditions, a.Rendition)
			out = append(out, a)
		}
	}
	return out
}

// reserve makes sure chunk seq's segment number is the session's before anything uses it.
func (o *outbox) reserve(ctx context.Context, seq uint64) error {
	err := o.claim.Reserve(ctx, seq)
	if errors.Is(err, streams.ErrBusy) {
		o.onLost(err)
		return fmt.Errorf("%w: %v", errGiveUp, err)
	}
	return err
}

// close ends both lanes' input and waits up to wait for them to deliver what they hold; after
// that it stops them (what is left is dropped, and logged).
func (o *outbox) close(stop context.CancelFunc, wait time.Duration) {
	lanes := []*lane{o.segs}
	if o.feed != nil {
		lanes = append(lanes, o.feed)
	}
	for _, l := range lanes {
		l.close()
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for _, l := range lanes {
		select {
		case <-l.done:
		case <-t.C:
			o.log.Error("chunk backlog not delivered before timeout; dropping it", "pending", l.pending())
			stop()
			<-l.done
		}
	}
	stop()
}

func isIDR(au [][]byte) bool {
	return h264.IsRandomAccess(au)
}

func onlyParameterSets(au [][]byte) bool {
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS, h264.NALUTypePPS, h264.NALUTypeAccessUnitDelimiter:
		default:
			return false
		}
	}
	return true
}
