// Command loadgen drives a running gopcast the way encoders and players do, and measures how
// long after the publisher sent the media each segment becomes listed in its HLS playlist.
//
//	loadgen [run] --api http://127.0.0.1:8080 --token T --input clip.flv --streams 4 --duration 60s
//
// For each stream it creates the stream through the management API, publishes the input file
// over RTMP in real time with a Go publisher (gortmplib), and polls the stream's playlists
// (master → every media playlist) every --poll. When every publisher is done it waits for
// EXT-X-ENDLIST in every media playlist and prints, per rendition and overall, the median, p95
// and p99 of the listing delay and the segments expected, listed and lost; --json writes the
// same as JSON.
//
// Helper subcommands used by scripts/bench:
//
//	loadgen mkbucket     create an S3 bucket with anonymous read on live/ and vod/ (minio-go)
//	loadgen ladder-args  print the transcoder's exact ffmpeg arguments for a whole file
//	loadgen ports N      print N free TCP ports on 127.0.0.1
//
// loadgen is a tool, not part of the served system: RTMP publishing and FLV/MP4/TS reading live
// here, not in pkg/.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

const usage = `loadgen: publish to gopcast over RTMP and measure segment listing latency.

Usage:
  loadgen [run] [flags]       publish --streams streams and measure (run "loadgen run -h")
  loadgen mkbucket [flags]    create a bucket with public read on live/ and vod/
  loadgen ladder-args [flags] print the transcoder's ffmpeg arguments for a whole file, NUL-separated
  loadgen ports N             print N free TCP ports on 127.0.0.1, one a line
`

func run(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "run":
		err = runLoad(ctx, args, os.Stdout, os.Stderr)
	case "mkbucket":
		err = mkbucket(ctx, args)
	case "ladder-args":
		err = ladderArgs(args, os.Stdout)
	case "ports":
		err = freePorts(args, os.Stdout)
	case "help", "-h", "--help":
		fmt.Fprint(os.Stderr, usage)
		return 0
	default:
		fmt.Fprintf(os.Stderr, "loadgen: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(os.Stderr, "loadgen %s: %v\n", cmd, err)
		return 2
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

// usageError is a bad command line (exit status 2).
type usageError struct{ error }

// loadConfig is the run command's configuration.
type loadConfig struct {
	API          string
	Token        string
	RTMP         string
	Input        string
	Streams      int
	Duration     time.Duration
	Profile      string
	Poll         time.Duration
	ChunkTarget  time.Duration
	EndTimeout   time.Duration
	Stagger      time.Duration
	RefRendition string
	JSON         string
	Name         string
	AckWindow    uint
}

func parseLoad(args []string, stderr io.Writer) (*loadConfig, error) {
	c := &loadConfig{}
	fs := flag.NewFlagSet("loadgen run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.API, "api", "http://127.0.0.1:8080", "gopcast management API base URL")
	fs.StringVar(&c.Token, "token", os.Getenv("GOPCAST_API_TOKEN"), "API bearer token (default $GOPCAST_API_TOKEN)")
	fs.StringVar(&c.RTMP, "rtmp", "", "RTMP application URL to publish to, e.g. rtmp://127.0.0.1:1935/live (default: the rtmp_url of the create response)")
	fs.StringVar(&c.Input, "input", "", "pre-encoded H.264 (+AAC) file to publish: .flv, .mp4/.mov or .ts")
	fs.IntVar(&c.Streams, "streams", 1, "streams to create and publish at once")
	fs.DurationVar(&c.Duration, "duration", 0, "media to publish per stream; the input loops, timestamps continuing (0: the input once)")
	fs.StringVar(&c.Profile, "profile", "", "ladder profile of the created streams (empty: the server's default)")
	fs.DurationVar(&c.Poll, "poll", 100*time.Millisecond, "playlist polling interval")
	fs.DurationVar(&c.ChunkTarget, "chunk-duration", 2*time.Second, "the server's --chunk-duration, to count the segments expected")
	fs.DurationVar(&c.EndTimeout, "end-timeout", 2*time.Minute, "how long to wait for EXT-X-ENDLIST after publishing ends")
	fs.DurationVar(&c.Stagger, "stagger", 0, "delay between the starts of successive streams")
	fs.StringVar(&c.RefRendition, "ref-rendition", "source", "rendition whose fragments (tfdt + durations) define each segment's media end")
	fs.StringVar(&c.JSON, "json", "", "write the results as JSON to this file (- for stdout)")
	fs.StringVar(&c.Name, "name", "loadgen", "stream name prefix")
	fs.UintVar(&c.AckWindow, "ack-window", 0, "RTMP window acknowledgement size to announce, in bytes (0: none, as ffmpeg's publisher; gortmplib's client and librtmp announce 2500000, which makes the server write an Acknowledge every 2.5 MB)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("unexpected arguments: %v", fs.Args())}
	}
	switch {
	case c.Input == "":
		return nil, usageError{errors.New("--input is required")}
	case c.Streams < 1:
		return nil, usageError{errors.New("--streams must be at least 1")}
	case c.Duration < 0:
		return nil, usageError{errors.New("--duration must not be negative")}
	case c.Poll < 10*time.Millisecond:
		return nil, usageError{errors.New("--poll must be at least 10ms")}
	case c.ChunkTarget <= 0:
		return nil, usageError{errors.New("--chunk-duration must be positive")}
	case c.AckWindow > 1<<32-1:
		return nil, usageError{errors.New("--ack-window must fit in 32 bits")}
	}
	if u, err := url.Parse(c.API); err != nil || u.Host == "" {
		return nil, usageError{fmt.Errorf("--api %q is not a URL", c.API)}
	}
	if c.RTMP != "" {
		if u, err := url.Parse(c.RTMP); err != nil || (u.Scheme != "rtmp" && u.Scheme != "rtmps") || u.Host == "" {
			return nil, usageError{fmt.Errorf("--rtmp %q is not an rtmp:// URL", c.RTMP)}
		}
	}
	c.API = strings.TrimRight(c.API, "/")
	return c, nil
}

// createdStream is the part of POST /v1/streams' answer loadgen uses.
type createdStream struct {
	ID        string `json:"id"`
	StreamKey string `json:"stream_key"`
	RTMPURL   string `json:"rtmp_url"`
	Playback  struct {
		HLS string `json:"hls"`
	} `json:"playback"`
}

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseLoad(args, stderr)
	if err != nil {
		return err
	}
	clip, err := loadClip(cfg.Input)
	if err != nil {
		return err
	}
	dur := cfg.Duration
	if dur == 0 {
		dur = clip.LoopDuration
	}
	fmt.Fprintf(stderr, "loadgen: %s: %s, %d video frames (%d keyframes), %d audio frames, %.3f s; publishing %.3f s to %d stream(s)\n",
		cfg.Input, clip.describe(), clip.videoFrames(), clip.keyframes(), clip.audioFrames(), clip.LoopDuration.Seconds(), dur.Seconds(), cfg.Streams)

	hc := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     30 * time.Second,
		},
	}
	started := time.Now()
	sessions := make([]*streamRun, cfg.Streams)
	var wg sync.WaitGroup
	for i := range sessions {
		sr := &streamRun{index: i}
		sessions[i] = sr
		wg.Go(func() {
			if cfg.Stagger > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Duration(i) * cfg.Stagger):
				}
			}
			sr.run(ctx, cfg, hc, clip, dur, stderr)
		})
	}
	wg.Wait()

	rep := buildReport(cfg, clip, dur, sessions, started)
	rep.writeTable(stdout)
	if cfg.JSON != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		b = append(b, '\n')
		if cfg.JSON == "-" {
			_, err = stdout.Write(b)
		} else {
			err = os.WriteFile(cfg.JSON, b, 0o644)
		}
		if err != nil {
			return fmt.Errorf("--json: %w", err)
		}
	}
	var errs []error
	for _, s := range sessions {
		if s.err != nil {
			errs = append(errs, fmt.Errorf("stream %d (%s): %w", s.index, s.id, s.err))
		}
	}
	if ctx.Err() != nil {
		errs = append(errs, errors.New("interrupted"))
	}
	return errors.Join(errs...)
}

// streamRun is one created, published and watched stream.
type streamRun struct {
	index int
	id    string
	pub   *publisher
	watch *watcher
	err   error
}

func (s *streamRun) run(ctx context.Context, cfg *loadConfig, hc *http.Client, clip *clip, dur time.Duration, log io.Writer) {
	st, err := createStream(ctx, hc, cfg, fmt.Sprintf("%s-%d", cfg.Name, s.index))
	if err != nil {
		s.err = err
		return
	}
	s.id = st.ID
	rtmpURL := cfg.RTMP
	if rtmpURL == "" {
		rtmpURL = st.RTMPURL
		if u, err := url.Parse(rtmpURL); err != nil || u.Port() == "0" || u.Host == "" {
			rtmpURL = "rtmp://127.0.0.1:1935/live"
		}
	}
	s.pub = newPublisher(clip, dur, cfg.ChunkTarget, uint32(cfg.AckWindow))
	s.watch = newWatcher(hc, st.Playback.HLS, cfg.Poll, cfg.RefRendition)

	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watchDone := make(chan struct{})
	go func() { defer close(watchDone); s.watch.run(wctx) }()

	fmt.Fprintf(log, "loadgen: stream %d: %s publishing to %s, watching %s\n", s.index, st.ID, rtmpURL, st.Playback.HLS)
	if err := s.pub.publish(ctx, rtmpURL, st.StreamKey); err != nil {
		s.err = fmt.Errorf("publish: %w", err)
	}
	// The publisher is done: every segment is on its way. Wait for the playlists to end.
	select {
	case <-s.watch.ended:
	case <-ctx.Done():
	case <-time.After(cfg.EndTimeout):
		s.err = errors.Join(s.err, fmt.Errorf("no EXT-X-ENDLIST in every media playlist %s after publishing ended", cfg.EndTimeout))
	}
	stopWatch()
	<-watchDone
	s.watch.wait() // fragment fetches still running
}

func createStream(ctx context.Context, hc *http.Client, cfg *loadConfig, name string) (*createdStream, error) {
	fields := map[string]string{"name": name}
	if cfg.Profile != "" {
		fields["profile"] = cfg.Profile
	}
	body, _ := json.Marshal(fields)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.API+"/v1/streams", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+cfg.Token)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("create stream: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		return nil, fmt.Errorf("create stream: POST /v1/streams: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	var st createdStream
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("create stream: %w", err)
	}
	if st.ID == "" || st.StreamKey == "" || st.Playback.HLS == "" {
		return nil, fmt.Errorf("create stream: answer lacks id, stream_key or playback.hls: %s", b)
	}
	return &st, nil
}
