// Package ingest is the RTMP front door: it authorizes publishers by stream key, cuts each
// publish session into GOP-aligned chunks, writes every chunk's source video and audio to the
// bucket as CMAF segments, and, for a session with rungs to encode, streams the chunks' video to
// the transcoders through the queue while they are being cut. It keeps no media beyond the
// chunks being built and a bounded backlog of finished ones.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/google/uuid"

	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/codec"
	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/storage"
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
	// DefaultProfile is the ladder of streams that name none.
	DefaultProfile string
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
	if c.DefaultProfile == "" {
		c.DefaultProfile = "default"
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

// Queue is what the ingest sends through NATS: encode jobs, chunk parts and ends, segment
// records, lifecycle events. None of them may keep a byte slice after returning (the ingest
// reuses the memory for later chunks).
type Queue interface {
	PublishJob(ctx context.Context, job *queue.EncodeJob) error
	PublishPart(ctx context.Context, p queue.Part) error
	PublishChunk(ctx context.Context, c *queue.Chunk) error
	PublishSegment(ctx context.Context, seg *queue.Segment) error
	PublishEvent(ctx context.Context, ev queue.Event) error
}

// Service is the RTMP ingest.
type Service struct {
	cfg Config
	log *slog.Logger
	reg Registry
	q   Queue
	w   *storage.Writer

	mu         sync.Mutex
	ln         net.Listener
	publishers map[string]*session // by stream id
	conns      map[net.Conn]struct{}
	ready      chan struct{}
	closing    bool
	handlers   sync.WaitGroup
}

// New returns an ingest service writing segments with w.
func New(cfg Config, log *slog.Logger, reg Registry, q Queue, w *storage.Writer) *Service {
	cfg.defaults()
	return &Service{
		cfg: cfg, log: log, reg: reg, q: q, w: w,
		publishers: make(map[string]*session),
		conns:      make(map[net.Conn]struct{}),
		ready:      make(chan struct{}),
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
				s.handlers.Wait()
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.handlers.Wait()
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
		s.handlers.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.handlers.Done()
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

func (s *Service) track(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.publishers[sess.stream.ID] = sess
}

func (s *Service) untrack(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.publishers[sess.stream.ID] == sess {
		delete(s.publishers, sess.stream.ID)
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
			sess := s.publishers[id]
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
