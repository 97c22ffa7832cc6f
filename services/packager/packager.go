// Package packager turns finished chunks into what players fetch. The ingest (source video and
// audio) and the transcoders (the ladder's rungs) write a chunk's media segments to the bucket
// and then publish a segment record each; once a chunk's records are in, the packager writes
// the init segments they carry (when new), then the HLS media playlists that list the chunk,
// then the multivariant playlist and the DASH manifest, always in that order, so a player never
// sees a playlist naming a segment that is not there yet. Chunks finish out of order; the
// packager lists them in sequence order, and turns a chunk (or a chunk's rungs) that never
// comes into an explicit gap.
package packager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/storage"
)

// Config tunes the packager.
type Config struct {
	// Window is how many segments a live media playlist lists.
	Window int
	// ListedHold is the least time a segment stays in the live playlists once listed, even
	// when that lists more than Window segments for a while (after a stall); 0 is Window−1
	// target durations, negative none.
	ListedHold time.Duration
	// GapTimeout is how long a missing chunk is waited for, while later ones are ready, before
	// it is listed as a gap.
	GapTimeout time.Duration
	// Concurrency is how many finished chunks are handled at once (different streams run in
	// parallel; one stream's chunks are always handled one at a time).
	Concurrency int
	// ChunkTarget is the ingest's chunk duration, the floor of the playlists' target duration.
	ChunkTarget time.Duration
	// DeleteGrace is how long a segment of an unrecorded stream stays in the bucket after it
	// left the live window, for players still behind.
	DeleteGrace time.Duration
	// RecordingRetention deletes recordings older than this (0 keeps them forever).
	RecordingRetention time.Duration
	// FFmpeg remuxes recordings into downloadable MP4s.
	FFmpeg string
	// SessionTimeout ends a session whose chunks stopped coming without a last one.
	SessionTimeout time.Duration
}

func (c *Config) defaults() {
	if c.Window <= 0 {
		c.Window = 6
	}
	if c.GapTimeout <= 0 {
		c.GapTimeout = queue.GapAfter
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	if c.ChunkTarget <= 0 {
		c.ChunkTarget = 2 * time.Second
	}
	if c.DeleteGrace <= 0 {
		c.DeleteGrace = max(time.Minute, 2*time.Duration(c.Window)*c.ChunkTarget)
	}
	if c.FFmpeg == "" {
		c.FFmpeg = "ffmpeg"
	}
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = queue.SessionIdle
	}
}

// Queue is what the packager needs from the queue.
type Queue interface {
	ConsumeSegments(ctx context.Context, n int, handler func(context.Context, *queue.Job[queue.Segment])) error
}

// EventPublisher is implemented by a Queue that can carry lifecycle events; the packager then
// announces a session's first listed segment (the stream is playable) and its end.
type EventPublisher interface {
	PublishEvent(ctx context.Context, ev queue.Event) error
}

// StateStore keeps each stream's packaging state, so a restarted packager continues the
// numbering instead of going backwards.
// Create and Update are compare-and-swap writes (queue.ErrExists / queue.ErrConflict when
// another writer was first): they keep two packagers from overwriting each other's progress.
type StateStore interface {
	Get(ctx context.Context, key string) ([]byte, uint64, error)
	Put(ctx context.Context, key string, value []byte) (uint64, error)
	Create(ctx context.Context, key string, value []byte) (uint64, error)
	Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error)
}

// Service is a packager.
type Service struct {
	cfg   Config
	log   *slog.Logger
	q     Queue
	w     *storage.Writer
	store storage.Store
	state StateStore
	recs  Recordings
	jobs  sync.WaitGroup // recordings being finished

	mu      sync.Mutex
	streams map[string]*streamLock

	listed atomic.Int64
	gaps   atomic.Int64
}

type streamLock struct {
	mu sync.Mutex
	st *state // nil until loaded
}

// New returns a packager writing with w.
func New(cfg Config, log *slog.Logger, q Queue, w *storage.Writer, st StateStore) *Service {
	cfg.defaults()
	return &Service{cfg: cfg, log: log, q: q, w: w, store: w.Store(), state: st, streams: make(map[string]*streamLock)}
}

// SetRecordings makes the packager register finished recordings (and expire them).
func (s *Service) SetRecordings(r Recordings) { s.recs = r }

// Stats are the packager's counters: segments listed and gaps listed.
func (s *Service) Stats() (listed, gaps int64) {
	return s.listed.Load(), s.gaps.Load()
}

// Run consumes finished chunks until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	s.log.Info("packager started", "window", s.cfg.Window)
	go s.gapLoop(ctx)
	err := s.q.ConsumeSegments(ctx, s.cfg.Concurrency, s.handle)
	s.jobs.Wait()
	return err
}

func (s *Service) lock(streamID string) *streamLock {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.streams[streamID]
	if l == nil {
		l = &streamLock{}
		s.streams[streamID] = l
	}
	return l
}

func (s *Service) handle(ctx context.Context, job *queue.Job[queue.Segment]) {
	seg := &job.Body
	log := s.log.With("stream_id", seg.StreamID, "session_id", seg.SessionID, "seq", seg.Seq)
	// Finish what was started even if shutdown begins: a half-listed chunk helps nobody.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	// A storage outage can hold a job for long; tell JetStream it is alive, so only a dead
	// packager's job is redelivered (its AckWait is short, for a takeover within two segment
	// durations).
	stop := job.KeepAlive()
	defer stop()

	l := s.lock(seg.StreamID)
	l.mu.Lock()
	err := s.accept(wctx, l, seg, log)
	l.mu.Unlock()
	if err != nil {
		if errors.Is(err, errStale) {
			log.Debug("state changed by another packager; retrying on the new state")
			_ = job.Retry(100 * time.Millisecond)
			return
		}
		if errors.Is(err, errPoison) {
			log.Error("dropping undecodable segment message", "err", err)
			_ = job.Reject(err.Error())
			return
		}
		log.Warn("packaging failed; will retry", "err", err)
		_ = job.Retry(time.Second)
		return
	}
	if err := job.Ack(wctx); err != nil {
		log.Warn("ack failed", "err", err)
	}
}

var errPoison = errors.New("poison segment message")

// accept takes a segment record: it writes the init segments it brings, adds it to its chunk's
// pending entry, lists everything now ready in order, and saves the state. It is idempotent: a
// redelivered record rewrites the same keys and lists nothing twice.
func (s *Service) accept(ctx context.Context, l *streamLock, seg *queue.Segment, log *slog.Logger) error {
	if seg.StreamID == "" || seg.SessionID == "" {
		return fmt.Errorf("%w: missing stream or session id", errPoison)
	}
	if seg.N < seg.Seq {
		return fmt.Errorf("%w: segment number %d below the chunk's seq %d", errPoison, seg.N, seg.Seq)
	}
	st, err := s.load(ctx, l, seg.StreamID)
	if err != nil {
		return err
	}
	switch {
	case seg.SessionID < st.Session:
		log.Info("segment of an earlier session arrived late; ignored")
		if !st.retireUnlisted(seg) {
			return nil
		}
		return s.save(ctx, st)
	case seg.SessionID > st.Session:
		s.startSession(st, seg, log)
	}
	if st.Ended && st.EndedByTimeout && seg.Seq >= st.NextSeq {
		// Chunks came back after the session was ended for silence: it goes on, after a
		// discontinuity.
		log.Info("session resumed after its timeout")
		st.Ended, st.EndedByTimeout, st.SessionStart = false, false, true
	}
	if seg.Seq < st.NextSeq || st.Ended {
		// Already listed (or its session over): what it brings that was not listed will never
		// be. If its playlists never made it to storage, this redelivery is the moment to
		// retry them.
		retired := st.retireUnlisted(seg)
		if st.Dirty {
			return s.advance(ctx, st, log)
		}
		if retired {
			return s.save(ctx, st)
		}
		return nil
	}
	st.LastActivity = time.Now().UTC()
	if err := s.writeInits(ctx, st, seg); err != nil {
		return err
	}
	st.noteRenditions(seg)
	p := st.Pending[seg.Seq]
	if p == nil {
		p = &pending{Seq: seg.Seq, Since: time.Now().UTC(), Renditions: map[string]segmentInfo{}}
		st.Pending[seg.Seq] = p
	}
	p.merge(seg, st.Maps)
	if st.WaitingSince.IsZero() {
		st.WaitingSince = time.Now()
	}
	return s.advance(ctx, st, log)
}

// advance lists every pending chunk that is next in order, then publishes playlists and saves.
func (s *Service) advance(ctx context.Context, st *state, log *slog.Logger) error {
	changed := false
	for {
		p, ok := st.Pending[st.NextSeq]
		if !ok || !p.ready() {
			break
		}
		delete(st.Pending, st.NextSeq)
		if p.Last && !p.Forced && len(p.Renditions) == 0 && p.Error == "" {
			// An empty last chunk only ends the session (it ended before a keyframe, or
			// right after a cut): nothing to list.
			st.NextSeq++
			st.Ended, st.Dirty = true, true
			st.Pending = map[uint64]*pending{}
			s.sessionEnded(ctx, st, log)
			break
		}
		if st.NextSeq == 0 && !p.gap() {
			s.event(ctx, st, map[string]any{"milestone": "first", "n": st.Base, "playlist": "live/" + st.StreamID + "/master.m3u8"})
		}
		st.list(p)
		if st.Record {
			if err := s.record(ctx, st, st.Window[len(st.Window)-1]); err != nil {
				return err
			}
		}
		if p.gap() {
			s.gaps.Add(1)
			log.Warn("listing a gap", "seq", st.NextSeq, "reason", p.Error)
		} else {
			s.listed.Add(1)
			if p.Error != "" {
				log.Warn("listing a segment with gaps in some renditions", "seq", st.NextSeq, "reason", p.Error)
			}
		}
		st.NextSeq++
		changed = true
		if p.Last {
			st.Ended = true
			st.Pending = map[uint64]*pending{}
			s.sessionEnded(ctx, st, log)
			break
		}
	}
	if len(st.Pending) > 0 {
		if changed {
			st.WaitingSince = time.Now()
		}
	} else {
		st.WaitingSince = time.Time{}
	}
	if changed {
		st.trim(s.cfg.Window, s.cfg.ListedHold, time.Now())
		st.Dirty = true
	}
	if st.Dirty {
		if err := s.publish(ctx, st); err != nil {
			return err
		}
		st.Dirty = false
	}
	return s.save(ctx, st)
}

// sessionEnded announces a session's end and, for a recorded one, starts finishing the
// recording (it runs on its own, so the stream's next session is not held up).
func (s *Service) sessionEnded(ctx context.Context, st *state, log *slog.Logger) {
	log.Info("session ended; playlists closed")
	defer s.event(ctx, st, map[string]any{"milestone": "ended", "segments": st.NextSeq})
	if !st.Record {
		return
	}
	job := st.recordingJob()
	s.jobs.Add(1)
	go func() {
		defer s.jobs.Done()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Minute)
		defer cancel()
		if err := s.finishRecording(rctx, job, log); err != nil {
			log.Error("finishing the recording failed", "err", err)
		}
	}()
}

func (s *Service) event(ctx context.Context, st *state, data map[string]any) {
	ep, ok := s.q.(EventPublisher)
	if !ok {
		return
	}
	ectx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	ev := queue.Event{Kind: queue.EventSegment, StreamID: st.StreamID, SessionID: st.Session, Data: data}
	if err := ep.PublishEvent(ectx, ev); err != nil {
		s.log.Warn("publishing event failed", "err", err)
	}
}

// startSession makes seg's session the stream's current one. Its segment numbers are the
// ingest's (seg.N is its chunk's number); media sequence numbers carry on from the last one
// listed, so they never go back even when the numbers skip (a session whose ingest died).
func (s *Service) startSession(st *state, seg *queue.Segment, log *slog.Logger) {
	if st.Session != "" && !st.Ended {
		log.Info("new session replaces one that never ended", "previous_session", st.Session)
	}
	for _, p := range st.Pending {
		st.retirePending(p) // written, never to be listed
	}
	st.Session = seg.SessionID
	st.Base = seg.N - seg.Seq
	st.MSNBase = st.NextMSN
	st.NextSeq = 0
	st.Ended = false
	st.Pending = map[uint64]*pending{}
	st.WaitingSince = time.Time{}
	st.SessionStart = true
	st.SessionStarted = time.Now().UTC()
	st.Record = seg.Record
	st.RecPages, st.RecBuf = 0, nil
}

// writeInits writes the init segments seg brings that the bucket does not have yet, under the
// names the playlists give them (init.mp4, or init-N.mp4 for a changed one).
func (s *Service) writeInits(ctx context.Context, st *state, seg *queue.Segment) error {
	for _, r := range seg.Renditions {
		if r.Failed {
			continue
		}
		if len(r.Init) == 0 {
			return fmt.Errorf("%w: rendition %s has no init segment", errPoison, r.Name)
		}
		uri := st.mapFor(r.Name, r.Init, seg.N)
		// An init segment is the same for a whole session: written once, not per chunk.
		if m := st.Maps[r.Name]; !m.Stored {
			if err := s.put(ctx, st.key(r.Name, uri), r.Init, true); err != nil {
				return err
			}
			m.Stored = true
			st.Maps[r.Name] = m
		}
	}
	return nil
}

// put writes one object, retrying with backoff: a storage outage delays the stream but loses
// and reorders nothing, because nothing later is listed until this succeeds.
func (s *Service) put(ctx context.Context, key string, data []byte, live bool) error {
	return s.w.Put(ctx, key, data, live)
}

// load returns the stream's state, current with the state store: several packagers share the
// work, so a cached state is used only while nobody else has saved a newer revision.
func (s *Service) load(ctx context.Context, l *streamLock, streamID string) (*state, error) {
	b, rev, err := s.state.Get(ctx, stateKey(streamID))
	switch {
	case errors.Is(err, queue.ErrNotFound):
		if l.st != nil && l.st.rev == 0 {
			return l.st, nil
		}
		l.st = newState(streamID, s.cfg.ChunkTarget)
		return l.st, nil
	case err != nil:
		return nil, err
	}
	if l.st != nil && l.st.rev == rev {
		return l.st, nil
	}
	st := newState(streamID, s.cfg.ChunkTarget)
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("%w: corrupt state for %s: %v", errPoison, streamID, err)
	}
	if st.Pending == nil {
		st.Pending = map[uint64]*pending{}
	}
	st.migrate()
	st.rev = rev
	l.st = st
	return st, nil
}

// errStale means another packager saved the stream's state first; the work is retried on
// the newer state.
var errStale = errors.New("packager: state changed by another packager")

// save stores the state if nobody saved a newer revision since it was loaded.
func (s *Service) save(ctx context.Context, st *state) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	var rev uint64
	if st.rev == 0 {
		rev, err = s.state.Create(ctx, stateKey(st.StreamID), b)
	} else {
		rev, err = s.state.Update(ctx, stateKey(st.StreamID), b, st.rev)
	}
	if errors.Is(err, queue.ErrConflict) || errors.Is(err, queue.ErrExists) {
		s.forget(st.StreamID)
		return errStale
	}
	if err != nil {
		return err
	}
	st.rev = rev
	return nil
}

// forget drops a cached state so the next load reads the store.
func (s *Service) forget(streamID string) {
	s.mu.Lock()
	l := s.streams[streamID]
	s.mu.Unlock()
	if l != nil {
		l.st = nil
	}
}

func stateKey(streamID string) string { return "packager." + streamID }

// tend does a stream's timed work: deleting segments past their grace, retrying playlists that
// failed to upload, listing a gap for a chunk that never came, and ending a session whose
// chunks stopped coming without a last one (its ingest died).
func (s *Service) tend(ctx context.Context, id string) {
	l := s.lock(id)
	l.mu.Lock()
	defer l.mu.Unlock()
	st, err := s.load(ctx, l, id)
	if err != nil {
		s.log.Warn("loading state failed", "stream_id", id, "err", err)
		return
	}
	log := s.log.With("stream_id", id, "session_id", st.Session)
	changed := false
	if len(st.Retired) > 0 && s.sweep(ctx, st) {
		changed = true
	}
	if len(st.Pending) > 0 && st.forceOverdue(time.Now(), s.cfg.GapTimeout) {
		changed = true
	}
	if st.Session != "" && !st.Ended && len(st.Pending) == 0 && !st.LastActivity.IsZero() &&
		time.Since(st.LastActivity) > s.cfg.SessionTimeout {
		log.Warn("no chunk for the session in a while: ending it (its ingest may have died)", "idle", time.Since(st.LastActivity).Round(time.Second))
		st.Ended, st.EndedByTimeout, st.Dirty = true, true, true
		s.sessionEnded(ctx, st, log)
		changed = true
	}
	if !changed && !st.Dirty {
		return
	}
	if err := s.advance(ctx, st, log); err != nil && !errors.Is(err, errStale) {
		log.Warn("timed packaging work failed; will retry", "err", err)
	}
}

// discover loads the streams whose state is in the store, so timed work (gaps, endings,
// deletions) goes on for them after a restart even if no message comes.
func (s *Service) discover(ctx context.Context) {
	kl, ok := s.state.(interface {
		KeysMatching(ctx context.Context, filter string) ([]string, error)
	})
	if !ok {
		return
	}
	keys, err := kl.KeysMatching(ctx, "packager.*")
	if err != nil {
		s.log.Warn("listing stream states failed", "err", err)
		return
	}
	for _, k := range keys {
		s.lock(strings.TrimPrefix(k, "packager."))
	}
}

// gapLoop lists a gap for a chunk that has not come while later ones wait, so one lost chunk
// never stalls a stream.
func (s *Service) gapLoop(ctx context.Context) {
	s.discover(ctx)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	lastExpiry := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(lastExpiry) > time.Minute {
			lastExpiry = time.Now()
			s.expireRecordings(ctx)
		}
		s.mu.Lock()
		ids := make([]string, 0, len(s.streams))
		for id := range s.streams {
			ids = append(ids, id)
		}
		s.mu.Unlock()
		for _, id := range ids {
			s.tend(ctx, id)
		}
	}
}
