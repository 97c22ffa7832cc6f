package ingest

import (
	"context"
	"log/slog"
	"sync"

	"github.com/gopcast/gopcast/pkg/media/chunker"
	"github.com/gopcast/gopcast/pkg/media/ladder"
	"github.com/gopcast/gopcast/pkg/queue"
)

// LiveOfferer is the optional part of a Publisher that streams chunks to a transcoder while
// they are being written (see queue.LiveOffer); *queue.Conn has it.
type LiveOfferer interface {
	OfferLive(ctx context.Context, o queue.LiveOffer) (*queue.LiveFeed, error)
}

// mayEncode reports whether a stream's chunks may have ladder rungs to encode: false only for a
// profile known here that has none for this source (passthrough). An empty or unknown profile
// is the transcoders' default, which they judge.
func mayEncode(profile string, height int) bool {
	if profile == "" {
		return true
	}
	p, err := ladder.Lookup(profile)
	return err != nil || len(p.Select(height, 0)) > 0
}

// liveChunks streams one session's chunks to transcoders while they are written. It is used
// from the session's read loop only; offers run in their own goroutines.
type liveChunks struct {
	ctx     context.Context
	off     LiveOfferer
	log     *slog.Logger
	offer   queue.LiveOffer // stream, session, profile and video; Seq and Bitrate per chunk
	open    map[uint64]*liveChunk
	bitrate int
	wg      sync.WaitGroup

	mu    sync.Mutex
	taker string // who took the session's latest chunk: its next one is offered there first
}

type liveChunk struct {
	ready chan struct{}   // closed once the offer is answered
	feed  *queue.LiveFeed // set before ready closes; nil when no transcoder took the chunk
}

func newLiveChunks(ctx context.Context, off LiveOfferer, offer queue.LiveOffer, log *slog.Logger) *liveChunks {
	return &liveChunks{ctx: ctx, off: off, offer: offer, log: log, open: make(map[uint64]*liveChunk)}
}

// update is called after each frame is written: chunks that began are offered, and taken ones
// get the bytes written since.
func (l *liveChunks) update(open []chunker.Partial) {
	for _, p := range open {
		lc, ok := l.open[p.Seq]
		if !ok {
			lc = &liveChunk{ready: make(chan struct{})}
			l.open[p.Seq] = lc
			o := l.offer
			o.Seq, o.Bitrate, o.Start = p.Seq, l.bitrate, p.Start
			l.mu.Lock()
			o.Prefer = l.taker
			l.mu.Unlock()
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				defer close(lc.ready)
				f, err := l.off.OfferLive(l.ctx, o)
				switch {
				case err != nil:
					l.log.Debug("live chunk offer failed", "seq", o.Seq, "err", err)
				case f == nil:
					l.log.Debug("live chunk not taken", "seq", o.Seq)
				default:
					l.mu.Lock()
					l.taker = f.Taker()
					l.mu.Unlock()
				}
				lc.feed = f
			}()
			continue
		}
		select {
		case <-lc.ready:
		default:
			continue // the offer is still out; the bytes go when it is taken
		}
		if lc.feed != nil {
			_ = lc.feed.Write(p.Data[lc.feed.Sent():])
		}
	}
}

// end hands a finished chunk's remaining bytes and its job to the transcoder that took it.
// When it needs the bytes beyond this call, it holds them (sc.hold) until it is done.
func (l *liveChunks) end(job *queue.Chunk, sc *sharedChunk) {
	l.bitrate = job.SourceBitrate // the transcoder chooses the rungs from it
	lc, ok := l.open[job.Seq]
	if !ok {
		return
	}
	delete(l.open, job.Seq)
	j := *job // the outbox's copy is the queue's to fill in
	sc.hold()
	data := sc.data
	finish := func() {
		defer sc.release()
		if lc.feed == nil {
			return
		}
		if err := lc.feed.End(&j, data); err != nil {
			l.log.Debug("live chunk not finished; its job will be encoded", "seq", j.Seq, "err", err)
		}
	}
	select {
	case <-lc.ready:
		finish()
	default:
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			<-lc.ready
			finish()
		}()
	}
}

// close gives up the chunks still open and waits for the offers in flight.
func (l *liveChunks) close() {
	for seq, lc := range l.open {
		delete(l.open, seq)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			<-lc.ready
			if lc.feed != nil {
				lc.feed.Abort()
			}
		}()
	}
	l.wg.Wait()
}
