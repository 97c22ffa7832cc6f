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
// Reference servers without gopcast's API (nginx-rtmp, for scripts/bench/reference.sh) are
// driven with URL templates instead, {i} being the stream index:
//
//	loadgen run --input clip.flv --streams 4 --publish-url 'rtmp://127.0.0.1:1935/live/s{i}' \
//	    --playlist-url 'source=http://127.0.0.1:8080/hls/s{i}.m3u8'
//
// Nothing is created: each stream is published to its URL (the last path element is the stream
// name) and its media playlists (--playlist-url, repeatable, NAME= names the rendition) or
// master playlist (--master-url) are watched. MPEG-TS segments are timed from their heads
// (first video DTS, less --ts-offset), and since such servers write no EXT-X-ENDLIST, a stream
// is done once every rendition has listed the segment holding the publisher's last chunk, or
// when nothing new was listed for --settle after publishing, or after --end-timeout (what is
// missing then is counted lost). loadgen proctree reads such a server's CPU and RSS.
//
// Helper subcommands used by scripts/bench:
//
//	loadgen mkbucket     create an S3 bucket with anonymous read on live/ and vod/ (minio-go)
//	loadgen ladder-args  print the transcoder's exact ffmpeg arguments for a whole file
//	loadgen ports N      print N free TCP ports on 127.0.0.1
//	loadgen proctree     CPU seconds and RSS of process trees (one-shot or sampled), from /proc
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
	"strconv"
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
  loadgen proctree [flags] PID...  CPU seconds and RSS of the processes and their descendants
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
	case "proctree":
		err = procTree(ctx, args, os.Stdout)
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
	// Reference mode (no gopcast API): URL templates, {i} the stream index.
	PublishURL string
	Playlists  []namedURL
	MasterURL  string
	TSOffset   time.Duration
	FirstSeq   int
	Settle     time.Duration
}

// namedURL is a --playlist-url: a rendition name and a URL template.
type namedURL struct{ Name, URL string }

// reference reports whether the run drives a server without gopcast's API.
func (c *loadConfig) reference() bool { return c.PublishURL != "" }

// expandIndex fills a URL template's {i} with the stream index.
func expandIndex(tmpl string, i int) string {
	return strings.ReplaceAll(tmpl, "{i}", strconv.Itoa(i))
}

// splitPublishURL splits a full RTMP publish URL, rtmp://host/app/name, into the application
// URL and the stream name (its last path element; a query stays with the name, as encoders
// send it).
func splitPublishURL(s string) (app, name string, err error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", "", err
	}
	if (u.Scheme != "rtmp" && u.Scheme != "rtmps") || u.Host == "" {
		return "", "", fmt.Errorf("%q is not an rtmp:// URL", s)
	}
	p := strings.TrimSuffix(u.Path, "/")
	i := strings.LastIndexByte(p, '/')
	if i <= 0 || i == len(p)-1 {
		return "", "", fmt.Errorf("%q has no application and stream name (rtmp://host/app/name)", s)
	}
	name = p[i+1:]
	if u.RawQuery != "" {
		name += "?" + u.RawQuery
	}
	a := *u
	a.Path, a.RawPath, a.RawQuery, a.Fragment, a.RawFragment = p[:i], "", "", "", ""
	return a.String(), name, nil
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
	fs.StringVar(&c.PublishURL, "publish-url", "", "reference mode: publish to this RTMP URL template instead of creating streams through the API, e.g. rtmp://127.0.0.1:1935/live/s{i} ({i}: the stream index; the last path element is the stream name)")
	fs.Func("playlist-url", "reference mode: a media playlist to watch, [NAME=]URL template, e.g. source=http://127.0.0.1:8080/hls/s{i}.m3u8 (repeatable; NAME defaults to source)", func(v string) error {
		n := namedURL{Name: "source", URL: v}
		if eq := strings.IndexByte(v, '='); eq > 0 && !strings.Contains(v[:eq], "/") {
			n = namedURL{Name: v[:eq], URL: v[eq+1:]}
		}
		for _, o := range c.Playlists {
			if o.Name == n.Name {
				return fmt.Errorf("rendition %q given twice", n.Name)
			}
		}
		c.Playlists = append(c.Playlists, n)
		return nil
	})
	fs.StringVar(&c.MasterURL, "master-url", "", "reference mode: a master playlist URL template to watch instead of --playlist-url")
	fs.DurationVar(&c.TSOffset, "ts-offset", 700*time.Millisecond, "reference mode: what the server adds to the publisher's RTMP timestamps in its MPEG-TS segments (nginx-rtmp: 700ms, its NGX_RTMP_HLS_DELAY)")
	fs.DurationVar(&c.Settle, "settle", 10*time.Second, "reference mode: stop waiting for the last segments once publishing has ended and no playlist listed anything new for this long")
	fs.IntVar(&c.FirstSeq, "first-seq", 0, "reference mode: the number of each rendition's first segment (nginx-rtmp with a fresh hls_path: 0; its hls_continuous numbers a name published again on from where it stopped); -1: the lowest number seen")
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
	if c.reference() {
		if _, _, err := splitPublishURL(expandIndex(c.PublishURL, 0)); err != nil {
			return nil, usageError{fmt.Errorf("--publish-url: %w", err)}
		}
		if len(c.Playlists) == 0 && c.MasterURL == "" {
			return nil, usageError{errors.New("--publish-url needs --playlist-url or --master-url")}
		}
		if len(c.Playlists) > 0 && c.MasterURL != "" {
			return nil, usageError{errors.New("--playlist-url and --master-url are exclusive")}
		}
		tmpls := []string{c.PublishURL, c.MasterURL}
		for _, p := range c.Playlists {
			tmpls = append(tmpls, p.URL)
		}
		for _, t := range tmpls {
			if t == "" {
				continue
			}
			if c.Streams > 1 && !strings.Contains(t, "{i}") {
				return nil, usageError{fmt.Errorf("%q has no {i}: every stream would use the same URL", t)}
			}
			if t == c.PublishURL {
				continue
			}
			if u, err := url.Parse(expandIndex(t, 0)); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return nil, usageError{fmt.Errorf("%q is not an http(s) URL", t)}
			}
		}
		if c.FirstSeq < -1 {
			return nil, usageError{errors.New("--first-seq must be -1 or more")}
		}
	} else if len(c.Playlists) > 0 || c.MasterURL != "" {
		return nil, usageError{errors.New("--playlist-url and --master-url need --publish-url")}
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
	warn  string // reference mode: a shortfall that is measured, not a failure
}

func (s *streamRun) run(ctx context.Context, cfg *loadConfig, hc *http.Client, clip *clip, dur time.Duration, log io.Writer) {
	if cfg.reference() {
		s.runReference(ctx, cfg, hc, clip, dur, log)
		return
	}
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

// runReference publishes to a server without gopcast's API and watches the playlists the URL
// templates name. Such servers (nginx-rtmp) write no EXT-X-ENDLIST: the stream is done when
// every rendition has listed the segment holding the publisher's last chunk (watcher.complete),
// or once nothing new was listed for --settle after publishing ended, or after --end-timeout;
// the last two are not errors (the segments not listed count as lost).
func (s *streamRun) runReference(ctx context.Context, cfg *loadConfig, hc *http.Client, clip *clip, dur time.Duration, log io.Writer) {
	appURL, name, err := splitPublishURL(expandIndex(cfg.PublishURL, s.index))
	if err != nil {
		s.err = err
		return
	}
	s.id = name
	s.pub = newPublisher(clip, dur, cfg.ChunkTarget, uint32(cfg.AckWindow))
	master := ""
	if cfg.MasterURL != "" {
		master = expandIndex(cfg.MasterURL, s.index)
	}
	s.watch = newWatcher(hc, master, cfg.Poll, cfg.RefRendition)
	var watching []string
	for _, p := range cfg.Playlists {
		u := expandIndex(p.URL, s.index)
		s.watch.addMedia(p.Name, u)
		watching = append(watching, p.Name+"="+u)
	}
	if master != "" {
		watching = append(watching, master)
	}

	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watchDone := make(chan struct{})
	go func() { defer close(watchDone); s.watch.run(wctx) }()

	fmt.Fprintf(log, "loadgen: stream %d: publishing to %s (stream %s), watching %s\n", s.index, appURL, name, strings.Join(watching, " "))
	if err := s.pub.publish(ctx, appURL, name); err != nil {
		s.err = fmt.Errorf("publish: %w", err)
	}
	ps := s.pub.stats()
	var last time.Duration
	if n := len(ps.chunkStartsD); n > 0 {
		last = ps.chunkStartsD[n-1]
	}
	pubEnd := time.Now()
	t := time.NewTicker(cfg.Poll)
	defer t.Stop()
	deadline := time.After(cfg.EndTimeout)
wait:
	for s.err == nil {
		if s.watch.complete(last, cfg.TSOffset, tsSnapTolerance) {
			break
		}
		if quiet := pubEnd; cfg.Settle > 0 {
			if l := s.watch.lastListed(); l.After(quiet) {
				quiet = l
			}
			if time.Since(quiet) >= cfg.Settle {
				s.warn = fmt.Sprintf("not every rendition listed the segment holding the last chunk (media %.3f s): nothing new listed for %s after publishing ended", last.Seconds(), cfg.Settle)
				break
			}
		}
		select {
		case <-s.watch.ended:
			break wait
		case <-ctx.Done():
			break wait
		case <-deadline:
			s.warn = fmt.Sprintf("not every rendition listed the segment holding the last chunk (media %.3f s) within %s after publishing ended", last.Seconds(), cfg.EndTimeout)
			break wait
		case <-t.C:
		}
	}
	stopWatch()
	<-watchDone
	s.watch.wait()
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
