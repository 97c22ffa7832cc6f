package ingest

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/gopcast/gopcast/internal/testenv"
	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/cmaf"
	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/segment"
	"github.com/gopcast/gopcast/pkg/storage"
	"github.com/gopcast/gopcast/pkg/streams"
)

// rig is one ingest Service running in-process on 127.0.0.1:0 against real infrastructure: an
// embedded JetStream (queue.Connect), the streams registry on its KV, and a local bucket
// (storage.NewLocal in a temporary directory) behind a storage.Writer. It sees what the ingest
// sends from the other side of JetStream, as the other roles do: the segment records (through
// the packagers' consumer), the encode jobs (through the transcoders' consumer) and, for each
// job, the session's chunk parts and ends (queue.ReadChunks), and every lifecycle event. The
// ingest's Queue is the queue Conn behind a tap that counts what got through and can fail
// every publish; the bucket can fail every write.
type rig struct {
	t     *testing.T
	q     *queue.Conn
	tap   *tapQueue
	store *flakyStore
	reg   *streams.Registry
	svc   *Service
	addr  string
	logs  *logBuffer
	cfg   Config

	mu      sync.Mutex
	records map[string]queue.Segment // by ID: a redelivered record counts once
	feeds   map[string]*feedSeen     // by session id
	events  []queue.Event

	runDone chan struct{}
	runErr  error
	stop    context.CancelFunc
}

// feedSeen is what a session's transcoder would read: its encode job and its chunk messages.
type feedSeen struct {
	job   queue.EncodeJob
	parts map[uint64]map[int][]byte // by seq, then part index
	ends  map[uint64]queue.Chunk
}

// chunkSeen is one chunk of a session as the other roles see it: the ingest's segment record
// and, when the session has rungs to encode, the end message of its parts and the parts'
// bytes in order.
type chunkSeen struct {
	rec   queue.Segment
	end   *queue.Chunk
	ts    []byte
	parts int
}

// fastConfig keeps every timeout short so faults show within a test's budget.
func fastConfig() Config {
	return Config{
		Addr:             "127.0.0.1:0",
		ChunkTarget:      2 * time.Second,
		HandshakeTimeout: 2 * time.Second, // covers the key check, the lease and two seconds of media
		ReadTimeout:      1500 * time.Millisecond,
		ReadBatch:        40 * time.Millisecond, // gopcast's default: publishers read on ticks
	}
}

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	q, err := queue.Connect(ctx, queue.Config{DataDir: t.TempDir()}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	reg, err := streams.Open(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	local, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, q: q, reg: reg, logs: &logBuffer{}, cfg: cfg, runDone: make(chan struct{}),
		tap: newTapQueue(q), store: &flakyStore{Store: local, puts: map[string]int{}},
		records: map[string]queue.Segment{}, feeds: map[string]*feedSeen{}}
	log := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	// Everything the ingest publishes, seen from the other side of JetStream.
	cctx, ccancel := context.WithCancel(context.Background())
	var consumers sync.WaitGroup
	consumers.Add(2)
	go func() {
		defer consumers.Done()
		_ = q.ConsumeSegments(cctx, 4, func(ctx context.Context, j *queue.Job[queue.Segment]) {
			r.mu.Lock()
			r.records[j.Body.ID()] = j.Body
			r.mu.Unlock()
			_ = j.Ack(ctx)
		})
	}()
	go func() {
		defer consumers.Done()
		_ = q.ConsumeJobs(cctx, 16, func(ctx context.Context, j *queue.Job[queue.EncodeJob]) {
			stop := j.KeepAlive()
			defer stop()
			if r.readFeed(ctx, j.Body) {
				_ = j.Ack(ctx)
			}
		})
	}()
	if err := q.SubscribeEvents(cctx, "", func(ev queue.Event) {
		r.mu.Lock()
		r.events = append(r.events, ev)
		r.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}

	r.svc = New(cfg, log, reg, r.tap, storage.NewWriter(r.store, log))
	sctx, scancel := context.WithCancel(context.Background())
	r.stop = scancel
	go func() { defer close(r.runDone); r.runErr = r.svc.Run(sctx) }()
	r.addr = r.svc.Addr().String()
	t.Cleanup(func() {
		scancel()
		select {
		case <-r.runDone:
			if r.runErr != nil {
				t.Errorf("ingest Run: %v", r.runErr)
			}
		case <-time.After(40 * time.Second):
			t.Errorf("ingest Run did not return after shutdown")
		}
		ccancel()
		consumers.Wait()
		if t.Failed() {
			t.Logf("ingest log:\n%s", r.logs.String())
		}
		if strings.Contains(r.logs.String(), "panicked") {
			t.Errorf("an RTMP connection panicked:\n%s", r.logs.String())
		}
	})
	return r
}

// readFeed reads a session's chunk messages, as the transcoder holding its job does, until the
// last chunk's end; false if ctx ended first.
func (r *rig) readFeed(ctx context.Context, job queue.EncodeJob) bool {
	r.mu.Lock()
	f := r.feeds[job.SessionID]
	if f == nil {
		f = &feedSeen{parts: map[uint64]map[int][]byte{}, ends: map[uint64]queue.Chunk{}}
		r.feeds[job.SessionID] = f
	}
	f.job = job
	r.mu.Unlock()
	rd, err := r.q.ReadChunks(ctx, job.StreamID, job.SessionID)
	if err != nil {
		if ctx.Err() == nil {
			r.t.Errorf("reading the chunks of session %s: %v", job.SessionID, err)
		}
		return false
	}
	defer rd.Close()
	for {
		m, err := rd.Next(ctx)
		if err != nil {
			return false
		}
		r.mu.Lock()
		switch m.Kind {
		case queue.PartMsg:
			if f.parts[m.Seq] == nil {
				f.parts[m.Seq] = map[int][]byte{}
			}
			f.parts[m.Seq][m.Part] = m.Data
		case queue.EndMsg:
			f.ends[m.Seq] = *m.End
		}
		r.mu.Unlock()
		if m.Kind == queue.EndMsg && m.End.Last {
			return true
		}
	}
}

// stream creates a stream with the default profile and returns it with its key.
func (r *rig) stream(name string) (*streams.Stream, string) {
	r.t.Helper()
	return r.streamWith(name, "default")
}

func (r *rig) streamWith(name, profile string) (*streams.Stream, string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, key, err := r.reg.Create(ctx, name, profile, false)
	if err != nil {
		r.t.Fatal(err)
	}
	return st, key
}

func (r *rig) url(path string) *url.URL {
	u, err := url.Parse("rtmp://" + r.addr + path)
	if err != nil {
		r.t.Fatal(err)
	}
	return u
}

// connect runs the gortmplib client's publish handshake against the rig.
func (r *rig) connect(path string) (*gortmplib.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := &gortmplib.Client{URL: r.url(path), Publish: true}
	if err := c.Initialize(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// chunksOf returns the chunks of a session whose records were seen so far, in sequence order,
// with what its feed carried of each.
func (r *rig) chunksOf(sessionID string) []chunkSeen {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []chunkSeen
	for _, rec := range r.records {
		if rec.SessionID != sessionID {
			continue
		}
		c := chunkSeen{rec: rec}
		if f := r.feeds[sessionID]; f != nil {
			if end, ok := f.ends[rec.Seq]; ok {
				c.end = &end
			}
			parts := f.parts[rec.Seq]
			for i := 0; i < len(parts); i++ {
				c.ts = append(c.ts, parts[i]...)
			}
			c.parts = len(parts)
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b chunkSeen) int { return cmp.Compare(a.rec.Seq, b.rec.Seq) })
	return out
}

// allRecords returns every segment record seen.
func (r *rig) allRecords() []queue.Segment {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []queue.Segment
	for _, rec := range r.records {
		out = append(out, rec)
	}
	return out
}

// feedOf returns a copy of what the rig read of a session's feed, nil if its job never came.
func (r *rig) feedOf(sessionID string) *feedSeen {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.feeds[sessionID]
	if f == nil {
		return nil
	}
	c := &feedSeen{job: f.job, parts: map[uint64]map[int][]byte{}, ends: map[uint64]queue.Chunk{}}
	for seq, ps := range f.parts {
		c.parts[seq] = map[int][]byte{}
		for i, p := range ps {
			c.parts[seq][i] = p
		}
	}
	for seq, e := range f.ends {
		c.ends[seq] = e
	}
	return c
}

func (r *rig) eventsOf(kind, streamID string) []queue.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []queue.Event
	for _, ev := range r.events {
		if ev.Kind == kind && ev.StreamID == streamID {
			out = append(out, ev)
		}
	}
	return out
}

// live reads the stream's live session from the registry, as the API does.
func (r *rig) live(streamID string) *streams.Session {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := r.reg.Live(ctx, streamID)
	if err != nil {
		r.t.Fatal(err)
	}
	return s
}

// sessions lists the stream's session records, newest first, as the API's session list does.
func (r *rig) sessions(streamID string) []*streams.Session {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := r.reg.Sessions(ctx, streamID, 100)
	if err != nil {
		r.t.Fatal(err)
	}
	return list
}

// endReason is the end reason in a session's record, as the API's session list shows it.
func (r *rig) endReason(streamID, sessionID string) string {
	r.t.Helper()
	for _, s := range r.sessions(streamID) {
		if s.ID == sessionID {
			return s.EndReason
		}
	}
	r.t.Fatalf("no session record %s", sessionID)
	return ""
}

// onlySession returns the stream's one session record.
func (r *rig) onlySession(streamID string) *streams.Session {
	r.t.Helper()
	list := r.sessions(streamID)
	if len(list) != 1 {
		r.t.Fatalf("%d session records, want 1", len(list))
	}
	return list[0]
}

// waitLive waits for the stream to be live (its lease taken and its media started: the
// stream.live event) and returns the session.
func (r *rig) waitLive(streamID string) *streams.Session {
	r.t.Helper()
	var s *streams.Session
	eventually(r.t, 10*time.Second, "stream to go live", func() bool {
		s = r.live(streamID)
		return s != nil && len(r.eventsOf(queue.EventStreamLive, streamID)) > 0
	})
	return s
}

// sessionOf waits for the stream's segment records to name a session and returns its id.
func (r *rig) sessionOf(streamID string) string {
	r.t.Helper()
	var id string
	eventually(r.t, 10*time.Second, "a segment record of stream "+streamID, func() bool {
		for _, rec := range r.allRecords() {
			if rec.StreamID == streamID {
				id = rec.SessionID
				return true
			}
		}
		return false
	})
	return id
}

// complete reports whether a session's chunks are all in: every record up to the Last one
// and, if the session encodes, every chunk's end message.
func complete(cs []chunkSeen) bool {
	if len(cs) == 0 || !cs[len(cs)-1].rec.Last || cs[len(cs)-1].rec.Seq != uint64(len(cs)-1) {
		return false
	}
	if !slices.ContainsFunc(cs, func(c chunkSeen) bool { return c.rec.Encoding }) {
		return true
	}
	return !slices.ContainsFunc(cs, func(c chunkSeen) bool { return c.end == nil })
}

// waitSessionEnd waits for the session's last chunk (its record and, if it encodes, its end
// message) and every one before it, the lease release and the idle event, and returns the
// session's chunks.
func (r *rig) waitSessionEnd(st *streams.Stream, sessionID string, within time.Duration) []chunkSeen {
	r.t.Helper()
	eventually(r.t, within, "the session's last chunk and every one before it", func() bool {
		return complete(r.chunksOf(sessionID))
	})
	eventually(r.t, 10*time.Second, "the live lease to be released", func() bool { return r.live(st.ID) == nil })
	eventually(r.t, 10*time.Second, "a stream.idle event", func() bool {
		return slices.ContainsFunc(r.eventsOf(queue.EventStreamIdle, st.ID), func(ev queue.Event) bool { return ev.SessionID == sessionID })
	})
	return r.chunksOf(sessionID)
}

// idleEvent is the session's stream.idle event (waitSessionEnd waited for it).
func (r *rig) idleEvent(streamID, sessionID string) queue.Event {
	r.t.Helper()
	for _, ev := range r.eventsOf(queue.EventStreamIdle, streamID) {
		if ev.SessionID == sessionID {
			return ev
		}
	}
	r.t.Fatalf("no stream.idle event for session %s", sessionID)
	return queue.Event{}
}

// object reads a key from the rig's bucket.
func (r *rig) object(t *testing.T, key string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := r.store.Get(ctx, key)
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return b
}

// keys lists the bucket's keys under prefix.
func (r *rig) keys(t *testing.T, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	keys, err := r.store.List(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logBuffer collects the ingest's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (r *rig) waitLog(substr string, within time.Duration) {
	r.t.Helper()
	eventually(r.t, within, fmt.Sprintf("log line %q", substr), func() bool { return strings.Contains(r.logs.String(), substr) })
}

// errQueueDown is what the tap's publishes return while it fails them.
var errQueueDown = errors.New("tap: queue unreachable")

// tapQueue is the ingest's Queue in the rig: the real queue Conn, with every call counted by
// method and session once it got through, and every publish failing while fail is set (as
// they do while NATS is unreachable).
type tapQueue struct {
	next Queue
	fail atomic.Bool

	mu     sync.Mutex
	ok     map[string]int // by "Method" and by "Method session-id"
	failed map[string]int
}

func newTapQueue(next Queue) *tapQueue {
	return &tapQueue{next: next, ok: map[string]int{}, failed: map[string]int{}}
}

func (q *tapQueue) call(method, session string, f func() error) error {
	var err error
	if q.fail.Load() {
		err = errQueueDown
	} else {
		err = f()
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	m := q.ok
	if err != nil {
		m = q.failed
	}
	m[method]++
	m[method+" "+session]++
	return err
}

// count is how many calls of method (for session, if not empty) got through.
func (q *tapQueue) count(method, session string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if session != "" {
		method += " " + session
	}
	return q.ok[method]
}

// failures is how many calls of method failed.
func (q *tapQueue) failures(method string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.failed[method]
}

// media is how many media messages (jobs, parts, chunk ends, segment records) got through.
func (q *tapQueue) media() int {
	return q.count("PublishJob", "") + q.count("PublishPart", "") + q.count("PublishChunk", "") + q.count("PublishSegment", "")
}

func (q *tapQueue) PublishJob(ctx context.Context, job *queue.EncodeJob) error {
	return q.call("PublishJob", job.SessionID, func() error { return q.next.PublishJob(ctx, job) })
}

func (q *tapQueue) PublishPart(ctx context.Context, p queue.Part) error {
	return q.call("PublishPart", p.SessionID, func() error { return q.next.PublishPart(ctx, p) })
}

func (q *tapQueue) PublishChunk(ctx context.Context, c *queue.Chunk) error {
	return q.call("PublishChunk", c.SessionID, func() error { return q.next.PublishChunk(ctx, c) })
}

func (q *tapQueue) PublishSegment(ctx context.Context, seg *queue.Segment) error {
	return q.call("PublishSegment", seg.SessionID, func() error { return q.next.PublishSegment(ctx, seg) })
}

func (q *tapQueue) PublishEvent(ctx context.Context, ev queue.Event) error {
	return q.call("PublishEvent", ev.SessionID, func() error { return q.next.PublishEvent(ctx, ev) })
}

// errStorageDown is what flakyStore's writes return while it fails them.
var errStorageDown = errors.New("flaky store: bucket unreachable")

// flakyStore is the rig's bucket: a real store whose writes fail while fail is set, counting
// the writes that succeeded by key.
type flakyStore struct {
	storage.Store
	fail atomic.Bool

	mu     sync.Mutex
	puts   map[string]int
	failed int
}

func (s *flakyStore) Put(ctx context.Context, key string, data []byte, opts storage.PutOptions) error {
	if s.fail.Load() {
		s.mu.Lock()
		s.failed++
		s.mu.Unlock()
		return errStorageDown
	}
	if err := s.Store.Put(ctx, key, data, opts); err != nil {
		return err
	}
	s.mu.Lock()
	s.puts[key]++
	s.mu.Unlock()
	return nil
}

func (s *flakyStore) failures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// writes is how many times key was written.
func (s *flakyStore) writes(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.puts[key]
}

// probe is what ffprobe reports about one file.
type probe struct {
	Packets []probePacket `json:"packets"`
	Streams []struct {
		CodecType    string `json:"codec_type"`
		CodecName    string `json:"codec_name"`
		NbReadFrames string `json:"nb_read_frames"`
	} `json:"streams"`
}

type probePacket struct {
	CodecType string `json:"codec_type"`
	DTS       int64  `json:"dts"`
	Flags     string `json:"flags"`
}

// ffprobe reads the file made of parts with ffprobe, decoding every frame when decode is set,
// and returns its packets and streams; anything ffprobe reports as an error fails the test
// (without decode, only a file ffprobe cannot read: its parser still complains of frames of
// random bytes).
func ffprobe(t *testing.T, name string, decode bool, parts ...[]byte) *probe {
	t.Helper()
	_, bin := testenv.FFmpeg(t)
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, bytes.Join(parts, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-v", "error", "-show_packets", "-show_streams", "-of", "json", path}
	if decode {
		args = append([]string{"-count_frames"}, args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || (decode && stderr.Len() > 0) {
		t.Fatalf("ffprobe %s: %v\n%s", name, err, stderr.String())
	}
	var p probe
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("ffprobe %s: %v", name, err)
	}
	return &p
}

// packets returns the file's packets of one kind (video or audio).
func (p *probe) packets(kind string) []probePacket {
	var out []probePacket
	for _, pk := range p.Packets {
		if pk.CodecType == kind {
			out = append(out, pk)
		}
	}
	return out
}

// checks are what checkChunks holds a session's chunks to beyond the contract.
type checks struct {
	// maxBytes bounds each chunk's source segment (0: unchecked).
	maxBytes int
	// packetsOnly reads the segments without decoding them (a source of random bytes).
	packetsOnly bool
}

// chunkMedia is what one chunk's segments in the bucket hold, with their renditions.
type chunkMedia struct {
	video, audio []probePacket
	src, aud     *queue.Rendition
}

// checkChunks holds a session's chunks to the contract and returns the video frames they
// hold. The records: sequence 0, 1, 2… without holes, segment numbers N = base+seq, exactly
// one Last and it is the final one, Start never going backwards and each chunk running to the
// next one's start. The bucket: each chunk's source (and audio) segment is there at its
// number, as big as its record says, decodes (ffprobe of the init segment from the record and
// the media segment), starts on a keyframe, and carries on the timestamps of the chunk before
// it without a gap or an overlap. The feed, for a session with rungs: every chunk's end
// message, with the record's number and timing, and its parts concatenated a video-only
// MPEG-TS of the end's size and CRC-32C that starts on a keyframe with SPS and PPS at TSBase
// and holds the end's frame count, the same as the source segment.
func checkChunks(t *testing.T, r *rig, cs []chunkSeen, opt checks) (frames int) {
	t.Helper()
	if len(cs) == 0 {
		t.Fatal("no chunks")
	}
	encoding := slices.ContainsFunc(cs, func(c chunkSeen) bool { return c.rec.Encoding })
	var prev *chunkMedia
	for i, c := range cs {
		rec := c.rec
		if rec.Seq != uint64(i) {
			t.Fatalf("chunk %d has seq %d (seqs: %v)", i, rec.Seq, seqs(cs))
		}
		if rec.From != queue.FromIngest {
			t.Errorf("chunk %d: record from %q", i, rec.From)
		}
		if rec.Last != (i == len(cs)-1) {
			t.Errorf("chunk %d: Last=%v of %d chunks", i, rec.Last, len(cs))
		}
		if rec.N != cs[0].rec.N+rec.Seq {
			t.Errorf("chunk %d: segment number %d, want base %d + seq", i, rec.N, cs[0].rec.N)
		}
		if encoding {
			checkEnd(t, c)
		}
		if len(rec.Renditions) == 0 {
			if !rec.Last {
				t.Errorf("chunk %d has no renditions but is not the last", i)
			}
			continue
		}
		if i > 0 {
			p := cs[i-1].rec
			if rec.Start < p.Start {
				t.Errorf("chunk %d starts at %d, before chunk %d's start %d", i, rec.Start, i-1, p.Start)
			}
			if p.Start+p.Duration != rec.Start {
				t.Errorf("chunk %d ends at %d but chunk %d starts at %d", i-1, p.Start+p.Duration, i, rec.Start)
			}
		}
		if rec.Duration <= 0 {
			t.Errorf("chunk %d: duration %d", i, rec.Duration)
		}
		if rec.Encoding != encoding {
			t.Errorf("chunk %d: Encoding=%v, other chunks of the session %v", i, rec.Encoding, encoding)
		}
		m := chunkMedia{}
		for _, rd := range rec.Renditions {
			if rd.Failed {
				t.Errorf("chunk %d: rendition %s failed: %s", i, rd.Name, rd.Error)
				continue
			}
			data := r.object(t, segment.Key(rec.StreamID, rd.Name, rec.N))
			if len(data) != rd.Bytes {
				t.Errorf("chunk %d: %s segment of %d bytes, the record says %d", i, rd.Name, len(data), rd.Bytes)
			}
			if rd.Name == "source" && opt.maxBytes > 0 && len(data) > opt.maxBytes+64<<10 {
				t.Errorf("chunk %d: %d bytes, over the %d limit", i, len(data), opt.maxBytes)
			}
			p := ffprobe(t, fmt.Sprintf("%s-%d.mp4", rd.Name, rec.N), !opt.packetsOnly, rd.Init, data)
			switch rd.Name {
			case "source":
				m.src, m.video = &rd, p.packets("video")
				if len(m.video) == 0 || !strings.Contains(m.video[0].Flags, "K") {
					t.Fatalf("chunk %d: source segment does not start on a keyframe (%d packets)", i, len(m.video))
				}
				if len(p.packets("audio")) > 0 {
					t.Errorf("chunk %d: audio in the source segment", i)
				}
			case "audio":
				m.aud, m.audio = &rd, p.packets("audio")
				if len(m.audio) == 0 {
					t.Errorf("chunk %d: an audio segment without audio", i)
				}
			default:
				t.Errorf("chunk %d: the ingest wrote rendition %q", i, rd.Name)
			}
			if !opt.packetsOnly {
				for _, s := range p.Streams {
					if s.NbReadFrames != fmt.Sprint(len(p.packets(s.CodecType))) {
						t.Errorf("chunk %d: %s: %s frames decoded of %d packets", i, rd.Name, s.NbReadFrames, len(p.packets(s.CodecType)))
					}
				}
			}
		}
		if m.video == nil {
			t.Fatalf("chunk %d: no source segment", i)
		}
		continuous(t, i, rec, prev, &m)
		if encoding && c.end != nil && c.end.Frames != len(m.video) {
			t.Errorf("chunk %d: the end says %d frames, the source segment holds %d", i, c.end.Frames, len(m.video))
		}
		frames += len(m.video)
		prev = &m
	}
	return frames
}

// checkEnd holds a chunk's feed to its end message: the parts concatenated are the chunk's
// video-only MPEG-TS, of the end's size and CRC.
func checkEnd(t *testing.T, c chunkSeen) {
	t.Helper()
	rec, end := c.rec, c.end
	if end == nil {
		t.Fatalf("chunk %d of an encoding session: no end message on the chunk stream", rec.Seq)
	}
	if end.Seq != rec.Seq || end.N != rec.N || end.Last != rec.Last || end.StreamID != rec.StreamID {
		t.Errorf("chunk %d: end message %+v does not match the record (seq %d, n %d, last %v)", rec.Seq, end, rec.Seq, rec.N, rec.Last)
	}
	if len(c.ts) != end.Size {
		t.Fatalf("chunk %d: %d bytes in %d parts, the end says %d", rec.Seq, len(c.ts), c.parts, end.Size)
	}
	if crc := crc32.Checksum(c.ts, queue.ChunkCRC); crc != end.CRC {
		t.Errorf("chunk %d: parts' CRC-32C %08x, the end says %08x", rec.Seq, crc, end.CRC)
	}
	if end.Size == 0 {
		if !end.Last || end.Frames != 0 {
			t.Errorf("chunk %d: an empty chunk (frames %d) that is not the last", rec.Seq, end.Frames)
		}
		return
	}
	if end.Start != rec.Start || end.Duration != rec.Duration {
		t.Errorf("chunk %d: end at %d for %d, record at %d for %d", rec.Seq, end.Start, end.Duration, rec.Start, rec.Duration)
	}
	if end.SourceBitrate <= 0 {
		t.Errorf("chunk %d: source bitrate %d", rec.Seq, end.SourceBitrate)
	}
	dem, err := cmaf.Demux(c.ts)
	if err != nil {
		t.Fatalf("chunk %d: %v", rec.Seq, err)
	}
	if len(dem.Audio) > 0 || dem.AAC != nil {
		t.Errorf("chunk %d: the encoder's MPEG-TS carries audio", rec.Seq)
	}
	if len(dem.Video) == 0 || !dem.Video[0].Key || dem.H264 == nil {
		t.Fatalf("chunk %d does not start on a keyframe with its SPS/PPS", rec.Seq)
	}
	if got := dem.Video[0].DTS; got != end.TSBase {
		t.Errorf("chunk %d: first DTS in the file %d, want TSBase %d", rec.Seq, got, end.TSBase)
	}
	if len(dem.Video) != end.Frames {
		t.Errorf("chunk %d: %d frames in the MPEG-TS, the end says %d", rec.Seq, len(dem.Video), end.Frames)
	}
	for i := 1; i < len(dem.Video); i++ {
		if dem.Video[i].DTS < dem.Video[i-1].DTS {
			t.Errorf("chunk %d: decode time goes backwards inside the MPEG-TS at frame %d", rec.Seq, i)
			break
		}
	}
	if dem.Video[len(dem.Video)-1].DTS-end.TSBase >= end.Duration {
		t.Errorf("chunk %d: frames past its duration", rec.Seq)
	}
}

// continuous checks the timestamps of chunk i's segments: the source video starts at the
// chunk's start (its first decode time, the timeline every rendition shares), its decode
// times increase and stay within the chunk, after the previous chunk's; the audio starts
// where its record says, which is where the previous chunk's audio ended, to the sample.
func continuous(t *testing.T, i int, rec queue.Segment, prev, cur *chunkMedia) {
	t.Helper()
	v := cur.video
	if v[0].DTS != rec.Start {
		t.Errorf("chunk %d: source video starts at %d, the chunk at %d", i, v[0].DTS, rec.Start)
	}
	for k := 1; k < len(v); k++ {
		if v[k].DTS <= v[k-1].DTS {
			t.Errorf("chunk %d: decode time goes backwards inside the chunk at frame %d (%d after %d)", i, k, v[k].DTS, v[k-1].DTS)
			break
		}
	}
	if last := v[len(v)-1].DTS; last >= rec.Start+rec.Duration {
		t.Errorf("chunk %d: a frame at %d, past the chunk's end %d", i, last, rec.Start+rec.Duration)
	}
	if prev != nil && prev.video[len(prev.video)-1].DTS >= v[0].DTS {
		t.Errorf("chunk %d: source video starts at %d, not after chunk %d's last frame at %d", i, v[0].DTS, i-1, prev.video[len(prev.video)-1].DTS)
	}
	if cur.aud == nil {
		return
	}
	// AAC frames follow each other without gaps: the k-th is at the start plus k frames.
	// (ffprobe leaves the first frame's duration out, so decode times are compared.)
	a := cur.audio
	frameLen := cur.aud.Duration / int64(len(a))
	if frameLen*int64(len(a)) != cur.aud.Duration || frameLen <= 0 {
		t.Errorf("chunk %d: %d audio frames in %d samples", i, len(a), cur.aud.Duration)
	}
	if a[0].DTS != cur.aud.Start {
		t.Errorf("chunk %d: audio starts at %d, its record says %d", i, a[0].DTS, cur.aud.Start)
	}
	for k := 1; k < len(a); k++ {
		if want := a[0].DTS + int64(k)*frameLen; a[k].DTS != want {
			t.Errorf("chunk %d: audio frame %d at %d, want %d", i, k, a[k].DTS, want)
			break
		}
	}
	if prev != nil && prev.aud != nil {
		if end := prev.aud.Start + prev.aud.Duration; end != cur.aud.Start {
			t.Errorf("chunk %d: audio starts at %d, chunk %d's ended at %d", i, cur.aud.Start, i-1, end)
		}
	}
}

func seqs(cs []chunkSeen) []uint64 {
	var out []uint64
	for _, c := range cs {
		out = append(out, c.rec.Seq)
	}
	return out
}

// source is an ffmpeg-made H.264 (+ AAC) clip, decoded into frames with timestamps starting at
// zero, ready to be pushed through gortmplib's Writer as fast or as slow as a test wants.
type source struct {
	h264  media.H264Config
	asc   *mpeg4audio.AudioSpecificConfig
	video []media.VideoFrame
	audio []media.AudioFrame
}

var (
	sourcesMu sync.Mutex
	sources   = map[string]*source{}
)

// makeSource encodes seconds of a test pattern at 30 fps with a keyframe every gop frames
// (libx264 with B-frames, and 48 kHz AAC when audio is set), cached per test binary.
func makeSource(t *testing.T, seconds, gop int, size string, audio bool) *source {
	t.Helper()
	key := fmt.Sprint(seconds, gop, size, audio)
	sourcesMu.Lock()
	defer sourcesMu.Unlock()
	if s := sources[key]; s != nil {
		return s
	}
	ffmpeg, _ := testenv.FFmpeg(t)
	out := filepath.Join(t.TempDir(), "src.ts")
	args := []string{"-hide_banner", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=%s:rate=30", size)}
	if audio {
		args = append(args, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000")
	}
	args = append(args, "-t", fmt.Sprint(seconds),
		"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-bf", "2", "-x264-params", "rc-lookahead=0",
		"-g", fmt.Sprint(gop), "-keyint_min", fmt.Sprint(gop), "-sc_threshold", "0", "-pix_fmt", "yuv420p")
	if audio {
		args = append(args, "-c:a", "aac", "-b:a", "64k", "-ac", "2")
	}
	args = append(args, "-f", "mpegts", out)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if b, err := exec.CommandContext(ctx, ffmpeg, args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	dem, err := cmaf.Demux(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(dem.Video) == 0 || !dem.Video[0].Key {
		t.Fatalf("ffmpeg source: %d video frames, first not a keyframe", len(dem.Video))
	}
	s := &source{h264: *dem.H264, video: dem.Video, audio: dem.Audio}
	base := dem.Video[0].DTS
	for i := range s.video {
		s.video[i].DTS -= base
		s.video[i].PTS -= base
	}
	for i := range s.audio {
		s.audio[i].PTS -= base
	}
	if audio {
		var asc mpeg4audio.AudioSpecificConfig
		if err := asc.Unmarshal(dem.AAC.ASC); err != nil {
			t.Fatal(err)
		}
		s.asc = &asc
		// Audio before the first video frame cannot be placed; drop it.
		for len(s.audio) > 0 && s.audio[0].PTS < 0 {
			s.audio = s.audio[1:]
		}
	}
	sources[key] = s
	return s
}

func dur(ticks int64) time.Duration {
	return time.Duration(ticks) * time.Second / media.Timescale
}

// pusher writes a source through gortmplib's Writer, interleaving audio and video by time.
type pusher struct {
	w      *gortmplib.Writer
	vt, at *gortmplib.Track
}

func newPusher(t *testing.T, c *gortmplib.Client, src *source, withVideo, withAudio bool) *pusher {
	t.Helper()
	p := &pusher{}
	var tracks []*gortmplib.Track
	if withVideo {
		p.vt = &gortmplib.Track{Codec: &codecs.H264{SPS: src.h264.SPS, PPS: src.h264.PPS}}
		tracks = append(tracks, p.vt)
	}
	if withAudio {
		p.at = &gortmplib.Track{Codec: &codecs.MPEG4Audio{Config: src.asc}}
		tracks = append(tracks, p.at)
	}
	p.w = &gortmplib.Writer{Conn: c, Tracks: tracks}
	if err := p.w.Initialize(); err != nil {
		t.Fatal(err)
	}
	return p
}

// push sends the source's frames whose decode time is in [from, to), with every timestamp
// moved by shift. pace, if set, is called before each frame with its (shifted) time.
func (p *pusher) push(src *source, from, to, shift time.Duration, pace func(time.Duration)) error {
	ai := 0
	for _, f := range src.video {
		dts := dur(f.DTS)
		if dts < from {
			continue
		}
		if dts >= to {
			break
		}
		for p.at != nil && ai < len(src.audio) && dur(src.audio[ai].PTS) <= dts {
			a := src.audio[ai]
			ai++
			if dur(a.PTS) < from {
				continue
			}
			if err := p.w.WriteMPEG4Audio(p.at, dur(a.PTS)+shift, a.Data); err != nil {
				return err
			}
		}
		if pace != nil {
			pace(dts + shift)
		}
		if p.vt != nil {
			if err := p.w.WriteH264(p.vt, dur(f.PTS)+shift, dts+shift, f.NALUs); err != nil {
				return err
			}
		}
	}
	// The audio up to to after the last video frame, so that a push of what follows goes on
	// without a hole in the audio.
	for p.vt != nil && p.at != nil && ai < len(src.audio) && dur(src.audio[ai].PTS) < to {
		a := src.audio[ai]
		ai++
		if dur(a.PTS) < from {
			continue
		}
		if err := p.w.WriteMPEG4Audio(p.at, dur(a.PTS)+shift, a.Data); err != nil {
			return err
		}
	}
	if p.vt == nil { // audio only
		for _, a := range src.audio {
			if pts := dur(a.PTS); pts >= from && pts < to {
				if pace != nil {
					pace(pts + shift)
				}
				if err := p.w.WriteMPEG4Audio(p.at, pts+shift, a.Data); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// realtime paces frames to the wall clock from the first call, speed times faster.
func realtime(speed float64) func(time.Duration) { return paced(speed, 0) }

// burstThen paces like an encoder that starts with a burst: the first 2.1 s at once (the ingest
// reads two seconds of media to learn the tracks, within its handshake timeout, which a loaded
// test machine must not turn into a race), then speed times real time.
func burstThen(speed float64) func(time.Duration) { return paced(speed, 2100*time.Millisecond) }

func paced(speed float64, burst time.Duration) func(time.Duration) {
	var start time.Time
	var first time.Duration
	return func(ts time.Duration) {
		if start.IsZero() {
			start, first = time.Now(), ts
			return
		}
		if ts-first < burst {
			start = time.Now().Add(-time.Duration(float64(ts-first) / speed))
			return
		}
		due := start.Add(time.Duration(float64(ts-first) / speed))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
	}
}

// statusWatcher collects the onStatus commands a publishing client receives.
type statusWatcher struct {
	mu     sync.Mutex
	status []amf0.Object
	done   chan struct{}
	err    error
}

func watchStatus(c *gortmplib.Client) *statusWatcher {
	sw := &statusWatcher{done: make(chan struct{})}
	go func() {
		defer close(sw.done)
		for {
			msg, err := c.Read()
			if err != nil {
				sw.mu.Lock()
				sw.err = err
				sw.mu.Unlock()
				return
			}
			if cmd, ok := msg.(*message.CommandAMF0); ok && cmd.Name == "onStatus" && len(cmd.Arguments) >= 2 {
				if o, ok := cmd.Arguments[1].(amf0.Object); ok {
					sw.mu.Lock()
					sw.status = append(sw.status, o)
					sw.mu.Unlock()
				}
			}
		}
	}()
	return sw
}

// errorStatus returns the first error-level onStatus: its code and description.
func (sw *statusWatcher) errorStatus() (code, description string, ok bool) {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	for _, o := range sw.status {
		if lvl, _ := o.GetString("level"); lvl == "error" {
			code, _ = o.GetString("code")
			description, _ = o.GetString("description")
			return code, description, true
		}
	}
	return "", "", false
}

// closed reports whether the server closed the connection.
func (sw *statusWatcher) closed() bool {
	select {
	case <-sw.done:
		return true
	default:
		return false
	}
}

// waitClosed waits until the peer closes conn (a read returns an error) and returns how long
// that took. Bytes the server sends meanwhile (the handshake reply) are discarded.
func waitClosed(t *testing.T, conn net.Conn, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = conn.SetReadDeadline(start.Add(within))
	buf := make([]byte, 4096)
	for {
		_, err := conn.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open after %v", within)
		}
		return time.Since(start)
	}
}
