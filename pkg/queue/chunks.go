package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A session's chunks cross NATS once, on the chunk stream, and are encoded while they arrive.
// The ingest publishes each chunk in parts as it cuts it (PublishPart: what the chunk gained
// since the last part), then a message that ends the chunk (PublishChunk: its duration, size,
// CRC and segment number). All of a session's messages share one subject, so they keep their
// order; the transcoder holding the session's EncodeJob reads them as they land (ReadChunks)
// and feeds its encoder. When a chunk's renditions are in the bucket and its record is out,
// the transcoder purges the chunk's messages (PurgeChunks): the first message left on the
// subject is where the next holder of the job goes on. A worker that takes over a session
// says so on the same subject (MarkTakeover), so the worker it replaced, if only frozen,
// learns it from its own reader and stops.
const (
	hdrSeq      = "Gopcast-Seq"
	hdrPart     = "Gopcast-Part"
	hdrStart    = "Gopcast-Start"
	hdrEnd      = "Gopcast-End"
	hdrTakeover = "Gopcast-Takeover"
)

// MaxPart bounds one part's bytes; a chunk's parts are usually much smaller (what it gained
// since the last part).
const MaxPart = 256 << 10

// ChunkCRC is the checksum of a chunk's bytes (CRC-32C, hardware-assisted on amd64 and arm64).
var ChunkCRC = crc32.MakeTable(crc32.Castagnoli)

// ErrBadID means a stream or session id cannot be a NATS subject token.
var ErrBadID = errors.New("queue: id is not a subject token")

// token reports whether s can be one subject token.
func token(s string) bool {
	return s != "" && !strings.ContainsAny(s, ".*> \t\r\n")
}

// Part is a piece of a chunk's bytes. A chunk's parts are numbered from 0, in order.
type Part struct {
	StreamID  string
	SessionID string
	Seq       uint64
	Index     int
	// Start is the chunk's start on the session timeline, sent with part 0 (Chunk.Start).
	Start int64
	Data  []byte
}

func (c *Conn) chunkSubject(streamID, sessionID string) (string, error) {
	if !token(streamID) || !token(sessionID) {
		return "", fmt.Errorf("%w: %q, %q", ErrBadID, streamID, sessionID)
	}
	return c.subject(chunkSubject, streamID) + "." + sessionID, nil
}

// PublishPart publishes the next part of a chunk and returns once JetStream has it. A retry
// after an error may store the part twice; readers drop the second (parts are numbered).
func (c *Conn) PublishPart(ctx context.Context, p Part) error {
	if len(p.Data) == 0 || len(p.Data) > MaxPart {
		return fmt.Errorf("queue: a part of %d bytes (1 to %d)", len(p.Data), MaxPart)
	}
	subj, err := c.chunkSubject(p.StreamID, p.SessionID)
	if err != nil {
		return err
	}
	m := nats.NewMsg(subj)
	m.Header.Set(hdrSeq, strconv.FormatUint(p.Seq, 10))
	m.Header.Set(hdrPart, strconv.Itoa(p.Index))
	if p.Index == 0 {
		m.Header.Set(hdrStart, strconv.FormatInt(p.Start, 10))
	}
	m.Data = p.Data
	return c.publishChunkMsg(ctx, m)
}

// PublishChunk ends a chunk's parts with the chunk's description.
func (c *Conn) PublishChunk(ctx context.Context, ch *Chunk) error {
	subj, err := c.chunkSubject(ch.StreamID, ch.SessionID)
	if err != nil {
		return err
	}
	b, err := json.Marshal(ch)
	if err != nil {
		return err
	}
	m := nats.NewMsg(subj)
	m.Header.Set(hdrSeq, strconv.FormatUint(ch.Seq, 10))
	m.Header.Set(hdrEnd, "1")
	m.Data = b
	return c.publishChunkMsg(ctx, m)
}

// MarkTakeover says on a session's chunk subject that the worker holding delivery number
// delivery of its EncodeJob now encodes it: a worker holding an earlier delivery stops once
// it reads this (after the chunk in hand).
func (c *Conn) MarkTakeover(ctx context.Context, streamID, sessionID string, delivery uint64) error {
	subj, err := c.chunkSubject(streamID, sessionID)
	if err != nil {
		return err
	}
	m := nats.NewMsg(subj)
	m.Header.Set(hdrTakeover, strconv.FormatUint(delivery, 10))
	return c.publishChunkMsg(ctx, m)
}

func (c *Conn) publishChunkMsg(ctx context.Context, m *nats.Msg) error {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	if _, err := c.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("queue: publish %s: %w", m.Subject, err)
	}
	return nil
}

// PurgeChunks removes a session's chunk messages below stream sequence before (0: all of
// them), once they are done with.
func (c *Conn) PurgeChunks(ctx context.Context, streamID, sessionID string, before uint64) error {
	subj, err := c.chunkSubject(streamID, sessionID)
	if err != nil {
		return err
	}
	opts := []jetstream.StreamPurgeOpt{jetstream.WithPurgeSubject(subj)}
	if before > 0 {
		opts = append(opts, jetstream.WithPurgeSequence(before))
	}
	ctx, cancel := callCtx(ctx)
	defer cancel()
	if err := c.chunks[shardOf(streamID, c.cfg.Shards)].Purge(ctx, opts...); err != nil {
		return fmt.Errorf("queue: purge %s: %w", subj, err)
	}
	return nil
}

// ChunkMsgKind tells the messages on a session's chunk subject apart.
type ChunkMsgKind int

// The kinds of chunk messages.
const (
	PartMsg     ChunkMsgKind = iota + 1 // bytes of a chunk
	EndMsg                              // a chunk's end and description
	TakeoverMsg                         // a worker took the session's encode job over
)

// ChunkMsg is one message read from a session's chunk subject.
type ChunkMsg struct {
	Kind ChunkMsgKind
	// Seq is the chunk a part or an end belongs to.
	Seq uint64
	// Part, Start and Data are a part's index, its chunk's start (part 0 only) and its bytes.
	Part  int
	Start int64
	Data  []byte
	// End describes the chunk (EndMsg).
	End *Chunk
	// Delivery is the EncodeJob delivery that took the session over (TakeoverMsg).
	Delivery uint64
	// StreamSeq is the message's sequence in the chunk stream, for PurgeChunks.
	StreamSeq uint64
}

// decodeChunkMsg reads a chunk message's headers and body.
func decodeChunkMsg(h nats.Header, data []byte) (*ChunkMsg, error) {
	if v := h.Get(hdrTakeover); v != "" {
		d, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("queue: %s header %q", hdrTakeover, v)
		}
		return &ChunkMsg{Kind: TakeoverMsg, Delivery: d}, nil
	}
	seq, err := strconv.ParseUint(h.Get(hdrSeq), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("queue: %s header %q", hdrSeq, h.Get(hdrSeq))
	}
	if h.Get(hdrEnd) != "" {
		var ch Chunk
		if err := json.Unmarshal(data, &ch); err != nil {
			return nil, fmt.Errorf("queue: chunk end: %w", err)
		}
		if ch.Seq != seq || ch.Size < 0 {
			return nil, fmt.Errorf("queue: chunk end of seq %d (size %d) under header seq %d", ch.Seq, ch.Size, seq)
		}
		return &ChunkMsg{Kind: EndMsg, Seq: seq, End: &ch}, nil
	}
	part, err := strconv.Atoi(h.Get(hdrPart))
	if err != nil || part < 0 {
		return nil, fmt.Errorf("queue: %s header %q", hdrPart, h.Get(hdrPart))
	}
	m := &ChunkMsg{Kind: PartMsg, Seq: seq, Part: part, Data: data}
	if part == 0 {
		if m.Start, err = strconv.ParseInt(h.Get(hdrStart), 10, 64); err != nil {
			return nil, fmt.Errorf("queue: %s header %q", hdrStart, h.Get(hdrStart))
		}
	}
	if len(data) == 0 {
		return nil, errors.New("queue: an empty part")
	}
	return m, nil
}

// ChunkReader reads one session's chunk messages in order, as they land.
type ChunkReader struct {
	c    *Conn
	subj string
	it   jetstream.MessagesContext
}

// ReadChunks starts reading a session's chunk messages from the first one still in the
// stream.
func (c *Conn) ReadChunks(ctx context.Context, streamID, sessionID string) (*ChunkReader, error) {
	subj, err := c.chunkSubject(streamID, sessionID)
	if err != nil {
		return nil, err
	}
	cons, err := c.js.OrderedConsumer(ctx, ShardStream(ChunksStream, shardOf(streamID, c.cfg.Shards), c.cfg.Shards),
		jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return nil, fmt.Errorf("queue: read %s: %w", subj, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("queue: read %s: %w", subj, err)
	}
	return &ChunkReader{c: c, subj: subj, it: it}, nil
}

// Next returns the next message, waiting until ctx ends for one to land. A message that cannot
// be decoded is logged and skipped.
func (r *ChunkReader) Next(ctx context.Context) (*ChunkMsg, error) {
	for {
		msg, err := r.it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("queue: read %s: %w", r.subj, err)
		}
		m, err := decodeChunkMsg(msg.Headers(), msg.Data())
		if err != nil {
			r.c.log.Warn("skipping an undecodable chunk message", "subject", r.subj, "err", err)
			continue
		}
		if md, err := msg.Metadata(); err == nil {
			m.StreamSeq = md.Sequence.Stream
		}
		return m, nil
	}
}

// Close stops reading.
func (r *ChunkReader) Close() { r.it.Stop() }
