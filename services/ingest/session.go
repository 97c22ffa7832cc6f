package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/codecs"

	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/chunker"
	"github.com/gopcast/gopcast/pkg/media/ladder"
	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/streams"
)

// A connection goes through serve's steps: the RTMP handshake, the key check and live lease
// (authorize), the tracks (openTracks), the media (run), and the end (end), each a function of
// its own. From authorize on, a session owns everything of one publish: its lease, its chunker
// and its outbox.

// serve runs one RTMP connection through its steps.
func (s *Service) serve(ctx context.Context, conn net.Conn, log *slog.Logger) error {
	sc, err := s.handshake(conn)
	if err != nil {
		return err
	}
	se, err := s.authorize(ctx, conn, sc, log)
	if err != nil {
		return err
	}
	return se.publish(ctx)
}

// handshake runs the RTMP handshake and connect, and refuses anything but a publish.
func (s *Service) handshake(conn net.Conn) (*gortmplib.ServerConn, error) {
	_ = conn.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	sc := &gortmplib.ServerConn{RW: newPublisherConn(conn)}
	if err := sc.Initialize(); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	if err := sc.AcceptConn(); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if !sc.Publish {
		refuse(sc, "NetStream.Play.Failed", "playback over RTMP is not offered: watch the stream's HLS or DASH URL")
		return nil, fmt.Errorf("%w: playback over RTMP is not offered; watch HLS or DASH", errRefused)
	}
	return sc, nil
}

// authorize checks the stream key and takes the stream's live lease for a new session.
func (s *Service) authorize(ctx context.Context, conn net.Conn, sc *gortmplib.ServerConn, log *slog.Logger) (*session, error) {
	app, key := splitPath(sc.URL.Path)
	if app != "live" {
		refuse(sc, "NetStream.Publish.BadName", fmt.Sprintf("unknown application %q: publish to rtmp://HOST/live/STREAM_KEY", app))
		return nil, fmt.Errorf("%w: unknown application %q (publish to rtmp://HOST/live/STREAM_KEY)", errRefused, app)
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	st, err := s.reg.Authorize(actx, key)
	cancel()
	if err != nil {
		_ = sc.RejectAction()
		if errors.Is(err, streams.ErrUnknownKey) {
			return nil, fmt.Errorf("%w: %v", errRefused, err)
		}
		return nil, fmt.Errorf("%w: key check failed: %v", errRefused, err)
	}
	se := &session{s: s, id: uuidString(), stream: st, started: time.Now(), conn: conn, sc: sc, profile: s.profile(st, log)}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	se.claim, err = s.reg.Claim(cctx, st.ID, se.id)
	cancel()
	if err != nil {
		if errors.Is(err, streams.ErrBusy) {
			refuse(sc, "NetStream.Publish.BadName", "the stream already has a publisher")
			return nil, fmt.Errorf("%w: stream %s already has a publisher", errRefused, st.ID)
		}
		_ = sc.RejectAction()
		return nil, fmt.Errorf("%w: live lease: %v", errRefused, err)
	}
	se.log = log.With("stream_id", st.ID, "session_id", se.id)
	return se, nil
}

// profile is the ladder a stream's chunks are encoded with: its own, or the default.
func (s *Service) profile(st *streams.Stream, log *slog.Logger) string {
	if st.Profile == "" {
		return s.cfg.DefaultProfile
	}
	if _, err := ladder.Lookup(st.Profile); err != nil {
		log.Warn("unknown profile; using the default", "profile", st.Profile, "default", s.cfg.DefaultProfile)
		return s.cfg.DefaultProfile
	}
	return st.Profile
}

// session is one publish, from its key check to its end.
type session struct {
	s       *Service
	id      string
	stream  *streams.Stream
	profile string
	started time.Time
	conn    net.Conn
	sc      *gortmplib.ServerConn
	claim   *streams.Claim
	log     *slog.Logger

	// The media, from openTracks on.
	r              *gortmplib.Reader
	announced      *announcedConn
	vTrack, aTrack *gortmplib.Track
	extra          []*gortmplib.Track // further tracks of an enhanced-RTMP multitrack publish
	vcfg           media.H264Config
	acfg           *media.AACConfig
	vp             *queue.VideoParams
	ap             *queue.AudioParams
	chunker        *chunker.Chunker
	meter          *meter
	out            *outbox
	stopOut        context.CancelFunc
	srcRate        int // the session's video bits/s, from its first chunk
	vClock, aClock unwrapper
	fail           error // ends the read loop; the session still ends with its last chunk
	full           bool  // a backlog was full: no room for more chunks

	mu        sync.Mutex
	kicked    string
	endReason string
}

// publish runs the session from its tracks to its end.
func (se *session) publish(ctx context.Context) (err error) {
	se.s.track(se)
	se.endReason = "publisher left"
	defer func() { se.end(ctx, err) }()
	if err := se.openTracks(ctx); err != nil {
		return err
	}
	hbCtx, stopHB := context.WithCancel(ctx)
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		se.heartbeat(hbCtx)
	}()
	defer func() { stopHB(); <-hbDone }()

	readErr := se.run(ctx)
	se.flush()
	se.out.close(se.stopOut, 30*time.Second)
	se.endReason = se.reason(ctx, readErr)
	se.log.Info("publish ended", "chunks", se.chunker.Seq(), "reason", se.endReason, "read_err", errString(readErr))
	return se.fail
}

// openTracks accepts the publish, learns its tracks, refuses what gopcast cannot take, and
// readies the chunker and the outbox.
func (se *session) openTracks(ctx context.Context) error {
	// The Reader accepts the publish itself only when handed the ServerConn, not a wrapper.
	if err := se.sc.AcceptAction(); err != nil {
		return fmt.Errorf("accepting the publish: %w", err)
	}
	se.announced = &announcedConn{Conn: se.sc}
	se.r = &gortmplib.Reader{Conn: se.announced}
	if err := se.r.Initialize(); err != nil {
		return fmt.Errorf("reading tracks: %w", err)
	}
	for _, t := range se.r.Tracks() {
		switch c := t.Codec.(type) {
		case *codecs.H264:
			if se.vTrack == nil {
				se.vTrack = t
			} else {
				se.extra = append(se.extra, t)
			}
		case *codecs.MPEG4Audio:
			if se.aTrack == nil {
				se.aTrack = t
			} else {
				se.extra = append(se.extra, t)
			}
		default:
			refuse(se.sc, "NetStream.Publish.BadName", fmt.Sprintf("unsupported codec %s: gopcast takes H.264 video with AAC audio", codecName(c)))
			return fmt.Errorf("%w: unsupported codec %s", errRefused, codecName(c))
		}
	}
	if se.vTrack == nil {
		refuse(se.sc, "NetStream.Publish.BadName", "no H.264 video track: gopcast needs H.264 video (AAC audio optional)")
		return fmt.Errorf("%w: no H.264 video track", errRefused)
	}
	h := se.vTrack.Codec.(*codecs.H264)
	se.vcfg = media.H264Config{SPS: h.SPS, PPS: h.PPS}
	var err error
	if se.vp, err = videoParams(se.vcfg); err != nil {
		refuse(se.sc, "NetStream.Publish.BadName", "H.264 parameters could not be parsed")
		return fmt.Errorf("%w: %v", errRefused, err)
	}
	if se.aTrack != nil {
		asc, err := se.aTrack.Codec.(*codecs.MPEG4Audio).Config.Marshal()
		if err != nil {
			return fmt.Errorf("%w: AAC config: %v", errRefused, err)
		}
		se.acfg = &media.AACConfig{ASC: asc}
		if se.ap, err = audioParams(*se.acfg); err != nil {
			return fmt.Errorf("%w: %v", errRefused, err)
		}
	}
	encode := mayEncode(se.profile, se.vp.Height)
	if se.chunker, err = chunker.New(chunker.Config{
		Target:   int64(se.s.cfg.ChunkTarget) * media.Timescale / int64(time.Second),
		MaxBytes: se.s.cfg.MaxChunkBytes,
		TS:       encode,
		Buffer:   chunkBuffer,
	}, se.vcfg, se.acfg); err != nil {
		return err
	}
	se.log.Info("publish started", "video", se.vp.Codec, "width", se.vp.Width, "height", se.vp.Height, "audio", se.ap != nil,
		"profile", se.profile, "encode", encode, "tracks_from_metadata", se.announced.endedEarly)
	base := streams.Health{VideoCodec: se.vp.Codec, Width: se.vp.Width, Height: se.vp.Height}
	if se.ap != nil {
		base.AudioCodec = se.ap.Codec
	}
	se.meter = newMeter(base, se.ap != nil)
	se.event(ctx, queue.EventStreamLive, map[string]any{"video": se.vp, "audio": se.ap})

	se.out = &outbox{q: se.s.q, w: se.s.w, claim: se.claim, log: se.log, max: se.s.cfg.MaxBacklog, vcfg: se.vcfg, acfg: se.acfg,
		record: se.stream.Record, describe: se.describe, onLost: func(error) { se.kick("live lease lost") }}
	if encode {
		se.out.job = &queue.EncodeJob{StreamID: se.stream.ID, SessionID: se.id, Profile: se.profile, Record: se.stream.Record, Video: se.vp}
	}
	// The lanes outlive a shutdown (close bounds them): chunks cut before it still go out.
	var octx context.Context
	octx, se.stopOut = context.WithCancel(context.WithoutCancel(ctx))
	se.out.start(octx)
	se.onMedia()
	return nil
}

// mayEncode reports whether a stream's chunks may have ladder rungs to encode: false for a
// profile that has none for this source (passthrough).
func mayEncode(profile string, height int) bool {
	p, err := ladder.Lookup(profile)
	return err == nil && len(p.Select(height, 0)) > 0
}

// onMedia sets the Reader's callbacks: frames go to the health meter and the chunker, and
// finished chunks to the outbox.
func (se *session) onMedia() {
	se.r.OnDataH264(se.vTrack, func(pts, dts time.Duration, au [][]byte) {
		if se.fail != nil || len(au) == 0 || onlyParameterSets(au) {
			return // a repeated sequence header, not a frame
		}
		last, seen := se.vClock.last, se.vClock.seen
		udts := se.vClock.unwrap(dts)
		f := media.VideoFrame{PTS: ticks(udts + pts - dts), DTS: ticks(udts), Key: isIDR(au), NALUs: au}
		if seen && udts < last {
			se.fail = backwards("video", ticks(last), f.DTS)
			return
		}
		se.meter.video(f)
		done, err := se.chunker.WriteVideo(f)
		se.emit(done)
		if err != nil && se.fail == nil {
			se.fail = err
		}
		if se.out.feed != nil && se.fail == nil && !se.full && !se.out.update(se.chunker.Open(), time.Now()) {
			se.backlogFull()
		}
	})
	if se.aTrack != nil {
		se.r.OnDataMPEG4Audio(se.aTrack, func(pts time.Duration, au []byte) {
			if se.fail != nil || len(au) == 0 {
				return
			}
			last, seen := se.aClock.last, se.aClock.seen
			upts := se.aClock.unwrap(pts)
			if seen && upts < last-audioJitter {
				se.fail = backwards("audio", ticks(last), ticks(upts))
				return
			}
			se.meter.audio(len(au))
			done, err := se.chunker.WriteAudio(media.AudioFrame{PTS: ticks(upts), Data: au})
			se.emit(done)
			if err != nil && se.fail == nil {
				se.fail = err
			}
		})
	}
	for _, t := range se.extra {
		se.log.Info("ignoring an extra track of a multitrack publish", "codec", fmt.Sprintf("%T", t.Codec))
		switch t.Codec.(type) {
		case *codecs.H264:
			se.r.OnDataH264(t, func(time.Duration, time.Duration, [][]byte) {})
		case *codecs.MPEG4Audio:
			se.r.OnDataMPEG4Audio(t, func(time.Duration, []byte) {})
		}
	}
}

// backwards is the error of decode times that really go backwards (an encoder restarting its
// clock): they would put frames before their chunk's start, so they end the session.
func backwards(kind string, from, to int64) error {
	return fmt.Errorf("%s timestamps went backwards from %.3f s to %.3f s (encoder clock reset?): ending the session",
		kind, float64(from-media.SessionOrigin)/media.Timescale, float64(to-media.SessionOrigin)/media.Timescale)
}

// describe is the description of chunk seq: its segment number and the session's source
// bitrate (measured on the first chunk described) with its timing.
func (se *session) describe(seq uint64, start, duration int64, videoBytes, frames int, last bool) queue.Chunk {
	if se.srcRate == 0 && duration > 0 {
		se.srcRate = int(int64(videoBytes) * 8 * media.Timescale / duration)
	}
	return queue.Chunk{StreamID: se.stream.ID, SessionID: se.id, Seq: seq, N: se.claim.Base() + seq, Start: start,
		Duration: duration, TSBase: chunker.TSBase, SourceBitrate: se.srcRate, Frames: frames, Last: last, Created: time.Now().UTC()}
}

// emit hands a finished chunk to the outbox. After a failure the remaining chunks still go
// out, so the session ends with its Last chunk; only a full backlog has no room for them.
func (se *session) emit(c *chunker.Chunk) {
	if c == nil {
		return
	}
	if se.full {
		// Not c.TS: the feed may still hold parts of it, which go out if the queue comes back.
		recycle(c.Mem)
		return
	}
	origin, _ := se.chunker.AudioOrigin()
	if !se.out.finish(c, se.describe(c.Seq, c.Start, c.Duration, c.VideoBytes, len(c.Video), c.Last), origin) {
		se.backlogFull()
	}
}

func (se *session) backlogFull() {
	se.full = true
	if se.fail == nil {
		se.fail = fmt.Errorf("chunk backlog over %d chunks: the queue or storage is unreachable; dropping the publisher", se.s.cfg.MaxBacklog)
	}
}

// run reads the publisher's media until it leaves, fails, or the ingest stops.
func (se *session) run(ctx context.Context) error {
	if p, ok := se.conn.(*polledConn); ok && se.s.cfg.ReadBatch > 0 {
		switch err := p.poll(se.s.cfg.ReadBatch); {
		case errors.Is(err, errPollUnsupported):
			se.log.Debug("publisher's connection read as bytes arrive", "err", err)
		case err != nil:
			se.log.Warn("publisher's connection not polled on ticks; reading it as bytes arrive", "err", err)
		}
	}
	// ctx is checked too: shutdown ends the read with a deadline, which the next iteration
	// would otherwise replace while the publisher keeps sending.
	for se.fail == nil && ctx.Err() == nil {
		// Writes too (acknowledgements, ping replies): the handshake deadline has passed.
		_ = se.conn.SetDeadline(time.Now().Add(se.s.cfg.ReadTimeout))
		if err := se.r.Read(); err != nil {
			return err
		}
	}
	return nil
}

// flush ends the chunker: its last chunks go out, the final one marked Last (or an empty last
// chunk when the session ended right after a cut).
func (se *session) flush() {
	rest := se.chunker.Flush()
	for _, c := range rest {
		se.emit(c)
	}
	if len(rest) == 0 && !se.full {
		origin, _ := se.chunker.AudioOrigin()
		if !se.out.finish(nil, se.describe(se.chunker.Seq(), 0, 0, 0, 0, true), origin) {
			se.backlogFull()
		}
	}
}

// reason says why the session ended, for its record and the idle event.
func (se *session) reason(ctx context.Context, readErr error) string {
	if r := se.kickReason(); r != "" {
		return r
	}
	switch {
	case se.fail != nil:
		return se.fail.Error()
	case ctx.Err() != nil:
		return "server shutting down"
	case readErr != nil && !errors.Is(readErr, io.EOF) && !errors.Is(readErr, syscall.ECONNRESET):
		// Not the publisher leaving: it went quiet, or sent what the RTMP reader refuses.
		var ne net.Error
		if errors.As(readErr, &ne) && ne.Timeout() {
			return fmt.Sprintf("nothing received for %v", se.s.cfg.ReadTimeout)
		}
		return "RTMP error: " + readErr.Error()
	}
	return "publisher left"
}

// end releases the lease (giving back the segment numbers the session did not use) and says
// the stream is idle.
func (se *session) end(ctx context.Context, err error) {
	se.s.untrack(se)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if r := se.kickReason(); r != "" {
		se.endReason = r
	} else if se.meter == nil && err != nil {
		se.endReason = err.Error() // refused, or no media came: the session record says why
	}
	var chunks uint64
	if se.chunker != nil {
		chunks = se.chunker.Seq()
	}
	if err := se.claim.Release(rctx, se.sc.BytesReceived(), chunks, se.endReason); err != nil {
		se.log.Warn("releasing the live lease failed", "err", err)
	}
	if se.meter != nil {
		se.event(rctx, queue.EventStreamIdle, map[string]any{"reason": se.endReason, "bytes_in": se.sc.BytesReceived()})
	}
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

// heartbeatEvery is how often a session's lease and health figures are refreshed: a fifth of
// streams.LiveTimeout, so a lease survives four lost beats.
const heartbeatEvery = streams.LiveTimeout / 5

// firstHeartbeat comes sooner: a new session's health shows a second after it starts.
const firstHeartbeat = time.Second

// heartbeat keeps the session's live lease fresh with its health figures; losing the lease
// (another ingest took the stream over) ends the session.
func (se *session) heartbeat(ctx context.Context) {
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
		err := se.claim.Heartbeat(hctx, se.meter.health(se.sc.BytesReceived()))
		cancel()
		if errors.Is(err, streams.ErrBusy) {
			se.log.Warn("live lease lost; disconnecting the publisher")
			se.kick("live lease lost")
			return
		}
		if err != nil && ctx.Err() == nil {
			se.log.Warn("heartbeat failed", "err", err)
		}
	}
}

func (se *session) event(ctx context.Context, kind string, data map[string]any) {
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	ev := queue.Event{Kind: kind, StreamID: se.stream.ID, SessionID: se.id, Data: data}
	if err := se.s.q.PublishEvent(ectx, ev); err != nil {
		se.log.Warn("publishing event failed", "kind", kind, "err", err)
	}
}
