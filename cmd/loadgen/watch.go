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
)

// watcher polls one stream's HLS playlists as a player at the live edge would, and records
// when each segment of each rendition first appears.
type watcher struct {
	hc     *http.Client
	master string // master playlist URL
	poll   time.Duration
	ref    string // reference rendition name

	mu         sync.Mutex
	renditions map[string]*rendition // by name (the media playlist's directory)
	order      []string
	masterAt   time.Time // when the master playlist was first fetched
	pollErrs   int
	lastErr    string

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
}

func newWatcher(hc *http.Client, master string, poll time.Duration, ref string) *watcher {
	return &watcher{hc: hc, master: master, poll: poll, ref: ref,
		renditions: make(map[string]*rendition), ended: make(chan struct{})}
}

// run polls until ctx ends. The master playlist is fetched every poll until it exists, then
// every second (renditions may be added); each media playlist has its own poller.
func (w *watcher) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
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
		name := path.Base(path.Dir(u.Path))
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
	var fetch []*segment
	for i, e := range pl.segments {
		n := pl.mediaSeq + uint64(i)
		if _, ok := r.Segs[n]; ok {
			continue
		}
		s := &segment{N: n, URI: e.uri, Extinf: e.duration, Gap: e.gap, Disc: e.disc, ListedAt: at}
		r.Segs[n] = s
		if r.Name == w.ref && !s.Gap {
			fetch = append(fetch, s)
		}
	}
	r.Ended = pl.ended
	w.mu.Unlock()
	for _, s := range fetch {
		u, err := base.Parse(s.URI)
		if err != nil {
			continue
		}
		w.fetches.Go(func() { w.fetchFragment(context.WithoutCancel(ctx), r, s, u.String()) })
	}
	return pl.ended
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
		s.FragStart = ticksToDuration(start, ts)
		s.FragEnd = ticksToDuration(start+dur, ts)
		s.FragOK = true
		w.mu.Unlock()
		return
	}
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
