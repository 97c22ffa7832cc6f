package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/cmaf"
)

func TestParseMedia(t *testing.T) {
	pl, err := parseMedia([]byte(`#EXTM3U
#EXT-X-VERSION:7
#EXT-X-MEDIA-SEQUENCE:10
#EXT-X-TARGETDURATION:2
#EXT-X-MAP:URI="init.mp4"
#EXTINF:2.000,
10.m4s
#EXT-X-GAP
#EXTINF:1.500,
11.m4s
#EXT-X-DISCONTINUITY
#EXT-X-MAP:URI="init-12.mp4"
#EXTINF:2.002,
12.m4s
#EXT-X-ENDLIST
`))
	if err != nil {
		t.Fatal(err)
	}
	if pl.mediaSeq != 10 || pl.mapURI != "init.mp4" || !pl.ended || len(pl.segments) != 3 {
		t.Fatalf("got %+v", pl)
	}
	s := pl.segments
	if s[0].gap || !s[1].gap || s[1].duration != 1.5 || !s[2].disc || s[2].uri != "12.m4s" || s[2].duration != 2.002 {
		t.Errorf("segments %+v", s)
	}
	if _, err := parseMedia([]byte("#EXTM3U\n10.m4s\n")); err == nil {
		t.Error("a segment without EXTINF was accepted")
	}
}

func TestParseMaster(t *testing.T) {
	es, err := parseMaster([]byte(`#EXTM3U
#EXT-X-VERSION:7
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="Main, stereo",DEFAULT=YES,AUTOSELECT=YES,CHANNELS="2",URI="audio/index.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS="avc1.64001E,mp4a.40.2",RESOLUTION=640x360,AUDIO="audio"
360p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=6500000,CODECS="avc1.640028,mp4a.40.2",RESOLUTION=1920x1080,AUDIO="audio"
source/index.m3u8
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []masterEntry{{"audio/index.m3u8", "audio"}, {"360p/index.m3u8", "video"}, {"source/index.m3u8", "video"}}
	if len(es) != len(want) {
		t.Fatalf("got %+v", es)
	}
	for i := range want {
		if es[i] != want[i] {
			t.Errorf("entry %d: %+v, want %+v", i, es[i], want[i])
		}
	}
}

func TestPercentile(t *testing.T) {
	v := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct{ p, want float64 }{{50, 5}, {95, 10}, {99, 10}, {10, 1}, {0, 1}} {
		if got := percentile(v, c.p); got != c.want {
			t.Errorf("p%.0f = %v, want %v", c.p, got, c.want)
		}
	}
}

// TestFragmentTimes reads back the tfdt and duration of a fragment made by gopcast's own CMAF
// writer, the way loadgen reads the segments it fetches.
func TestFragmentTimes(t *testing.T) {
	sps := []byte{0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60}
	pps := []byte{0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0}
	init, err := cmaf.VideoInit(media.H264Config{SPS: sps, PPS: pps})
	if err != nil {
		t.Skipf("test SPS not accepted by cmaf.VideoInit: %v", err)
	}
	ts, trex, err := parseInit(init)
	if err != nil || ts != media.Timescale {
		t.Fatalf("parseInit: %d, %v", ts, err)
	}
	const frame = media.Timescale / 30
	start := int64(1234) * frame
	var frames []media.VideoFrame
	for i := range 60 {
		frames = append(frames, media.VideoFrame{DTS: start + int64(i)*frame, PTS: start + int64(i+2)*frame, Key: i == 0,
			NALUs: [][]byte{{0x65, 0x88, byte(i)}}})
		if i > 0 {
			frames[i].NALUs = [][]byte{{0x41, 0x9a, byte(i)}}
		}
	}
	frag, err := cmaf.VideoFragment(7, frames, start+60*frame)
	if err != nil {
		t.Fatal(err)
	}
	// Only the head of the segment is fetched; the moof must be readable from it.
	s, d, _, err := parseFragmentTimes(frag[:min(len(frag), 2048)], trex)
	if err != nil {
		t.Fatal(err)
	}
	if int64(s) != start || int64(d) != 60*frame {
		t.Errorf("tfdt %d duration %d, want %d and %d", s, d, start, 60*frame)
	}
	if _, _, need, err := parseFragmentTimes(frag[:40], trex); err != errShort || need <= 40 {
		t.Errorf("short head: need %d, err %v", need, err)
	}
}

// TestReaders encodes a short clip with ffmpeg into FLV, MPEG-TS and MP4 and checks the readers
// agree on what would be sent.
func TestReaders(t *testing.T) {
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Skip("ffmpeg not installed")
	}
	dir := t.TempDir()
	flv := filepath.Join(dir, "in.flv")
	out, err := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine=sample_rate=48000",
		"-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "high", "-bf", "2", "-pix_fmt", "yuv420p",
		"-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-c:a", "aac", "-ar", "48000", "-f", "flv", flv).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	ts := filepath.Join(dir, "in.ts")
	if out, err := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-i", flv, "-c", "copy", "-f", "mpegts", ts).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	mp4 := filepath.Join(dir, "in.mp4")
	if out, err := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-i", flv, "-c", "copy", mp4).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	for _, p := range []string{flv, ts, mp4} {
		c, err := loadClip(p)
		if err != nil {
			t.Fatal(err)
		}
		if c.videoFrames() != 120 || c.keyframes() != 2 || c.AAC == nil || c.audioFrames() < 180 {
			t.Errorf("%s: %d frames, %d keyframes, %d audio frames", filepath.Ext(p), c.videoFrames(), c.keyframes(), c.audioFrames())
		}
		if c.FrameDuration < 33*time.Millisecond || c.FrameDuration > 34*time.Millisecond || c.LoopDuration < 3990*time.Millisecond || c.LoopDuration > 4010*time.Millisecond {
			t.Errorf("%s: frame %s, loop %s", filepath.Ext(p), c.FrameDuration, c.LoopDuration)
		}
		if s := c.Samples[0]; !s.Video || !s.Key || s.DTS != 0 {
			t.Errorf("%s: first sample %+v", filepath.Ext(p), s)
		}
		bframes := false
		for _, s := range c.Samples {
			bframes = bframes || s.Video && s.PTS != s.DTS
		}
		if !bframes {
			t.Errorf("%s: no composition offsets: B-frames lost", filepath.Ext(p))
		}
	}
	_ = os.Remove(flv)
}
