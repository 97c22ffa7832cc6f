package storage

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// Writer writes objects the way every role that writes media does: each Put is retried with
// backoff, so a storage outage delays a stream but loses and reorders nothing (the caller
// lists nothing later until the write succeeds), and every failed attempt is counted and logged
// with the key (never a secret: keys are the bucket layout).
type Writer struct {
	store    Store
	log      *slog.Logger
	failures atomic.Int64
}

// Retry policy of a Writer's Put: attempts, the first backoff (doubling up to the last), and
// each attempt's own time limit. Eight attempts span about 20 s of outage; a caller that needs
// longer (a job) retries the whole step.
const (
	putAttempts   = 8
	putBackoff    = 200 * time.Millisecond
	putMaxBackoff = 5 * time.Second
	putTimeout    = 30 * time.Second
)

// NewWriter returns a Writer over store.
func NewWriter(store Store, log *slog.Logger) *Writer { return &Writer{store: store, log: log} }

// Store is the store written to.
func (w *Writer) Store() Store { return w.store }

// Failures is how many attempts failed (and were retried or given up).
func (w *Writer) Failures() int64 { return w.failures.Load() }

// Put writes data under key with the headers HeadersFor gives it (live: the object belongs to
// a session still being published), retrying until it succeeds, ctx ends or the attempts run
// out.
func (w *Writer) Put(ctx context.Context, key string, data []byte, live bool) error {
	backoff := putBackoff
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, putTimeout)
		err := w.store.Put(pctx, key, data, HeadersFor(key, live))
		cancel()
		if err == nil {
			return nil
		}
		w.failures.Add(1)
		if ctx.Err() != nil || attempt >= putAttempts {
			return err
		}
		w.log.Warn("storage write failed; retrying", "key", key, "attempt", attempt, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(backoff*2, putMaxBackoff)
	}
}
