package packager

// Test doubles and checks shared by the packager tests: a queue whose rendition objects live in
// a map, an in-memory state store with revisions, a store wrapper that records (and can fail)
// every Put in order, playlist parsers, and the publish-order invariant every test is held to.

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

	"github.com/Eyevinn/hls-m3u8/m3u8"

	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/storage"
)

// Session ids are UUIDv7 strings: they sort in the order the sessions started.
const (
	sessA = "01900000-0000-7000-8000-00000000000a"
	sessB = "01900000-0000-7000-8000-00000000000b"
	sessC = "01900000-0000-7000-8000-00000000000c"
)

// fakeQueue is the packager's Queue: rendition objects in a map.
type fakeQueue struct {
	mu      sync.Mutex
	objects map[string][]byte
	deleted []string
}

func newFakeQueue() *fakeQueue { return &fakeQueue{objects: map[string][]byte{}} }

func (q *fakeQueue) put(name string, b []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.objects[name] = bytes.Clone(b)
}

func (q *fakeQueue) remove(name string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.objects, name)
}

func (q *fakeQueue) ConsumeSegments(ctx context.Context, _ int, _ func(context.Context, *queue.Job[queue.Segment])) error {
	<-ctx.Done()
	return nil
}

func (q *fakeQueue) RenditionBytes(ctx context.Context, name string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	b, ok := q.objects[name]
	if !ok {
		return nil, fmt.Errorf("fake queue: rendition %s: %w", name, queue.ErrNotFound)
	}
	return bytes.Clone(b), nil
}

func (q *fakeQueue) DeleteRendition(_ context.Context, name string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.objects, name)
	q.deleted = append(q.deleted, name)
	return nil
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

// recStore wraps a real store, records every successful Put in order, and fails the Puts its
// fail function says to.
type recStore struct {
	storage.Store
	mu       sync.Mutex
	puts     []putRecord
	attempts int
	failures int
	fail     func(key string, attempt int) error // attempt counts every Put call, from 1
}

type putRecord struct {
	key  string
	data []byte
	opts storage.PutOptions
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
	s.puts = append(s.puts, putRecord{key: key, data: bytes.Clone(data), opts: opts})
	return nil
}

func (s *recStore) setFail(f func(key string, attempt int) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = f
}

// mark returns a position in the Put record; since returns the Puts after it.
func (s *recStore) mark() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.puts)
}

func (s *recStore) since(mark int) []putRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]putRecord(nil), s.puts[mark:]...)
}

func (s *recStore) all() []putRecord { return s.since(0) }

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
// the queue, the bucket and the state store, as a packager process restart would.
type harness struct {
	t     *testing.T
	cfg   Config
	q     *fakeQueue
	local *storage.LocalStore
	store *recStore
	state *memState
	logs  *lockedBuffer
	svc   *Service
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
	h := &harness{t: t, cfg: cfg, q: newFakeQueue(), local: local, state: newMemState(), logs: &lockedBuffer{}}
	h.store = &recStore{Store: local}
	h.svc = h.newService()
	t.Cleanup(func() {
		checkPublished(t, h.store.all())
		if t.Failed() {
			t.Logf("packager log:\n%s", h.logs.String())
		}
	})
	return h
}

func (h *harness) newService() *Service {
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return New(h.cfg, log, h.q, h.store, h.state)
}

// restart starts a new Service on the same queue, bucket and state store.
func (h *harness) restart() { h.svc = h.newService() }

// accept hands seg to the service the way handle does: under the stream's lock.
func (h *harness) accept(seg queue.Segment) error {
	return h.acceptCtx(context.Background(), h.svc, seg)
}

func (h *harness) acceptCtx(ctx context.Context, svc *Service, seg queue.Segment) error {
	l := svc.lock(seg.StreamID)
	l.mu.Lock()
	defer l.mu.Unlock()
	log := svc.log.With("stream_id", seg.StreamID, "session_id", seg.SessionID, "seq", seg.Seq)
	return svc.accept(ctx, l, &seg, log)
}

func (h *harness) mustAccept(segs ...queue.Segment) {
	h.t.Helper()
	for _, s := range segs {
		if err := h.accept(s); err != nil {
			h.t.Fatalf("accept %s: %v", s.ID(), err)
		}
	}
}

// savedNextSeq is the next_seq of the stream's state in the state store (0 if none).
func (h *harness) savedNextSeq(streamID string) uint64 {
	b, _, err := h.state.Get(context.Background(), stateKey(streamID))
	if err != nil {
		return 0
	}
	var saved struct {
		NextSeq uint64 `json:"next_seq"`
	}
	if err := json.Unmarshal(b, &saved); err != nil {
		h.t.Errorf("saved state: %v", err)
	}
	return saved.NextSeq
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
	stop = func() {
		cancel()
		<-done
	}
	h.t.Cleanup(stop)
	return stop
}

// rendSpec is one rendition the fake transcoder produces for every chunk.
type rendSpec struct {
	name, kind, codec string
	width, height     int
	bandwidth         int // nominal, rungs only
	size              int // media segment bytes
}

var ladderSpecs = []rendSpec{
	{name: "source", kind: "video", codec: "avc1.64001F", width: 1280, height: 720, size: 5000},
	{name: "audio", kind: "audio", codec: "mp4a.40.2", size: 500},
	{name: "480p", kind: "video", codec: "avc1.64001E", width: 854, height: 480, bandwidth: 1_200_000, size: 3000},
	{name: "360p", kind: "video", codec: "avc1.64001E", width: 640, height: 360, bandwidth: 700_000, size: 2000},
}

var renditionNames = []string{"360p", "480p", "audio", "source"}

// sess makes the segment messages a transcoder would send for one publishing session.
type sess struct {
	h              *harness
	stream, id     string
	initV          map[string]string // rendition → init version: its init bytes are "init NAME VERSION"
	specs          []rendSpec
	chunkDurations map[uint64]int64
	// inline carries init segments and the audio in the message, as the transcoder does;
	// otherwise they are objects (as an older transcoder stored them).
	inline bool
}

func (h *harness) session(stream, id string) *sess {
	return &sess{h: h, stream: stream, id: id, initV: map[string]string{}, specs: ladderSpecs}
}

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
	size := 1000
	for _, sp := range s.specs {
		if sp.name == name {
			size = sp.size
		}
	}
	head := fmt.Sprintf("media|%s|%s|%s|%d|", s.stream, s.id, name, seq)
	return bytes.Repeat([]byte(head), size/len(head)+1)[:size]
}

// rendTiming is a rendition's duration in its own timescale, as the transcoder reports it:
// video in 90 kHz, audio in its sample rate (48 kHz).
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

// seg returns the segment message for chunk seq, with its rendition objects put in the queue.
// mods adjust the message before it is returned.
func (s *sess) seg(seq uint64, mods ...func(*queue.Segment)) queue.Segment {
	start := int64(seq) * 2 * media.Timescale
	seg := queue.Segment{StreamID: s.stream, SessionID: s.id, Seq: seq, Start: start, Duration: chunkDuration(seq)}
	prefix := fmt.Sprintf("%s/%s/%d/", s.stream, s.id, seq)
	for _, sp := range s.specs {
		rs, rd, rts := s.rendTiming(sp.kind, seq)
		r := queue.Rendition{Name: sp.name, Kind: sp.kind, Codec: sp.codec, Width: sp.width, Height: sp.height,
			Bandwidth: sp.bandwidth, Init: prefix + sp.name + "/init.mp4", Media: prefix + sp.name + "/media.m4s",
			Start: rs, Duration: rd, Timescale: rts}
		if sp.kind == "video" {
			r.FPS = 30
		} else {
			r.Channels = 2
		}
		m := s.mediaBytes(sp.name, seq)
		r.Bytes = len(m)
		if s.inline {
			r.Init, r.InitData = "", s.initBytes(sp.name)
		} else {
			s.h.q.put(r.Init, s.initBytes(sp.name))
		}
		if s.inline && sp.kind == "audio" {
			r.Media, r.MediaData = "", m
		} else {
			s.h.q.put(r.Media, m)
		}
		seg.Renditions = append(seg.Renditions, r)
	}
	for _, m := range mods {
		m(&seg)
	}
	return seg
}

func last(seg *queue.Segment) { seg.Last = true }

// failedChunk makes the message a transcoder sends for a chunk it could not transcode at all.
func failedChunk(seg *queue.Segment) {
	seg.Failed, seg.Error, seg.Renditions = true, "poison chunk: corrupt", nil
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

// checkPublished holds a test's whole sequence of bucket writes to the invariants players rely
// on, whatever the test did:
//   - a playlist names only objects written before it (segments other than gaps, init
//     segments, media playlists);
//   - a media playlist lists consecutive segment numbers starting at its EXT-X-MEDIA-SEQUENCE,
//     each once; media sequence and discontinuity sequence never go backwards, and the
//     discontinuity sequence grows by the discontinuities that left the window;
//   - an entry listed in one version of a playlist is the same in the next;
//   - every object has the headers storage.HeadersFor gives its key.
func checkPublished(t *testing.T, puts []putRecord) {
	t.Helper()
	seen := map[string]bool{}
	prev := map[string]*mediaPL{}
	for i, p := range puts {
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
			if p.opts != storage.HeadersFor(p.key, true) && p.opts != storage.HeadersFor(p.key, false) {
				t.Errorf("put %d %s: headers %+v", i, p.key, p.opts)
			}
		default:
			if want := storage.HeadersFor(p.key, true); p.opts != want {
				t.Errorf("put %d %s: headers %+v, want %+v", i, p.key, p.opts, want)
			}
		}
		seen[p.key] = true
	}
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
		if want := strconv.FormatUint(pl.mediaSeq+uint64(k), 10) + ".m4s"; s.uri != want {
			t.Errorf("put %d %s: entry %d is %s, want %s (media sequence %d):\n%s", i, p.key, k, s.uri, want, pl.mediaSeq, pl.raw)
		}
		if s.gap {
			continue
		}
		if !seen[path.Join(dir, s.uri)] {
			t.Errorf("put %d %s lists %s before it was written:\n%s", i, p.key, s.uri, pl.raw)
		}
		if !seen[path.Join(dir, s.mapURI)] {
			t.Errorf("put %d %s: %s needs init %s, not written yet:\n%s", i, p.key, s.uri, s.mapURI, pl.raw)
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
		n := pl.mediaSeq + uint64(k)
		if n < old.mediaSeq || n >= oldEnd {
			continue
		}
		o := old.segs[n-old.mediaSeq]
		if o.gap != s.gap || o.disc != s.disc || o.dur != s.dur || (!s.gap && o.mapURI != s.mapURI) {
			t.Errorf("put %d %s: entry %s changed between versions: %+v then %+v", i, p.key, s.uri, o, s)
		}
	}
}

// wantListing checks that every rendition's playlist of stream lists exactly the segment
// numbers want, with gaps where gaps says (by rendition, "*" for all).
func (h *harness) wantListing(stream string, want []uint64, gaps map[string][]uint64) {
	h.t.Helper()
	for _, name := range renditionNames {
		pl := h.media(stream, name)
		var got []uint64
		var gotGaps []uint64
		for _, s := range pl.segs {
			n, err := strconv.ParseUint(strings.TrimSuffix(s.uri, ".m4s"), 10, 64)
			if err != nil {
				h.t.Fatalf("%s: segment URI %q", name, s.uri)
			}
			got = append(got, n)
			if s.gap {
				gotGaps = append(gotGaps, n)
			}
		}
		wantGaps := append(append([]uint64(nil), gaps["*"]...), gaps[name]...)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			h.t.Errorf("%s lists %v, want %v:\n%s", name, got, want, pl.raw)
		}
		if fmt.Sprint(sortedU(gotGaps)) != fmt.Sprint(sortedU(wantGaps)) {
			h.t.Errorf("%s has gaps at %v, want %v:\n%s", name, gotGaps, wantGaps, pl.raw)
		}
	}
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
