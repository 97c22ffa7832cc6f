// Package app wires gopcast's roles into a process: it reads the configuration (flags with
// GOPCAST_* environment variables), connects the queue and storage, runs the chosen roles and
// serves /healthz, /readyz and /metrics, and shuts everything down in order.
package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/gopcast/gopcast/pkg/media/ladder"
)

// Roles a process can run.
var Roles = []string{"ingest", "transcoder", "packager", "api", "all", "nats"}

// Config is every setting of a gopcast process.
type Config struct {
	Role string

	NATSURL       string
	S3Endpoint    string
	S3Bucket      string
	S3Region      string
	S3AccessKey   string
	S3SecretKey   string
	PublicBaseURL string
	RTMPAddr      string
	HTTPAddr      string
	APITokens     []string
	DataDir       string
	Profile       string

	// Beyond the design's contract: tuning with safe defaults.
	RTMPPublicURL         string
	JetStreamShards       int
	NATSListen            string
	RecordingRetention    time.Duration
	DeleteGrace           time.Duration
	ChunkDuration         time.Duration
	RTMPReadBatch         time.Duration
	TranscoderConcurrency int
	EncodeArriving        bool
	X264Threads           int
	EncoderChains         bool
	Window                int
	LogFormat             string
	LogLevel              string
	FFmpeg                string
	Demo                  bool
	Pprof                 bool
}

// setting is one flag with its environment variable.
type setting struct {
	name, usage string
}

// Parse reads the configuration of role from args and the environment (flags win over the
// environment, which wins over defaults) and validates it.
func Parse(role string, args []string, getenv func(string) string, stderr io.Writer) (*Config, error) {
	c := &Config{Role: role}
	fs := flag.NewFlagSet("gopcast "+role, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var tokens string
	fs.StringVar(&c.NATSURL, "nats-url", "", "NATS server URL; empty starts an embedded server (JetStream under --data-dir)")
	fs.StringVar(&c.NATSListen, "nats-listen", "127.0.0.1:4222", "nats role: where the standalone JetStream server listens for clients")
	fs.StringVar(&c.S3Endpoint, "s3-endpoint", "", "S3-compatible endpoint URL (e.g. http://127.0.0.1:9000); empty stores media under --data-dir and serves it at /media/")
	fs.StringVar(&c.S3Bucket, "s3-bucket", "", "bucket for live media and recordings")
	fs.StringVar(&c.S3Region, "s3-region", "us-east-1", "S3 region")
	fs.StringVar(&c.S3AccessKey, "s3-access-key", "", "S3 access key (empty: the AWS default credential chain)")
	fs.StringVar(&c.S3SecretKey, "s3-secret-key", "", "S3 secret key")
	fs.StringVar(&c.PublicBaseURL, "public-base-url", "", "where players fetch media (CDN or bucket URL); default derived from the storage")
	fs.StringVar(&c.RTMPAddr, "rtmp-addr", ":1935", "RTMP listen address")
	fs.StringVar(&c.HTTPAddr, "http-addr", ":8080", "HTTP listen address (API, health, metrics, local media)")
	fs.StringVar(&tokens, "api-token", "", "bearer token(s) for the management API, comma-separated to allow rotation")
	fs.StringVar(&c.DataDir, "data-dir", "gopcast-data", "directory for the embedded NATS store and local media")
	fs.StringVar(&c.Profile, "profile", "default", "default transcoding ladder: "+strings.Join(ladder.Names(), ", "))
	fs.StringVar(&c.RTMPPublicURL, "rtmp-public-url", "", "RTMP URL publishers are told to use (default rtmp://HOST:PORT/live from --rtmp-addr)")
	fs.IntVar(&c.JetStreamShards, "jetstream-shards", 1, "split the chunk and segment streams into this many JetStream streams by stream id (same value in every process)")
	fs.DurationVar(&c.ChunkDuration, "chunk-duration", 2*time.Second, "target chunk (segment) duration; chunks are cut at the first keyframe at or after it")
	fs.DurationVar(&c.RTMPReadBatch, "rtmp-read-batch", 40*time.Millisecond, "ingest: period of the clock on whose ticks a publisher's connection is read, so one read takes several frames and sessions wake together (less CPU, up to this much later segments; 0: read each frame as it arrives)")
	fs.IntVar(&c.TranscoderConcurrency, "transcoder-concurrency", 0, "chunks one transcoder encodes at once (0: half the CPUs, at least 1)")
	fs.DurationVar(&c.RecordingRetention, "recording-retention", 0, "delete recordings older than this, e.g. 720h (0 keeps them)")
	fs.DurationVar(&c.DeleteGrace, "segment-grace", 0, "how long segments of unrecorded streams stay after leaving the live window (0: max(1m, 2 windows))")
	fs.BoolVar(&c.EncoderChains, "encoder-chains", true, "transcoder: keep one ffmpeg per session across its consecutive chunks instead of one per chunk (less CPU; a chunk's last frames wait for the next chunk's first)")
	fs.IntVar(&c.X264Threads, "x264-threads", 0, "x264 threads per rendition (transcoder; 0: x264 decides from the CPU count)")
	fs.BoolVar(&c.EncodeArriving, "encode-arriving", true, "transcoder: encode each chunk while its parts arrive (false: once complete, with an ffmpeg of its own)")
	fs.IntVar(&c.Window, "hls-window", 6, "segments in a live playlist")
	fs.StringVar(&c.LogFormat, "log-format", "auto", "log format: text, json, or auto (text on a terminal)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.FFmpeg, "ffmpeg", "ffmpeg", "ffmpeg binary")
	fs.BoolVar(&c.Demo, "demo", false, "all only: create a demo stream and publish an ffmpeg test pattern to it")
	fs.BoolVar(&c.Pprof, "pprof", false, "serve Go's profiler at /debug/pprof/ on the HTTP address (keep that address private)")

	// Environment first, so flags given on the command line override it.
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		env := EnvName(f.Name)
		if v := getenv(env); v != "" {
			if err := fs.Set(f.Name, v); err != nil && envErr == nil {
				envErr = fmt.Errorf("invalid %s=%q: %v", env, v, err)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	for _, t := range strings.Split(tokens, ",") {
		if t = strings.TrimSpace(t); t != "" {
			c.APITokens = append(c.APITokens, t)
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// EnvName is the environment variable for a flag: GOPCAST_ and the name in upper snake case.
func EnvName(flagName string) string {
	return "GOPCAST_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Validate names the first bad setting.
func (c *Config) Validate() error {
	var errs []error
	bad := func(flagName, format string, a ...any) {
		errs = append(errs, fmt.Errorf("--%s (%s): %s", flagName, EnvName(flagName), fmt.Sprintf(format, a...)))
	}
	if c.NATSURL != "" {
		for _, u := range strings.Split(c.NATSURL, ",") {
			if pu, err := url.Parse(strings.TrimSpace(u)); err != nil || pu.Host == "" {
				bad("nats-url", "not a URL like nats://host:4222")
			}
		}
	}
	if c.S3Endpoint != "" {
		if u, err := url.Parse(c.S3Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("s3-endpoint", "not an http(s) URL")
		}
		if c.S3Bucket == "" {
			bad("s3-bucket", "required with --s3-endpoint")
		}
		if (c.S3AccessKey == "") != (c.S3SecretKey == "") {
			bad("s3-access-key", "give both --s3-access-key and --s3-secret-key, or neither")
		}
	}
	if c.PublicBaseURL != "" {
		if u, err := url.Parse(c.PublicBaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("public-base-url", "not an http(s) URL")
		}
	}
	if c.Role == "nats" {
		if _, port, err := net.SplitHostPort(c.NATSListen); err != nil || port == "" {
			bad("nats-listen", "not a host:port")
		}
		if c.NATSURL != "" {
			bad("nats-url", "the nats role is the server; leave --nats-url empty")
		}
	}
	if c.runs("ingest") {
		if _, _, err := net.SplitHostPort(c.RTMPAddr); err != nil {
			bad("rtmp-addr", "not a host:port: %v", err)
		}
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		bad("http-addr", "not a host:port: %v", err)
	}
	if _, err := ladder.Lookup(c.Profile); err != nil {
		bad("profile", "%v", err)
	}
	if c.ChunkDuration < 500*time.Millisecond || c.ChunkDuration > 30*time.Second {
		bad("chunk-duration", "must be between 500ms and 30s")
	}
	if c.RTMPReadBatch < 0 || c.RTMPReadBatch > 200*time.Millisecond {
		bad("rtmp-read-batch", "must be between 0 and 200ms")
	}
	if c.X264Threads < 0 || c.X264Threads > 64 {
		bad("x264-threads", "must be between 0 (x264 decides) and 64")
	}
	if c.Window < 3 || c.Window > 1000 {
		bad("hls-window", "must be between 3 and 1000")
	}
	if c.RecordingRetention < 0 {
		bad("recording-retention", "must not be negative")
	}
	if c.DeleteGrace < 0 {
		bad("segment-grace", "must not be negative")
	}
	if c.JetStreamShards < 1 || c.JetStreamShards > 256 {
		bad("jetstream-shards", "must be between 1 and 256")
	}
	if c.TranscoderConcurrency < 0 {
		bad("transcoder-concurrency", "must not be negative")
	}
	switch c.LogFormat {
	case "auto", "text", "json":
	default:
		bad("log-format", "must be text, json or auto")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log-level", "must be debug, info, warn or error")
	}
	if c.Role == "api" && len(c.APITokens) == 0 {
		bad("api-token", "required for the api role")
	}
	if c.Demo && c.Role != "all" {
		bad("demo", "only with the all role")
	}
	if c.Role != "all" && c.S3Endpoint == "" && (c.runs("packager")) {
		// A packager alone writing to its local disk would serve nobody.
		bad("s3-endpoint", "required for the %s role (local storage is only for all)", c.Role)
	}
	return errors.Join(errs...)
}

// runs reports whether this process runs role r.
func (c *Config) runs(r string) bool { return c.Role == r || c.Role == "all" }

// rtmpURL is the URL publishers are told to use.
func (c *Config) rtmpURL() string {
	if c.RTMPPublicURL != "" {
		return strings.TrimRight(c.RTMPPublicURL, "/")
	}
	host, port, _ := net.SplitHostPort(c.RTMPAddr)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	return "rtmp://" + net.JoinHostPort(host, port) + "/live"
}
