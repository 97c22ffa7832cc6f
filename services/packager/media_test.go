package packager

// Real media through the packager: segments made by package segment from an ffmpeg stream, as
// the ingest and the transcoders make them, listed by the packager and read back by ffmpeg and
// ffprobe (HLS, DASH, the recording's playlists, manifest and MP4).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gopcast/gopcast/internal/testenv"
	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/cmaf"
	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/segment"
)

// realChunk is one chunk of real media: its records and its media segments by rendition.
type realChunk struct {
	ingest, transcoder queue.Segment
	media              map[string][]byte
	videoFrames        int
	audioFrames        int
}

// realSession makes a 6 s stream with ffmpeg (640x360 x264 with B-frames and a keyframe every
// 60 frames, 48 kHz stereo AAC, and a 320x180 rung) and cuts it into three 2 s chunks the way
// the ingest and the transcoders do: package segment's fragments, numbered from base.
func realSession(t *testing.T, ffmpeg, stream, session string, base uint64) []realChunk {
	t.Helper()
	tmp := t.TempDir()
	src, rung := filepath.Join(tmp, "source.ts"), filepath.Join(tmp, "180p.ts")
	x264 := []string{"-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", "60", "-keyint_min", "60",
		"-sc_threshold", "0", "-pix_fmt", "yuv420p"}
	args := []string{"-nostdin", "-v", "error",
		"-f", "lavfi", "-t", "6", "-i", "testsrc2=size=640x360:rate=30",
		"-f", "lavfi", "-t", "6", "-i", "sine=frequency=440:sample_rate=48000",
		"-map", "0:v", "-map", "1:a"}
	args = append(args, x264...)
	args = append(args, "-c:a", "aac", "-ac", "2", "-f", "mpegts", src, "-map", "0:v", "-vf", "scale=320:180")
	args = append(args, x264...)
	args = append(args, "-f", "mpegts", rung)
	run(t, ffmpeg, args...)

	demux := func(file string) *cmaf.Demuxed {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		d, err := cmaf.Demux(b)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	s, r := demux(src), demux(rung)
	var starts []int
	for i, f := range s.Video {
		if f.Key {
			starts = append(starts, i)
		}
	}
	if len(starts) != 3 || len(r.Video) != len(s.Video) {
		t.Fatalf("%d keyframes, %d and %d frames: want 3 chunks of both", len(starts), len(s.Video), len(r.Video))
	}
	origin, ai := s.Audio[0].PTS, 0
	var out []realChunk
	for k, first := range starts {
		next := len(s.Video)
		end := s.Video[next-1].DTS + media.Timescale/30
		if k+1 < len(starts) {
			next, end = starts[k+1], s.Video[starts[k+1]].DTS
		}
		seq := uint64(k)
		c := realChunk{media: map[string][]byte{}, videoFrames: next - first}
		start := s.Video[first].DTS
		rec := func(from string) queue.Segment {
			return queue.Segment{StreamID: stream, SessionID: session, Seq: seq, N: base + seq, Start: start, Duration: end - start,
				Last: k == len(starts)-1, Record: true, From: from, Encoding: from == queue.FromIngest}
		}
		c.ingest, c.transcoder = rec(queue.FromIngest), rec(queue.FromTranscoder)
		add := func(to *queue.Segment, f *segment.Fragment, err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
			c.media[f.Name] = bytes.Clone(f.Media)
			f.Rendition.Init = bytes.Clone(f.Rendition.Init)
			to.Renditions = append(to.Renditions, f.Rendition)
		}
		f, err := segment.Video("source", uint32(seq+1), *s.H264, s.Video[first:next], end)
		add(&c.ingest, f, err)
		aj := len(s.Audio)
		if k+1 < len(starts) {
			for aj = ai; aj < len(s.Audio) && s.Audio[aj].PTS < s.Video[starts[k+1]].PTS; aj++ {
			}
		}
		c.audioFrames = aj - ai
		f, err = segment.Audio(uint32(seq+1), *s.AAC, s.Audio[ai:aj], origin)
		add(&c.ingest, f, err)
		ai = aj
		f, err = segment.Video("180p", uint32(seq+1), *r.H264, r.Video[first:next], end)
		if err == nil {
			f.Bandwidth = 300_000
		}
		add(&c.transcoder, f, err)
		out = append(out, c)
	}
	return out
}

func run(t *testing.T, name string, args ...string) (stdout, stderr []byte) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var errBuf bytes.Buffer
	cmd.Stderr = &errBuf
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errBuf.Bytes())
	}
	return out, errBuf.Bytes()
}

// count returns how many packets ffprobe reads from stream index of the playlist, manifest or
// file at path; it fails the test when ffprobe complains.
func count(t *testing.T, ffprobe, path string, index int) int {
	t.Helper()
	var out struct {
		Packets []struct {
			PTSTime string `json:"pts_time"`
		}
	}
	raw, msg := run(t, ffprobe, "-v", "error", "-allowed_extensions", "ALL", "-select_streams", strconv.Itoa(index),
		"-show_entries", "packet=pts_time", "-of", "json", path)
	if len(bytes.TrimSpace(msg)) > 0 {
		t.Errorf("ffprobe %s: %s", path, msg)
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%v\n%s", err, raw)
	}
	return len(out.Packets)
}

// decodes has ffmpeg decode every stream of path and fails the test on any complaint.
func decodes(t *testing.T, ffmpeg, path string) {
	t.Helper()
	if _, msg := run(t, ffmpeg, "-nostdin", "-v", "error", "-i", path, "-map", "0", "-f", "null", "-"); len(bytes.TrimSpace(msg)) > 0 {
		t.Errorf("ffmpeg decoding %s: %s", path, msg)
	}
}

// A recorded session of real media, numbered from 37 (the stream's earlier numbers went to a
// session whose ingest died), plays in HLS and DASH as listed, and its recording's playlists,
// manifest and MP4 hold every frame.
func TestRealMediaPlays(t *testing.T) {
	t.Parallel()
	ffmpeg, ffprobe := testenv.FFmpeg(t)
	h := newHarness(t, Config{Window: 10, FFmpeg: ffmpeg})
	recs := newFakeRecordings()
	h.svc.SetRecordings(recs)
	chunks := realSession(t, ffmpeg, "st1", sessA, 37)
	h.mediaOf = func(seg queue.Segment, r queue.Rendition) []byte { return chunks[seg.Seq].media[r.Name] }
	videoFrames, audioFrames := 0, 0
	for _, c := range chunks {
		h.mustAccept(chunk{c.ingest, c.transcoder})
		videoFrames += c.videoFrames
		audioFrames += c.audioFrames
	}
	h.svc.jobs.Wait()
	dir := h.local.Dir()
	live := filepath.Join(dir, "live", "st1")

	pl := h.media("st1", "source")
	if fmt.Sprint(pl.uris()) != "[37.m4s 38.m4s 39.m4s]" || pl.mediaSeq != 0 || !pl.ended {
		t.Fatalf("source playlist:\n%s", pl.raw)
	}
	// Every listed segment, with its init segment, is a CMAF fragment ffprobe reads whole.
	for _, name := range []string{"source", "180p", "audio"} {
		for i, seg := range h.media("st1", name).segs {
			file := filepath.Join(t.TempDir(), "seg.mp4")
			b := append(h.get("live/st1/"+name+"/"+seg.mapURI), h.get("live/st1/"+name+"/"+seg.uri)...)
			if err := os.WriteFile(file, b, 0o600); err != nil {
				t.Fatal(err)
			}
			want := chunks[i].videoFrames
			if name == "audio" {
				want = chunks[i].audioFrames
			}
			if got := count(t, ffprobe, file, 0); got != want {
				t.Errorf("%s %s: %d packets, want %d", name, seg.uri, got, want)
			}
		}
	}
	// The playlists and the (now static) manifest play every frame.
	for _, name := range []string{"source", "180p"} {
		if got := count(t, ffprobe, filepath.Join(live, name, "index.m3u8"), 0); got != videoFrames {
			t.Errorf("HLS %s: %d frames, want %d", name, got, videoFrames)
		}
	}
	if got := count(t, ffprobe, filepath.Join(live, "audio", "index.m3u8"), 0); got != audioFrames {
		t.Errorf("HLS audio: %d frames, want %d", got, audioFrames)
	}
	decodes(t, ffmpeg, filepath.Join(live, "master.m3u8"))
	m := h.manifest("st1")
	if m.dynamic || fmt.Sprint(m.numbers("source")) != "[37 38 39]" {
		t.Errorf("manifest:\n%s", m.raw)
	}
	for i := range 3 { // 180p, source (best first), then audio
		want := videoFrames
		if i == 2 {
			want = audioFrames
		}
		if got := count(t, ffprobe, filepath.Join(live, "manifest.mpd"), i); got != want {
			t.Errorf("DASH stream %d: %d packets, want %d", i, got, want)
		}
	}
	decodes(t, ffmpeg, filepath.Join(live, "manifest.mpd"))

	// The recording.
	rec := recs.get("st1", sessA)
	if rec == nil || rec.MP4 == "" || rec.FirstN != 37 || rec.LastN != 39 {
		t.Fatalf("recording %+v\n%s", rec, h.logs.String())
	}
	vod := filepath.Join(dir, "vod", "st1", sessA)
	decodes(t, ffmpeg, filepath.Join(vod, "master.m3u8"))
	decodes(t, ffmpeg, filepath.Join(vod, "manifest.mpd"))
	mp4 := filepath.Join(dir, filepath.FromSlash(rec.MP4))
	if got := count(t, ffprobe, mp4, 0); got != videoFrames {
		t.Errorf("recording MP4: %d video frames, want %d", got, videoFrames)
	}
	if got := count(t, ffprobe, mp4, 1); got != audioFrames {
		t.Errorf("recording MP4: %d audio frames, want %d", got, audioFrames)
	}
	raw, _ := run(t, ffprobe, "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", mp4)
	if got := strings.Fields(string(raw)); fmt.Sprint(got) != "[h264,640,360 aac]" {
		t.Errorf("recording MP4 streams %q, want the source's H.264 640x360 and AAC", got)
	}
	if int64(len(h.get(rec.MP4))) != rec.MP4Bytes {
		t.Errorf("MP4 of %d bytes, registered as %d", len(h.get(rec.MP4)), rec.MP4Bytes)
	}
}
