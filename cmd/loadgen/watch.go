package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gopcast/gopcast/pkg/media"
)

// watcher polls one stream's HLS playlists as a player at the live edge would, and records
// when each segment of each rendition first appears.
//
// It starts either from a master playlist (renditions are found there) or from media playlists
// given up front (addMedia, for a server without a master playlist such as nginx-rtmp). Media
// playlists with EXT-X-MAP hold fMP4 segments: the reference rendition's fragments are read for
// their tfdt. Media playlists without EXT-X-MAP hold MPEG-TS segments: the head of every
// segment of every rendition is read for its first video decode time, since each rendition may
// be numbered and cut on its own.
type watcher struct {
	hc     *http.Client
	master string // master playlist URL ("" when the media playlists are given)
	poll   time.Duration
	ref    string // reference rendition name

	mu         sync.Mutex
	renditions map[string]*rendition // by name (the media playlist's directory)
	order      []string
	masterAt   time.Time // when the master playlist was first fetched
	pollErrs   int
	lastErr    string
	lastNew    time.Time // when a playlist last listed a segment not seen before

	ended   chan struct{} // closed when every known media playlist has EXT-X-ENDLIST
	endOnce sync.Once
	fetches sync.WaitGroup
}

// rendition is one media playlist and what was seen of it.
type rendition struct {
	Name  string
	Kind  string // video or audio
	URL   string
	Segs  map[uint64]*segment
	Ended bool
	Polls int
	// TS is set once a playlist without EXT-X-MAP listed segments: MPEG-TS segments.
	TS bool

	initURL   string
	timescale uint32
	trex      *trexDefaults
	initErr   error
}

// segment is one segment number of one rendition as first seen.
type segment struct {
	N        uint64
	URI      string
	Extinf   float64 // seconds
	Gap      bool
	Disc     bool
	ListedAt time.Time // arrival of the first playlist response listing it
	// Reference rendition only: the fragment's media end from tfdt + Σ sample durations.
	FragEnd   time.Duration
	FragStart time.Duration
	FragOK    bool
	FragErr   string
	// MPEG-TS segments: the first video access unit's DTS (PTS if it has none), 90 kHz, as
	// written by the server.
	TSDTS int64
	TSOK  bool
	TSErr string
}

func newWatcher(hc *http.Client, master string, poll time.Duration, ref string) *watcher {
	return &watcher{hc: hc, master: master, poll: poll, ref: ref,
		renditions: make(map[string]*rendition), ended: make(chan struct{})}
}

// addMedia adds a media playlist to watch without a master playlist; call it before run.
func (w *watcher) addMedia(name, u string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.renditions[name]; ok {
		return
	}
	w.renditions[name] = &rendition{Name: name, Kind: "video", URL: u, Segs: make(map[uint64]*segment)}
	w.order = append(w.order, name)
}

// run polls until ctx ends. The master playlist is fetched every poll until it exists, then
// every second (renditions may be added); each media playlist has its own poller. Without a
// master playlist, the media playlists given to addMedia are polled.
func (w *watcher) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	if w.master == "" {
		w.mu.Lock()
		rs := make([]*rendition, 0, len(w.order))
		for _, n := range w.order {
			rs = append(rs, w.renditions[n])
		}
		w.mu.Unlock()
		for _, r := range rs {
			wg.Go(func() { w.pollRendition(ctx, r) })
		}
		return
	}
	t := time.NewTicker(w.poll)
	defer t.Stop()
	var lastMaster time.Time
	for {
		if time.Since(lastMaster) >= time.Second || w.masterSeen().IsZero() {
			lastMaster = time.Now()
			for _, r := range w.fetchMaster(ctx) {
				wg.Go(func() { w.pollRendition(ctx, r) })
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *watcher) masterSeen() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.masterAt
}

func (w *watcher) noteErr(err error) {
	w.mu.Lock()
	w.pollErrs++
	w.lastErr = err.Error()
	w.mu.Unlock()
}

// fetchMaster reads the master playlist and returns renditions not seen before.
func (w *watcher) fetchMaster(ctx context.Context) []*rendition {
	body, _, status, err := w.get(ctx, w.master, "")
	if err != nil {
		w.noteErr(err)
		return nil
	}
	if status != http.StatusOK {
		return nil // not written yet (404/403 before the first segment)
	}
	entries, err := parseMaster(body)
	if err != nil {
		w.noteErr(err)
		return nil
	}
	base, _ := url.Parse(w.master)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.masterAt.IsZero() {
		w.masterAt = time.Now()
	}
	var added []*rendition
	for _, e := range entries {
		u, err := base.Parse(e.uri)
		if err != nil {
			continue
		}
		name := renditionName(base, u)
		if _, ok := w.renditions[name]; ok {
			continue
		}
		r := &rendition{Name: name, Kind: e.kind, URL: u.String(), Segs: make(map[uint64]*segment)}
		w.renditions[name] = r
		w.order = append(w.order, name)
		added = append(added, r)
	}
	return added
}

// pollRendition fetches one media playlist every poll interval until it ends or ctx ends.
func (w *watcher) pollRendition(ctx context.Context, r *rendition) {
	t := time.NewTicker(w.poll)
	defer t.Stop()
	for {
		body, at, status, err := w.get(ctx, r.URL, "")
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			w.noteErr(err)
		case status == http.StatusOK:
			pl, perr := parseMedia(body)
			if perr != nil {
				w.noteErr(fmt.Errorf("%s: %w", r.URL, perr))
				break
			}
			if w.record(ctx, r, pl, at) {
				w.checkEnded()
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// record notes the segments of pl not seen before as listed at `at`, starts fragment fetches
// for the reference rendition, and reports whether the playlist has ended.
func (w *watcher) record(ctx context.Context, r *rendition, pl *mediaPlaylist, at time.Time) bool {
	base, _ := url.Parse(r.URL)
	w.mu.Lock()
	r.Polls++
	if r.initURL == "" && pl.mapURI != "" {
		if u, err := base.Parse(pl.mapURI); err == nil {
			r.initURL = u.String()
		}
	}
	if pl.mapURI == "" && len(pl.segments) > 0 {
		r.TS = true
	}
	var fetch []*segment
	for i, e := range pl.segments {
		n := pl.mediaSeq + uint64(i)
		if _, ok := r.Segs[n]; ok {
			continue
		}
		s := &segment{N: n, URI: e.uri, Extinf: e.duration, Gap: e.gap, Disc: e.disc, ListedAt: at}
		r.Segs[n] = s
		w.lastNew = at
		if (r.TS || r.Name == w.ref) && !s.Gap {
			fetch = append(fetch, s)
		}
	}
	r.Ended = pl.ended
	ts := r.TS
	w.mu.Unlock()
	for _, s := range fetch {
		u, err := base.Parse(s.URI)
		if err != nil {
			continue
		}
		if ts {
			w.fetches.Go(func() { w.fetchTSHead(context.WithoutCancel(ctx), s, u.String()) })
		} else {
			w.fetches.Go(func() { w.fetchFragment(context.WithoutCancel(ctx), r, s, u.String()) })
		}
	}
	return pl.ended
}

// renditionName names a media playlist found in a master playlist: its directory's name
// (gopcast: live/ID/720p/index.m3u8 is "720p"), or, when it sits next to the master playlist,
// its file name without extension (nginx-rtmp's hls_variant: s1_720p.m3u8 next to s1.m3u8).
// A prefix naming the stream (the master playlist's name or directory, then '_', '-' or '.')
// is dropped, so the same rendition of different streams has one name.
func renditionName(master, media *url.URL) string {
	stem := func(p string) string { b := path.Base(p); return strings.TrimSuffix(b, path.Ext(b)) }
	name := path.Base(path.Dir(media.Path))
	if path.Dir(media.Path) == path.Dir(master.Path) {
		name = stem(media.Path)
	}
	for _, p := range []string{stem(master.Path), path.Base(path.Dir(master.Path))} {
		if p != "" && p != "/" && p != "." && len(name) > len(p)+1 && strings.HasPrefix(name, p) && strings.ContainsRune("_-.", rune(name[len(p)])) {
			return name[len(p)+1:]
		}
	}
	return name
}

// complete reports whether every rendition has listed, and had its head read, an MPEG-TS
// segment starting at or after media time last - tol on the publisher's timeline (offset: what
// the server adds to the publisher's timestamps): the segment holding the last chunk. Servers
// that never write EXT-X-ENDLIST (nginx-rtmp) are done when this holds.
func (w *watcher) complete(last, offset, tol time.Duration) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.renditions) == 0 {
		return false
	}
	for _, r := range w.renditions {
		done := false
		for _, s := range r.Segs {
			if s.TSOK && ticksToDuration90k(s.TSDTS)-offset >= last-tol {
				done = true
				break
			}
		}
		if !done {
			return false
		}
	}
	return true
}

// lastListed is when a playlist last listed a new segment (zero: never).
func (w *watcher) lastListed() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastNew
}

// fetchTSHead reads the head of MPEG-TS segment s and records its first video decode time.
func (w *watcher) fetchTSHead(ctx context.Context, s *segment, u string) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var err error
	for _, limit := range []int{16 << 10, 256 << 10, 4 << 20} {
		var (
			b      []byte
			status int
		)
		b, _, status, err = w.get(ctx, u, fmt.Sprintf("bytes=0-%d", limit-1))
		if err == nil && status != http.StatusOK && status != http.StatusPartialContent {
			err = fmt.Errorf("GET %s: status %d", u, status)
		}
		if err != nil {
			break
		}
		var dts int64
		dts, _, err = tsFirstVideoDTS(b)
		if errors.Is(err, errTSShort) && len(b) >= limit {
			continue // a longer head may hold it
		}
		if err == nil {
			w.mu.Lock()
			s.TSDTS, s.TSOK = dts, true
			w.mu.Unlock()
			return
		}
		err = fmt.Errorf("%s: %w", u, err)
		break
	}
	w.mu.Lock()
	s.TSErr = err.Error()
	w.mu.Unlock()
}

func (w *watcher) checkEnded() {
	w.mu.Lock()
	all := len(w.renditions) > 0
	for _, r := range w.renditions {
		all = all && r.Ended
	}
	w.mu.Unlock()
	if all {
		w.endOnce.Do(func() { close(w.ended) })
	}
}

// wait waits for the fragment fetches in flight.
func (w *watcher) wait() { w.fetches.Wait() }

// fetchFragment reads the head of segment s (its moof) and the rendition's init segment, and
// records the fragment's start (tfdt) and end (tfdt + Σ sample durations) on the session
// timeline.
func (w *watcher) fetchFragment(ctx context.Context, r *rendition, s *segment, u string) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	fail := func(err error) {
		w.mu.Lock()
		s.FragErr = err.Error()
		w.mu.Unlock()
	}
	w.mu.Lock()
	initURL, ts, trex := r.initURL, r.timescale, r.trex
	w.mu.Unlock()
	if ts == 0 {
		if initURL == "" {
			fail(errors.New("no EXT-X-MAP"))
			return
		}
		b, _, status, err := w.get(ctx, initURL, "")
		if err == nil && status != http.StatusOK {
			err = fmt.Errorf("GET %s: status %d", initURL, status)
		}
		if err == nil {
			ts, trex, err = parseInit(b)
		}
		if err != nil {
			fail(err)
			return
		}
		w.mu.Lock()
		r.timescale, r.trex = ts, trex
		w.mu.Unlock()
	}
	limit := 64 << 10
	for {
		b, _, status, err := w.get(ctx, u, fmt.Sprintf("bytes=0-%d", limit-1))
		if err == nil && status != http.StatusOK && status != http.StatusPartialContent {
			err = fmt.Errorf("GET %s: status %d", u, status)
		}
		if err != nil {
			fail(err)
			return
		}
		start, dur, need, err := parseFragmentTimes(b, trex)
		if errors.Is(err, errShort) && need > limit && need < 64<<20 && len(b) >= limit {
			limit = need
			continue
		}
		if err != nil {
			fail(fmt.Errorf("%s: %w", u, err))
			return
		}
		w.mu.Lock()
		// gopcast's session timeline starts at media.SessionOrigin for the publisher's 0.
		s.FragStart = ticksToDuration(start, ts) - sessionOrigin
		s.FragEnd = ticksToDuration(start+dur, ts) - sessionOrigin
		s.FragOK = true
		w.mu.Unlock()
		return
	}
}

// sessionOrigin is where gopcast's session timeline puts the publisher's timestamp 0.
var sessionOrigin = ticksToDuration(media.SessionOrigin, media.Timescale)

// ticksToDuration90k converts a 90 kHz MPEG-TS timestamp.
func ticksToDuration90k(v int64) time.Duration {
	if v < 0 {
		return -ticksToDuration(uint64(-v), tsTimescale)
	}
	return ticksToDuration(uint64(v), tsTimescale)
}

func ticksToDuration(v uint64, timescale uint32) time.Duration {
	ts := uint64(timescale)
	return time.Duration(v/ts)*time.Second + time.Duration(v%ts)*time.Second/time.Duration(ts)
}

// get fetches u (with a Range header when rng is set) and returns the body and the instant the
// response headers arrived.
func (w *watcher) get(ctx context.Context, u, rng string) ([]byte, time.Time, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, time.Time{}, 0, err
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := w.hc.Do(req)
	if err != nil {
		return nil, time.Time{}, 0, err
	}
	at := time.Now()
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, at, resp.StatusCode, err
	}
	return b, at, resp.StatusCode, nil
}

// masterEntry is one media playlist named by a master playlist.
type masterEntry struct {
	uri  string
	kind string
}

// parseMaster returns the media playlists of a multivariant playlist: variant URIs
// (EXT-X-STREAM-INF) and rendition URIs (EXT-X-MEDIA with URI).
func parseMaster(b []byte) ([]masterEntry, error) {
	if !bytes.HasPrefix(bytes.TrimLeft(b, "\ufeff"), []byte("#EXTM3U")) {
		return nil, errors.New("master playlist does not start with #EXTM3U")
	}
	var out []masterEntry
	seen := map[string]bool{}
	add := func(uri, kind string) {
		if uri != "" && !seen[uri] {
			seen[uri] = true
			out = append(out, masterEntry{uri: uri, kind: kind})
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	variant := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
		case strings.HasPrefix(line, "#EXT-X-STREAM-INF:"):
			variant = true
		case strings.HasPrefix(line, "#EXT-X-MEDIA:"):
			attrs := parseAttrs(strings.TrimPrefix(line, "#EXT-X-MEDIA:"))
			kind := strings.ToLower(attrs["TYPE"])
			add(attrs["URI"], kind)
		case strings.HasPrefix(line, "#"):
		default:
			if variant {
				add(line, "video")
				variant = false
			}
		}
	}
	return out, sc.Err()
}

// parseAttrs parses an HLS attribute list: KEY=value,KEY="quoted, value".
func parseAttrs(s string) map[string]string {
	out := map[string]string{}
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			break
		}
		key := strings.TrimSpace(s[:eq])
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				val, s = s[1:], ""
			} else {
				val, s = s[1:1+end], s[2+end:]
			}
			s = strings.TrimPrefix(s, ",")
		} else if c := strings.IndexByte(s, ','); c >= 0 {
			val, s = s[:c], s[c+1:]
		} else {
			val, s = s, ""
		}
		out[key] = val
	}
	return out
}

// mediaPlaylist is the part of a media playlist loadgen needs.
type mediaPlaylist struct {
	mediaSeq uint64
	mapURI   string // the first EXT-X-MAP
	segments []mediaEntry
	ended    bool
}

type mediaEntry struct {
	uri      string
	duration float64
	gap      bool
	disc     bool
}

func parseMedia(b []byte) (*mediaPlaylist, error) {
	if !bytes.HasPrefix(bytes.TrimLeft(b, "\ufeff"), []byte("#EXTM3U")) {
		return nil, errors.New("media playlist does not start with #EXTM3U")
	}
	pl := &mediaPlaylist{}
	var cur mediaEntry
	haveInf := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
		case strings.HasPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"):
			v, err := strconv.ParseUint(strings.TrimPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("bad EXT-X-MEDIA-SEQUENCE: %w", err)
			}
			pl.mediaSeq = v
		case strings.HasPrefix(line, "#EXT-X-MAP:"):
			if pl.mapURI == "" {
				pl.mapURI = parseAttrs(strings.TrimPrefix(line, "#EXT-X-MAP:"))["URI"]
			}
		case strings.HasPrefix(line, "#EXTINF:"):
			v := strings.TrimPrefix(line, "#EXTINF:")
			if c := strings.IndexByte(v, ','); c >= 0 {
				v = v[:c]
			}
			d, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fmt.Errorf("bad EXTINF: %w", err)
			}
			cur.duration = d
			haveInf = true
		case line == "#EXT-X-GAP":
			cur.gap = true
		case line == "#EXT-X-DISCONTINUITY":
			cur.disc = true
		case line == "#EXT-X-ENDLIST":
			pl.ended = true
		case strings.HasPrefix(line, "#"):
		default:
			if !haveInf {
				return nil, fmt.Errorf("segment %q without EXTINF", line)
			}
			cur.uri = line
			pl.segments = append(pl.segments, cur)
			cur, haveInf = mediaEntry{}, false
		}
	}
	return pl, sc.Err()
}
