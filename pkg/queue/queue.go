// Package queue is gopcast's only door to NATS JetStream. It owns the work streams, their
// consumers, the key-value buckets the roles share, the message types that travel on them, and
// the embedded server `gopcast all` runs when no NATS URL is configured.
//
// Media bytes cross NATS once: a session's chunks, in parts as the ingest cuts them, on the
// chunk stream (chunks.go), read by the transcoder that holds the session's encode job.
// Everything else (jobs, segment records, leases, state) is small.
package queue

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Names of the JetStream assets. Subjects carry the stream id after the shard, so sharding maps
// them to several streams by subject filter.
const (
	// JobsStream holds one encode job per session with rungs to encode (work queue,
	// consumer transcoderConsumer).
	JobsStream = "GOPCAST_JOBS"
	// ChunksStream holds the sessions' chunk bytes, in parts, on one subject per session
	// (limits retention: read by the session's transcoder, purged as chunks are done).
	ChunksStream = "GOPCAST_CHUNKS"
	// SegmentsStream holds segment records, the small messages saying which renditions of a
	// chunk are in the bucket (work queue, consumer packagerConsumer).
	SegmentsStream = "GOPCAST_SEGMENTS"
	jobSubject     = "gopcast.jobs."
	chunkSubject   = "gopcast.chunks."
	segmentSubject = "gopcast.segments."
	eventSubject   = "gopcast.events."

	transcoderConsumer = "transcoders"
	packagerConsumer   = "packagers"
)

// ShardStream is the name of shard k of a sharded work stream: the base name alone when there
// is one shard, BASE_k otherwise.
func ShardStream(base string, k, shards int) string {
	if shards <= 1 {
		return base
	}
	return base + "_" + strconv.Itoa(k)
}

// shardOf places a stream id on a shard (FNV-1a), the same way in every process.
func shardOf(streamID string, shards int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(streamID))
	return int(h.Sum32() % uint32(shards))
}

// Errors returned by this package.
var (
	ErrNotFound = errors.New("queue: not found")
	ErrConflict = errors.New("queue: revision conflict")
	ErrExists   = errors.New("queue: already exists")
)

// Config says where NATS is. An empty URL starts an embedded server with JetStream stored
// under DataDir.
type Config struct {
	URL     string
	DataDir string
	// ListenHost and Port place the embedded server's client listener; Port 0 picks a free one.
	ListenHost string
	Port       int
	// ChunkMaxAge bounds how long chunk bytes stay if no transcoder finishes them (none runs).
	ChunkMaxAge time.Duration
	// JobAckWait is how long a transcoder may hold a session's encode job without a sign of
	// life before JetStream hands it to another worker: a killed worker's session goes on
	// elsewhere after this.
	JobAckWait time.Duration
	// SegmentAckWait is the same for packagers, whose jobs are short: a killed packager's
	// record is redelivered within it, so another packager takes over quickly.
	SegmentAckWait time.Duration
	// Name identifies this client in NATS monitoring.
	Name string
	// Shards splits the work streams into this many JetStream streams by stream id, so no
	// single stream leader carries every video byte. Every process of a deployment must use
	// the same number.
	Shards int
}

// The defaults of Config. Every keep-alive interval is derived from its consumer's AckWait
// (Job.KeepAlive), so these are the only figures to change.
const (
	DefaultJobAckWait     = 6 * time.Second
	DefaultSegmentAckWait = 2500 * time.Millisecond
	DefaultChunkMaxAge    = time.Hour
)

func (c *Config) defaults() {
	if c.ChunkMaxAge == 0 {
		c.ChunkMaxAge = DefaultChunkMaxAge
	}
	if c.JobAckWait == 0 {
		c.JobAckWait = DefaultJobAckWait
	}
	if c.SegmentAckWait == 0 {
		c.SegmentAckWait = DefaultSegmentAckWait
	}
	if c.ListenHost == "" {
		c.ListenHost = "127.0.0.1"
	}
	if c.Name == "" {
		c.Name = "gopcast"
	}
	if c.Shards <= 0 {
		c.Shards = 1
	}
}

// Conn is a connection to JetStream with gopcast's assets in place.
type Conn struct {
	cfg    Config
	log    *slog.Logger
	srv    *server.Server // nil unless embedded
	nc     *nats.Conn
	js     jetstream.JetStream
	chunks []jetstream.Stream // ChunksStream's shards, for purges
}

// Connect connects to NATS (starting the embedded server when cfg.URL is empty) and makes sure
// every stream, consumer and bucket gopcast uses exists.
func Connect(ctx context.Context, cfg Config, log *slog.Logger) (*Conn, error) {
	cfg.defaults()
	c := &Conn{cfg: cfg, log: log}
	addr := cfg.URL
	if addr == "" {
		srv, err := startEmbedded(cfg)
		if err != nil {
			return nil, err
		}
		c.srv = srv
		addr = srv.ClientURL()
		log.Info("embedded NATS server started", "url", addr, "store_dir", filepath.Join(cfg.DataDir, "jetstream"))
	}
	nc, err := nats.Connect(addr,
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectBufSize(64<<20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted()) }),
	)
	if err != nil {
		c.shutdownServer()
		return nil, fmt.Errorf("queue: connect to NATS at %s: %w", redact(addr), err)
	}
	c.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("queue: jetstream: %w", err)
	}
	c.js = js
	if err := c.setup(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// MaxPayload is the max_payload of the embedded server, and of the NATS configurations in
// deployments/. gopcast's own messages stay far below it (chunk parts are at most maxPart);
// it is the room a publisher's odd 5 MB keyframe would need if parts ever carried one whole.
const MaxPayload = 8 << 20

func startEmbedded(cfg Config) (*server.Server, error) {
	port := cfg.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName: "gopcast-embedded",
		Host:       cfg.ListenHost,
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(cfg.DataDir, "jetstream"),
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: MaxPayload,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("queue: embedded NATS: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("queue: embedded NATS on %s not ready within 10s", net.JoinHostPort(cfg.ListenHost, strconv.Itoa(cfg.Port)))
	}
	return srv, nil
}

func (c *Conn) setup(ctx context.Context) error {
	for k := 0; k < c.cfg.Shards; k++ {
		for _, w := range []struct {
			base, subject, desc, durable string
			ackWait, maxAge              time.Duration
		}{
			// A session's job is never given up: a chunk that kills its worker again and
			// again is skipped by the session's next worker (see the transcoder).
			{JobsStream, jobSubject, "encode jobs: one per session with rungs, ingest to transcoders", transcoderConsumer, c.cfg.JobAckWait, 0},
			// A packager never gives a record up; undecodable messages are Termed.
			{SegmentsStream, segmentSubject, "segment records: ingest and transcoders to packagers", packagerConsumer, c.cfg.SegmentAckWait, c.cfg.ChunkMaxAge},
		} {
			name := ShardStream(w.base, k, c.cfg.Shards)
			if _, err := c.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
				Name:        name,
				Description: w.desc,
				Subjects:    []string{w.subject + strconv.Itoa(k) + ".>"},
				Retention:   jetstream.WorkQueuePolicy,
				Storage:     jetstream.FileStorage,
				Duplicates:  2 * time.Minute,
				// A job lives as long as its session, however long that is.
				MaxAge: w.maxAge,
			}); err != nil {
				return fmt.Errorf("queue: stream %s: %w", name, err)
			}
			if _, err := c.js.CreateOrUpdateConsumer(ctx, name, jetstream.ConsumerConfig{
				Durable:       w.durable,
				AckPolicy:     jetstream.AckExplicitPolicy,
				AckWait:       w.ackWait,
				MaxDeliver:    -1,
				MaxAckPending: 10000,
			}); err != nil {
				return fmt.Errorf("queue: consumer %s on %s: %w", w.durable, name, err)
			}
		}
		name := ShardStream(ChunksStream, k, c.cfg.Shards)
		st, err := c.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:        name,
			Description: "chunk bytes: each session's chunks in parts, ingest to its transcoder",
			Subjects:    []string{chunkSubject + strconv.Itoa(k) + ".>"},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			MaxAge:      c.cfg.ChunkMaxAge,
		})
		if err != nil {
			return fmt.Errorf("queue: stream %s: %w", name, err)
		}
		c.chunks = append(c.chunks, st)
	}
	return c.setupEvents(ctx)
}

// Check reports whether JetStream answers; it backs /readyz.
func (c *Conn) Check(ctx context.Context) error {
	if c.nc.Status() != nats.CONNECTED {
		return fmt.Errorf("queue: NATS %s", c.nc.Status())
	}
	if _, err := c.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("queue: jetstream: %w", err)
	}
	return nil
}

// ClientURL is the URL other processes can use to reach the NATS server this Conn uses.
func (c *Conn) ClientURL() string {
	if c.srv != nil {
		return c.srv.ClientURL()
	}
	return c.nc.ConnectedUrlRedacted()
}

// Close drains the connection and stops the embedded server, if any.
func (c *Conn) Close() {
	if c.nc != nil {
		_ = c.nc.Drain()
		// Drain is asynchronous; wait for it so the embedded server is not pulled from under it.
		deadline := time.Now().Add(5 * time.Second)
		for !c.nc.IsClosed() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		c.nc.Close()
	}
	c.shutdownServer()
}

func (c *Conn) shutdownServer() {
	if c.srv != nil {
		c.srv.Shutdown()
		c.srv.WaitForShutdown()
	}
}

// redact hides credentials a NATS URL may carry, so errors can be logged.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
