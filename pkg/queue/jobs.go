package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// VideoParams describe a chunk's video as the ingest saw it.
type VideoParams struct {
	Codec  string  `json:"codec"` // RFC 6381, e.g. avc1.64001f
	Width  int     `json:"width"`
	Height int     `json:"height"`
	FPS    float64 `json:"fps,omitempty"`
}

// AudioParams describe a chunk's audio as the ingest saw it.
type AudioParams struct {
	Codec      string `json:"codec"` // e.g. mp4a.40.2
	SampleRate int    `json:"sample_rate"`
	Channels   int    `json:"channels"`
}

// Chunk is the job message for one GOP-aligned chunk of one session. Times are in the session
// timeline at 90 kHz. The chunk's MPEG-TS bytes (named by Object) carry timestamps shifted so
// that Start maps to TSBase: ts = TSBase + (t - Start). That keeps them far from MPEG-TS's
// 33-bit wrap and leaves room for B-frame decode times before Start.
type Chunk struct {
	StreamID  string `json:"stream_id"`
	SessionID string `json:"session_id"`
	Seq       uint64 `json:"seq"`
	Profile   string `json:"profile,omitempty"`
	// Record keeps the session as a recording.
	Record bool `json:"record,omitempty"`
	// Start is the decode time of the chunk's first (key) frame; Duration runs to the next
	// chunk's first frame.
	Start    int64 `json:"start"`
	Duration int64 `json:"duration"`
	TSBase   int64 `json:"ts_base"`
	// AudioOrigin is the presentation time of the session's first audio frame; it pins the
	// AAC sample grid so audio segments made by different workers line up exactly.
	AudioOrigin int64 `json:"audio_origin"`
	// SourceBitrate is the session's video bits/s, measured over its first chunk (0: not
	// known). The ladder's rungs are chosen from it rather than from each chunk's own rate, so
	// every chunk of a session has the same renditions even when the source's bitrate
	// wanders around a rung's threshold.
	SourceBitrate int          `json:"source_bitrate,omitempty"`
	Video         *VideoParams `json:"video,omitempty"`
	Audio         *AudioParams `json:"audio,omitempty"`
	// Last marks the final chunk of the session; an empty last chunk (Size 0) only ends the
	// session.
	Last bool `json:"last,omitempty"`
	// Object names the object holding the chunk's Size bytes; with no object, the bytes
	// travel in the job message (see attach.go) and Data holds them once it is decoded.
	Object  string    `json:"object,omitempty"`
	Size    int       `json:"size"`
	Created time.Time `json:"created"`
	Data    []byte    `json:"-"`
}

// HasBytes says whether the chunk has media (an empty last chunk has none).
func (c *Chunk) HasBytes() bool { return c.Size > 0 || c.Object != "" }

// ID is the chunk's deterministic identity, used for de-duplication and object names.
func (c *Chunk) ID() string {
	return c.StreamID + "/" + c.SessionID + "/" + strconv.FormatUint(c.Seq, 10)
}

// Rendition is one output of a transcoded chunk.
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
	// Init and Media name objects in the segment object store; InitData and MediaData hold
	// the bytes instead (the name is then empty). PublishSegment sends them in the message
	// (InitLen and MediaLen bytes after its JSON, see attach.go) as far as the message's
	// size allows, and stores the largest media as objects until it fits. Base64 in the JSON
	// (init_data, media_data) is still read.
	Init      string `json:"init,omitempty"`
	InitData  []byte `json:"init_data,omitempty"`
	InitLen   int    `json:"init_len,omitempty"`
	Media     string `json:"media,omitempty"`
	MediaData []byte `json:"media_data,omitempty"`
	MediaLen  int    `json:"media_len,omitempty"`
	Bytes     int    `json:"bytes"`
	// Start and Duration are the segment's earliest presentation time and length in the
	// rendition's own timescale (Timescale: 90 kHz for video, the sample rate for audio).
	Start     int64  `json:"start"`
	Duration  int64  `json:"duration"`
	Timescale uint32 `json:"timescale"`
	// Failed is set when the rendition could not be produced after retries; Error says why.
	Failed bool   `json:"failed,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Segment is the message a transcoder sends when a chunk is done: every rendition of it.
type Segment struct {
	StreamID   string      `json:"stream_id"`
	SessionID  string      `json:"session_id"`
	Seq        uint64      `json:"seq"`
	Start      int64       `json:"start"`
	Duration   int64       `json:"duration"`
	Last       bool        `json:"last,omitempty"`
	Record     bool        `json:"record,omitempty"`
	Renditions []Rendition `json:"renditions"`
	// Failed is set when the whole chunk could not be transcoded (poison input); the packager
	// lists a gap.
	Failed bool      `json:"failed,omitempty"`
	Error  string    `json:"error,omitempty"`
	Chunk  time.Time `json:"chunk_created"`
}

// ID is the segment's deterministic identity.
func (s *Segment) ID() string {
	return s.StreamID + "/" + s.SessionID + "/" + strconv.FormatUint(s.Seq, 10)
}

// PublishChunk publishes the job with the chunk's bytes: in the message when they fit,
// otherwise stored first as an object. It returns only once JetStream has them; a retry with
// the same chunk identity is de-duplicated.
func (c *Conn) PublishChunk(ctx context.Context, job *Chunk, data []byte) error {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	job.Object, job.Size, job.Data = "", len(data), nil
	switch {
	case len(data) == 0:
	case len(data) <= c.inlineMax():
		job.Data = data
	default:
		job.Object = job.ID()
		if err := c.putObject(ctx, c.chunks, job.Object, data); err != nil {
			return fmt.Errorf("queue: store chunk %s: %w", job.ID(), err)
		}
	}
	_, err := c.publish(ctx, c.subject(chunkSubject, job.StreamID), job.ID(), job, nil)
	return err
}

// ChunkBytes returns a chunk's bytes, fetching them when they are an object.
func (c *Conn) ChunkBytes(ctx context.Context, job *Chunk) ([]byte, error) {
	if job.Object == "" {
		if job.Size > 0 && len(job.Data) != job.Size {
			return nil, fmt.Errorf("queue: chunk %s: %d bytes in the message for %d: %w", job.ID(), len(job.Data), job.Size, ErrNotFound)
		}
		return job.Data, nil
	}
	ctx, cancel := callCtx(ctx)
	defer cancel()
	b, err := c.chunks.GetBytes(ctx, job.Object)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("queue: chunk %s: %w", job.Object, ErrNotFound)
	}
	return b, err
}

// DeleteChunk removes a chunk's bytes once its job is done.
func (c *Conn) DeleteChunk(ctx context.Context, job *Chunk) error {
	if job.Object == "" {
		return nil
	}
	ctx, cancel := callCtx(ctx)
	defer cancel()
	err := c.chunks.Delete(ctx, job.Object)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil
	}
	return err
}

// maxObjectChunk bounds the messages an object is stored in. nats.go's default is 128 KiB per
// message whatever the object's size: a 2 s 1080p chunk took a dozen messages (each parsed,
// stored and delivered on its own) and every put allocated and zeroed 128 KiB even for a
// 20 KB audio fragment. Objects now go in messages of up to 1 MiB (less if the server's
// max_payload is smaller), each no larger than the object.
const maxObjectChunk = 1 << 20

func (c *Conn) putObject(ctx context.Context, store jetstream.ObjectStore, name string, data []byte) error {
	size := maxObjectChunk
	if mp := int(c.nc.MaxPayload()); mp > 0 {
		size = min(size, mp-16<<10) // room for the headers
	}
	size = max(1, min(size, len(data)))
	meta := jetstream.ObjectMeta{Name: name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: uint32(size)}}
	_, err := store.Put(ctx, meta, bytes.NewReader(data))
	return err
}

// PutRendition stores one rendition object (init or media segment) under a deterministic
// name, so a redelivered job overwrites rather than duplicates.
func (c *Conn) PutRendition(ctx context.Context, name string, data []byte) error {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	if err := c.putObject(ctx, c.renders, name, data); err != nil {
		return fmt.Errorf("queue: store %s: %w", name, err)
	}
	return nil
}

// RenditionBytes fetches one rendition object.
func (c *Conn) RenditionBytes(ctx context.Context, name string) ([]byte, error) {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	b, err := c.renders.GetBytes(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("queue: rendition %s: %w", name, ErrNotFound)
	}
	return b, err
}

// DeleteRendition removes a rendition object once it is in the bucket.
func (c *Conn) DeleteRendition(ctx context.Context, name string) error {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	err := c.renders.Delete(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil
	}
	return err
}

// PublishSegment publishes a finished chunk's renditions to the packagers. Their bytes go in
// the message; when they do not fit, the largest media segments are stored as objects first
// (named under the segment's ID, so a retry overwrites them), until the rest fits.
func (c *Conn) PublishSegment(ctx context.Context, seg *Segment) error {
	out := *seg
	out.Renditions = slices.Clone(seg.Renditions)
	size := 0
	for _, r := range out.Renditions {
		size += len(r.InitData) + len(r.MediaData)
	}
	for limit := c.inlineMax(); size > limit; {
		big := -1
		for i, r := range out.Renditions {
			if len(r.MediaData) > 0 && (big < 0 || len(r.MediaData) > len(out.Renditions[big].MediaData)) {
				big = i
			}
		}
		if big < 0 {
			return fmt.Errorf("queue: segment %s: %d bytes of init segments do not fit a message", seg.ID(), size)
		}
		r := &out.Renditions[big]
		name := seg.ID() + "/" + r.Name + "/media.m4s"
		if err := c.PutRendition(ctx, name, r.MediaData); err != nil {
			return err
		}
		size -= len(r.MediaData)
		r.Media, r.MediaData = name, nil
	}
	buf, _ := segmentBodies.Get().(*[]byte)
	if buf == nil {
		buf = &[]byte{} // not nil: encodeMsg sizes it for the message
	}
	body, err := c.publish(ctx, c.subject(segmentSubject, seg.StreamID), seg.ID(), &out, *buf)
	*buf = body[:0]
	segmentBodies.Put(buf)
	return err
}

// segmentBodies holds segment message bodies for reuse: one is up to a few MB, and a fresh one
// per message is zeroed, faulted in and scavenged back to the OS again (memclr and madvise
// showed in the transcoder's profile). Chunk bodies are not pooled: the ingest publishes a
// chunk per stream every 2 s, and pooled chunk-sized bodies raised its memory per stream
// (4.4 MB against 3.85 at 25 streams) for no CPU the benchmark could show.
var segmentBodies sync.Pool

// publish sends v, its body built in dst (see encodeMsg), and returns the body for reuse:
// nats.go has copied it by then.
func (c *Conn) publish(ctx context.Context, subject, id string, v any, dst []byte) ([]byte, error) {
	data, hdr, err := encodeMsg(dst, v)
	if err != nil {
		return dst, err
	}
	ctx, cancel := callCtx(ctx)
	defer cancel()
	m := &nats.Msg{Subject: subject, Data: data, Header: hdr}
	if _, err := c.js.PublishMsg(ctx, m, jetstream.WithMsgID(id)); err != nil {
		return data, fmt.Errorf("queue: publish %s: %w", subject, err)
	}
	return data, nil
}

// CallTimeout bounds every single JetStream call (a publish, an object put or get, a KV
// operation), whatever the caller's context allows. A request in flight when its server dies
// never gets a reply, and nats.go does not fail it on reconnect: without this bound a worker
// would wait out its whole job timeout (minutes) holding the job, instead of failing the call
// and retrying on the reconnected server. Objects are chunks of a few MB on a local network.
const CallTimeout = 10 * time.Second

func callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, CallTimeout)
}

// Job is one delivered message with its decoded body. The handler decides its fate through
// exactly one of Ack, Retry or Reject; InProgress keeps it from being redelivered meanwhile.
type Job[T any] struct {
	Body T
	// Delivered counts deliveries of this message, 1 the first time.
	Delivered uint64
	msg       jetstream.Msg
	release   func()
}

// Release gives the job's worker slot back before the job is done, for a job that turned out
// light (a passthrough chunk: no encoder runs), so the worker's slots keep measuring the heavy
// work they were sized for. Released jobs are bounded by a pool of their own (lightJobs per
// slot). Calling it more than once, or not at all, is fine.
func (j *Job[T]) Release() {
	if j.release != nil {
		j.release()
	}
}

// lightJobs is how many released jobs a worker runs per slot.
const lightJobs = 16

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

// InProgress resets the server's redelivery timer.
func (j *Job[T]) InProgress() error { return j.msg.InProgress() }

// ErrUndecodable marks a message that is not valid JSON for its type; it is Rejected.
var ErrUndecodable = errors.New("queue: undecodable message")

func (c *Conn) subject(prefix, streamID string) string {
	return prefix + strconv.Itoa(shardOf(streamID, c.cfg.Shards)) + "." + streamID
}

// ConsumeChunks runs handler for chunk jobs on n concurrent slots until ctx ends, then waits
// for running handlers. A worker takes a job only when a slot is free, so it never sits on
// jobs another worker could run.
func (c *Conn) ConsumeChunks(ctx context.Context, n int, handler func(context.Context, *Job[Chunk])) error {
	return consume(ctx, c, ChunksStream, transcoderConsumer, n, handler)
}

// ConsumeSegments runs handler for finished-chunk messages on n concurrent slots.
func (c *Conn) ConsumeSegments(ctx context.Context, n int, handler func(context.Context, *Job[Segment])) error {
	return consume(ctx, c, SegmentsStream, packagerConsumer, n, handler)
}

// Waiting is how many messages of a work stream (ChunksStream or SegmentsStream) no worker has
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
func consume[T any](ctx context.Context, c *Conn, base, durable string, n int, handler func(context.Context, *Job[T])) error {
	cons := make([]jetstream.Consumer, c.cfg.Shards)
	for k := range cons {
		var err error
		cons[k], err = c.js.Consumer(ctx, ShardStream(base, k, c.cfg.Shards), durable)
		if err != nil {
			return fmt.Errorf("queue: consumer %s: %w", durable, err)
		}
	}
	slots := make(chan struct{}, n)
	light := make(chan struct{}, n*lightJobs)
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
					job := &Job[T]{msg: msg}
					if md, err := msg.Metadata(); err == nil {
						job.Delivered = md.NumDelivered
					}
					if err := decodeMsg(msg.Headers(), msg.Data(), &job.Body); err != nil {
						c.log.Error("rejecting undecodable message", "consumer", durable, "subject", msg.Subject(), "err", err)
						_ = msg.TermWithReason(ErrUndecodable.Error())
						return
					}
					slots <- struct{}{} // may wait briefly if another shard took the last slot
					var once sync.Once
					var released bool
					job.release = func() {
						once.Do(func() {
							light <- struct{}{} // waits (keeping the slot) while the light pool is full
							released = true
							<-slots
						})
					}
					running.Add(1)
					go func() {
						defer func() {
							once.Do(func() { <-slots })
							if released {
								<-light
							}
							running.Done()
						}()
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
