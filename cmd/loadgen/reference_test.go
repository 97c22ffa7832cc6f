package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"
)

var (
	testSPS = []byte{0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60}
	testPPS = []byte{0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0}
)

// tsSegment writes an MPEG-TS segment the way nginx-rtmp lays one out: buffered audio first,
// then the video access units. Video frames are 3000 ticks apart, with a composition offset of
// two frames (B-frames), so PTS and DTS differ.
func tsSegment(t *testing.T, videoDTS int64, frames int, audioFirst bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	vt := &mpegts.Track{Codec: &tscodecs.H264{}}
	at := &mpegts.Track{Codec: &tscodecs.MPEG4Audio{Config: mpeg4audio.AudioSpecificConfig{
		Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelCount: 2}}}
	w := &mpegts.Writer{W: &buf, Tracks: []*mpegts.Track{vt, at}}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	if audioFirst {
		for i := range 3 {
			if err := w.WriteMPEG4Audio(at, videoDTS-6000+int64(i)*1920, [][]byte{bytes.Repeat([]byte{0x21}, 300)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range frames {
		au := [][]byte{{0x41, 0x9a, byte(i)}, bytes.Repeat([]byte{0xab}, 2000)}
		if i == 0 {
			au = [][]byte{testSPS, testPPS, {0x65, 0x88, 0x84}, bytes.Repeat([]byte{0xcd}, 30000)}
		}
		dts := videoDTS + int64(i)*3000
		if err := w.WriteH264(vt, dts+6000, dts, au); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func TestTSFirstVideoDTS(t *testing.T) {
	const dts = 63000 + 2*90000 // nginx-rtmp: chunk at 2 s, + 700 ms
	seg := tsSegment(t, dts, 10, true)
	got, fromDTS, err := tsFirstVideoDTS(seg)
	if err != nil || got != dts || !fromDTS {
		t.Fatalf("tsFirstVideoDTS = %d (dts %v), %v; want %d from a DTS", got, fromDTS, err, dts)
	}
	// The head loadgen fetches first (16 KiB) is enough: the keyframe's PES starts in it.
	if len(seg) <= 16<<10 {
		t.Fatalf("test segment of %d bytes is not longer than a head", len(seg))
	}
	if got, _, err := tsFirstVideoDTS(seg[:16<<10]); err != nil || got != dts {
		t.Errorf("16 KiB head: %d, %v", got, err)
	}
	// A head that stops before the video PES header asks for more.
	for _, n := range []int{10, tsPacketSize, 3 * tsPacketSize} {
		if _, _, err := tsFirstVideoDTS(seg[:n]); !errors.Is(err, errTSShort) {
			t.Errorf("head of %d bytes: %v, want errTSShort", n, err)
		}
	}
	// A segment that starts with a partial packet is resynchronised.
	if got, _, err := tsFirstVideoDTS(append([]byte{0x00, 0x47, 0x11}, seg...)); err != nil || got != dts {
		t.Errorf("leading garbage: %d, %v", got, err)
	}
	// PTS only (no B-frames: DTS = PTS is written once).
	var buf bytes.Buffer
	vt := &mpegts.Track{Codec: &tscodecs.H264{}}
	w := &mpegts.Writer{W: &buf, Tracks: []*mpegts.Track{vt}}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteH264(vt, 123456, 123456, [][]byte{testSPS, testPPS, {0x65, 0x88}}); err != nil {
		t.Fatal(err)
	}
	if got, fromDTS, err := tsFirstVideoDTS(buf.Bytes()); err != nil || got != 123456 || fromDTS {
		t.Errorf("PTS only: %d (dts %v), %v", got, fromDTS, err)
	}
	if _, _, err := tsFirstVideoDTS(bytes.Repeat([]byte{0x12}, 4*tsPacketSize)); err == nil || errors.Is(err, errTSShort) {
		t.Errorf("not MPEG-TS: %v", err)
	}
	// 33-bit timestamps above 2^32 survive.
	big := int64(1)<<32 + 77
	if got, _, err := tsFirstVideoDTS(tsSegment(t, big, 2, false)); err != nil || got != big {
		t.Errorf("33-bit DTS: %d, %v; want %d", got, err, big)
	}
}

// TestTSFirstVideoDTSffmpeg checks the parser against ffprobe on a segment ffmpeg's own MPEG-TS
// muxer wrote (its default 1.4 s start offset, B-frames, audio interleaved).
func TestTSFirstVideoDTSffmpeg(t *testing.T) {
	ffmpeg, err1 := exec.LookPath("ffmpeg")
	ffprobe, err2 := exec.LookPath("ffprobe")
	if err1 != nil || err2 != nil {
		t.Skip("ffmpeg/ffprobe not installed")
	}
	ts := filepath.Join(t.TempDir(), "seg.ts")
	out, err := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine=sample_rate=48000",
		"-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-output_ts_offset", "5", "-f", "mpegts", ts).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	out, err = exec.Command(ffprobe, "-v", "error", "-select_streams", "v", "-show_entries", "packet=dts",
		"-read_intervals", "%+#1", "-of", "csv=p=0", ts).Output()
	if err != nil {
		t.Fatalf("ffprobe: %v", err)
	}
	want, err := strconv.ParseInt(strings.Trim(strings.Split(string(out), "\n")[0], " ,"), 10, 64)
	if err != nil {
		t.Fatalf("ffprobe said %q", out)
	}
	b, err := os.ReadFile(ts)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := tsFirstVideoDTS(b[:min(len(b), 16<<10)]); err != nil || got != want {
		t.Errorf("tsFirstVideoDTS = %d, %v; ffprobe's first video DTS %d", got, err, want)
	}
}

func TestRenditionName(t *testing.T) {
	for _, c := range []struct{ master, media, want string }{
		{"http://h/media/live/ID/master.m3u8", "http://h/media/live/ID/720p/index.m3u8", "720p"},
		{"http://h/media/live/ID/master.m3u8", "http://h/media/live/ID/audio/index.m3u8", "audio"},
		{"http://h/hls/s3.m3u8", "http://h/hls/s3_720p.m3u8", "720p"},             // nginx-rtmp hls_variant
		{"http://h/hls/s3/index.m3u8", "http://h/hls/s3_480p/index.m3u8", "480p"}, // ... with hls_nested
		{"http://h/hls/s3.m3u8", "http://h/hls/other.m3u8", "other"},
	} {
		m, _ := url.Parse(c.master)
		u, _ := url.Parse(c.media)
		if got := renditionName(m, u); got != c.want {
			t.Errorf("renditionName(%s, %s) = %q, want %q", c.master, c.media, got, c.want)
		}
	}
}

func TestSplitPublishURL(t *testing.T) {
	app, name, err := splitPublishURL(expandIndex("rtmp://127.0.0.1:1935/live/s{i}", 12))
	if err != nil || app != "rtmp://127.0.0.1:1935/live" || name != "s12" {
		t.Errorf("got %q %q %v", app, name, err)
	}
	if app, name, err := splitPublishURL("rtmp://h/a/b/key?token=x"); err != nil || app != "rtmp://h/a/b" || name != "key?token=x" {
		t.Errorf("got %q %q %v", app, name, err)
	}
	for _, bad := range []string{"http://h/live/s", "rtmp://h/live", "rtmp://h/live/", "rtmp:///live/s"} {
		if _, _, err := splitPublishURL(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseLoadReference(t *testing.T) {
	base := []string{"--input", "x.flv", "--publish-url", "rtmp://h/live/s{i}"}
	c, err := parseLoad(append(base, "--streams", "3", "--playlist-url", "http://h/hls/s{i}.m3u8",
		"--playlist-url", "720p=http://h/hls/s{i}_720p.m3u8"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.reference() || len(c.Playlists) != 2 || c.Playlists[0] != (namedURL{"source", "http://h/hls/s{i}.m3u8"}) ||
		c.Playlists[1] != (namedURL{"720p", "http://h/hls/s{i}_720p.m3u8"}) || c.TSOffset != 700*time.Millisecond {
		t.Errorf("got %+v", c)
	}
	for _, bad := range [][]string{
		base, // nothing to watch
		append(base, "--streams", "2", "--playlist-url", "http://h/hls/fixed.m3u8"),                // URL without {i}
		append(base, "--playlist-url", "a=http://h/1.m3u8", "--playlist-url", "a=http://h/2.m3u8"), // name twice
		append(base, "--playlist-url", "ftp://h/s{i}.m3u8"),
		append(base, "--playlist-url", "http://h/s{i}.m3u8", "--master-url", "http://h/m{i}.m3u8"),
		{"--input", "x.flv", "--playlist-url", "http://h/s.m3u8"}, // needs --publish-url
	} {
		if _, err := parseLoad(bad, io.Discard); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestTSReport checks how MPEG-TS renditions are counted and timed: each rendition numbered on
// its own from 0 (nginx-rtmp), a ladder rung that starts one chunk late, lost segments and
// heads that could not be read.
func TestTSReport(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	p := newPublisher(&clip{}, 10*time.Second, 2*time.Second, 0)
	p.start = t0
	for i := range 300 { // 30 fps for 10 s, sent exactly on time
		d := time.Duration(i) * time.Second / 30
		p.frames = append(p.frames, sentFrame{DTS: d, Wall: t0.Add(d)})
	}
	p.chunkStarts = []time.Duration{0, sec(2), sec(4), sec(6), sec(8)}
	p.end = sec(10)
	p.videoSent = 300

	const offset = 700 * time.Millisecond
	w := newWatcher(nil, "", 100*time.Millisecond, "source")
	// seg adds segment n of rendition r starting at media time start (what the server writes:
	// + offset), listed `after` past its true end (end).
	seg := func(r string, n uint64, start, end, extinf, after float64, readable bool) {
		rd := w.renditions[r]
		if rd == nil {
			w.addMedia(r, "http://h/"+r+".m3u8")
			rd = w.renditions[r]
			rd.TS = true
		}
		s := &segment{N: n, Extinf: extinf, ListedAt: t0.Add(sec(end + after))}
		if readable {
			s.TSDTS, s.TSOK = int64((start+offset.Seconds())*tsTimescale+0.5), true
		} else {
			s.TSErr = "GET: status 404"
		}
		rd.Segs[n] = s
	}
	// source: chunks 0-4 as segments 0-4, segment 3 never listed.
	for k := range 5 {
		if k != 3 {
			seg("source", uint64(k), float64(2*k), float64(2*k+2), 2, 0.1, true)
		}
	}
	// 720p: the exec'd encoder joined at chunk 1; its decode times run 33 ms early (reorder
	// delay); segment 1's head could not be read.
	for n := range 4 {
		k := n + 1
		seg("720p", uint64(n), float64(2*k)-0.033, float64(2*k+2), 2, 0.7, n != 1)
	}
	// 480p: also from chunk 1, but its first segment (0) was lost: 1-3 hold chunks 2-4.
	for n := 1; n <= 3; n++ {
		k := n + 1
		seg("480p", uint64(n), float64(2*k), float64(2*k+2), 2, 0.5, true)
	}
	cfg := &loadConfig{Input: "x", Streams: 1, Poll: 100 * time.Millisecond, RefRendition: "source", TSOffset: offset}
	rep := buildReport(cfg, &clip{}, 10*time.Second, []*streamRun{{index: 0, id: "s0", pub: p, watch: w}}, t0)

	by := map[string]*renditionReport{}
	for _, r := range rep.Renditions {
		by[r.Name] = r
	}
	for _, c := range []struct {
		name                                     string
		expected, listed, missing, skipped, lost int
		median                                   float64
	}{
		{"source", 5, 4, 1, 0, 1, 0.1},
		{"720p", 4, 4, 0, 1, 0, 0.7},
		{"480p", 4, 3, 1, 1, 1, 0.5},
	} {
		r := by[c.name]
		if r == nil {
			t.Fatalf("no rendition %s in %+v", c.name, rep.Renditions)
		}
		if r.Expected != c.expected || r.Listed != c.listed || r.Missing != c.missing || r.Skipped != c.skipped || r.Lost != c.lost || r.Extra != 0 {
			t.Errorf("%s: expected %d listed %d missing %d skipped %d lost %d extra %d; want %d %d %d %d %d 0",
				c.name, r.Expected, r.Listed, r.Missing, r.Skipped, r.Lost, r.Extra, c.expected, c.listed, c.missing, c.skipped, c.lost)
		}
		if r.Delay.N != c.listed || r.Delay.Min < c.median-0.002 || r.Delay.Max > c.median+0.002 {
			t.Errorf("%s: delays %+v, want %d of %.3f s", c.name, r.Delay, c.listed, c.median)
		}
	}
	if rep.Overall.Expected != 13 || rep.Overall.Lost != 2 || rep.Overall.Skipped != 2 {
		t.Errorf("overall %+v", rep.Overall)
	}
	ck := rep.Check
	if ck.TSSegmentsRead != 10 || ck.TSErrors != 1 || ck.TSUnaligned != 0 || ck.NegativeDelays != 0 ||
		ck.MaxTSStartVsChunkMS < 32 || ck.MaxTSStartVsChunkMS > 34 {
		t.Errorf("timeline check %+v", ck)
	}
	// 720p segment 0: its end is where segment 1 starts, unread: its own start + EXTINF, snapped.
	lines := rep.PerStream[0].Renditions["720p"]
	if l := lines[0]; l.From != "ts" || l.MediaEnd != 4 || l.Chunk == nil || *l.Chunk != 1 {
		t.Errorf("720p segment 0: %+v", l)
	}
	if l := lines[1]; l.From != "ts" || l.MediaEnd != 6 || l.TSStart != nil {
		t.Errorf("720p segment 1 (head unread, end from segment 2): %+v", l)
	}
	if l := rep.PerStream[0].Renditions["source"][3]; l.N != 4 || l.MediaEnd != 10 {
		t.Errorf("source's last segment ends at the publisher's media end: %+v", l)
	}

	// A wrong --ts-offset shows: starts no longer match chunk starts.
	cfg.TSOffset = 0
	rep = buildReport(cfg, &clip{}, 10*time.Second, []*streamRun{{index: 0, id: "s0", pub: p, watch: w}}, t0)
	if rep.Check.TSUnaligned == 0 {
		t.Errorf("a 700 ms timestamp offset went unnoticed: %+v", rep.Check)
	}

	// --first-seq -1 counts from the lowest number seen: 480p's lost segment 0 then goes unseen.
	cfg.TSOffset, cfg.FirstSeq = offset, -1
	rep = buildReport(cfg, &clip{}, 10*time.Second, []*streamRun{{index: 0, id: "s0", pub: p, watch: w}}, t0)
	for _, r := range rep.Renditions {
		if r.Name == "480p" && (r.Expected != 3 || r.Missing != 0 || r.Skipped != 2) {
			t.Errorf("480p with --first-seq -1: %+v", r)
		}
	}
}

// TestWatcherComplete: a stream without EXT-X-ENDLIST is done once every rendition listed (and
// read) the segment holding the last chunk.
func TestWatcherComplete(t *testing.T) {
	w := newWatcher(nil, "", time.Second, "source")
	if w.complete(8*time.Second, 700*time.Millisecond, tsSnapTolerance) {
		t.Error("complete without renditions")
	}
	w.addMedia("source", "http://h/a.m3u8")
	w.addMedia("720p", "http://h/b.m3u8")
	at := func(s float64) int64 { return int64((s + 0.7) * tsTimescale) }
	w.renditions["source"].Segs[4] = &segment{N: 4, TSDTS: at(8), TSOK: true}
	w.renditions["720p"].Segs[2] = &segment{N: 2, TSDTS: at(6), TSOK: true}
	if w.complete(8*time.Second, 700*time.Millisecond, tsSnapTolerance) {
		t.Error("complete while 720p has not reached the last chunk")
	}
	w.renditions["720p"].Segs[3] = &segment{N: 3, TSDTS: at(7.967), TSOK: true}
	if !w.complete(8*time.Second, 700*time.Millisecond, tsSnapTolerance) {
		t.Error("not complete with every last chunk listed")
	}
}

func TestParseProcStat(t *testing.T) {
	// comm may hold spaces and parentheses.
	line := "4242 (nginx: worker (x)) S 4241 4241 4241 0 -1 4194624 100 0 0 0 150 25 7 3 20 0 1 0 12345 1000 200 18446744073709551615\n"
	st, err := parseProcStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st != (procStat{PPID: 4241, UTime: 150, STime: 25, CUTime: 7, CSTime: 3}) {
		t.Errorf("got %+v", st)
	}
	if _, err := parseProcStat([]byte("1 (x) S 0 1 2")); err == nil {
		t.Error("short stat accepted")
	}
	if got := vmRSSKB([]byte("Name:\tx\nVmPeak:\t 9 kB\nVmRSS:\t   12345 kB\n")); got != 12345 {
		t.Errorf("VmRSS %d", got)
	}
}

// TestSampleTree adds up a process tree from a fake /proc: descendants count, strangers do not.
func TestSampleTree(t *testing.T) {
	dir := t.TempDir()
	proc := func(pid, ppid, u, s, cu, cs, rss int) {
		d := filepath.Join(dir, strconv.Itoa(pid))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		stat := strconv.Itoa(pid) + " (p " + strconv.Itoa(pid) + ") S " + strconv.Itoa(ppid) +
			" 0 0 0 -1 0 0 0 0 0 " + strconv.Itoa(u) + " " + strconv.Itoa(s) + " " + strconv.Itoa(cu) + " " + strconv.Itoa(cs) + " 20 0 1 0 0 0 0\n"
		if err := os.WriteFile(filepath.Join(d, "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "status"), []byte("VmRSS:\t"+strconv.Itoa(rss)+" kB\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	proc(10, 1, 100, 50, 0, 0, 1000)     // master
	proc(11, 10, 200, 100, 30, 20, 2000) // worker, with reaped children
	proc(12, 11, 400, 0, 0, 0, 3000)     // exec'd ffmpeg
	proc(20, 1, 999, 999, 0, 0, 9999)    // someone else
	if err := os.WriteFile(filepath.Join(dir, "self"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := sampleTree(dir, []int{10}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if s.Procs != 3 || s.RSSKB != 6000 || s.CPU < 8.99 || s.CPU > 9.01 {
		t.Errorf("got %+v, want 3 processes, 6000 kB, 9 CPU-s", s)
	}
	if s, _ := sampleTree(dir, []int{99}, 100); s.Procs != 0 {
		t.Errorf("missing root: %+v", s)
	}
	// The real /proc: this test process is there, with memory.
	if s, err := sampleTree("/proc", []int{os.Getpid()}, 100); err == nil && (s.Procs < 1 || s.RSSKB <= 0) {
		t.Errorf("/proc self: %+v", s)
	}
	var out bytes.Buffer
	if err := procTree(context.Background(), []string{strconv.Itoa(os.Getpid())}, &out); err != nil || len(strings.Fields(out.String())) != 3 {
		t.Errorf("proctree: %q, %v", out.String(), err)
	}
}
