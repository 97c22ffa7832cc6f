package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// mediaPlaylist is what a player reads from one media playlist.
type mediaPlaylist struct {
	seq      uint64
	mapURI   string
	segments []playlistSegment
	ended    bool
}

type playlistSegment struct {
	n        uint64 // media sequence number
	uri      string
	duration float64
	gap      bool
}

func parseMedia(t *testing.T, b []byte) mediaPlaylist {
	t.Helper()
	var p mediaPlaylist
	sc := bufio.NewScanner(bytes.NewReader(b))
	var dur float64
	var gap bool
	i := uint64(0)
	first := true
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case first:
			if line != "#EXTM3U" {
				t.Fatalf("playlist does not start with #EXTM3U:\n%s", b)
			}
			first = false
		case strings.HasPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"):
			p.seq, _ = strconv.ParseUint(strings.TrimPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"), 10, 64)
		case strings.HasPrefix(line, "#EXT-X-MAP:"):
			if p.mapURI == "" {
				p.mapURI = attr(line, "URI")
			}
		case strings.HasPrefix(line, "#EXTINF:"):
			v := strings.TrimSuffix(strings.TrimPrefix(line, "#EXTINF:"), ",")
			v, _, _ = strings.Cut(v, ",")
			dur, _ = strconv.ParseFloat(v, 64)
		case line == "#EXT-X-GAP":
			gap = true
		case line == "#EXT-X-ENDLIST":
			p.ended = true
		case line != "" && !strings.HasPrefix(line, "#"):
			p.segments = append(p.segments, playlistSegment{n: p.seq + i, uri: line, duration: dur, gap: gap})
			i++
			gap = false
		}
	}
	return p
}

type masterPlaylist struct {
	variants []variant
	audioURI string
}

type variant struct {
	uri, codecs, resolution string
	bandwidth               int
}

func parseMaster(t *testing.T, b []byte) masterPlaylist {
	t.Helper()
	var m masterPlaylist
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "#EXT-X-MEDIA:") && attr(l, "TYPE") == "AUDIO":
			m.audioURI = attr(l, "URI")
		case strings.HasPrefix(l, "#EXT-X-STREAM-INF:"):
			bw, _ := strconv.Atoi(attr(l, "BANDWIDTH"))
			for _, req := range []string{"BANDWIDTH", "AVERAGE-BANDWIDTH", "RESOLUTION", "CODECS", "FRAME-RATE", "AUDIO"} {
				if attr(l, req) == "" {
					t.Errorf("master playlist variant lacks %s: %s", req, l)
				}
			}
			m.variants = append(m.variants, variant{uri: strings.TrimSpace(lines[i+1]), codecs: attr(l, "CODECS"),
				resolution: attr(l, "RESOLUTION"), bandwidth: bw})
		}
	}
	return m
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

// watcher polls the live playlists as a player would and remembers every segment it saw listed,
// checking on the way that media sequence numbers never go backwards.
type watcher struct {
	t       *testing.T
	base    string // .../live/ID/
	mu      sync.Mutex
	seen    map[string]map[uint64]playlistSegment // rendition -> n -> segment
	lastSeq map[string]uint64
	ended   map[string]bool
	master  *masterPlaylist
}

func newWatcher(t *testing.T, base string) *watcher {
	return &watcher{t: t, base: base, seen: map[string]map[uint64]playlistSegment{}, lastSeq: map[string]uint64{}, ended: map[string]bool{}}
}

func (w *watcher) poll() {
	b, code, err := httpGet(w.base + "master.m3u8")
	if err != nil || code != 200 {
		return
	}
	m := parseMaster(w.t, b)
	w.mu.Lock()
	w.master = &m
	w.mu.Unlock()
	uris := []string{m.audioURI}
	for _, v := range m.variants {
		uris = append(uris, v.uri)
	}
	for _, u := range uris {
		if u == "" {
			continue
		}
		rend := path.Dir(u)
		b, code, err := httpGet(w.base + u)
		if err != nil || code != 200 {
			continue
		}
		p := parseMedia(w.t, b)
		w.mu.Lock()
		if p.seq < w.lastSeq[rend] {
			w.t.Errorf("%s: media sequence went backwards: %d after %d", rend, p.seq, w.lastSeq[rend])
		}
		w.lastSeq[rend] = p.seq
		if w.seen[rend] == nil {
			w.seen[rend] = map[uint64]playlistSegment{}
		}
		for _, s := range p.segments {
			if prev, ok := w.seen[rend][s.n]; ok && prev.uri != s.uri {
				w.t.Errorf("%s: segment %d listed as %s then %s", rend, s.n, prev.uri, s.uri)
			}
			w.seen[rend][s.n] = s
		}
		if p.ended {
			w.ended[rend] = true
		}
		w.mu.Unlock()
	}
}

func (w *watcher) allEnded() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.master == nil || len(w.ended) == 0 {
		return false
	}
	for r := range w.seen {
		if !w.ended[r] {
			return false
		}
	}
	return len(w.ended) == len(w.master.variants)+btoi(w.master.audioURI != "")
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// packet is one ffprobe packet.
type packet struct {
	PTS      float64
	DTS      float64
	Duration float64
}

// probePackets returns the packets of the file's first stream, in decode order.
func probePackets(t *testing.T, ffprobe, file string) []packet {
	t.Helper()
	return probeStream(t, ffprobe, file, "")
}

var execCommand = exec.CommandContext

// probeStream returns the packets of one stream of the file ("v:0", "a:0"; "" for all), in
// decode order.
func probeStream(t *testing.T, ffprobe, file, stream string) []packet {
	t.Helper()
	args := []string{"-v", "error", "-show_entries", "packet=pts_time,dts_time,duration_time", "-of", "json"}
	if stream != "" {
		args = append(args, "-select_streams", stream)
	}
	out, err := exec.Command(ffprobe, append(args, file)...).Output()
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
func decodeErrors(t *testing.T, ffmpeg, file string) string {
	t.Helper()
	out, _ := exec.Command(ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", file, "-f", "null", "-").CombinedOutput()
	return strings.TrimSpace(string(out))
}

// fetchRendition downloads a rendition's init and listed segments as a player would and writes
// them concatenated to one file; it returns the file and each segment's file.
func fetchRendition(t *testing.T, base, rend, mapURI string, segs []playlistSegment) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	init, code, err := httpGet(base + rend + "/" + mapURI)
	if err != nil || code != 200 {
		t.Fatalf("GET %s/%s: %d %v", rend, mapURI, code, err)
	}
	var all bytes.Buffer
	all.Write(init)
	var files []string
	for _, s := range segs {
		b, code, err := httpGet(base + rend + "/" + s.uri)
		if err != nil || code != 200 {
			t.Fatalf("GET %s/%s (listed): %d %v", rend, s.uri, code, err)
		}
		all.Write(b)
		f := path.Join(dir, fmt.Sprintf("seg%d.mp4", s.n))
		if err := os.WriteFile(f, append(append([]byte{}, init...), b...), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	whole := path.Join(dir, "all.mp4")
	if err := os.WriteFile(whole, all.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return whole, files
}

// checkContinuity fails on any decode-time step between consecutive packets that differs from
// the packet's duration by more than half a frame: a gap or an overlap.
func checkContinuity(t *testing.T, rend string, pk []packet) {
	t.Helper()
	continuity(t, rend, pk, 0)
}

// checkContinuityCut is checkContinuity for media whose publisher was cut off: a cut encoder
// leaves out the B-frames it had not sent after its last reference frame, so in the last
// maxBFrames+1 steps a hole of up to maxBFrames frames is what the publisher sent, not a loss.
func checkContinuityCut(t *testing.T, rend string, pk []packet) {
	t.Helper()
	continuity(t, rend, pk, maxBFrames+1)
}

// maxBFrames is the most consecutive B-frames the test publishers' x264 (preset veryfast) uses.
const maxBFrames = 3

func continuity(t *testing.T, rend string, pk []packet, cutTail int) {
	t.Helper()
	if len(pk) < 2 {
		t.Fatalf("%s: only %d packets", rend, len(pk))
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
	for i := 1; i < len(pk); i++ {
		step := pk[i].DTS - pk[i-1].DTS
		frame := pk[i-1].Duration
		if math.Abs(step-frame) > frame/2 && !cutHole(step, frame, len(pk)-i, cutTail) {
			t.Errorf("%s: packet %d: decode time step %.4f s for a %.4f s frame (gap or overlap) at %.3f s", rend, i, step, frame, pk[i].DTS)
		}
	}
	// Presentation times, sorted, must tile the timeline the same way.
	pts := make([]float64, len(pk))
	for i, p := range pk {
		pts[i] = p.PTS
	}
	sort.Float64s(pts)
	for i := 1; i < len(pts); i++ {
		step := pts[i] - pts[i-1]
		frame := typical
		if math.Abs(step-frame) > frame/2 && !cutHole(step, frame, len(pts)-i, cutTail) {
			t.Errorf("%s: presentation step %.4f s at %.3f s (frame %.4f s)", rend, step, pts[i], frame)
		}
	}
}

// contiguous returns a rendition's segment numbers in order, and fails the test unless they run
// from 0 without a hole.
func contiguous(t *testing.T, rend string, seen map[uint64]playlistSegment) []uint64 {
	t.Helper()
	ns := slices.Sorted(maps.Keys(seen))
	for i, n := range ns {
		if n != uint64(i) {
			t.Fatalf("%s: segment numbers seen %v: missing %d", rend, ns, i)
		}
	}
	return ns
}

// playRendition fetches segs of a rendition as a player would, checks that they decode without
// an error and that their timeline is continuous (checkContinuityCut when cut), and returns the
// packets, each segment's file and the media's span in seconds.
func playRendition(t *testing.T, ffmpeg, ffprobe, base, rend string, segs []playlistSegment, cut bool) (pk []packet, files []string, span float64) {
	t.Helper()
	whole, files := fetchRendition(t, base, rend, "init.mp4", segs)
	if msg := decodeErrors(t, ffmpeg, whole); msg != "" {
		t.Errorf("%s: decoding reported errors:\n%s", rend, msg)
	}
	pk = probePackets(t, ffprobe, whole)
	if cut {
		checkContinuityCut(t, rend, pk)
	} else {
		checkContinuity(t, rend, pk)
	}
	return pk, files, pk[len(pk)-1].DTS + pk[len(pk)-1].Duration - pk[0].DTS
}

// cutHole reports whether a step fromEnd steps before the end of cut-off media is a hole the
// cut explains: within the last cutTail steps, at most maxBFrames frames missing.
func cutHole(step, frame float64, fromEnd, cutTail int) bool {
	return fromEnd <= cutTail && step > frame && step < float64(maxBFrames+1)*frame+frame/2
}

func minPTS(pk []packet) float64 {
	m := math.Inf(1)
	for _, p := range pk {
		m = math.Min(m, p.PTS)
	}
	return m
}

func waitEnded(t *testing.T, w *watcher, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "EXT-X-ENDLIST in every playlist", func() bool {
		w.poll()
		return w.allEnded()
	})
}
