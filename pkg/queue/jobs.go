package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// VideoParams describe a session's video as the ingest saw it.
type VideoParams struct {
	Codec  string  `json:"codec"` // RFC 6381, e.g. avc1.64001f
	Width  int     `json:"width"`
	Height int     `json:"height"`
	FPS    float64 `json:"fps,omitempty"`
}

// AudioParams describe a session's audio as the ingest saw it.
type AudioParams struct {
	Codec      string `json:"codec"` // e.g. mp4a.40.2
	SampleRate int    `json:"sample_rate"`
	Channels   int    `json:"channels"`
}

// EncodeJob is the work of encoding one session's ladder: the ingest publishes it when a
// session with rungs to encode begins, a transcoder holds it while the session lasts, reading
// the session's chunks as they land (ReadChunks), and acknowledges it after the last one. If
// the transcoder dies, JetStream hands the job to another one after JobAckWait, which goes on
// from the first chunk not yet done.
type EncodeJob struct {
	StreamID  string `json:"stream_id"`
	SessionID string `json:"session_id"`
	// Profile is the ladder profile to encode (resolved by the ingest: never empty).
	Profile string `json:"profile"`
	// Record keeps the session as a recording; the transcoder's records say so too.
	Record  bool         `json:"record,omitempty"`
	Video   *VideoParams `json:"video,omitempty"`
	Created time.Time    `json:"created"`
}

// ID is the job's identity, for de-duplication.
func (j *EncodeJob) ID() string { return j.StreamID + "/" + j.SessionID }

// Chunk describes one GOP-aligned chunk of a session: the message that ends the chunk's parts
// on the chunk stream. Times are in the session timeline at 90 kHz. The chunk's MPEG-TS (its
// parts' bytes, the video only) carries timestamps shifted so that Start maps to TSBase:
// ts = TSBase + (t - Start). That keeps them far from MPEG-TS's 33-bit wrap and leaves room
// for B-frame decode times before Start.
type Chunk struct {
	StreamID  string `json:"stream_id"`
	SessionID string `json:"session_id"`
	Seq       uint64 `json:"seq"`
	// N is the chunk's segment number: its renditions' media segments are {N}.m4s. Numbers
	// run on across a stream's sessions (the ingest reserves them, see streams.Claim).
	N uint64 `json:"n"`
	// Start is the decode time of the chunk's first (key) frame; Duration runs to the next
	// chunk's first frame.
	Start    int64 `json:"start"`
	Duration int64 `json:"duration"`
	TSBase   int64 `json:"ts_base"`
	// SourceBitrate is the session's video bits/s, measured over its first chunk. The
	// ladder's rungs are chosen from it rather than from each chunk's own rate, so every
	// chunk of a session has the same renditions.
	SourceBitrate int `json:"source_bitrate,omitempty"`
	// Frames is the chunk's number of video frames: every rung has as many.
	Frames int `json:"frames"`
	// Last marks the session's final chunk; an empty last chunk (Size 0) only ends it.
	Last bool `json:"last,omitempty"`
	// Size and CRC (CRC-32C) are of the chunk's bytes, all its parts in order.
	Size    int       `json:"size"`
	CRC     uint32    `json:"crc"`
	Created time.Time `json:"created"`
}

// ID is the chunk's deterministic identity.
func (c *Chunk) ID() string {
	return c.StreamID + "/" + c.SessionID + "/" + strconv.FormatUint(c.Seq, 10)
}

// Rendition is one rendition of a chunk, whose media segment is in the bucket.
type Rendition struct {
	Name      string  `json:"name"` // e.g. 720p, source, audio
	Kind      string  `json:"kind"` // video or audio
	Codec     string  `json:"codec,omitempty"`
	Width     int     `json:"width,omitempty"`
	Height    int     `json:"height,omitempty"`
	FPS       float64 `json:"fps,omitempty"`
	Bandwidth int     `json:"bandwidth,omitempty"` // nominal bits/s, for the multivariant playlist
	Channels  int     `json:"channels,omitempty"`
	// SampleRate is the audio sampling rate.
	SampleRate int `json:"sample_rate,omitempty"`
	// Init is the rendition's CMAF init segment (under a kilobyte): the packager names it
	// and writes it once per change, before any playlist lists a segment that needs it.
	Init []byte `json:"init,omitempty"`
	// Bytes is the size of the media segment.
	Bytes int `json:"bytes"`
	// Start and Duration are the segment's earliest presentation time and length in the
	// rendition's own timescale (Timescale: 90 kHz for video, the sample rate for audio).
	Start     int64  `json:"start"`
	Duration  int64  `json:"duration"`
	Timescale uint32 `json:"timescale"`
	// Failed is set when the rendition could not be produced; Error says why.
	Failed bool   `json:"failed,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Where a segment record comes from.
const (
	FromIngest     = "ingest"     // the source video and the audio, repackaged
	FromTranscoder = "transcoder" // the ladder's rungs
)

// Segment is a segment record: the renditions of one chunk that one role wrote to the bucket.
// A chunk has the ingest's record and, when its session has rungs (Encoding), a
// transcoder's; the packager lists the chunk once it has both.
type Segment struct {
	StreamID  string `json:"stream_id"`
	SessionID string `json:"session_id"`
	Seq       uint64 `json:"seq"`
	N         uint64 `json:"n"`
	Start     int64  `json:"start"`
	Duration  int64  `json:"duration"`
	Last      bool   `json:"last,omitempty"`
	Record    bool   `json:"record,omitempty"`
	From      string `json:"from"`
	// Encoding, on the ingest's record, says a transcoder's record for the chunk follows.
	Encoding   bool        `json:"encoding,omitempty"`
	Renditions []Rendition `json:"renditions"`
	// Failed is set when the chunk could not be made at all (poison input); the packager lists
	// a gap for what this record would have brought.
	Failed bool      `json:"failed,omitempty"`
	Error  string    `json:"error,omitempty"`
	Chunk  time.Time `json:"chunk_created"`
}

// ID is the record's deterministic identity: one per chunk and writer.
func (s *Segment) ID() string {
	return s.StreamID + "/" + s.SessionID + "/" + strconv.FormatUint(s.Seq, 10) + "/" + s.From
}

// PublishJob publishes a session's encode job; a retry is de-duplicated.
func (c *Conn) PublishJob(ctx context.Context, job *EncodeJob) error {
	return c.publish(ctx, c.subject(jobSubject, job.StreamID), job.ID(), job)
}

// PublishSegment publishes a segment record to the packagers; a retry is de-duplicated.
func (c *Conn) PublishSegment(ctx context.Context, seg *Segment) error {
	return c.publish(ctx, c.subject(segmentSubject, seg.StreamID), seg.ID(), seg)
}

// publish sends v as JSON and returns once JetStream has it.
func (c *Conn) publish(ctx context.Context, subject, id string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	ctx, cancel := callCtx(ctx)
	defer cancel()
	m := &nats.Msg{Subject: subject, Data: data}
	if _, err := c.js.PublishMsg(ctx, m, jetstream.WithMsgID(id)); err != nil {
		return fmt.Errorf("queue: publish %s: %w", subject, err)
	}
	return nil
}

// CallTimeout bounds every single JetStream call (a publish, a purge, a KV operation),
// whatever the caller's context allows. A request in flight when its server dies never gets a
// reply, and nats.go does not fail it on reconnect: without this bound a worker would wait
// out its whole job timeout (minutes) holding the job, instead of failing the call and
// retrying on the reconnected server.
const CallTimeout = 10 * time.Second

func callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, CallTimeout)
}

// Job is one delivered message with its decoded body. The handler decides its fate through
// exactly one of Ack, Retry or Reject; KeepAlive keeps it from being redelivered meanwhile.
type Job[T any] struct {
	Body T
	// Delivered counts deliveries of this message, 1 the first time.
	Delivered uint64
	msg       jetstream.Msg
	ackWait   time.Duration
}

// Ack acknowledges the job and waits for the server to confirm, so a confirmed job is never
// redelivered.
func (j *Job[T]) Ack(ctx context.Context) error {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	return j.msg.DoubleAck(ctx)
}

// Retry hands the job back for redelivery after delay.
func (j *Job[T]) Retry(delay time.Duration) error { return j.msg.NakWithDelay(delay) }

// Reject gives the job up for good (poison input).
func (j *Job[T]) Reject(reason string) error { return j.msg.TermWithReason(reason) }

// keepAliveSplit is how many signs of life a worker sends per AckWait: a job survives all but
// one of them being lost or late.
const keepAliveSplit = 4

// KeepAlive tells JetStream the job is being worked on, every quarter of its consumer's
// AckWait, until stop is called; only a dead worker's job is redelivered.
func (j *Job[T]) KeepAlive() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(max(j.ackWait/keepAliveSplit, time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = j.msg.InProgress()
			}
		}
	}()
	return sync.OnceFunc(func() { close(done); wg.Wait() })
}

// ErrUndecodable marks a message that is not valid JSON for its type; it is Rejected.
var ErrUndecodable = errors.New("queue: undecodable message")

func (c *Conn) subject(prefix, streamID string) string {
	return prefix + strconv.Itoa(shardOf(streamID, c.cfg.Shards)) + "." + streamID
}

// ConsumeJobs runs handler for encode jobs on n concurrent slots until ctx ends, then waits for
// running handlers. A worker takes a job only when a slot is free, so it never sits on jobs
// another worker could run.
func (c *Conn) ConsumeJobs(ctx context.Context, n int, handler func(context.Context, *Job[EncodeJob])) error {
	return consume(ctx, c, JobsStream, transcoderConsumer, c.cfg.JobAckWait, n, handler)
}

// ConsumeSegments runs handler for segment records on n concurrent slots.
func (c *Conn) ConsumeSegments(ctx context.Context, n int, handler func(context.Context, *Job[Segment])) error {
	return consume(ctx, c, SegmentsStream, packagerConsumer, c.cfg.SegmentAckWait, n, handler)
}

// Waiting is how many messages of a work stream (JobsStream or SegmentsStream) no worker has
// finished yet, taken or not: a process stopping its roles in order waits for it to reach zero
// before it stops the role that takes them.
func (c *Conn) Waiting(ctx context.Context, base string) (uint64, error) {
	var n uint64
	for k := 0; k < c.cfg.Shards; k++ {
		st, err := c.js.Stream(ctx, ShardStream(base, k, c.cfg.Shards))
		if err != nil {
			return 0, fmt.Errorf("queue: stream %s: %w", base, err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			return 0, fmt.Errorf("queue: stream %s: %w", base, err)
		}
		n += info.State.Msgs // work-queue retention: a message leaves the stream when acked
	}
	return n, nil
}

// consume pulls from every shard. Each shard's puller fetches one message at a time while a
// slot is free, so at most n handlers run and at most one message per shard waits for a slot.
func consume[T any](ctx context.Context, c *Conn, base, durable string, ackWait time.Duration, n int, handler func(context.Context, *Job[T])) error {
	cons := make([]jetstream.Consumer, c.cfg.Shards)
	for k := range cons {
		var err error
		cons[k], err = c.js.Consumer(ctx, ShardStream(base, k, c.cfg.Shards), durable)
		if err != nil {
			return fmt.Errorf("queue: consumer %s: %w", durable, err)
		}
	}
	slots := make(chan struct{}, n)
	var running sync.WaitGroup
	var pullers sync.WaitGroup
	for _, cn := range cons {
		pullers.Add(1)
		go func() {
			defer pullers.Done()
			for ctx.Err() == nil {
				// Wait for a free slot before asking for work.
				select {
				case slots <- struct{}{}:
				case <-ctx.Done():
					return
				}
				<-slots
				msgs, err := cn.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
				if err != nil {
					if ctx.Err() == nil {
						c.log.Warn("fetch failed", "consumer", durable, "err", err)
						sleepCtx(ctx, time.Second)
					}
					continue
				}
				take := func(msg jetstream.Msg) {
					job := &Job[T]{msg: msg, ackWait: ackWait}
					if md, err := msg.Metadata(); err == nil {
						job.Delivered = md.NumDelivered
					}
					if err := json.Unmarshal(msg.Data(), &job.Body); err != nil {
						c.log.Error("rejecting undecodable message", "consumer", durable, "subject", msg.Subject(), "err", err)
						_ = msg.TermWithReason(ErrUndecodable.Error())
						return
					}
					slots <- struct{}{} // may wait briefly if another shard took the last slot
					running.Add(1)
					go func() {
						defer func() { <-slots; running.Done() }()
						handler(ctx, job)
					}()
				}
				for ch := msgs.Messages(); ch != nil; {
					select {
					case msg, ok := <-ch:
						if !ok {
							ch = nil
							continue
						}
						take(msg)
					case <-ctx.Done():
						// Stopping: the fetch is left to expire on its own, so a stopping
						// worker does not sit it out. A message it still brings is not
						// taken, and JetStream redelivers it after its AckWait.
						ch = nil
					}
				}
				if err := msgs.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
					c.log.Debug("fetch ended", "consumer", durable, "err", err)
				}
			}
		}()
	}
	pullers.Wait()
	running.Wait()
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Timing every role of the pipeline agrees on, defined here once.
const (
	// SessionIdle is how long a session's chunks may stop coming, without its last one,
	// before it is ended (its transcoder lets its job go, the packager closes its playlists):
	// its ingest died.
	SessionIdle = time.Minute
	// GapAfter is how long a missing chunk is waited for, while later ones are ready, before
	// the packager lists it as a gap: several JobAckWaits, so a session whose workers keep
	// dying costs a stall, not a segment. Transcoders skip chunks older than this, which the
	// packager has listed as gaps already.
	GapAfter = 45 * time.Second
)
