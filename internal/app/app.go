package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/storage"
	"github.com/gopcast/gopcast/pkg/streams"
	"github.com/gopcast/gopcast/services/api"
	"github.com/gopcast/gopcast/services/ingest"
	"github.com/gopcast/gopcast/services/packager"
	"github.com/gopcast/gopcast/services/transcoder"
)

// App is a running gopcast process.
type App struct {
	cfg *Config
	log *slog.Logger

	q       *queue.Conn
	store   storage.Store
	writer  *storage.Writer
	local   *storage.LocalStore
	ingest  *ingest.Service
	reg     *streams.Registry
	httpLn  net.Listener
	ready   atomic.Bool
	started chan struct{}
}

// New prepares a process for cfg; Run starts it.
func New(cfg *Config, log *slog.Logger) *App {
	return &App{cfg: cfg, log: log, started: make(chan struct{})}
}

// HTTPAddr is the bound HTTP address, once Run has started (blocks until then).
func (a *App) HTTPAddr() string { <-a.started; return a.httpLn.Addr().String() }

// RTMPAddr is the bound RTMP address (ingest and all only), once Run has started.
func (a *App) RTMPAddr() string {
	<-a.started
	if a.ingest == nil {
		return ""
	}
	return a.ingest.Addr().String()
}

// Run runs the configured roles until ctx ends, then shuts them down in order: readiness off,
// stop taking work, drain what is in flight, close connections.
func (a *App) Run(ctx context.Context) error {
	cfg := a.cfg
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("--data-dir (%s): %w", EnvName("data-dir"), err)
	}
	if cfg.Role == "all" && len(cfg.APITokens) == 0 {
		tok, err := loadOrCreateToken(filepath.Join(cfg.DataDir, "api-token"))
		if err != nil {
			return err
		}
		cfg.APITokens = []string{tok}
		a.log.Info("no --api-token given: using the token stored in the data dir", "file", filepath.Join(cfg.DataDir, "api-token"))
	}

	qcfg := queue.Config{URL: cfg.NATSURL, DataDir: cfg.DataDir, Name: "gopcast-" + cfg.Role, Shards: cfg.JetStreamShards}
	if cfg.Role == "nats" {
		host, port, _ := net.SplitHostPort(cfg.NATSListen)
		qcfg.ListenHost = host
		qcfg.Port, _ = strconv.Atoi(port)
	}
	qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	q, err := queue.Connect(qctx, qcfg, a.log)
	cancel()
	if err != nil {
		return fmt.Errorf("NATS (--nats-url): %w", err)
	}
	a.q = q
	defer q.Close()

	if err := a.openStorage(ctx); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("--http-addr (%s): %w", EnvName("http-addr"), err)
	}
	a.httpLn = ln
	if cfg.PublicBaseURL == "" {
		cfg.PublicBaseURL = a.defaultPublicBaseURL()
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()

	g, gctx := errgroup.WithContext(ctx)
	var roles []stage // in the media's order
	var checks []func(context.Context) error
	checks = append(checks, q.Check)
	if a.store != nil {
		checks = append(checks, a.store.Check)
	}

	if cfg.runs("api") || cfg.runs("ingest") || cfg.runs("packager") {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		a.reg, err = streams.Open(rctx, q)
		cancel()
		if err != nil {
			return err
		}
	}
	if cfg.runs("api") {
		svc := api.New(api.Config{Tokens: cfg.APITokens, RTMPURL: cfg.rtmpURL(), PublicBaseURL: cfg.PublicBaseURL,
			DefaultProfile: cfg.Profile}, a.log.With("role", "api"), a.reg)
		svc.Register(mux)
	}
	if cfg.runs("ingest") {
		a.ingest = ingest.New(ingest.Config{Addr: cfg.RTMPAddr, ChunkTarget: cfg.ChunkDuration, ReadBatch: cfg.RTMPReadBatch,
			DefaultProfile: cfg.Profile}, a.log.With("role", "ingest"), a.reg, q, a.writer)
		svc := a.ingest
		checks = append(checks, func(context.Context) error {
			if !svc.Ready() {
				return errors.New("RTMP listener not up")
			}
			return nil
		})
		roles = append(roles, stage{name: "ingest", run: svc.Run})
	}
	if cfg.runs("transcoder") {
		svc := transcoder.New(transcoder.Config{Concurrency: cfg.TranscoderConcurrency, DefaultProfile: cfg.Profile,
			FFmpeg: cfg.FFmpeg, Arriving: cfg.EncodeArriving, Threads: cfg.X264Threads, Chains: cfg.EncoderChains},
			a.log.With("role", "transcoder"), q, a.writer)
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gopcast_transcoder_busy_slots", Help: "Sessions being encoded now."},
			func() float64 { b, _, _ := svc.Stats(); return float64(b) }))
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gopcast_transcoder_chunks_total", Help: "Chunks whose rungs were encoded and written."},
			func() float64 { _, d, _ := svc.Stats(); return float64(d) }))
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gopcast_transcoder_encoder_chains_total", Help: "ffmpeg processes started (one encodes a session's consecutive chunks)."},
			func() float64 { return float64(svc.ChainsStarted()) }))
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gopcast_transcoder_failed_chunks_total", Help: "Chunks with rungs given up as gaps."},
			func() float64 { _, _, f := svc.Stats(); return float64(f) }))
		st := stage{name: "transcoder", run: svc.Run}
		if cfg.runs("ingest") {
			st.settle = a.drained(queue.JobsStream, "sessions' encode jobs", 15*time.Second)
		}
		roles = append(roles, st)
	}
	if cfg.runs("packager") {
		kctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		kv, err := q.KV(kctx, "gopcast-packager")
		cancel()
		if err != nil {
			return err
		}
		svc := packager.New(packager.Config{Window: cfg.Window, ChunkTarget: cfg.ChunkDuration, FFmpeg: cfg.FFmpeg,
			DeleteGrace: cfg.DeleteGrace, RecordingRetention: cfg.RecordingRetention},
			a.log.With("role", "packager"), q, a.writer, kv)
		svc.SetRecordings(a.reg)
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gopcast_packager_segments_listed_total", Help: "Segments listed in playlists."},
			func() float64 { l, _ := svc.Stats(); return float64(l) }))
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gopcast_packager_gaps_total", Help: "Gaps listed for chunks that never came."},
			func() float64 { _, gp := svc.Stats(); return float64(gp) }))
		st := stage{name: "packager", run: svc.Run}
		if cfg.runs("transcoder") {
			st.settle = a.drained(queue.SegmentsStream, "segments", 10*time.Second)
		}
		roles = append(roles, st)
	}
	if a.writer != nil {
		w := a.writer
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gopcast_storage_put_failures_total", Help: "Storage writes that failed (and were retried)."},
			func() float64 { return float64(w.Failures()) }))
	}
	runStages(g, gctx, a.log, roles)

	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if !a.ready.Load() {
			http.Error(w, "not ready: starting or shutting down", http.StatusServiceUnavailable)
			return
		}
		cctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		for _, c := range checks {
			if err := c(cctx); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if a.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	if a.local != nil {
		mux.Handle("/media/", http.StripPrefix("/media", a.local.Handler()))
	}

	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		a.ready.Store(false)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), 10*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	if a.ingest != nil {
		a.ingest.Addr() // wait for the listener, so RTMPAddr is answerable
	}
	a.ready.Store(true)
	close(a.started)
	a.log.Info("gopcast running", "role", cfg.Role, "http", ln.Addr().String(), "public_base_url", cfg.PublicBaseURL)
	return g.Wait()
}

// openStorage opens the bucket for the roles that write media: the ingest (source and audio
// segments), the transcoder (rungs) and the packager (playlists, manifests, recordings).
func (a *App) openStorage(ctx context.Context) error {
	cfg := a.cfg
	if !cfg.runs("packager") && !cfg.runs("ingest") && !cfg.runs("transcoder") {
		return nil
	}
	defer func() {
		if a.store != nil {
			a.writer = storage.NewWriter(a.store, a.log.With("component", "storage"))
		}
	}()
	if cfg.S3Endpoint == "" {
		l, err := storage.NewLocal(filepath.Join(cfg.DataDir, "media"))
		if err != nil {
			return fmt.Errorf("--data-dir: %w", err)
		}
		a.local, a.store = l, l
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	s3, err := storage.NewS3(sctx, storage.S3Config{Endpoint: cfg.S3Endpoint, Bucket: cfg.S3Bucket, Region: cfg.S3Region,
		AccessKey: cfg.S3AccessKey, SecretKey: cfg.S3SecretKey})
	if err != nil {
		return fmt.Errorf("S3 (--s3-endpoint): %w", err)
	}
	if err := s3.Check(sctx); err != nil {
		return fmt.Errorf("S3 (--s3-bucket): %w", err)
	}
	a.store = s3
	return nil
}

func (a *App) defaultPublicBaseURL() string {
	if a.cfg.S3Endpoint != "" {
		return strings.TrimRight(a.cfg.S3Endpoint, "/") + "/" + a.cfg.S3Bucket
	}
	_, port, _ := net.SplitHostPort(a.httpLn.Addr().String())
	return "http://localhost:" + port + "/media"
}

// loadOrCreateToken keeps a random API token in the data dir, so `all` is usable at once and
// stays usable across restarts.
func loadOrCreateToken(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	var r [24]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(r[:])
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing API token: %w", err)
	}
	return tok, nil
}

// NATSURL is the URL of the NATS server the process uses (the embedded one's, if any).
func (a *App) NATSURL() string { <-a.started; return a.q.ClientURL() }

// stage is a role's Run, stopped in turn by runStages. settle, when set, runs just before the
// stage is stopped, to let it take what the stages stopped before it left for it.
type stage struct {
	name   string
	run    func(context.Context) error
	settle func(context.Context)
}

// stageStopWait bounds how long runStages waits for one role to stop before it stops the next.
const stageStopWait = 30 * time.Second

// runStages runs the roles in g until ctx ends, then stops them one at a time in the media's
// order: the ingest (its sessions end and hand their last chunks on), the transcoder once no
// chunk job waits (it finishes them), the packager once no segment waits (it lists them and
// closes the playlists). Stopped all at once, the packager could stop before the last segments
// came, and the playlists of streams that had ended would stay open until the next start.
func runStages(g *errgroup.Group, ctx context.Context, log *slog.Logger, roles []stage) {
	cancels := make([]context.CancelFunc, len(roles))
	dones := make([]chan struct{}, len(roles))
	for i, r := range roles {
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		cancels[i], dones[i] = cancel, make(chan struct{})
		g.Go(func() error {
			defer close(dones[i])
			return r.run(rctx)
		})
	}
	g.Go(func() error {
		<-ctx.Done()
		for i, r := range roles {
			if r.settle != nil {
				r.settle(context.WithoutCancel(ctx))
			}
			log.Debug("stopping role", "role", r.name)
			cancels[i]()
			select {
			case <-dones[i]:
			case <-time.After(stageStopWait):
				log.Warn("role still stopping; stopping the next one meanwhile", "role", r.name, "waited", stageStopWait)
			}
		}
		return nil
	})
}

// drained returns a settle step that waits, for up to limit, until no message of a work stream
// (queue.ChunksStream, queue.SegmentsStream) waits for the role about to be stopped: the roles
// stopped before it (the ingest, then the transcoder) have handed over the last chunks and
// segments of the sessions they ended. A backlog that takes longer is left in JetStream for
// the next start.
func (a *App) drained(stream, what string, limit time.Duration) func(context.Context) {
	return func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, limit)
		defer cancel()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			n, err := a.q.Waiting(ctx, stream)
			if err != nil || n == 0 {
				return
			}
			select {
			case <-ctx.Done():
				a.log.Warn("stopping with work still waiting; it is done at the next start", "waiting", n, "what", what)
				return
			case <-t.C:
			}
		}
	}
}
