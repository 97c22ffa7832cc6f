package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Live chunks let a transcoder encode a chunk while the publisher is still sending it, instead
// of waiting for the whole chunk: the ladder's segments are then ready a fraction of a second
// after the chunk ends rather than a whole encode later.
//
// It is an optimisation beside the durable path, never instead of it. When a chunk begins, the
// ingest offers it (a core NATS request to the transcoders' queue group); a transcoder with a
// free live slot takes it, and the ingest streams the chunk's MPEG-TS bytes to it as they are
// written (core NATS, in order, numbered), then an end message carrying the chunk's job, size
// and CRC. The taker encodes as the bytes arrive and publishes the chunk's segment as a job
// would. The chunk is still published to JetStream as always; the worker that gets its job asks
// the taker for the chunk's status (LiveStatus) and acknowledges the job without encoding when
// the taker has published the segment. Anything else (no taker, a lost part, a CRC mismatch, a
// taker that dies or fails) leaves the job to be encoded the usual way: a live chunk can cost
// time, never a segment.
const (
	liveOfferSubject = "gopcast.live.offer"
	liveOfferDirect  = "gopcast.live.offer.to." // + a taker's id: offers for that taker alone
	hdrLiveTaker     = "Gopcast-Taker"
	liveGroup        = "transcoders"
	livePartPrefix   = "gopcast.live.part."
	liveStatusPrefix = "gopcast.live.status."
	hdrLivePart      = "Gopcast-Part"
	hdrLiveEnd       = "Gopcast-End"
	liveOfferTimeout = time.Second
	// liveOfferAttempts bounds the group offers of one chunk. Each reaches a member at random
	// and a busy one declines at once (a local round trip), so a free taker among busy ones is
	// found with high probability: with one free of two, three attempts missed it one time in
	// eight (and TestLiveOfferPrefersATaker failed as often); sixteen miss it 1 in 65,536.
	liveOfferAttempts = 16
	// liveStatusHold is how long a taker answers for a chunk after it is done: the chunk's
	// job reaches a worker well within it.
	liveStatusHold = time.Minute
)

// liveIdle ends a live chunk whose parts stop (its publisher's ingest died), and liveFirstPart
// one whose first part does not come (its offer was answered after the ingest stopped waiting);
// variables for the tests.
var (
	liveIdle      = 10 * time.Second
	liveFirstPart = 2 * time.Second
)

// liveCRC is the checksum of a live chunk's bytes (hardware-assisted on amd64 and arm64).
var liveCRC = crc32.MakeTable(crc32.Castagnoli)

// LiveOffer announces a chunk that has just begun.
type LiveOffer struct {
	StreamID  string       `json:"stream_id"`
	SessionID string       `json:"session_id"`
	Seq       uint64       `json:"seq"`
	Profile   string       `json:"profile,omitempty"`
	Video     *VideoParams `json:"video,omitempty"`
	// Bitrate is the session's source bits/s, as Chunk.SourceBitrate (0: not known yet), for rung
	// selection.
	Bitrate int `json:"bitrate,omitempty"`
	// Start is the chunk's start on the session timeline, as Chunk.Start (0: not said), so a
	// transcoder can put consecutive chunks on one clock.
	Start int64 `json:"start,omitempty"`
	// Parts is the subject the chunk's bytes are sent on.
	Parts string `json:"parts"`
	// Prefer is the taker (LiveFeed.Taker) to offer the chunk to first: the one that took the
	// stream's previous chunk, whose encoder may still run (see transcoder chains). Others
	// get it if that one declines or is gone.
	Prefer string `json:"-"`
}

// ID is the chunk's id, as Chunk.ID.
func (o *LiveOffer) ID() string {
	return o.StreamID + "/" + o.SessionID + "/" + strconv.FormatUint(o.Seq, 10)
}

// liveEnd ends a live chunk's parts: the job (nil when the ingest gave the chunk up), the
// number of parts, and the size and CRC of their bytes.
type liveEnd struct {
	Job   *Chunk `json:"job,omitempty"`
	Parts int    `json:"parts"`
	Size  int    `json:"size"`
	CRC   uint32 `json:"crc"`
}

// token reports whether s can be one subject token.
func token(s string) bool {
	return s != "" && !strings.ContainsAny(s, ".*> \t\r\n")
}

func liveStatusSubject(streamID, sessionID string, seq uint64) string {
	return liveStatusPrefix + streamID + "." + sessionID + "." + strconv.FormatUint(seq, 10)
}

// LiveFeed streams one offered chunk's bytes to the transcoder that took it.
type LiveFeed struct {
	nc      *nats.Conn
	subject string
	parts   int
	sent    int
	crc     uint32
	err     error
	taker   string
}

// OfferLive offers a chunk that has just begun to the transcoders. It returns nil, without an
// error, when none takes it (none has a free live slot, or none runs).
func (c *Conn) OfferLive(ctx context.Context, o LiveOffer) (*LiveFeed, error) {
	if !token(o.StreamID) || !token(o.SessionID) {
		return nil, nil
	}
	o.Parts = livePartPrefix + nats.NewInbox()[len(nats.InboxPrefix):]
	body, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	// The preferred taker first, then each attempt reaches one member of the group; a busy
	// one declines.
	subjects := make([]string, 0, 1+liveOfferAttempts)
	if token(o.Prefer) {
		subjects = append(subjects, liveOfferDirect+o.Prefer)
	}
	for range liveOfferAttempts {
		subjects = append(subjects, liveOfferSubject)
	}
	for _, subj := range subjects {
		rctx, cancel := context.WithTimeout(ctx, liveOfferTimeout)
		reply, err := c.nc.RequestWithContext(rctx, subj, body)
		cancel()
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			if subj == liveOfferSubject {
				return nil, nil
			}
		case err != nil:
			// A taker may still say yes after this: tell it the chunk is given up (and if
			// that comes before it listens, it gives up when no part comes).
			f := &LiveFeed{nc: c.nc, subject: o.Parts}
			f.Abort()
			return nil, err
		case string(reply.Data) == "ok":
			return &LiveFeed{nc: c.nc, subject: o.Parts, taker: reply.Header.Get(hdrLiveTaker)}, nil
		}
	}
	return nil, nil
}

// Taker is the id of the transcoder that took the chunk, for LiveOffer.Prefer.
func (f *LiveFeed) Taker() string { return f.taker }

// Write sends the chunk's next bytes. Errors stick: a feed that failed sends nothing more
// (its taker then gives the chunk up, and the job is encoded the usual way).
func (f *LiveFeed) Write(p []byte) error {
	if f.err != nil || len(p) == 0 {
		return f.err
	}
	m := nats.NewMsg(f.subject)
	m.Header.Set(hdrLivePart, strconv.Itoa(f.parts))
	m.Data = p
	if f.err = f.nc.PublishMsg(m); f.err != nil {
		return f.err
	}
	f.parts++
	f.sent += len(p)
	f.crc = crc32.Update(f.crc, liveCRC, p)
	return nil
}

// Sent is how many bytes the feed has sent.
func (f *LiveFeed) Sent() int { return f.sent }

// End sends what is left of data (the whole chunk, whose first Sent bytes went already) and
// the job; if data does not begin with the bytes sent (the chunk was written again), the
// chunk is given up instead.
func (f *LiveFeed) End(job *Chunk, data []byte) error {
	if f.err != nil {
		return f.err
	}
	if len(data) < f.sent || crc32.Checksum(data[:f.sent], liveCRC) != f.crc {
		f.Abort()
		return errors.New("queue: live chunk was rewritten; given up")
	}
	if err := f.Write(data[f.sent:]); err != nil {
		return err
	}
	j := *job // the taker has the bytes: the end message carries none
	j.Object, j.Size, j.Data = "", len(data), nil
	return f.end(&liveEnd{Job: &j, Parts: f.parts, Size: f.sent, CRC: f.crc})
}

// Abort gives the chunk up: its taker stops, and the job is encoded the usual way.
func (f *LiveFeed) Abort() {
	if f.err == nil {
		_ = f.end(&liveEnd{Parts: f.parts})
	}
	f.err = errors.New("queue: live chunk given up")
}

func (f *LiveFeed) end(e *liveEnd) error {
	body, err := json.Marshal(e)
	if err != nil {
		return err
	}
	m := nats.NewMsg(f.subject)
	m.Header.Set(hdrLiveEnd, "1")
	m.Data = body
	f.err = f.nc.PublishMsg(m)
	if f.err == nil {
		f.err = errors.New("queue: live chunk ended")
		return nil
	}
	return f.err
}

// LiveSink receives one taken chunk. Part is called with the chunk's bytes in order and End
// once: with the chunk's job when every byte arrived intact, or with the reason the chunk was
// given up. Parts come one at a time, but End can come from another goroutine while a Part
// is still running (when the parts stopped for LiveIdle).
type LiveSink interface {
	Part(p []byte)
	End(job *Chunk, err error)
}

// LiveState is a live chunk's state, as its taker reports it.
type LiveState string

// The states of a live chunk.
const (
	LiveNone    LiveState = ""        // nobody took the chunk (or its taker is gone)
	LiveWorking LiveState = "working" // the taker is still receiving or encoding
	LiveDone    LiveState = "done"    // the segment is published: the job is done
	LiveFailed  LiveState = "failed"  // the taker gave up: encode the job
)

// LiveChunk is a chunk a transcoder took. The taker reports the outcome with Done.
type LiveChunk struct {
	Offer LiveOffer

	mu     sync.Mutex
	state  LiveState
	status *nats.Subscription
	parts  *nats.Subscription
	timer  *time.Timer
	ended  bool
	idle   time.Duration
	next   int
	size   int
	crc    uint32
	sink   LiveSink
}

// State is the chunk's state as LiveStatus reports it: working until Done.
func (l *LiveChunk) State() LiveState {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state == LiveNone {
		return LiveWorking
	}
	return l.state
}

// Done reports the taker's outcome: true once the chunk's segment is published, false when the
// job must be encoded the usual way. The status is answered for a while longer.
func (l *LiveChunk) Done(ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.state = LiveFailed
	if ok {
		l.state = LiveDone
	}
	if status := l.status; status != nil {
		time.AfterFunc(liveStatusHold, func() { _ = status.Unsubscribe() })
	}
}

// ServeLive takes live chunk offers until ctx ends. take decides on each offer: it returns the
// sink for the chunk's bytes, or nil to decline. A taken chunk whose parts stop for LiveIdle,
// arrive with a gap, or do not add up to the end message's size and CRC is ended with an error.
// A chunk whose parts stop (its ingest died) is ended after 10 s, one whose first part does not
// come within 2 s at once.
//
// Offers come to the group (any taker) and to this taker alone (LiveOffer.Prefer, with the id
// an accepted offer's reply names).
func (c *Conn) ServeLive(ctx context.Context, take func(*LiveChunk) LiveSink) error {
	id := nats.NewInbox()[len(nats.InboxPrefix):]
	handle := func(m *nats.Msg) {
		var o LiveOffer
		if json.Unmarshal(m.Data, &o) != nil || !strings.HasPrefix(o.Parts, livePartPrefix) || !token(o.StreamID) || !token(o.SessionID) {
			_ = m.Respond([]byte("no"))
			return
		}
		l := &LiveChunk{Offer: o}
		sink := take(l)
		if sink == nil {
			_ = m.Respond([]byte("no"))
			return
		}
		l.sink = sink
		if err := c.watchLive(l); err != nil {
			c.log.Warn("live chunk: subscribe failed", "chunk", o.ID(), "err", err)
			sink.End(nil, err)
			l.Done(false)
			_ = m.Respond([]byte("no"))
			return
		}
		ok := nats.NewMsg(m.Reply)
		ok.Header.Set(hdrLiveTaker, id)
		ok.Data = []byte("ok")
		_ = m.RespondMsg(ok)
	}
	group, err := c.nc.QueueSubscribe(liveOfferSubject, liveGroup, handle)
	if err != nil {
		return fmt.Errorf("queue: live offers: %w", err)
	}
	direct, err := c.nc.Subscribe(liveOfferDirect+id, handle)
	if err != nil {
		_ = group.Unsubscribe()
		return fmt.Errorf("queue: live offers: %w", err)
	}
	<-ctx.Done()
	return errors.Join(group.Unsubscribe(), direct.Unsubscribe())
}

// watchLive subscribes to a taken chunk's parts and status.
func (c *Conn) watchLive(l *LiveChunk) error {
	var err error
	l.status, err = c.nc.Subscribe(liveStatusSubject(l.Offer.StreamID, l.Offer.SessionID, l.Offer.Seq), func(m *nats.Msg) {
		_ = m.Respond([]byte(l.State()))
	})
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.parts, err = c.nc.Subscribe(l.Offer.Parts, l.part)
	if err != nil {
		_ = l.status.Unsubscribe()
		return err
	}
	// Parts are small and frequent; the default limits would drop a fast publisher's.
	_ = l.parts.SetPendingLimits(-1, 256<<20)
	l.idle = liveIdle
	first := liveFirstPart
	l.timer = time.AfterFunc(first, func() {
		l.mu.Lock()
		wait := first
		if l.next > 0 {
			wait = l.idle
		}
		l.mu.Unlock()
		l.finish(nil, errors.New("live chunk: no data for "+wait.String()))
	})
	return nil
}

// part handles one message on the parts subject.
func (l *LiveChunk) part(m *nats.Msg) {
	if m.Header.Get(hdrLiveEnd) != "" {
		var e liveEnd
		switch {
		case json.Unmarshal(m.Data, &e) != nil:
			l.finish(nil, errors.New("live chunk: bad end message"))
		case e.Job == nil:
			l.finish(nil, errors.New("live chunk: given up by the ingest"))
		default:
			l.mu.Lock()
			next, size, crc := l.next, l.size, l.crc
			l.mu.Unlock()
			if e.Parts != next || e.Size != size || e.CRC != crc {
				l.finish(nil, fmt.Errorf("live chunk: received %d parts, %d bytes (crc %08x); sent %d, %d bytes (crc %08x)", next, size, crc, e.Parts, e.Size, e.CRC))
				return
			}
			l.finish(e.Job, nil)
		}
		return
	}
	n, err := strconv.Atoi(m.Header.Get(hdrLivePart))
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return
	}
	idle := l.idle
	if err != nil || n != l.next {
		l.mu.Unlock()
		l.finish(nil, fmt.Errorf("live chunk: part %q where %d was due", m.Header.Get(hdrLivePart), l.next))
		return
	}
	l.next++
	l.size += len(m.Data)
	l.crc = crc32.Update(l.crc, liveCRC, m.Data)
	l.timer.Reset(idle)
	l.mu.Unlock()
	l.sink.Part(m.Data)
}

// finish ends the chunk's parts once: the sink hears the outcome.
func (l *LiveChunk) finish(job *Chunk, err error) {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return
	}
	l.ended = true
	l.timer.Stop()
	parts := l.parts
	l.mu.Unlock()
	_ = parts.Unsubscribe()
	l.sink.End(job, err)
}

// LiveStatus asks the taker of a job's chunk, if any, how the chunk stands.
func (c *Conn) LiveStatus(ctx context.Context, job *Chunk) (LiveState, error) {
	if !token(job.StreamID) || !token(job.SessionID) {
		return LiveNone, nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	m, err := c.nc.RequestWithContext(ctx, liveStatusSubject(job.StreamID, job.SessionID, job.Seq), nil)
	if errors.Is(err, nats.ErrNoResponders) {
		return LiveNone, nil
	}
	if err != nil {
		return LiveNone, err
	}
	return LiveState(m.Data), nil
}
