package packager

// Test doubles and checks shared by the packager tests: a queue that keeps the events it is
// given, an in-memory state store with revisions, a store wrapper that records (and can fail)
// every write and deletion in order, the writers' part (the ingest's and the transcoders'
// segments and records), playlist and manifest parsers, and the invariants players rely on that
// every test is held to.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Eyevinn/dash-mpd/mpd"
	"github.com/Eyevinn/hls-m3u8/m3u8"

	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/segment"
	"github.com/gopcast/gopcast/pkg/storage"
)

// Session ids are UUIDv7 strings: they sort in the order the sessions started.
const (
	sessA = "01900000-0000-7000-8000-00000000000a"
	sessB = "01900000-0000-7000-8000-00000000000b"
	sessC = "01900000-0000-7000-8000-00000000000c"
)

// fakeQueue is the packager's Queue: records come from the tests through accept, and the
// lifecycle events the packager publishes are kept.
type fakeQueue struct {
	mu     sync.Mutex
	events []queue.Event
}

func newFakeQueue() *fakeQueue { return &fakeQueue{} }

func (q *fakeQueue) ConsumeSegments(ctx context.Context, _ int, _ func(context.Context, *queue.Job[queue.Segment])) error {
	<-ctx.Done()
	return nil
}

func (q *fakeQueue) PublishEvent(_ context.Context, ev queue.Event) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.events = append(q.events, ev)
	return nil
}

// eventsOf returns the events of kind published so far.
func (q *fakeQueue) eventsOf(kind string) []queue.Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []queue.Event
	for _, ev := range q.events {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

// memState is a StateStore in memory, with revisions like JetStream KV.
type memState struct {
	mu     sync.Mutex
	vals   map[string][]byte
	revs   map[string]uint64
	rev    uint64
	putErr error // returned by Put while set
}

func newMemState() *memState {
	return &memState{vals: map[string][]byte{}, revs: map[string]uint64{}}
}

func (m *memState) Get(_ context.Context, key string) ([]byte, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.vals[key]
	if !ok {
		return nil, 0, fmt.Errorf("memstate %s: %w", key, queue.ErrNotFound)
	}
	return bytes.Clone(v), m.revs[key], nil
}

func (m *memState) Put(_ context.Context, key string, value []byte) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.putErr != nil {
		return 0, m.putErr
	}
	m.rev++
	m.vals[key] = bytes.Clone(value)
	m.revs[key] = m.rev
	return m.rev, nil
}

// Create stores key only if it is absent, as JetStream KV does.
func (m *memState) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	m.mu.Lock()
	if _, ok := m.vals[key]; ok {
		m.mu.Unlock()
		return 0, fmt.Errorf("memstate %s: %w", key, queue.ErrExists)
	}
	m.mu.Unlock()
	return m.Put(ctx, key, value)
}

// Update stores key only if its revision is still rev.
func (m *memState) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	m.mu.Lock()
	if m.revs[key] != rev {
		m.mu.Unlock()
		return 0, fmt.Errorf("memstate %s: %w", key, queue.ErrConflict)
	}
	m.mu.Unlock()
	return m.Put(ctx, key, value)
}

// Delete removes key.
func (m *memState) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.vals, key)
	delete(m.revs, key)
	return nil
}

// KeysMatching lists keys matching a NATS-style filter whose last token may be "*".
func (m *memState) KeysMatching(_ context.Context, filter string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	prefix, wild := strings.CutSuffix(filter, "*")
	var out []string
	for k := range m.vals {
		if wild && strings.HasPrefix(k, prefix) && !strings.Contains(k[len(prefix):], ".") || k == filter {
			out = append(out, k)
		}
	}
	return out, nil
}

func (m *memState) setPutErr(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.putErr = err
}

func (m *memState) revision(key string) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.revs[key]
}

// set stores a raw value, as an earlier release would have.
func (m *memState) set(key string, value []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rev++
	m.vals[key] = bytes.Clone(value)
	m.revs[key] = m.rev
}

// recStore wraps a real store and records every successful write and deletion in order. The
// packager's Puts can be failed by its fail function; the writers' (the harness playing the
// ingest and the transcoders) never fail and are marked as theirs.
type recStore struct {
	storage.Store
	mu       sync.Mutex
	ops      []putRecord
	attempts int
	failures int
	fail     func(key string, attempt int) error // attempt counts every packager Put call, from 1
}

type putRecord struct {
	key     string
	data    []byte
	opts    storage.PutOptions
	writer  bool // written by the ingest or a transcoder, not the packager
	deleted bool // a deletion, not a write
}

var errInjected = errors.New("injected storage failure")

func (s *recStore) Put(ctx context.Context, key string, data []byte, opts storage.PutOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts++
	if s.fail != nil {
		if err := s.fail(key, s.attempts); err != nil {
			s.failures++
			return err
		}
	}
	if err := s.Store.Put(ctx, key, data, opts); err != nil {
		return err
	}
	s.ops = append(s.ops, putRecord{key: key, data: bytes.Clone(data), opts: opts})
	return nil
}

// writerPut is a Put by the ingest or a transcoder.
func (s *recStore) writerPut(key string, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	opts := storage.HeadersFor(key, true)
	if err := s.Store.Put(context.Background(), key, data, opts); err != nil {
		return err
	}
	s.ops = append(s.ops, putRecord{key: key, data: bytes.Clone(data), opts: opts, writer: true})
	return nil
}

func (s *recStore) Delete(ctx context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.Store.Delete(ctx, key); err != nil {
		return err
	}
	s.ops = append(s.ops, putRecord{key: key, deleted: true})
	return nil
}

func (s *recStore) setFail(f func(key string, attempt int) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = f
}

// mark returns a position in the record; since returns what the packager wrote after it, and
// deletedSince what was deleted.
func (s *recStore) mark() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ops)
}

func (s *recStore) since(mark int) []putRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []putRecord
	for _, op := range s.ops[mark:] {
		if !op.writer && !op.deleted {
			out = append(out, op)
		}
	}
	return out
}

func (s *recStore) deletedSince(mark int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, op := range s.ops[mark:] {
		if op.deleted {
			out = append(out, op.key)
		}
	}
	return out
}

// all is every write and deletion, the writers' included.
func (s *recStore) all() []putRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ops)
}

// puts is every write by the packager.
func (s *recStore) puts() []putRecord { return s.since(0) }

func isManifest(key string) bool {
	return strings.HasSuffix(key, ".m3u8") || strings.HasSuffix(key, ".mpd")
}

// lockedBuffer collects the service's log for printing when a test fails.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// harness is one packager under test, with its fakes. restart replaces the Service and keeps
// the bucket and the state store, as a packager process restart would.
type harness struct {
	t     *testing.T
	cfg   Config
	q     *fakeQueue
	local *storage.LocalStore
	store *recStore
	state *memState
	logs  *lockedBuffer
	svc   *Service
	// expired says a recording was deleted: the ended live playlists may name its segments.
	expired bool
	// mediaOf, when set, gives the media segment the writers put for a record's rendition
	// (real media); otherwise they put labelled filler.
	mediaOf func(seg queue.Segment, r queue.Rendition) []byte

	mu      sync.Mutex
	nextN   map[string]uint64 // stream → past the highest number a session of it was given
	writers map[string]string // segment key → session whose writer wrote it
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	local, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ListedHold == 0 {
		cfg.ListedHold = -1 // tests list faster than real time; TestBacklogStaysListed tests the hold
	}
	h := &harness{t: t, cfg: cfg, q: newFakeQueue(), local: local, state: newMemState(), logs: &lockedBuffer{},
		nextN: map[string]uint64{}, writers: map[string]string{}}
	h.store = &recStore{Store: local}
	h.svc = h.newService()
	t.Cleanup(func() {
		h.svc.jobs.Wait() // recordings being finished
		checkPublished(t, h.store.all(), h.expired)
		if t.Failed() {
			t.Logf("packager log:\n%s", h.logs.String())
		}
	})
	return h
}

func (h *harness) newService() *Service {
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return New(h.cfg, log, h.q, storage.NewWriter(h.store, log), h.state)
}

// restart starts a new Service on the same bucket and state store.
func (h *harness) restart() {
	h.svc.jobs.Wait()
	h.svc = h.newService()
}

// chunk is segment records to hand to the packager, in order: normally a chunk's ingest record
// and its transcoder record.
type chunk []queue.Segment

// accept plays the writers' part for each record of c (its media segments go to the bucket,
// then the record is published) and hands the record to the service as handle does. It stops
// at the first error.
func (h *harness) accept(c chunk) error {
	return h.acceptCtx(context.Background(), h.svc, c)
}

func (h *harness) acceptCtx(ctx context.Context, svc *Service, c chunk) error {
	for _, seg := range c {
		h.write(seg)
		l := svc.lock(seg.StreamID)
		l.mu.Lock()
		log := svc.log.With("stream_id", seg.StreamID, "session_id", seg.SessionID, "seq", seg.Seq)
		err := svc.accept(ctx, l, &seg, log)
		l.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// write puts a record's media segments where the ingest and the transcoders put them, before
// they publish the record.
func (h *harness) write(seg queue.Segment) {
	h.t.Helper()
	for _, r := range seg.Renditions {
		if r.Failed {
			continue
		}
		key := segment.Key(seg.StreamID, r.Name, seg.N)
		h.mu.Lock()
		prev, ok := h.writers[key]
		h.writers[key] = seg.SessionID
		h.mu.Unlock()
		if ok && prev != seg.SessionID {
			h.t.Errorf("harness: %s written by sessions %s and %s: a test gave two sessions the same numbers", key, prev, seg.SessionID)
		}
		data := mediaBytes(seg.StreamID, seg.SessionID, r.Name, seg.Seq, r.Bytes)
		if h.mediaOf != nil {
			data = h.mediaOf(seg, r)
		}
		if err := h.store.writerPut(key, data); err != nil {
			h.t.Fatal(err)
		}
	}
}

func (h *harness) mustAccept(cs ...chunk) {
	h.t.Helper()
	for _, c := range cs {
		if err := h.accept(c); err != nil {
			h.t.Fatalf("accept %s: %v", c.ids(), err)
		}
	}
}

func (c chunk) ids() []string {
	var out []string
	for _, s := range c {
		out = append(out, s.ID())
	}
	return out
}

// tend runs the stream's timed work once, as the gap loop does every second.
func (h *harness) tend(streamID string) {
	h.svc.tend(context.Background(), streamID)
}

// savedState is the stream's state in the state store (nil if none).
func (h *harness) savedState(streamID string) *state {
	h.t.Helper()
	b, _, err := h.state.Get(context.Background(), stateKey(streamID))
	if err != nil {
		return nil
	}
	st := newState(streamID, h.cfg.ChunkTarget)
	if err := json.Unmarshal(b, st); err != nil {
		h.t.Fatalf("saved state: %v", err)
	}
	return st
}

// savedNextSeq is the next_seq of the stream's state in the state store (0 if none).
func (h *harness) savedNextSeq(streamID string) uint64 {
	if st := h.savedState(streamID); st != nil {
		return st.NextSeq
	}
	return 0
}

// withState runs f on the stream's loaded state under its lock.
func (h *harness) withState(streamID string, f func(st *state)) {
	h.t.Helper()
	l := h.svc.lock(streamID)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.st == nil {
		h.t.Fatalf("state of %s not loaded", streamID)
	}
	f(l.st)
}

// get returns an object from the bucket, nil if there is none.
func (h *harness) get(key string) []byte {
	h.t.Helper()
	b, err := h.local.Get(context.Background(), key)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return b
}

func (h *harness) media(streamID, rendition string) *mediaPL {
	h.t.Helper()
	b := h.get(path.Join("live", streamID, rendition, "index.m3u8"))
	if b == nil {
		h.t.Fatalf("no playlist for %s/%s", streamID, rendition)
	}
	return parseMedia(h.t, b)
}

func (h *harness) master(streamID string) *masterPL {
	h.t.Helper()
	b := h.get(path.Join("live", streamID, "master.m3u8"))
	if b == nil {
		h.t.Fatalf("no master playlist for %s", streamID)
	}
	return parseMaster(h.t, b)
}

// manifest returns the stream's live DASH manifest, read as a player reads it.
func (h *harness) manifest(streamID string) *dashMPD {
	h.t.Helper()
	b := h.get(path.Join("live", streamID, "manifest.mpd"))
	if b == nil {
		h.t.Fatalf("no DASH manifest for %s", streamID)
	}
	return parseMPD(h.t, b)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runGapLoop runs the service's gap loop until the returned stop is called (or the test ends).
func (h *harness) runGapLoop() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	svc := h.svc
	go func() {
		defer close(done)
		svc.gapLoop(ctx)
	}()
	stop = sync.OnceFunc(func() {
		cancel()
		<-done
	})
	h.t.Cleanup(stop)
	return stop
}

// rendSpec is one rendition the fake writers produce for every chunk.
type rendSpec struct {
	name, kind, codec string
	width, height     int
	bandwidth         int // nominal, rungs only
	size              int // media segment bytes
	rung              bool
}

var ladderSpecs = []rendSpec{
	{name: "source", kind: "video", codec: "avc1.64001F", width: 1280, height: 720, size: 5000},
	{name: "audio", kind: "audio", codec: "mp4a.40.2", size: 500},
	{name: "480p", kind: "video", codec: "avc1.64001E", width: 854, height: 480, bandwidth: 1_200_000, size: 3000, rung: true},
	{name: "360p", kind: "video", codec: "avc1.64001E", width: 640, height: 360, bandwidth: 700_000, size: 2000, rung: true},
}

var (
	renditionNames = []string{"360p", "480p", "audio", "source"}
	ingestNames    = []string{"audio", "source"}
	rungNames      = []string{"360p", "480p"}
)

// sess makes the records the ingest and the transcoders publish for one publishing session:
// the ingest's (source and audio) and, when the session has rungs, a transcoder's.
type sess struct {
	h          *harness
	stream, id string
	base       uint64            // segment number of chunk 0: the ingest's claim
	initV      map[string]string // rendition → init version: its init bytes are "init NAME VERSION"
	specs      []rendSpec
	recorded   bool
}

// session starts a session numbered where the stream's last one stopped, as the ingest's claim
// of numbers does after a clean end.
func (h *harness) session(stream, id string) *sess {
	h.mu.Lock()
	base := h.nextN[stream]
	h.mu.Unlock()
	return h.sessionAt(stream, id, base)
}

// sessionAt starts a session whose chunk 0 is segment number base.
func (h *harness) sessionAt(stream, id string, base uint64) *sess {
	return &sess{h: h, stream: stream, id: id, base: base, initV: map[string]string{}, specs: ladderSpecs}
}

// noRungs makes a session the profile has no rungs for: the ingest's records only.
func (s *sess) noRungs() *sess {
	s.specs = slices.DeleteFunc(slices.Clone(s.specs), func(sp rendSpec) bool { return sp.rung })
	return s
}

func (s *sess) hasRungs() bool {
	return slices.ContainsFunc(s.specs, func(sp rendSpec) bool { return sp.rung })
}

func (s *sess) n(seq uint64) uint64 { return s.base + seq }

// chunkDuration is 2.000, 2.010 or 2.020 s: durations differ so EXTINF checks mean something.
func chunkDuration(seq uint64) int64 { return 2*media.Timescale + int64(seq%3)*900 }

// audioExtra makes the audio rendition 5 ms longer than the chunk, as AAC framing does.
const audioExtra = 450

func (s *sess) initBytes(name string) []byte {
	v := s.initV[name]
	if v == "" {
		v = "v1"
	}
	return []byte("init " + name + " " + v)
}

func (s *sess) mediaBytes(name string, seq uint64) []byte {
	for _, sp := range s.specs {
		if sp.name == name {
			return mediaBytes(s.stream, s.id, name, seq, sp.size)
		}
	}
	return nil
}

// mediaBytes is the content the writers put in a media segment: who made it, of what.
func mediaBytes(stream, session, name string, seq uint64, size int) []byte {
	head := fmt.Sprintf("media|%s|%s|%s|%d|", stream, session, name, seq)
	return bytes.Repeat([]byte(head), size/len(head)+1)[:size]
}

// rendTiming is a rendition's timing in its own timescale, as the writers report it: video in
// 90 kHz, audio in its sample rate (48 kHz).
func (s *sess) rendTiming(kind string, seq uint64) (start, duration int64, timescale uint32) {
	start, d := int64(seq)*2*media.Timescale, chunkDuration(seq)
	if kind != "audio" {
		return start, d, media.Timescale
	}
	return start * 48000 / media.Timescale, (d + audioExtra) * 48000 / media.Timescale, 48000
}

// rendSeconds is a rendition's duration in seconds: what its EXTINF must say.
func (s *sess) rendSeconds(kind string, seq uint64) float64 {
	_, d, ts := s.rendTiming(kind, seq)
	return float64(d) / float64(ts)
}

// seg returns chunk seq's records: the ingest's, then (for a session with rungs) the
// transcoder's. mods adjust each record before it is returned.
func (s *sess) seg(seq uint64, mods ...func(*queue.Segment)) chunk {
	c := s.ingest(seq, mods...)
	if s.hasRungs() {
		c = append(c, s.transcoder(seq, mods...)...)
	}
	return c
}

// ingest returns chunk seq's ingest record alone; transcoder its transcoder record alone.
func (s *sess) ingest(seq uint64, mods ...func(*queue.Segment)) chunk {
	return chunk{s.record(seq, queue.FromIngest, mods)}
}

func (s *sess) transcoder(seq uint64, mods ...func(*queue.Segment)) chunk {
	return chunk{s.record(seq, queue.FromTranscoder, mods)}
}

func (s *sess) record(seq uint64, from string, mods []func(*queue.Segment)) queue.Segment {
	start := int64(seq) * 2 * media.Timescale
	seg := queue.Segment{StreamID: s.stream, SessionID: s.id, Seq: seq, N: s.n(seq), Start: start, Duration: chunkDuration(seq),
		Record: s.recorded, From: from, Encoding: from == queue.FromIngest && s.hasRungs(), Chunk: time.Now().UTC()}
	for _, sp := range s.specs {
		if sp.rung != (from == queue.FromTranscoder) {
			continue
		}
		rs, rd, rts := s.rendTiming(sp.kind, seq)
		r := queue.Rendition{Name: sp.name, Kind: sp.kind, Codec: sp.codec, Width: sp.width, Height: sp.height,
			Bandwidth: sp.bandwidth, Init: s.initBytes(sp.name), Bytes: sp.size, Start: rs, Duration: rd, Timescale: rts}
		if sp.kind == "video" {
			r.FPS = 30
		} else {
			r.Channels, r.SampleRate = 2, 48000
		}
		seg.Renditions = append(seg.Renditions, r)
	}
	for _, m := range mods {
		m(&seg)
	}
	if len(seg.Renditions) > 0 {
		s.h.mu.Lock()
		s.h.nextN[s.stream] = max(s.h.nextN[s.stream], seg.N+1)
		s.h.mu.Unlock()
	}
	return seg
}

// empty returns the ingest's record of an empty last chunk: the session ended before its first
// keyframe, or right after a cut.
func (s *sess) empty(seq uint64) chunk {
	return chunk{{StreamID: s.stream, SessionID: s.id, Seq: seq, N: s.n(seq), Last: true, Record: s.recorded, From: queue.FromIngest}}
}

func last(seg *queue.Segment) { seg.Last = true }

// failedChunk makes the records of a chunk that could not be made at all (poison input).
func failedChunk(seg *queue.Segment) {
	seg.Failed, seg.Error, seg.Renditions = true, "poison chunk: corrupt", nil
}

// failedRecord fails the transcoder's record only: its rungs could not be made.
func failedRecord(seg *queue.Segment) {
	if seg.From == queue.FromTranscoder {
		failedChunk(seg)
	}
}

// failRendition marks rendition name as failed, as a transcoder does for a rung ffmpeg could
// not encode.
func failRendition(name string) func(*queue.Segment) {
	return func(seg *queue.Segment) {
		for i, r := range seg.Renditions {
			if r.Name == name {
				seg.Renditions[i] = queue.Rendition{Name: r.Name, Kind: r.Kind, Height: r.Height, Failed: true,
					Error: "ffmpeg: exit status 1"}
			}
		}
	}
}

// mediaPL is a parsed media playlist.
type mediaPL struct {
	raw      string
	version  int
	target   int
	mediaSeq uint64
	discSeq  uint64
	ended    bool
	vod      bool
	topMap   string // EXT-X-MAP before the first segment
	segs     []plSeg
}

type plSeg struct {
	uri    string
	dur    float64
	gap    bool
	disc   bool
	mapTag string // EXT-X-MAP written right before this segment ("" if none)
	mapURI string // the init segment in force for this segment
}

func (p *mediaPL) uris() []string {
	out := make([]string, len(p.segs))
	for i, s := range p.segs {
		out[i] = s.uri
	}
	return out
}

func (p *mediaPL) seg(uri string) (plSeg, bool) {
	for _, s := range p.segs {
		if s.uri == uri {
			return s, true
		}
	}
	return plSeg{}, false
}

// numbers are the segment numbers the playlist's URIs name.
func (p *mediaPL) numbers(t *testing.T) []uint64 {
	t.Helper()
	out := make([]uint64, len(p.segs))
	for i, s := range p.segs {
		out[i] = uriNumber(t, s.uri)
	}
	return out
}

func uriNumber(t *testing.T, uri string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(strings.TrimSuffix(path.Base(uri), ".m4s"), 10, 64)
	if err != nil || !strings.HasSuffix(uri, ".m4s") {
		t.Fatalf("segment URI %q is not N.m4s", uri)
	}
	return n
}

func attr(line, name string) string {
	i := strings.Index(line, name+"=")
	if i < 0 {
		return ""
	}
	v := line[i+len(name)+1:]
	if strings.HasPrefix(v, `"`) {
		v = v[1:]
		if j := strings.IndexByte(v, '"'); j >= 0 {
			return v[:j]
		}
		return v
	}
	if j := strings.IndexByte(v, ','); j >= 0 {
		return v[:j]
	}
	return v
}

// parseMedia reads a media playlist line by line, after checking that hls-m3u8 accepts it in
// strict mode as a media playlist.
func parseMedia(t *testing.T, b []byte) *mediaPL {
	t.Helper()
	if _, lt, err := m3u8.DecodeFrom(bytes.NewReader(b), true); err != nil || lt != m3u8.MEDIA {
		t.Fatalf("not a valid media playlist (type %v): %v\n%s", lt, err, b)
	}
	p := &mediaPL{raw: string(b)}
	sc := bufio.NewScanner(bytes.NewReader(b))
	var cur plSeg
	curMap, haveInf := "", false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		var err error
		switch {
		case line == "" || line == "#EXTM3U" || line == "#EXT-X-INDEPENDENT-SEGMENTS":
		case strings.HasPrefix(line, "#EXT-X-VERSION:"):
			p.version, err = strconv.Atoi(strings.TrimPrefix(line, "#EXT-X-VERSION:"))
		case strings.HasPrefix(line, "#EXT-X-TARGETDURATION:"):
			p.target, err = strconv.Atoi(strings.TrimPrefix(line, "#EXT-X-TARGETDURATION:"))
		case strings.HasPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"):
			p.mediaSeq, err = strconv.ParseUint(strings.TrimPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"), 10, 64)
		case strings.HasPrefix(line, "#EXT-X-DISCONTINUITY-SEQUENCE:"):
			p.discSeq, err = strconv.ParseUint(strings.TrimPrefix(line, "#EXT-X-DISCONTINUITY-SEQUENCE:"), 10, 64)
		case line == "#EXT-X-PLAYLIST-TYPE:VOD":
			p.vod = true
		case line == "#EXT-X-ENDLIST":
			p.ended = true
		case strings.HasPrefix(line, "#EXT-X-MAP:"):
			curMap = attr(line, "URI")
			if len(p.segs) == 0 && p.topMap == "" && !haveInf && !cur.disc && !cur.gap {
				p.topMap = curMap
			} else {
				cur.mapTag = curMap
			}
		case line == "#EXT-X-DISCONTINUITY":
			cur.disc = true
		case line == "#EXT-X-GAP":
			cur.gap = true
		case strings.HasPrefix(line, "#EXTINF:"):
			v := strings.TrimSuffix(strings.TrimPrefix(line, "#EXTINF:"), ",")
			cur.dur, err = strconv.ParseFloat(strings.SplitN(v, ",", 2)[0], 64)
			haveInf = true
		case strings.HasPrefix(line, "#"):
			t.Fatalf("unexpected tag %q in media playlist:\n%s", line, b)
		default:
			if !haveInf {
				t.Fatalf("URI %q without EXTINF:\n%s", line, b)
			}
			cur.uri, cur.mapURI = line, curMap
			p.segs = append(p.segs, cur)
			cur, haveInf = plSeg{}, false
		}
		if err != nil {
			t.Fatalf("bad line %q: %v\n%s", line, err, b)
		}
	}
	return p
}

// masterPL is a parsed multivariant playlist.
type masterPL struct {
	raw      string
	audio    []string // EXT-X-MEDIA lines
	variants []variant
}

type variant struct {
	uri, attrs string
	bandwidth  int
}

func (m *masterPL) variant(uri string) (variant, bool) {
	for _, v := range m.variants {
		if v.uri == uri {
			return v, true
		}
	}
	return variant{}, false
}

func (m *masterPL) uris() []string {
	var out []string
	for _, v := range m.variants {
		out = append(out, v.uri)
	}
	return out
}

func parseMaster(t *testing.T, b []byte) *masterPL {
	t.Helper()
	if _, lt, err := m3u8.DecodeFrom(bytes.NewReader(b), true); err != nil || lt != m3u8.MASTER {
		t.Fatalf("not a valid multivariant playlist (type %v): %v\n%s", lt, err, b)
	}
	m := &masterPL{raw: string(b)}
	sc := bufio.NewScanner(bytes.NewReader(b))
	pending := ""
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "#EXT-X-MEDIA:"):
			m.audio = append(m.audio, line)
		case strings.HasPrefix(line, "#EXT-X-STREAM-INF:"):
			pending = strings.TrimPrefix(line, "#EXT-X-STREAM-INF:")
		case line != "" && !strings.HasPrefix(line, "#"):
			bw, err := strconv.Atoi(attr(pending, "BANDWIDTH"))
			if err != nil {
				t.Fatalf("variant %s: BANDWIDTH: %v\n%s", line, err, b)
			}
			m.variants = append(m.variants, variant{uri: line, attrs: pending, bandwidth: bw})
			pending = ""
		}
	}
	return m
}

// dashMPD is a DASH manifest as a player reads it: every Period, and in each the segments every
// Representation addresses.
type dashMPD struct {
	raw     string
	dynamic bool
	periods []dashPeriod
}

type dashPeriod struct {
	id    string
	start time.Duration
	reps  map[string]dashRep // by Representation id (the rendition)
}

type dashRep struct {
	kind string // video or audio
	init string // key of the init segment, relative to the manifest's BaseURL
	segs []dashSeg
}

type dashSeg struct {
	n    uint64
	t, d uint64 // in the AdaptationSet's timescale
	key  string // relative to the manifest's BaseURL
}

// numbers are the segment numbers rendition rep has in the manifest, every Period together.
func (m *dashMPD) numbers(rep string) []uint64 {
	var out []uint64
	for _, p := range m.periods {
		for _, s := range p.reps[rep].segs {
			out = append(out, s.n)
		}
	}
	return out
}

func (m *dashMPD) periodIDs() []string {
	var out []string
	for _, p := range m.periods {
		out = append(out, p.id)
	}
	return out
}

// parseMPD reads a manifest with dash-mpd and expands its SegmentTemplates as a player does
// (ISO/IEC 23009-1 5.3.9.6): each S is a run of 1+r segments of duration d, starting at t when
// given and where the previous one ended otherwise, numbered from startNumber. BaseURL is
// applied to the keys.
func parseMPD(t *testing.T, b []byte) *dashMPD {
	t.Helper()
	m, err := mpd.MPDFromBytes(b)
	if err != nil {
		t.Fatalf("not a valid MPD: %v\n%s", err, b)
	}
	out := &dashMPD{raw: string(b), dynamic: m.GetType() == "dynamic"}
	base := ""
	if len(m.BaseURL) == 1 {
		base = string(m.BaseURL[0].Value)
	}
	for _, p := range m.Periods {
		dp := dashPeriod{id: p.Id, reps: map[string]dashRep{}}
		if p.Start != nil {
			dp.start = time.Duration(*p.Start)
		}
		for _, set := range p.AdaptationSets {
			st := set.SegmentTemplate
			if st == nil || st.StartNumber == nil || st.SegmentTimeline == nil || st.Timescale == nil {
				t.Fatalf("Period %s: AdaptationSet without a SegmentTemplate, startNumber, timescale and timeline:\n%s", p.Id, b)
			}
			for _, rep := range set.Representations {
				if _, dup := dp.reps[rep.Id]; dup {
					t.Fatalf("Period %s: Representation %s twice:\n%s", p.Id, rep.Id, b)
				}
				r := dashRep{kind: string(set.ContentType),
					init: base + strings.ReplaceAll(st.Initialization, "$RepresentationID$", rep.Id)}
				n, next := uint64(*st.StartNumber), uint64(0)
				for i, s := range st.SegmentTimeline.S {
					if s.T != nil {
						next = *s.T
					} else if i == 0 {
						t.Fatalf("Period %s: first S without t:\n%s", p.Id, b)
					}
					for range s.R + 1 {
						key := strings.ReplaceAll(st.Media, "$RepresentationID$", rep.Id)
						key = base + strings.ReplaceAll(key, "$Number$", strconv.FormatUint(n, 10))
						r.segs = append(r.segs, dashSeg{n: n, t: next, d: s.D, key: key})
						n++
						next += s.D
					}
				}
				dp.reps[rep.Id] = r
			}
		}
		out.periods = append(out.periods, dp)
	}
	return out
}

// checkPublished holds a test's whole sequence of bucket writes and deletions to the invariants
// players rely on, whatever the test did:
//   - a playlist or manifest names only objects written before it and not deleted since
//     (segments other than gaps, init segments, media playlists);
//   - a media playlist's entries have increasing segment numbers, which skip only at a
//     discontinuity (a session that left numbers unused), while EXT-X-MEDIA-SEQUENCE counts the
//     entries one by one; media sequence and discontinuity sequence never go backwards, and the
//     discontinuity sequence grows by the discontinuities that left the window;
//   - an entry listed in one version of a playlist is the same in the next;
//   - a DASH Period keeps its id and start across versions of the live manifest, and a segment
//     stays in the same Period at the same time;
//   - every object has the headers storage.HeadersFor gives its key;
//   - the last version of every playlist and manifest names only objects still there.
func checkPublished(t *testing.T, ops []putRecord, expired bool) {
	t.Helper()
	seen := map[string]bool{}
	prev := map[string]*mediaPL{}
	prevMPD := map[string]*dashMPD{}
	lastDoc := map[string]putRecord{}
	for i, p := range ops {
		if p.deleted {
			delete(seen, p.key)
			delete(lastDoc, p.key)
			continue
		}
		dir := path.Dir(p.key)
		switch {
		case strings.HasSuffix(p.key, "/index.m3u8"):
			pl := parseMedia(t, p.data)
			checkMediaVersion(t, i, p, pl, prev[p.key], seen)
			prev[p.key] = pl
			want := storage.HeadersFor(p.key, !pl.ended)
			if p.opts != want {
				t.Errorf("put %d %s (ended %v): headers %+v, want %+v", i, p.key, pl.ended, p.opts, want)
			}
			lastDoc[p.key] = p
		case strings.HasSuffix(p.key, "/master.m3u8"):
			m := parseMaster(t, p.data)
			for _, v := range m.variants {
				if !seen[path.Join(dir, v.uri)] {
					t.Errorf("put %d %s lists %s before it was written", i, p.key, v.uri)
				}
			}
			for _, a := range m.audio {
				if u := attr(a, "URI"); u != "" && !seen[path.Join(dir, u)] {
					t.Errorf("put %d %s names audio %s before it was written", i, p.key, u)
				}
			}
			if p.opts != storage.HeadersFor(p.key, true) && p.opts != storage.HeadersFor(p.key, false) {
				t.Errorf("put %d %s: headers %+v", i, p.key, p.opts)
			}
		case strings.HasSuffix(p.key, ".mpd"):
			m := parseMPD(t, p.data)
			checkMPDVersion(t, i, p, m, prevMPD[p.key], seen)
			prevMPD[p.key] = m
			if p.opts != storage.HeadersFor(p.key, true) && p.opts != storage.HeadersFor(p.key, false) {
				t.Errorf("put %d %s: headers %+v", i, p.key, p.opts)
			}
			lastDoc[p.key] = p
		default:
			if want := storage.HeadersFor(p.key, true); p.opts != want && p.opts != storage.HeadersFor(p.key, false) {
				t.Errorf("put %d %s: headers %+v, want %+v", i, p.key, p.opts, want)
			}
		}
		seen[p.key] = true
	}
	// What players can fetch now: the last version of each playlist and manifest (unless a
	// recording expired, which deletes the segments an ended live playlist still names).
	for key, p := range lastDoc {
		if expired {
			break
		}
		dir := path.Dir(key)
		if strings.HasSuffix(key, ".mpd") {
			for _, per := range prevMPD[key].periods {
				for id, r := range per.reps {
					for _, k := range append([]string{r.init}, segKeys(r.segs)...) {
						if !seen[path.Join(dir, k)] {
							t.Errorf("%s: Period %s %s names %s, which is gone", key, per.id, id, k)
						}
					}
				}
			}
			continue
		}
		pl := parseMedia(t, p.data)
		for _, s := range pl.segs {
			if !s.gap && (!seen[path.Join(dir, s.uri)] || !seen[path.Join(dir, s.mapURI)]) {
				t.Errorf("%s lists %s (init %s), which is gone:\n%s", key, s.uri, s.mapURI, pl.raw)
			}
		}
	}
}

func segKeys(segs []dashSeg) []string {
	out := make([]string, len(segs))
	for i, s := range segs {
		out[i] = s.key
	}
	return out
}

func checkMediaVersion(t *testing.T, i int, p putRecord, pl, old *mediaPL, seen map[string]bool) {
	t.Helper()
	dir := path.Dir(p.key)
	if pl.version < 6 {
		t.Errorf("put %d %s: EXT-X-VERSION %d, EXT-X-MAP needs 6", i, p.key, pl.version)
	}
	if pl.topMap == "" {
		t.Errorf("put %d %s: no EXT-X-MAP before the first segment:\n%s", i, p.key, pl.raw)
	}
	for k, s := range pl.segs {
		n := uriNumber(t, s.uri)
		if k > 0 {
			pn := uriNumber(t, pl.segs[k-1].uri)
			if n <= pn || (n != pn+1 && !s.disc) {
				t.Errorf("put %d %s: entry %d is %s after %s: numbers must increase, and skip only at a discontinuity:\n%s",
					i, p.key, k, s.uri, pl.segs[k-1].uri, pl.raw)
			}
		}
		if s.gap {
			continue
		}
		if !seen[path.Join(dir, s.uri)] {
			t.Errorf("put %d %s lists %s, not written (or deleted):\n%s", i, p.key, s.uri, pl.raw)
		}
		if !seen[path.Join(dir, s.mapURI)] {
			t.Errorf("put %d %s: %s needs init %s, not written:\n%s", i, p.key, s.uri, s.mapURI, pl.raw)
		}
		if float64(pl.target) < s.dur-0.5 {
			t.Errorf("put %d %s: %s lasts %.3f s, over the target duration %d", i, p.key, s.uri, s.dur, pl.target)
		}
	}
	if old == nil {
		return
	}
	if pl.mediaSeq < old.mediaSeq {
		t.Errorf("put %d %s: media sequence went back from %d to %d", i, p.key, old.mediaSeq, pl.mediaSeq)
	}
	if pl.discSeq < old.discSeq {
		t.Errorf("put %d %s: discontinuity sequence went back from %d to %d", i, p.key, old.discSeq, pl.discSeq)
	}
	if pl.target < old.target {
		t.Errorf("put %d %s: target duration shrank from %d to %d", i, p.key, old.target, pl.target)
	}
	oldEnd := old.mediaSeq + uint64(len(old.segs))
	if pl.mediaSeq <= oldEnd { // every entry that left the window was in the old version
		left := 0
		for k, s := range old.segs {
			if old.mediaSeq+uint64(k) < pl.mediaSeq && s.disc {
				left++
			}
		}
		if pl.discSeq != old.discSeq+uint64(left) {
			t.Errorf("put %d %s: discontinuity sequence %d, want %d + %d that left the window", i, p.key, pl.discSeq, old.discSeq, left)
		}
	}
	for k, s := range pl.segs {
		msn := pl.mediaSeq + uint64(k)
		if msn < old.mediaSeq || msn >= oldEnd {
			continue
		}
		o := old.segs[msn-old.mediaSeq]
		if o.uri != s.uri || o.gap != s.gap || o.disc != s.disc || o.dur != s.dur || (!s.gap && o.mapURI != s.mapURI) {
			t.Errorf("put %d %s: entry %d changed between versions: %+v then %+v", i, p.key, msn, o, s)
		}
	}
}

// checkMPDVersion checks one version of a manifest: every init and media segment it names is
// there, a Representation's segments are consecutive and in time order, and against the
// previous version a Period keeps its start and a segment its Period and time.
func checkMPDVersion(t *testing.T, i int, p putRecord, m, old *dashMPD, seen map[string]bool) {
	t.Helper()
	dir := path.Dir(p.key)
	where := map[string]string{} // rendition/N → Period id
	at := map[string]uint64{}    // rendition/N → time
	for _, per := range m.periods {
		for id, r := range per.reps {
			if !seen[path.Join(dir, r.init)] {
				t.Errorf("put %d %s: Period %s %s needs %s, not written", i, p.key, per.id, id, r.init)
			}
			for k, s := range r.segs {
				if !seen[path.Join(dir, s.key)] {
					t.Errorf("put %d %s: Period %s names %s, not written (or deleted):\n%s", i, p.key, per.id, s.key, m.raw)
				}
				if k > 0 && (s.n != r.segs[k-1].n+1 || s.t <= r.segs[k-1].t) {
					t.Errorf("put %d %s: Period %s %s: segment %d at %d after %d at %d", i, p.key, per.id, id, s.n, s.t,
						r.segs[k-1].n, r.segs[k-1].t)
				}
				where[id+"/"+strconv.FormatUint(s.n, 10)] = per.id
				at[id+"/"+strconv.FormatUint(s.n, 10)] = s.t
			}
		}
	}
	if old == nil || !old.dynamic || !m.dynamic {
		return
	}
	starts := map[string]time.Duration{}
	for _, per := range old.periods {
		starts[per.id] = per.start
	}
	for _, per := range m.periods {
		if s, ok := starts[per.id]; ok && s != per.start {
			t.Errorf("put %d %s: Period %s moved from %v to %v", i, p.key, per.id, s, per.start)
		}
	}
	for _, per := range old.periods {
		for id, r := range per.reps {
			for _, s := range r.segs {
				k := id + "/" + strconv.FormatUint(s.n, 10)
				if now, ok := where[k]; ok && (now != per.id || at[k] != s.t) {
					t.Errorf("put %d %s: segment %s was in Period %s at %d, now in %s at %d:\n%s", i, p.key, k, per.id, s.t, now, at[k], m.raw)
				}
			}
		}
	}
}

// wantListing checks that every rendition's playlist of stream lists exactly the segment
// numbers want, with gaps where gaps says (by rendition, "*" for all).
func (h *harness) wantListing(stream string, want []uint64, gaps map[string][]uint64) {
	h.t.Helper()
	for _, name := range renditionNames {
		pl := h.media(stream, name)
		var gotGaps []uint64
		for _, s := range pl.segs {
			if s.gap {
				gotGaps = append(gotGaps, uriNumber(h.t, s.uri))
			}
		}
		got := pl.numbers(h.t)
		wantGaps := append(append([]uint64(nil), gaps["*"]...), gaps[name]...)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			h.t.Errorf("%s lists %v, want %v:\n%s", name, got, want, pl.raw)
		}
		if fmt.Sprint(sortedU(gotGaps)) != fmt.Sprint(sortedU(wantGaps)) {
			h.t.Errorf("%s has gaps at %v, want %v:\n%s", name, gotGaps, wantGaps, pl.raw)
		}
	}
}

// retiredSet is the segments a state has scheduled for deletion: number → renditions.
func retiredSet(st *state) map[uint64][]string {
	out := map[uint64][]string{}
	for _, r := range st.Retired {
		for _, name := range r.Renditions {
			if !slices.Contains(out[r.N], name) {
				out[r.N] = append(out[r.N], name)
			}
		}
		slices.Sort(out[r.N])
	}
	return out
}

func sortedU(s []uint64) []uint64 {
	out := append([]uint64{}, s...)
	slices.Sort(out)
	return out
}

func seqs(from, to uint64) []uint64 {
	var out []uint64
	for n := from; n <= to; n++ {
		out = append(out, n)
	}
	return out
}
