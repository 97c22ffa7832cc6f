// Package ingest is the RTMP front door: it authorizes publishers by stream key, cuts each
// publish session into GOP-aligned chunks and hands them to the transcoders through the queue.
// It keeps no media beyond the chunk being built and a bounded backlog of finished chunks.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/google/uuid"

	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/chunker"
	"github.com/gopcast/gopcast/pkg/media/codec"
	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/streams"
)

// Config tunes the ingest.
type Config struct {
	// Addr is the RTMP listen address, e.g. ":1935".
	Addr string
	// ChunkTarget is the chunk duration: chunks are cut at the first keyframe at or after it.
	ChunkTarget time.Duration
	// MaxChunkBytes bounds one chunk (and so a publisher's memory) when keyframes are rare.
	MaxChunkBytes int
	// MaxBacklog is how many finished chunks may wait for the queue (while NATS reconnects)
	// before the publisher is dropped.
	MaxBacklog int
	// HandshakeTimeout bounds the RTMP handshake and the wait for the first media.
	HandshakeTimeout time.Duration
	// ReadTimeout drops a publisher that sends nothing for this long.
	ReadTimeout time.Duration
	// Live streams each chunk to a transcoder while it is written (when the Publisher is a
	// LiveOfferer and a transcoder takes it), so the ladder is encoded as the stream arrives.
	Live bool
	// ReadBatch is the period of the shared clock on whose ticks publishing connections are
	// read, out of Go's poller on Linux (0: read as bytes arrive), so one read takes several
	// frames and the sessions wake together.
	ReadBatch time.Duration
}

func (c *Config) defaults() {
	if c.Addr == "" {
		c.Addr = ":1935"
	}
	if c.ChunkTarget == 0 {
		c.ChunkTarget = 2 * time.Second
	}
	if c.MaxChunkBytes == 0 {
		c.MaxChunkBytes = 64 << 20
	}
	if c.MaxBacklog == 0 {
		c.MaxBacklog = 30
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = 10 * time.Second
	}
}

// Registry is what the ingest needs from the stream registry: key checks, the one-publisher
// lease, and news of streams that were deleted or had their key rotated.
type Registry interface {
	Authorize(ctx context.Context, key string) (*streams.Stream, error)
	Get(ctx context.Context, id string) (*streams.Stream, error)
	Claim(ctx context.Context, streamID, sessionID string) (*streams.Claim, error)
	Watch(ctx context.Context) (<-chan string, error)
}

// Publisher hands finished chunks and lifecycle events on.
type Publisher interface {
	// PublishChunk sends a chunk; it may not keep data after it returns (the ingest reuses
	// the memory for later chunks).
	PublishChunk(ctx context.Context, job *queue.Chunk, data []byte) error
	PublishEvent(ctx context.Context, ev queue.Event) error
}

// Service is the RTMP ingest.
type Service struct {
	cfg Config
	log *slog.Logger
	reg Registry
	pub Publisher

	mu       sync.Mutex
	ln       net.Listener
	live     map[string]*session // by stream id
	conns    map[net.Conn]struct{}
	ready    chan struct{}
	closing  bool
	sessions sync.WaitGroup
}

// New returns an ingest service.
func New(cfg Config, log *slog.Logger, reg Registry, pub Publisher) *Service {
	cfg.defaults()
	return &Service{
		cfg: cfg, log: log, reg: reg, pub: pub,
		live:  make(map[string]*session),
		conns: make(map[net.Conn]struct{}),
		ready: make(chan struct{}),
	}
}

// Addr is the bound listen address once Run has started listening (blocks until then).
func (s *Service) Addr() net.Addr {
	<-s.ready
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ln.Addr()
}

// Ready reports whether the RTMP listener is up.
func (s *Service) Ready() bool {
	select {
	case <-s.ready:
		return true
	default:
		return false
	}
}

// Run listens for publishers until ctx ends, then ends every session (flushing its last chunk)
// before returning.
func (s *Service) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("ingest: listen on %s (--rtmp-addr): %w", s.cfg.Addr, err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	close(s.ready)
	s.log.Info("RTMP ingest listening", "addr", ln.Addr().String())
	go s.watchStreams(ctx)

	go func() {
		<-ctx.Done()
		s.mu.Lock()
		s.closing = true
		for c := range s.conns {
			// Ends each publisher's read loop; its session then flushes the last chunk.
			_ = c.SetReadDeadline(time.Now())
		}
		s.mu.Unlock()
		_ = ln.Close()
	}()

	for {
		raw, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				s.sessions.Wait()
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.sessions.Wait()
			return fmt.Errorf("ingest: accept: %w", err)
		}
		conn := newPolledConn(raw)
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			_ = conn.Close()
			continue
		}
		s.conns[conn] = struct{}{}
		s.sessions.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.sessions.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, conn)
				s.mu.Unlock()
				conn.release()
			}()
			s.handle(ctx, conn)
		}()
	}
}

// errRefused marks a publish refused on purpose (bad key, busy stream, bad codec).
var errRefused = errors.New("publish refused")

func (s *Service) handle(ctx context.Context, conn net.Conn) {
	log := s.log.With("remote", conn.RemoteAddr().String())
	defer func() {
		// Nothing a client sends may crash the process.
		if r := recover(); r != nil {
			log.Error("RTMP connection panicked", "panic", r)
		}
	}()
	err := s.serve(ctx, conn, log)
	switch {
	case err == nil:
	case errors.Is(err, errRefused):
		log.Warn("RTMP publish refused", "err", err)
	default:
		log.Info("RTMP connection closed", "err", err)
	}
}

func (s *Service) serve(ctx context.Context, conn net.Conn, log *slog.Logger) (retErr error) {
	_ = conn.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	pc := newPublisherConn(conn)
	sc := &gortmplib.ServerConn{RW: pc}
	if err := sc.Initialize(); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if err := sc.AcceptConn(); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if !sc.Publish {
		refuse(sc, "NetStream.Play.Failed", "playback over RTMP is not offered: watch the stream's HLS or DASH URL")
		return fmt.Errorf("%w: playback over RTMP is not offered; watch HLS or DASH", errRefused)
	}
	app, key := splitPath(sc.URL.Path)
	if app != "live" {
		refuse(sc, "NetStream.Publish.BadName", fmt.Sprintf("unknown application %q: publish to rtmp://HOST/live/STREAM_KEY", app))
		return fmt.Errorf("%w: unknown application %q (publish to rtmp://HOST/live/STREAM_KEY)", errRefused, app)
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	st, err := s.reg.Authorize(actx, key)
	cancel()
	if err != nil {
		_ = sc.RejectAction()
		if errors.Is(err, streams.ErrUnknownKey) {
			return fmt.Errorf("%w: %v", errRefused, err)
		}
		return fmt.Errorf("%w: key check failed: %v", errRefused, err)
	}
	log = log.With("stream_id", st.ID)

	sess := &session{id: uuidString(), stream: st, started: time.Now(), conn: conn}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	claim, err := s.reg.Claim(cctx, st.ID, sess.id)
	cancel()
	if err != nil {
		if errors.Is(err, streams.ErrBusy) {
			refuse(sc, "NetStream.Publish.BadName", "the stream already has a publisher")
			return fmt.Errorf("%w: stream %s already has a publisher", errRefused, st.ID)
		}
		_ = sc.RejectAction()
		return fmt.Errorf("%w: live lease: %v", errRefused, err)
	}
	log = log.With("session_id", sess.id)
	s.track(sess)
	endReason := "publisher left"
	var m *meter
	defer func() {
		s.untrack(sess)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if r := sess.kickReason(); r != "" {
			endReason = r
		} else if m == nil && retErr != nil {
			endReason = retErr.Error() // refused, or no media came: the session record says why
		}
		if err := claim.Release(rctx, sc.BytesReceived(), endReason); err != nil {
			log.Warn("releasing the live lease failed", "err", err)
		}
		if m != nil {
			s.event(rctx, queue.EventStreamIdle, sess, map[string]any{"reason": endReason, "bytes_in": sc.BytesReceived()})
		}
	}()

	// The Reader accepts the publish itself only when handed the ServerConn, not a wrapper.
	if err := sc.AcceptAction(); err != nil {
		return fmt.Errorf("accepting the publish: %w", err)
	}
	ac := &announcedConn{Conn: sc}
	r := &gortmplib.Reader{Conn: ac}
	if err := r.Initialize(); err != nil {
		return fmt.Errorf("reading tracks: %w", err)
	}
	var vTrack, aTrack *gortmplib.Track
	var extra []*gortmplib.Track // further tracks of an enhanced-RTMP multitrack publish
	for _, t := range r.Tracks() {
		switch c := t.Codec.(type) {
		case *codecs.H264:
			if vTrack == nil {
				vTrack = t
			} else {
				extra = append(extra, t)
			}
		case *codecs.MPEG4Audio:
			if aTrack == nil {
				aTrack = t
			} else {
				extra = append(extra, t)
			}
		default:
			refuse(sc, "NetStream.Publish.BadName", fmt.Sprintf("unsupported codec %s: gopcast takes H.264 video with AAC audio", codecName(c)))
			return fmt.Errorf("%w: unsupported codec %s", errRefused, codecName(c))
		}
	}
	if vTrack == nil {
		refuse(sc, "NetStream.Publish.BadName", "no H.264 video track: gopcast needs H.264 video (AAC audio optional)")
		return fmt.Errorf("%w: no H.264 video track", errRefused)
	}
	h := vTrack.Codec.(*codecs.H264)
	vcfg := media.H264Config{SPS: h.SPS, PPS: h.PPS}
	vp, err := videoParams(vcfg)
	if err != nil {
		refuse(sc, "NetStream.Publish.BadName", "H.264 parameters could not be parsed")
		return fmt.Errorf("%w: %v", errRefused, err)
	}
	var acfg *media.AACConfig
	var ap *queue.AudioParams
	if aTrack != nil {
		asc, err := aTrack.Codec.(*codecs.MPEG4Audio).Config.Marshal()
		if err != nil {
			return fmt.Errorf("%w: AAC config: %v", errRefused, err)
		}
		acfg = &media.AACConfig{ASC: asc}
		if ap, err = audioParams(*acfg); err != nil {
			return fmt.Errorf("%w: %v", errRefused, err)
		}
	}
	ch, err := chunker.New(chunker.Config{
		Target:   int64(s.cfg.ChunkTarget) * media.Timescale / int64(time.Second),
		MaxBytes: s.cfg.MaxChunkBytes,
		Buffer:   chunkBuffer,
	}, vcfg, acfg)
	if err != nil {
		return err
	}
	log.Info("publish started", "video", vp.Codec, "width", vp.Width, "height", vp.Height, "audio", ap != nil,
		"tracks_from_metadata", ac.endedEarly)
	base := streams.Health{VideoCodec: vp.Codec, Width: vp.Width, Height: vp.Height}
	if ap != nil {
		base.AudioCodec = ap.Codec
	}
	m = newMeter(base, ap != nil)
	s.event(ctx, queue.EventStreamLive, sess, map[string]any{"video": vp, "audio": ap})
	hbCtx, stopHB := context.WithCancel(ctx)
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		s.heartbeat(hbCtx, claim, m, sc, sess, log)
	}()
	defer func() { stopHB(); <-hbDone }()

	out := newOutbox(s.pub, s.cfg.MaxBacklog, log)
	outCtx, stopOut := context.WithCancel(context.WithoutCancel(ctx))
	outDone := make(chan struct{})
	go func() { defer close(outDone); out.run(outCtx) }()
	defer func() {
		out.close()
		// Give the backlog a bounded time to reach JetStream before giving up on it.
		select {
		case <-outDone:
		case <-time.After(30 * time.Second):
			log.Error("chunk backlog not delivered before timeout; dropping it", "pending", out.pending())
			stopOut()
			<-outDone
		}
		stopOut()
	}()

	srcRate := 0 // the session's video bits/s, from its first chunk
	job := func(c *chunker.Chunk) *queue.Chunk {
		origin, _ := ch.AudioOrigin()
		if srcRate == 0 && c.Duration > 0 {
			srcRate = int(int64(c.VideoBytes) * 8 * media.Timescale / c.Duration)
		}
		return &queue.Chunk{
			StreamID: st.ID, SessionID: sess.id, Seq: c.Seq, Profile: st.Profile, Record: st.Record,
			Start: c.Start, Duration: c.Duration, TSBase: chunker.TSBase, AudioOrigin: origin,
			SourceBitrate: srcRate, Video: vp, Audio: ap, Last: c.Last, Created: time.Now().UTC(),
		}
	}
	var live *liveChunks
	if lo, ok := s.pub.(LiveOfferer); ok && s.cfg.Live && mayEncode(st.Profile, vp.Height) {
		// Offers outlive a shutdown (each is bounded by its attempts): a chunk cut just before
		// it is still offered, and finished live, rather than left as a job for the next start.
		live = newLiveChunks(context.WithoutCancel(ctx), lo, queue.LiveOffer{StreamID: st.ID, SessionID: sess.id, Profile: st.Profile, Video: vp}, log)
		defer live.close()
	}
	var fail error
	backlogFull := false
	emit := func(c *chunker.Chunk) {
		// After a failure the remaining chunks still go out, so the session ends with its Last
		// chunk; only a full backlog has no room for them.
		if c == nil || backlogFull {
			return
		}
		j := job(c)
		sc := newSharedChunk(c.Data, 1)
		if live != nil {
			live.end(j, sc) // before the outbox, whose goroutine fills the job in
		}
		if !out.push(j, sc) {
			sc.release()
			backlogFull = true
			if fail == nil {
				fail = fmt.Errorf("chunk backlog over %d chunks: the queue is unreachable; dropping the publisher", s.cfg.MaxBacklog)
			}
		}
	}
	// RTMP timestamps are 32-bit milliseconds; each track's are carried past the roll-over.
	// Decode times that really go backwards (an encoder restarting its clock) would put frames
	// before their chunk's start, so they end the session instead.
	var vClock, aClock unwrapper
	backwards := func(kind string, from, to int64) error {
		return fmt.Errorf("%s timestamps went backwards from %.3f s to %.3f s (encoder clock reset?): ending the session",
			kind, float64(from-media.SessionOrigin)/media.Timescale, float64(to-media.SessionOrigin)/media.Timescale)
	}
	r.OnDataH264(vTrack, func(pts, dts time.Duration, au [][]byte) {
		if fail != nil || len(au) == 0 {
			return
		}
		if onlyParameterSets(au) {
			return // a repeated sequence header, not a frame
		}
		last, seen := vClock.last, vClock.seen
		udts := vClock.unwrap(dts)
		f := media.VideoFrame{PTS: ticks(udts + pts - dts), DTS: ticks(udts), Key: isIDR(au), NALUs: au}
		if seen && udts < last {
			fail = backwards("video", ticks(last), f.DTS)
			return
		}
		m.video(f)
		done, err := ch.WriteVideo(f)
		emit(done)
		if err != nil && fail == nil {
			fail = err
		}
		if live != nil && fail == nil {
			live.update(ch.Open())
		}
	})
	if aTrack != nil {
		r.OnDataMPEG4Audio(aTrack, func(pts time.Duration, au []byte) {
			if fail != nil || len(au) == 0 {
				return
			}
			last, seen := aClock.last, aClock.seen
			upts := aClock.unwrap(pts)
			if seen && upts < last-audioJitter {
				fail = backwards("audio", ticks(last), ticks(upts))
				return
			}
			m.audio(len(au))
			done, err := ch.WriteAudio(media.AudioFrame{PTS: ticks(upts), Data: au})
			emit(done)
			if err != nil && fail == nil {
				fail = err
			}
		})
	}
	for _, t := range extra {
		log.Info("ignoring an extra track of a multitrack publish", "codec", fmt.Sprintf("%T", t.Codec))
		switch t.Codec.(type) {
		case *codecs.H264:
			r.OnDataH264(t, func(time.Duration, time.Duration, [][]byte) {})
		case *codecs.MPEG4Audio:
			r.OnDataMPEG4Audio(t, func(time.Duration, []byte) {})
		}
	}

	if p, ok := conn.(*polledConn); ok && s.cfg.ReadBatch > 0 {
		switch err := p.poll(s.cfg.ReadBatch); {
		case errors.Is(err, errPollUnsupported):
			log.Debug("publisher's connection read as bytes arrive", "err", err)
		case err != nil:
			log.Warn("publisher's connection not polled on ticks; reading it as bytes arrive", "err", err)
		}
	}
	var readErr error
	// ctx is checked too: shutdown ends the read with a deadline, which the next iteration
	// would otherwise replace while the publisher keeps sending.
	for fail == nil && ctx.Err() == nil {
		// Writes too (acknowledgements, ping replies): the handshake deadline has passed.
		_ = conn.SetDeadline(time.Now().Add(s.cfg.ReadTimeout))
		if readErr = r.Read(); readErr != nil {
			break
		}
	}
	if rest := ch.Flush(); len(rest) > 0 {
		for _, c := range rest {
			emit(c)
		}
	} else if !backlogFull {
		out.push(&queue.Chunk{StreamID: st.ID, SessionID: sess.id, Seq: ch.Seq(), Last: true, Record: st.Record, TSBase: chunker.TSBase, Created: time.Now().UTC()}, nil)
	}
	if r := sess.kickReason(); r != "" {
		endReason = r
	} else if fail != nil {
		endReason = fail.Error()
	} else if ctx.Err() != nil {
		endReason = "server shutting down"
	} else if readErr != nil && !errors.Is(readErr, io.EOF) && !errors.Is(readErr, syscall.ECONNRESET) {
		// Not the publisher leaving: it went quiet, or sent what the RTMP reader refuses.
		var ne net.Error
		if errors.As(readErr, &ne) && ne.Timeout() {
			endReason = fmt.Sprintf("nothing received for %v", s.cfg.ReadTimeout)
		} else {
			endReason = "RTMP error: " + readErr.Error()
		}
	}
	log.Info("publish ended", "chunks", ch.Seq(), "reason", endReason, "read_err", errString(readErr))
	return fail
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// refuse tells an RTMP client why its publish is refused, with an error status it shows.
func refuse(sc *gortmplib.ServerConn, code, description string) {
	_ = sc.Write(&message.CommandAMF0{
		ChunkStreamID:   5,
		MessageStreamID: 0x1000000,
		Name:            "onStatus",
		Arguments: []any{
			nil,
			amf0.Object{
				{Key: "level", Value: "error"},
				{Key: "code", Value: code},
				{Key: "description", Value: description},
			},
		},
	})
}

type session struct {
	id      string
	stream  *streams.Stream
	started time.Time
	conn    net.Conn

	mu     sync.Mutex
	kicked string
}

// kick ends the session from outside its read loop: the connection is closed, the read fails,
// and the session ends normally (last chunk flushed, lease released).
func (se *session) kick(reason string) {
	se.mu.Lock()
	if se.kicked == "" {
		se.kicked = reason
	}
	se.mu.Unlock()
	_ = se.conn.Close()
}

func (se *session) kickReason() string {
	se.mu.Lock()
	defer se.mu.Unlock()
	return se.kicked
}

func (s *Service) track(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.live[sess.stream.ID] = sess
}

func (s *Service) untrack(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live[sess.stream.ID] == sess {
		delete(s.live, sess.stream.ID)
	}
}

// watchStreams cuts a live publisher within moments of its stream being deleted or its key
// rotated, on whichever ingest instance it is connected to.
func (s *Service) watchStreams(ctx context.Context) {
	for ctx.Err() == nil {
		ch, err := s.reg.Watch(ctx)
		if err != nil {
			s.log.Warn("watching streams failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		for id := range ch {
			s.mu.Lock()
			sess := s.live[id]
			s.mu.Unlock()
			if sess == nil {
				continue
			}
			gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			st, err := s.reg.Get(gctx, id)
			cancel()
			switch {
			case errors.Is(err, streams.ErrNotFound):
				s.log.Info("stream deleted; disconnecting its publisher", "stream_id", id, "session_id", sess.id)
				sess.kick("stream deleted")
			case err == nil && st.KeyHash != sess.stream.KeyHash:
				s.log.Info("stream key rotated; disconnecting its publisher", "stream_id", id, "session_id", sess.id)
				sess.kick("stream key rotated")
			}
		}
	}
}

// heartbeatEvery is how often a session's lease and health figures are refreshed: a fifth of
// streams.LiveTimeout, so a lease survives four lost beats.
const heartbeatEvery = streams.LiveTimeout / 5

// firstHeartbeat comes sooner: a new session's health shows a second after it starts.
const firstHeartbeat = time.Second

// heartbeat keeps the session's live lease fresh with its health figures; losing the lease
// (another ingest took the stream over) ends the session.
func (s *Service) heartbeat(ctx context.Context, claim *streams.Claim, m *meter, sc *gortmplib.ServerConn, sess *session, log *slog.Logger) {
	t := time.NewTimer(firstHeartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(heartbeatEvery)
		hctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := claim.Heartbeat(hctx, m.health(sc.BytesReceived()))
		cancel()
		if errors.Is(err, streams.ErrBusy) {
			log.Warn("live lease lost; disconnecting the publisher")
			sess.kick("live lease lost")
			return
		}
		if err != nil && ctx.Err() == nil {
			log.Warn("heartbeat failed", "err", err)
		}
	}
}

func (s *Service) event(ctx context.Context, kind string, sess *session, data map[string]any) {
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	ev := queue.Event{Kind: kind, StreamID: sess.stream.ID, SessionID: sess.id, Data: data}
	if err := s.pub.PublishEvent(ectx, ev); err != nil {
		s.log.Warn("publishing event failed", "kind", kind, "err", err)
	}
}

// splitPath turns "/live/KEY" into ("live", "KEY").
func splitPath(p string) (app, key string) {
	p = strings.TrimPrefix(p, "/")
	app, key, _ = strings.Cut(p, "/")
	return app, key
}

// ticks maps an RTMP timestamp to the session timeline (90 kHz from media.SessionOrigin).
func ticks(d time.Duration) int64 {
	// RTMP timestamps are whole milliseconds, so this is exact. Whole seconds are scaled
	// apart: int64(d)*Timescale overflows past 28.5 hours, well within RTMP's 49.7-day range.
	sec, rest := int64(d/time.Second), int64(d%time.Second)
	return media.SessionOrigin + sec*media.Timescale + rest*media.Timescale/int64(time.Second)
}

// rtmpWrap is where RTMP's 32-bit millisecond timestamps roll over, every 49.7 days.
const rtmpWrap = time.Duration(1<<32) * time.Millisecond

// audioJitter is how far audio timestamps may step back before it counts as a clock reset.
const audioJitter = 500 * time.Millisecond

// unwrapper carries one track's RTMP timestamps past the 32-bit roll-over with serial number
// arithmetic, as the RTMP specification asks: a step back of more than half the range is a
// wrap, not a jump.
type unwrapper struct {
	base time.Duration
	last time.Duration
	seen bool
}

func (u *unwrapper) unwrap(ts time.Duration) time.Duration {
	t := ts + u.base
	if u.seen && u.last-t > rtmpWrap/2 {
		u.base += rtmpWrap
		t += rtmpWrap
	}
	u.last, u.seen = t, true
	return t
}

func uuidString() string {
	if id, err := uuid.NewV7(); err == nil {
		return id.String()
	}
	return uuid.NewString()
}

func codecName(c codecs.Codec) string {
	switch c.(type) {
	case *codecs.H265:
		return "H.265/HEVC"
	case *codecs.AV1:
		return "AV1"
	case *codecs.VP9:
		return "VP9"
	case *codecs.Opus:
		return "Opus"
	case *codecs.MPEG1Audio:
		return "MP3"
	case *codecs.AC3:
		return "AC-3"
	case *codecs.FLAC:
		return "FLAC"
	case *codecs.G711:
		return "G.711"
	case *codecs.LPCM:
		return "LPCM"
	default:
		return fmt.Sprintf("%T", c)
	}
}

func videoParams(cfg media.H264Config) (*queue.VideoParams, error) {
	cs, err := codec.H264Codec(cfg.SPS)
	if err != nil {
		return nil, err
	}
	w, h, fps, err := codec.H264Info(cfg.SPS)
	if err != nil {
		return nil, err
	}
	return &queue.VideoParams{Codec: cs, Width: w, Height: h, FPS: fps}, nil
}

func audioParams(cfg media.AACConfig) (*queue.AudioParams, error) {
	cs, err := codec.AACCodec(cfg.ASC)
	if err != nil {
		return nil, err
	}
	rate, ch, err := codec.AACInfo(cfg.ASC)
	if err != nil {
		return nil, err
	}
	return &queue.AudioParams{Codec: cs, SampleRate: rate, Channels: ch}, nil
}
