package dash

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Eyevinn/mp4ff/mp4"

	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/cmaf"
	"github.com/gopcast/gopcast/pkg/media/codec"
)

// firstN is the stream-wide number of the first segment written: not 0 or 1, so that a reader
// that ignores startNumber fetches files that do not exist.
const firstN = 100

// packaged is a stream packaged as gopcast stores it, with what the MPD needs to list it.
type packaged struct {
	video        []Representation
	audio        Representation
	vsegs, asegs []Segment
	vframes      []int // video frames per segment (of one rung)
	aframes      []int // audio frames per segment
}

// packageStream makes a 6 s stream with ffmpeg, 640x360 and 320x180 rungs of 30 fps x264 with
// B-frames and a keyframe every 60 frames (three 2 s chunks) plus 48 kHz stereo AAC, and writes
// it under dir in the storage layout with package cmaf, as the packager does:
// {rendition}/init.mp4 and {rendition}/{n}.m4s from n = firstN, tfdt on the session timeline
// (MPEG-TS from ffmpeg starts at 1.4 s, so the presentation time offset is not 0).
func packageStream(t *testing.T, dir string) packaged {
	t.Helper()
	for _, name := range []string{"ffmpeg", "ffprobe"} {
		if _, err := exec.LookPath(name); err != nil {
			t.Fatalf("%s is needed for this test (Debian: apt-get install ffmpeg): %v", name, err)
		}
	}
	x264 := []string{"-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", "60", "-keyint_min", "60",
		"-sc_threshold", "0", "-pix_fmt", "yuv420p"}
	tmp := t.TempDir()
	src := map[string]string{"360p": filepath.Join(tmp, "360p.ts"), "180p": filepath.Join(tmp, "180p.ts")}
	args := []string{"-nostdin", "-v", "error",
		"-f", "lavfi", "-t", "6", "-i", "testsrc2=size=640x360:rate=30",
		"-f", "lavfi", "-t", "6", "-i", "sine=frequency=440:sample_rate=48000",
		"-map", "0:v", "-map", "1:a"}
	args = append(args, x264...)
	args = append(args, "-c:a", "aac", "-ac", "2", "-f", "mpegts", src["360p"], "-map", "0:v", "-vf", "scale=320:180")
	args = append(args, x264...)
	args = append(args, "-f", "mpegts", src["180p"])
	if _, msg := runCmd(t, "ffmpeg", args...); len(msg) > 0 {
		t.Fatalf("ffmpeg: %s", msg)
	}

	var p packaged
	var cuts []int64 // PTS where the video segments start, for the audio cuts
	var audio *cmaf.Demuxed
	for _, rung := range []string{"360p", "180p"} {
		ts, err := os.ReadFile(src[rung])
		if err != nil {
			t.Fatal(err)
		}
		d, err := cmaf.Demux(ts)
		if err != nil {
			t.Fatal(err)
		}
		if audio == nil {
			audio = d
		}
		vc, err := codec.H264Codec(d.H264.SPS)
		if err != nil {
			t.Fatal(err)
		}
		w, h, fps, err := codec.H264Info(d.H264.SPS)
		if err != nil {
			t.Fatal(err)
		}
		p.video = append(p.video, Representation{ID: rung, Codecs: vc, Bandwidth: 150_000 * w / 320, Width: w, Height: h, FrameRate: fps})

		init, err := cmaf.VideoInit(*d.H264)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, dir, rung+"/init.mp4", init)
		var starts []int
		for i, f := range d.Video {
			if f.Key {
				starts = append(starts, i)
			}
		}
		if len(starts) != 3 {
			t.Fatalf("%s: %d keyframes, want 3", rung, len(starts))
		}
		var segs []Segment
		var counts []int
		for k, first := range starts {
			frames := d.Video[first:]
			end := frames[len(frames)-1].DTS + media.Timescale/30
			if k+1 < len(starts) {
				frames = d.Video[first:starts[k+1]]
				end = d.Video[starts[k+1]].DTS
			}
			seg, err := cmaf.VideoFragment(uint32(firstN+k), frames, end)
			if err != nil {
				t.Fatal(err)
			}
			n := uint64(firstN + k)
			writeFile(t, dir, fmt.Sprintf("%s/%d.m4s", rung, n), seg)
			tt, dd := timing(t, seg)
			segs = append(segs, Segment{N: n, T: tt, D: dd})
			counts = append(counts, len(frames))
			if rung == "360p" {
				cuts = append(cuts, frames[0].PTS)
			}
		}
		// Every rung of a chunk has the same times: that is what lets one SegmentTimeline serve
		// the whole AdaptationSet.
		if p.vsegs == nil {
			p.vsegs, p.vframes = segs, counts
		} else if fmt.Sprint(segs) != fmt.Sprint(p.vsegs) {
			t.Fatalf("rungs differ in timing: %v and %v", p.vsegs, segs)
		}
	}

	ainit, err := cmaf.AudioInit(*audio.AAC)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "audio/init.mp4", ainit)
	ac, err := codec.AACCodec(audio.AAC.ASC)
	if err != nil {
		t.Fatal(err)
	}
	rate, channels, err := codec.AACInfo(audio.AAC.ASC)
	if err != nil {
		t.Fatal(err)
	}
	p.audio = Representation{ID: "audio", Codecs: ac, Bandwidth: 130_000, AudioSamplingRate: rate, AudioChannels: channels}
	origin, i := audio.Audio[0].PTS, 0
	for k := range cuts {
		j := len(audio.Audio)
		if k+1 < len(cuts) {
			for j = i; j < len(audio.Audio) && audio.Audio[j].PTS < cuts[k+1]; j++ {
			}
		}
		n := uint64(firstN + k)
		seg, err := cmaf.AudioFragment(uint32(n), audio.Audio[i:j], *audio.AAC, origin)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, dir, fmt.Sprintf("audio/%d.m4s", n), seg)
		tt, dd := timing(t, seg)
		p.asegs = append(p.asegs, Segment{N: n, T: tt, D: dd})
		p.aframes = append(p.aframes, j-i)
		i = j
	}
	return p
}

// timing reads a media segment's earliest presentation time (tfdt plus the smallest composition
// offset: with B-frames the first frame is presented after it is decoded) and its duration.
func timing(t *testing.T, seg []byte) (earliest, duration int64) {
	t.Helper()
	f, err := mp4.DecodeFile(bytes.NewReader(seg))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Segments) != 1 || len(f.Segments[0].Fragments) != 1 {
		t.Fatalf("want one fragment, got %d segments", len(f.Segments))
	}
	samples, err := f.Segments[0].Fragments[0].GetFullSamples(nil)
	if err != nil {
		t.Fatal(err)
	}
	earliest = -1
	for _, s := range samples {
		pts := int64(s.DecodeTime) + int64(s.CompositionTimeOffset)
		if earliest < 0 || pts < earliest {
			earliest = pts
		}
		duration += int64(s.Dur)
	}
	return earliest, duration
}

// offsets returns presentation time offsets naming the same instant for both tracks: the
// earliest sample of the session, in each track's timescale.
func offsets(p packaged, vts, ats uint32) (video, audio uint64) {
	v := float64(p.vsegs[0].T) / float64(vts)
	a := float64(p.asegs[0].T) / float64(ats)
	start := min(v, a)
	return uint64(start*float64(vts) + 1e-9), uint64(start*float64(ats) + 1e-9)
}

func sum(s []int) int {
	n := 0
	for _, x := range s {
		n += x
	}
	return n
}

// TestFFmpegReadsRenderedMPD lists real CMAF segments, made by package cmaf exactly as gopcast
// stores them, in static MPDs and has ffmpeg's DASH demuxer read them back: every frame of every
// Representation arrives and decoding reports nothing. Covered: two video rungs and audio,
// SegmentTimeline with presentationTimeOffset and startNumber, and a recording's MPD in another
// directory reaching the live segments through BaseURL.
//
// ffmpeg's demuxer (libavformat/dashdec.c, the same from 4.x to 7.x) reads one Period only, so
// the two-Period case checks what it can: it decodes without an error, either every Period or
// (today) only the last one.
func TestFFmpegReadsRenderedMPD(t *testing.T) {
	root := t.TempDir()
	live := filepath.Join(root, "live", "stream1")
	p := packageStream(t, live)
	const vts, ats = media.Timescale, 48000
	if p.audio.AudioSamplingRate != ats {
		t.Fatalf("audio at %d Hz", p.audio.AudioSamplingRate)
	}
	vpto, apto := offsets(p, vts, ats)
	period := Period{ID: "session-1", Video: p.video, VideoTimescale: vts, VideoSegments: p.vsegs, VideoPresentationTimeOffset: vpto,
		Audio: &p.audio, AudioTimescale: ats, AudioSegments: p.asegs, AudioPresentationTimeOffset: apto}
	t.Logf("video %v (offset %d), audio %v (offset %d)", p.vsegs, vpto, p.asegs, apto)
	vframes, aframes := sum(p.vframes), sum(p.aframes)

	static := MPD{MinBufferTime: 2 * time.Second, PublishTime: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), Periods: []Period{period}}
	writeMPD(t, filepath.Join(live, "manifest.mpd"), static)

	recording := static
	recording.BaseURL = "../../../live/stream1/"
	writeMPD(t, filepath.Join(root, "vod", "stream1", "session-1", "manifest.mpd"), recording)

	// Two Periods: a reconnect after the second chunk. The second Period starts where the first
	// one's media end, and maps its own first sample there.
	split := Period{ID: "session-1a", Video: p.video, VideoTimescale: vts, VideoSegments: p.vsegs[:2],
		VideoPresentationTimeOffset: vpto, Audio: &p.audio, AudioTimescale: ats, AudioSegments: p.asegs[:2],
		AudioPresentationTimeOffset: apto}
	second := Period{ID: "session-1b", Start: ticks(uint64(p.vsegs[2].T)-vpto, vts), Video: p.video, VideoTimescale: vts,
		VideoSegments: p.vsegs[2:], VideoPresentationTimeOffset: uint64(p.vsegs[2].T), Audio: &p.audio, AudioTimescale: ats,
		AudioSegments: p.asegs[2:], AudioPresentationTimeOffset: uint64(p.vsegs[2].T) * ats / vts}
	two := static
	two.Periods = []Period{split, second}
	writeMPD(t, filepath.Join(live, "two-periods.mpd"), two)

	// Packets are counted one stream at a time: ffprobe then discards the other streams, and
	// dashdec closes their Representations. Read together, ffmpeg ≤ 7 ends every stream when the
	// Representation with the earliest timestamp ends, dropping the last packet or two of the
	// others (its own `ffmpeg -f dash` output loses the last AAC frame the same way).
	whole := []int{vframes, aframes} // per stream: video, audio
	lastPeriod := []int{p.vframes[2], p.aframes[2]}
	for _, tc := range []struct {
		name, path string
		periods    int
	}{
		{"live layout", filepath.Join(live, "manifest.mpd"), 1},
		{"recording through BaseURL", filepath.Join(root, "vod", "stream1", "session-1", "manifest.mpd"), 1},
		{"two Periods", filepath.Join(live, "two-periods.mpd"), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			streams := len(p.video) + 1 // video Representations, then audio
			for i := range streams {
				kind := 0
				if i == streams-1 {
					kind = 1
				}
				got, first := probe(t, tc.path, i)
				switch {
				case got == whole[kind]:
				case tc.periods > 1 && got == lastPeriod[kind]:
					t.Logf("stream %d: ffmpeg read only the last Period (%d packets)", i, got)
				default:
					t.Errorf("stream %d: ffprobe read %d packets, want %d", i, got, whole[kind])
				}
				if i == 0 {
					// Informational: ffmpeg's timestamps are the segments' own media times; it
					// applies neither Period@start nor presentationTimeOffset.
					t.Logf("first video packet at %s s", first)
				}
			}
			if _, msg := runCmd(t, "ffmpeg", "-nostdin", "-v", "error", "-i", tc.path, "-f", "null", "-"); len(bytes.TrimSpace(msg)) > 0 {
				t.Errorf("ffmpeg decode: %s", msg)
			}
		})
	}
}

// probe returns how many packets ffprobe reads from stream index of the MPD at path, and the
// first one's presentation time.
func probe(t *testing.T, path string, index int) (count int, first string) {
	t.Helper()
	var out struct {
		Packets []struct {
			PTSTime string `json:"pts_time"`
		}
	}
	raw, msg := runCmd(t, "ffprobe", "-v", "error", "-select_streams", fmt.Sprint(index), "-show_entries", "packet=pts_time",
		"-of", "json", path)
	if len(bytes.TrimSpace(msg)) > 0 {
		t.Errorf("ffprobe: %s", msg)
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%v\n%s", err, raw)
	}
	if len(out.Packets) == 0 {
		return 0, ""
	}
	return len(out.Packets), out.Packets[0].PTSTime
}

func writeMPD(t *testing.T, path string, m MPD) {
	t.Helper()
	out, err := m.Render()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, dir, name string, b []byte) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// runCmd runs a command and returns its standard output and error; on failure it fails the test.
func runCmd(t *testing.T, name string, args ...string) (stdout, stderr []byte) {
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
