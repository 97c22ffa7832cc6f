package ingest

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/gopcast/gopcast/pkg/queue"
)

// outbox decouples the RTMP read loop from the queue: finished chunks wait here, in order,
// while JetStream is slow or reconnecting. It is bounded; when full the publisher is dropped
// rather than the process growing without limit.
type outbox struct {
	pub   Publisher
	log   *slog.Logger
	items chan outItem
	once  sync.Once
	mu    sync.Mutex
	n     int
}

type outItem struct {
	job  *queue.Chunk
	data *sharedChunk // released once the chunk is in JetStream (or dropped)
}

func newOutbox(pub Publisher, max int, log *slog.Logger) *outbox {
	return &outbox{pub: pub, log: log, items: make(chan outItem, max)}
}

// push queues a chunk, taking over the caller's hold on its bytes; false means the backlog
// is full, and the caller still holds them.
func (o *outbox) push(job *queue.Chunk, data *sharedChunk) bool {
	select {
	case o.items <- outItem{job, data}:
		o.mu.Lock()
		o.n++
		o.mu.Unlock()
		return true
	default:
		return false
	}
}

func (o *outbox) pending() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n
}

func (o *outbox) close() { o.once.Do(func() { close(o.items) }) }

// run delivers chunks in order, retrying each with backoff until it is in JetStream or ctx
// ends. Retries are safe: the chunk's message id de-duplicates them.
func (o *outbox) run(ctx context.Context) {
	for it := range o.items {
		backoff := 100 * time.Millisecond
		for attempt := 1; ; attempt++ {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := o.pub.PublishChunk(pctx, it.job, it.data.bytes())
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				o.log.Error("chunk dropped: queue unreachable at shutdown", "seq", it.job.Seq, "err", err)
				break
			}
			o.log.Warn("chunk publish failed; retrying", "seq", it.job.Seq, "attempt", attempt, "err", err)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			backoff = min(backoff*2, 5*time.Second)
		}
		it.job.Data = nil // the queue may have pointed the job at the bytes
		it.data.release()
		o.mu.Lock()
		o.n--
		o.mu.Unlock()
	}
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
