package faults

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Eyevinn/mp4ff/mp4"
)

// watcher is a player's view of one stream: it polls the multivariant playlist and every media
// playlist it names, downloads each segment (and init segment) as soon as it is listed, and
// remembers everything it saw, noting every way the playlists break the rules on the way.
type watcher struct {
	t        *testing.T
	base     string // .../live/ID/
	interval time.Duration
	client   *http.Client
	// fetch downloads segments as they are listed (off for the load test's many streams).
	fetch bool

	mu       sync.Mutex
	rends    map[string]*rendition
	variants []string // video rendition names from the multivariant playlist
	audio    string   // the audio rendition's name
	problems []string
	polls    int
	stopCh   chan struct{}
	done     chan struct{}
}

// traceWatch logs every playlist change (GOPCAST_FAULT_TRACE=1).
var traceWatch = os.Getenv("GOPCAST_FAULT_TRACE") != ""

// rendition is what the watcher saw of one media playlist.
type rendition struct {
	name    string
	segs    map[uint64]*seenSeg
	seq     uint64
	polled  bool
	lastN   int64 // highest segment number listed so far, -1 before any
	ended   bool
	endedAt time.Time
	// updates are the instants a higher segment number first appeared.
	updates []time.Time
	inits   map[string][]byte
}

// seenSeg is one listed segment.
type seenSeg struct {
	n         uint64
	uri       string
	dur       float64
	gap       bool
	disc      bool
	mapURI    string
	firstSeen time.Time
	data      []byte
	status    int // HTTP status of the last download attempt
}

func newWatcher(t *testing.T, base string, interval time.Duration) *watcher {
	return &watcher{t: t, base: base, interval: interval, fetch: true,
		client: &http.Client{Timeout: 5 * time.Second},
		rends:  map[string]*rendition{}}
}

// start polls in the background until stop.
func (w *watcher) start() *watcher {
	w.stopCh, w.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(w.done)
		tick := time.NewTicker(w.interval)
		defer tick.Stop()
		for {
			w.pollOnce()
			select {
			case <-w.stopCh:
				return
			case <-tick.C:
			}
		}
	}()
	w.t.Cleanup(w.stop)
	return w
}

func (w *watcher) stop() {
	if w.stopCh == nil {
		return
	}
	select {
	case <-w.stopCh:
	default:
		close(w.stopCh)
	}
	<-w.done
}

func (w *watcher) problem(format string, a ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.problems) < 200 {
		w.problems = append(w.problems, fmt.Sprintf(time.Now().Format("15:04:05.000 ")+format, a...))
	}
}

func (w *watcher) get(url string) ([]byte, int, error) {
	resp, err := w.client.Get(url)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return b, resp.StatusCode, err
}

func (w *watcher) pollOnce() {
	b, code, err := w.get(w.base + "master.m3u8")
	if err == nil && code == 200 {
		variants, audio, perr := parseMaster(b)
		if perr != nil {
			w.problem("master.m3u8: %v:\n%s", perr, b)
		} else {
			w.mu.Lock()
			w.variants, w.audio = variants, audio
			w.mu.Unlock()
		}
	}
	w.mu.Lock()
	w.polls++
	names := append([]string(nil), w.variants...)
	if w.audio != "" {
		names = append(names, w.audio)
	}
	w.mu.Unlock()
	for _, name := range names {
		w.pollMedia(name)
	}
}

// parseMaster returns the video variants' and the audio rendition's directory names.
func parseMaster(b []byte) (variants []string, audio string, err error) {
	lines := strings.Split(string(b), "\n")
	if strings.TrimSpace(lines[0]) != "#EXTM3U" {
		return nil, "", fmt.Errorf("does not start with #EXTM3U")
	}
	for i, l := range lines {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "#EXT-X-MEDIA:") && attr(l, "TYPE") == "AUDIO":
			audio = path.Dir(attr(l, "URI"))
		case strings.HasPrefix(l, "#EXT-X-STREAM-INF:"):
			if i+1 >= len(lines) {
				return nil, "", fmt.Errorf("variant without a URI")
			}
			variants = append(variants, path.Dir(strings.TrimSpace(lines[i+1])))
		}
	}
	if len(variants) == 0 {
		return nil, "", fmt.Errorf("no variants")
	}
	return variants, audio, nil
}

// attr reads an attribute from an HLS tag line.
func attr(line, name string) string {
	_, rest, ok := strings.Cut(line, ":")
	if !ok {
		return ""
	}
	for len(rest) > 0 {
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			return ""
		}
		var val string
		if strings.HasPrefix(v, `"`) {
			end := strings.Index(v[1:], `"`)
			if end < 0 {
				return ""
			}
			val, rest = v[1:end+1], strings.TrimPrefix(v[end+2:], ",")
		} else {
			val, rest, _ = strings.Cut(v, ",")
		}
		if strings.TrimSpace(k) == name {
			return val
		}
	}
	return ""
}

// mediaPlaylist is one parsed media playlist.
type mediaPlaylist struct {
	seq     uint64
	target  int
	ended   bool
	entries []seenSeg
}

func parseMedia(b []byte) (*mediaPlaylist, error) {
	p := &mediaPlaylist{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	first := true
	var dur float64
	var gap, disc bool
	curMap := ""
	i := uint64(0)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case first:
			if line != "#EXTM3U" {
				return nil, fmt.Errorf("does not start with #EXTM3U")
			}
			first = false
		case strings.HasPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"):
			v, err := strconv.ParseUint(strings.TrimPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("bad %s", line)
			}
			p.seq = v
		case strings.HasPrefix(line, "#EXT-X-TARGETDURATION:"):
			v, err := strconv.Atoi(strings.TrimPrefix(line, "#EXT-X-TARGETDURATION:"))
			if err != nil {
				return nil, fmt.Errorf("bad %s", line)
			}
			p.target = v
		case strings.HasPrefix(line, "#EXT-X-MAP:"):
			curMap = attr(line, "URI")
		case strings.HasPrefix(line, "#EXTINF:"):
			v := strings.TrimPrefix(line, "#EXTINF:")
			v, _, _ = strings.Cut(v, ",")
			d, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fmt.Errorf("bad %s", line)
			}
			dur = d
		case line == "#EXT-X-GAP":
			gap = true
		case line == "#EXT-X-DISCONTINUITY":
			disc = true
		case line == "#EXT-X-ENDLIST":
			p.ended = true
		case line != "" && !strings.HasPrefix(line, "#"):
			p.entries = append(p.entries, seenSeg{n: p.seq + i, uri: line, dur: dur, gap: gap, disc: disc, mapURI: curMap})
			i++
			gap, disc, dur = false, false, 0
		}
	}
	if first {
		return nil, fmt.Errorf("empty")
	}
	return p, nil
}

func (w *watcher) pollMedia(name string) {
	b, code, err := w.get(w.base + name + "/index.m3u8")
	if err != nil || code != 200 {
		return
	}
	now := time.Now()
	p, err := parseMedia(b)
	if err != nil {
		w.problem("%s/index.m3u8 corrupt: %v:\n%s", name, err, b)
		return
	}
	w.mu.Lock()
	r := w.rends[name]
	if r == nil {
		r = &rendition{name: name, segs: map[uint64]*seenSeg{}, lastN: -1, inits: map[string][]byte{}}
		w.rends[name] = r
	}
	var problems []string
	if r.polled && p.seq < r.seq {
		problems = append(problems, fmt.Sprintf("%s: media sequence went backwards: %d after %d", name, p.seq, r.seq))
	}
	r.seq, r.polled = p.seq, true
	if r.ended && !p.ended {
		problems = append(problems, fmt.Sprintf("%s: playlist lost its EXT-X-ENDLIST", name))
	}
	if p.ended && !r.ended {
		r.ended, r.endedAt = true, now
	}
	uris := map[string]bool{}
	var fresh []*seenSeg
	var newMaps []string
	for i := range p.entries {
		e := p.entries[i]
		if uris[e.uri] {
			problems = append(problems, fmt.Sprintf("%s: %s listed twice in one playlist", name, e.uri))
		}
		uris[e.uri] = true
		if want := fmt.Sprintf("%d.m4s", e.n); e.uri != want {
			problems = append(problems, fmt.Sprintf("%s: segment number %d listed as %s", name, e.n, e.uri))
		}
		if p.target > 0 && int(math.Round(e.dur)) > p.target {
			problems = append(problems, fmt.Sprintf("%s: %s lasts %.3f s, over the target duration %d", name, e.uri, e.dur, p.target))
		}
		if prev, ok := r.segs[e.n]; ok {
			if prev.uri != e.uri || prev.gap != e.gap {
				problems = append(problems, fmt.Sprintf("%s: segment %d was %s (gap %v), now %s (gap %v)", name, e.n, prev.uri, prev.gap, e.uri, e.gap))
			}
			continue
		}
		s := e
		s.firstSeen = now
		r.segs[e.n] = &s
		fresh = append(fresh, &s)
		if s.mapURI != "" && r.inits[s.mapURI] == nil {
			newMaps = append(newMaps, s.mapURI)
		}
	}
	if len(p.entries) > 0 {
		last := int64(p.entries[len(p.entries)-1].n)
		switch {
		case last < r.lastN:
			problems = append(problems, fmt.Sprintf("%s: playlist shrank: last segment %d after %d", name, last, r.lastN))
		case last > r.lastN:
			if traceWatch {
				w.t.Logf("watch %s: %s lists %d..%d (ended %v)", now.Format("15:04:05.000"), name, p.seq, last, p.ended)
			}
			r.lastN = last
			r.updates = append(r.updates, now)
		}
	}
	w.mu.Unlock()
	for _, pr := range problems {
		w.problem("%s", pr)
	}
	if !w.fetch {
		return
	}
	for _, m := range newMaps {
		w.fetchInit(r, m)
	}
	for _, s := range fresh {
		if !s.gap {
			w.fetchSegment(r, s)
		}
	}
}

func (w *watcher) fetchInit(r *rendition, uri string) {
	b, code, err := w.get(w.base + r.name + "/" + uri)
	if err != nil || code >= 500 {
		return // storage unreachable or restarting: fetched later
	}
	if code != 200 {
		w.problem("%s: init %s listed but GET answers %d", r.name, uri, code)
		return
	}
	w.mu.Lock()
	r.inits[uri] = b
	w.mu.Unlock()
}

// fetchSegment downloads a segment just listed: the contract is that a playlist is uploaded
// only after every segment it lists, so anything but 200 is a broken promise.
func (w *watcher) fetchSegment(r *rendition, s *seenSeg) {
	b, code, err := w.get(w.base + r.name + "/" + s.uri)
	if err != nil || code >= 500 {
		return // storage unreachable or restarting: fetched later
	}
	w.mu.Lock()
	s.status = code
	if code == 200 {
		s.data = b
	}
	w.mu.Unlock()
	if code != 200 {
		w.problem("%s: %s listed but GET answers %d", r.name, s.uri, code)
	}
}

// renditions is every rendition the multivariant playlist names, video first.
func (w *watcher) renditions() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := append([]string(nil), w.variants...)
	if w.audio != "" {
		out = append(out, w.audio)
	}
	return out
}

// allEnded reports whether every media playlist carries EXT-X-ENDLIST.
func (w *watcher) allEnded() bool {
	names := w.renditions()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(names) == 0 {
		return false
	}
	for _, n := range names {
		if r := w.rends[n]; r == nil || !r.ended {
			return false
		}
	}
	return true
}

// listed is the number of segments listed so far in rendition name (highest number + 1).
func (w *watcher) listed(name string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if r := w.rends[name]; r != nil {
		return int(r.lastN + 1)
	}
	return 0
}

// firstSeen is when segment n of rendition name was first listed (zero if never).
func (w *watcher) firstSeen(name string, n uint64) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	if r := w.rends[name]; r != nil {
		if s := r.segs[n]; s != nil {
			return s.firstSeen
		}
	}
	return time.Time{}
}

// updates is when rendition name's playlist listed a new segment.
func (w *watcher) updates(name string) []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	if r := w.rends[name]; r != nil {
		return append([]time.Time(nil), r.updates...)
	}
	return nil
}

// waitEnded waits for EXT-X-ENDLIST in every media playlist.
func (w *watcher) waitEnded(timeout time.Duration) {
	w.t.Helper()
	waitFor(w.t, timeout, "EXT-X-ENDLIST in every media playlist of "+w.base, w.allEnded)
}

// checkOpts say what a finished stream must look like.
type checkOpts struct {
	// minSegments is the fewest segments each rendition must list.
	minSegments int
	// frames, if set, is the exact number of video frames every video rendition must hold.
	frames int
	// align checks that segment n of every rendition starts at the same instant.
	align bool
	// rungs are renditions that must be in the multivariant playlist besides source and audio.
	rungs []string
	// abruptEnd tolerates holes in presentation time in the last segment: the publisher was
	// cut off mid-GOP (see checkContinuity).
	abruptEnd bool
	// audioEndsEarly accepts an audio gap as the last segment: the publisher's audio ended
	// before its last video frames.
	audioEndsEarly bool
}

// result is what check found.
type result struct {
	segments int // per rendition
	lost     int // missing numbers and gaps, over all renditions
	// tailHoles counts tolerated presentation holes in last segments (abruptEnd).
	tailHoles  int
	renditions []string
}

// check stops the watcher and holds the stream to the player's view of the invariants: every
// rendition lists the segment numbers 0..N-1 once each, in order, none a gap, all the same N;
// no playlist broke a rule while live (see pollMedia); every listed segment downloads and the
// whole rendition decodes without an error; timelines are continuous across segments.
func (w *watcher) check(c *cluster, o checkOpts) result {
	t := w.t
	t.Helper()
	w.stop()
	var res result
	w.mu.Lock()
	problems := append([]string(nil), w.problems...)
	w.mu.Unlock()
	for _, p := range problems {
		t.Errorf("player saw: %s", p)
	}
	names := w.renditions()
	res.renditions = names
	has := map[string]bool{}
	for _, n := range names {
		has[n] = true
	}
	for _, want := range append([]string{"source", "audio"}, o.rungs...) {
		if !has[want] {
			t.Errorf("the multivariant playlist lacks %s (has %v)", want, names)
		}
	}
	counts := map[string]int{}
	dir := t.TempDir()
	starts := map[string][]float64{}
	for _, name := range names {
		w.mu.Lock()
		r := w.rends[name]
		w.mu.Unlock()
		if r == nil {
			t.Errorf("%s: never listed", name)
			continue
		}
		if !r.ended {
			t.Errorf("%s: no EXT-X-ENDLIST", name)
		}
		ns := make([]uint64, 0, len(r.segs))
		for n := range r.segs {
			ns = append(ns, n)
		}
		sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
		next := uint64(0)
		var holes []uint64
		for _, n := range ns {
			for k := next; k < n; k++ {
				holes = append(holes, k)
			}
			next = n + 1
			if r.segs[n].gap {
				if name == "audio" && o.audioEndsEarly && n == ns[len(ns)-1] {
					// The publisher's audio ended before its video: the last segment has
					// none, and says so.
					t.Logf("%s: last segment %d is a gap: the publisher's audio ended before its video", name, n)
					continue
				}
				t.Errorf("%s: segment %d listed as a gap", name, n)
				res.lost++
			}
		}
		for _, k := range holes {
			// A number no playlist showed: a live player skipped it.
			t.Errorf("%s: segment %d never listed in any playlist the player fetched", name, k)
			res.lost++
		}
		if len(holes) > 0 {
			ns = ns[:0]
			for n := range r.segs {
				ns = append(ns, n)
			}
			sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
		}
		counts[name] = int(next)
		if int(next) < o.minSegments {
			t.Errorf("%s: %d segments listed, want at least %d", name, next, o.minSegments)
		}

		// Download what the live fetches missed (storage was down then), then decode.
		var whole bytes.Buffer
		var initURI string
		for _, n := range ns {
			s := r.segs[n]
			if s.gap {
				continue
			}
			if s.mapURI != "" && r.inits[s.mapURI] == nil {
				w.fetchInit(r, s.mapURI)
			}
			if initURI == "" {
				initURI = s.mapURI
				whole.Write(r.inits[initURI])
			} else if s.mapURI != initURI {
				t.Errorf("%s: segment %d changes the init segment to %s (from %s) within one session", name, n, s.mapURI, initURI)
			}
			if s.data == nil {
				w.fetchSegment(r, s)
			}
			if s.data == nil {
				t.Errorf("%s: segment %d could not be downloaded (HTTP %d)", name, n, s.status)
				continue
			}
			whole.Write(s.data)
			if o.align {
				start, err := segmentStart(r.inits[initURI], s.data)
				if err != nil {
					t.Errorf("%s: segment %d: %v", name, n, err)
				}
				starts[name] = append(starts[name], start)
			}
		}
		file := filepath.Join(dir, name+".mp4")
		if err := os.WriteFile(file, whole.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		if msg := decodeErrors(c.ffmpeg, file); msg != "" {
			t.Errorf("%s: decoding the listed segments reported errors:\n%s", name, msg)
		}
		pk := probePackets(t, c.ffprobe, file)
		tailFrom := math.Inf(1)
		if o.abruptEnd && len(ns) > 0 {
			if s := r.segs[ns[len(ns)-1]]; s.data != nil {
				if start, err := segmentStart(r.inits[initURI], s.data); err == nil {
					tailFrom = start
				}
			}
		}
		res.tailHoles += checkContinuity(t, name, pk, tailFrom)
		if o.frames > 0 && name != w.audio && len(pk) != o.frames {
			t.Errorf("%s: %d video frames, published %d", name, len(pk), o.frames)
		}
		t.Logf("%s: %d segments, %d packets", name, next, len(pk))
	}
	for name, n := range counts {
		if ref := counts["source"]; n != ref {
			t.Errorf("%s lists %d segments, source %d", name, n, ref)
			res.lost += max(0, ref-n)
		}
	}
	res.segments = counts["source"]
	if o.align {
		for i, ref := range starts["source"] {
			for _, name := range names {
				if i >= len(starts[name]) {
					continue
				}
				tol := 0.5 / 30
				if name == w.audio {
					tol = 1024.0 / 48000
				}
				if d := math.Abs(starts[name][i] - ref); d > tol {
					t.Errorf("segment %d: %s starts at %.4f s, source at %.4f s", i, name, starts[name][i], ref)
				}
			}
		}
	}
	return res
}

// packet is one ffprobe packet.
type packet struct {
	PTS, DTS, Duration float64
}

// probePackets returns the packets of the file's first stream, in decode order.
func probePackets(t *testing.T, ffprobe, file string) []packet {
	t.Helper()
	out, err := exec.Command(ffprobe, "-v", "error", "-select_streams", "0",
		"-show_entries", "packet=pts_time,dts_time,duration_time", "-of", "json", file).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", file, err)
	}
	var res struct {
		Packets []struct {
			PTS string `json:"pts_time"`
			DTS string `json:"dts_time"`
			Dur string `json:"duration_time"`
		} `json:"packets"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	pk := make([]packet, len(res.Packets))
	for i, p := range res.Packets {
		pk[i].PTS, _ = strconv.ParseFloat(p.PTS, 64)
		pk[i].DTS, _ = strconv.ParseFloat(p.DTS, 64)
		pk[i].Duration, _ = strconv.ParseFloat(p.Dur, 64)
	}
	return pk
}

// decodeErrors decodes the whole file and returns whatever ffmpeg reports as an error.
func decodeErrors(ffmpeg, file string) string {
	out, _ := exec.Command(ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", file, "-f", "null", "-").CombinedOutput()
	return strings.TrimSpace(string(out))
}

// checkContinuity fails on any decode-time step between consecutive packets that differs from
// the packet's duration by more than half a frame (a gap or an overlap), in decode and in
// presentation order. (The same bar as test/e2e.)
//
// A publisher cut off mid-GOP leaves the frames received last without the B-frames that come
// before them in presentation order: holes in presentation time from tailFrom on (the last
// segment's start) are tolerated and counted; pass +Inf to tolerate none.
func checkContinuity(t *testing.T, rend string, pk []packet, tailFrom float64) (tailHoles int) {
	t.Helper()
	if len(pk) < 2 {
		t.Errorf("%s: only %d packets", rend, len(pk))
		return 0
	}
	// ffprobe 5.1 shows no duration for the first AAC packet of a fragmented MP4 that does
	// not start at 0; such a packet is taken to be as long as the typical one.
	durs := make([]float64, 0, len(pk))
	for _, p := range pk {
		if p.Duration > 0 {
			durs = append(durs, p.Duration)
		}
	}
	sort.Float64s(durs)
	typical := durs[len(durs)/2]
	for i := range pk {
		if pk[i].Duration <= 0 {
			pk[i].Duration = typical
		}
	}
	errs := 0
	for i := 1; i < len(pk) && errs < 10; i++ {
		step := pk[i].DTS - pk[i-1].DTS
		frame := pk[i-1].Duration
		if math.Abs(step-frame) > frame/2 {
			t.Errorf("%s: packet %d: decode time step %.4f s for a %.4f s frame (gap or overlap) at %.3f s", rend, i, step, frame, pk[i].DTS)
			errs++
		}
	}
	pts := make([]float64, len(pk))
	for i, p := range pk {
		pts[i] = p.PTS
	}
	sort.Float64s(pts)
	for i := 1; i < len(pts) && errs < 10; i++ {
		step := pts[i] - pts[i-1]
		if math.Abs(step-typical) > typical/2 {
			if pts[i-1] >= tailFrom-typical/2 && step > 0 {
				t.Logf("%s: presentation hole of %.4f s at %.3f s in the last segment (the publisher was cut off)", rend, step, pts[i])
				tailHoles++
				continue
			}
			t.Errorf("%s: presentation step %.4f s at %.3f s (frame %.4f s)", rend, step, pts[i], typical)
			errs++
		}
	}
	return tailHoles
}

// segmentStart is the earliest presentation time in a CMAF media segment, in seconds, read
// from its boxes (tfdt, trun) with the init segment's timescale.
func segmentStart(init, seg []byte) (float64, error) {
	f, err := mp4.DecodeFile(bytes.NewReader(append(append([]byte(nil), init...), seg...)))
	if err != nil {
		return 0, err
	}
	if f.Init == nil || f.Init.Moov == nil || f.Init.Moov.Trak == nil || f.Init.Moov.Mvex == nil {
		return 0, fmt.Errorf("no usable init segment")
	}
	ts := float64(f.Init.Moov.Trak.Mdia.Mdhd.Timescale)
	first := math.Inf(1)
	for _, sg := range f.Segments {
		for _, fr := range sg.Fragments {
			samples, err := fr.GetFullSamples(f.Init.Moov.Mvex.Trex)
			if err != nil {
				return 0, err
			}
			for _, s := range samples {
				first = math.Min(first, float64(s.PresentationTime())/ts)
			}
		}
	}
	if math.IsInf(first, 1) {
		return 0, fmt.Errorf("no samples")
	}
	return first, nil
}

// maxInterval is the longest time between consecutive instants of ts that overlap [from, to].
func maxInterval(ts []time.Time, from, to time.Time) (time.Duration, time.Time) {
	var longest time.Duration
	var at time.Time
	for i := 1; i < len(ts); i++ {
		if ts[i].Before(from) || ts[i-1].After(to) {
			continue
		}
		if d := ts[i].Sub(ts[i-1]); d > longest {
			longest, at = d, ts[i-1]
		}
	}
	return longest, at
}

// firstAfter is the first instant of ts after t (zero if none).
func firstAfter(ts []time.Time, t time.Time) time.Time {
	for _, x := range ts {
		if x.After(t) {
			return x
		}
	}
	return time.Time{}
}
