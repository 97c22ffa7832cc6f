// Package queue is gopcast's only door to NATS JetStream. It owns the streams, consumers,
// object stores and key-value buckets the roles share, the message types that travel on them,
// and the embedded server `gopcast all` runs when no NATS URL is configured.
//
// Media bytes ride in the job's message when they fit the server's max payload (the JSON, then
// the raw bytes; see encodeMsg). What does not fit is put in a JetStream object store (split
// into messages of up to 1 MiB, so a 20 Mbit/s source never meets the max payload) and the
// message names it (claim check).
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

// Names of the JetStream assets. Subjects carry the stream id last so a future sharding scheme
// can map them to several streams by subject filter.
const (
	ChunksStream   = "GOPCAST_CHUNKS"
	SegmentsStream = "GOPCAST_SEGMENTS"
	chunkSubject   = "gopcast.chunks."
	segmentSubject = "gopcast.segments."
	eventSubject   = "gopcast.events."

	chunkObjects   = "gopcast-chunks"
	segmentObjects = "gopcast-segments"

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
	// ObjectTTL bounds how long chunk and segment bytes live if nobody consumes them.
	ObjectTTL time.Duration
	// AckWait is how long a transcoder may hold a chunk job without a progress signal before
	// it is handed to another worker (a killed worker's job comes back after this).
	AckWait time.Duration
	// SegmentAckWait is the same for packagers, whose jobs are short: a killed packager's
	// chunk is redelivered within it, so another packager takes over quickly.
	SegmentAckWait time.Duration
	// MaxDeliver bounds redeliveries of one job before it is given up.
	MaxDeliver int
	// Name identifies this client in NATS monitoring.
	Name string
	// Shards splits the chunk and segment streams into this many JetStream streams by stream
	// id, so no single stream leader carries every video byte. Every process of a deployment
	// must use the same number.
	Shards int
}

func (c *Config) defaults() {
	if c.ObjectTTL == 0 {
		c.ObjectTTL = time.Hour
	}
	if c.AckWait == 0 {
		c.AckWait = 6 * time.Second
	}
	if c.SegmentAckWait == 0 {
		c.SegmentAckWait = 2500 * time.Millisecond
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = 5
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
	cfg     Config
	log     *slog.Logger
	srv     *server.Server // nil unless embedded
	nc      *nats.Conn
	js      jetstream.JetStream
	chunks  jetstream.ObjectStore
	renders jetstream.ObjectStore
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
// deployments/: chunk and segment bytes up to it ride in their job messages (attach.go), larger
// ones in object stores. A server with nats-server's default (1 MB) works too, but a 2 s chunk
// of a source above about 3.5 Mbit/s then takes the object store's extra round trips.
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
			maxDeliver                   int
			ackWait                      time.Duration
		}{
			{ChunksStream, chunkSubject, "chunk jobs: ingest to transcoders", transcoderConsumer, c.cfg.MaxDeliver, c.cfg.AckWait},
			// A packager never gives a finished chunk up; undecodable messages are Termed.
			{SegmentsStream, segmentSubject, "rendition segments: transcoders to packagers", packagerConsumer, -1, c.cfg.SegmentAckWait},
		} {
			name := ShardStream(w.base, k, c.cfg.Shards)
			if _, err := c.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
				Name:        name,
				Description: w.desc,
				Subjects:    []string{w.subject + strconv.Itoa(k) + ".>"},
				Retention:   jetstream.WorkQueuePolicy,
				Storage:     jetstream.FileStorage,
				Duplicates:  2 * time.Minute,
				MaxAge:      c.cfg.ObjectTTL,
			}); err != nil {
				return fmt.Errorf("queue: stream %s: %w", name, err)
			}
			if _, err := c.js.CreateOrUpdateConsumer(ctx, name, jetstream.ConsumerConfig{
				Durable:       w.durable,
				AckPolicy:     jetstream.AckExplicitPolicy,
				AckWait:       w.ackWait,
				MaxDeliver:    w.maxDeliver,
				MaxAckPending: 10000,
			}); err != nil {
				return fmt.Errorf("queue: consumer %s on %s: %w", w.durable, name, err)
			}
		}
	}
	if err := c.setupEvents(ctx); err != nil {
		return err
	}
	var err error
	c.chunks, err = c.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket: chunkObjects, Description: "chunk bytes", TTL: c.cfg.ObjectTTL, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return fmt.Errorf("queue: object store %s: %w", chunkObjects, err)
	}
	c.renders, err = c.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket: segmentObjects, Description: "rendition segment bytes", TTL: c.cfg.ObjectTTL, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return fmt.Errorf("queue: object store %s: %w", segmentObjects, err)
	}
	return nil
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
