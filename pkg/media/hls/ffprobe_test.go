package hls

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/cmaf"
	"github.com/gopcast/gopcast/pkg/media/codec"
)

// TestFFmpegPlaysRenderedPlaylists packages a real 3 s stream (three 1 s GOPs, B-frames, AAC)
// into CMAF with package cmaf, lists it with Master and Render as the storage layout does
// (master.m3u8, {rendition}/index.m3u8, init.mp4, {n}.m4s), and has ffmpeg's HLS demuxer read it
// back: every frame of both renditions arrives, and decoding reports nothing.
func TestFFmpegPlaysRenderedPlaylists(t *testing.T) {
	for _, name := range []string{"ffmpeg", "ffprobe"} {
		if _, err := exec.LookPath(name); err != nil {
			t.Fatalf("%s is needed for this test (Debian: apt-get install ffmpeg): %v", name, err)
		}
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src.ts")
	runCmd(t, "ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
		"-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "3", "-c:v", "libx264", "-preset", "ultrafast",
		"-bf", "2", "-g", "30", "-keyint_min", "30", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-ac", "2", "-f", "mpegts", src)
	ts, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	d, err := cmaf.Demux(ts)
	if err != nil {
		t.Fatal(err)
	}

	// Video: one segment per GOP.
	var starts []int
	for i, f := range d.Video {
		if f.Key {
			starts = append(starts, i)
		}
	}
	vinit, err := cmaf.VideoInit(*d.H264)
	if err != nil {
		t.Fatal(err)
	}
	write(t, dir, "video/init.mp4", vinit)
	vpl := MediaPlaylist{MapURI: "init.mp4", Ended: true, VOD: true, TargetDuration: 1}
	var cuts []int64 // PTS where each video segment starts, for the audio cuts
	for k, first := range starts {
		frames := d.Video[first:]
		end := frames[len(frames)-1].DTS + 3000
		if k+1 < len(starts) {
			frames = d.Video[first:starts[k+1]]
			end = d.Video[starts[k+1]].DTS
		}
		seg, err := cmaf.VideoFragment(uint32(k+1), frames, end)
		if err != nil {
			t.Fatal(err)
		}
		uri := fmt.Sprintf("%d.m4s", k)
		write(t, dir, "video/"+uri, seg)
		vpl.Segments = append(vpl.Segments, Segment{URI: uri, Duration: float64(end-frames[0].DTS) / media.Timescale})
		cuts = append(cuts, frames[0].PTS)
	}

	// Audio: cut where the video segments start.
	ainit, err := cmaf.AudioInit(*d.AAC)
	if err != nil {
		t.Fatal(err)
	}
	write(t, dir, "audio/init.mp4", ainit)
	rate, channels, err := codec.AACInfo(d.AAC.ASC)
	if err != nil {
		t.Fatal(err)
	}
	apl := MediaPlaylist{MapURI: "init.mp4", Ended: true, VOD: true, TargetDuration: 2}
	origin, i := d.Audio[0].PTS, 0
	for k := range cuts {
		j := len(d.Audio)
		if k+1 < len(cuts) {
			for j = i; j < len(d.Audio) && d.Audio[j].PTS < cuts[k+1]; j++ {
			}
		}
		seg, err := cmaf.AudioFragment(uint32(k+1), d.Audio[i:j], *d.AAC, origin)
		if err != nil {
			t.Fatal(err)
		}
		uri := fmt.Sprintf("%d.m4s", k)
		write(t, dir, "audio/"+uri, seg)
		apl.Segments = append(apl.Segments, Segment{URI: uri, Duration: float64((j-i)*1024) / float64(rate)})
		i = j
	}

	for path, pl := range map[string]MediaPlaylist{"video/index.m3u8": vpl, "audio/index.m3u8": apl} {
		out, err := pl.Render()
		if err != nil {
			t.Fatal(err)
		}
		write(t, dir, path, out)
	}
	vc, err := codec.H264Codec(d.H264.SPS)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := codec.AACCodec(d.AAC.ASC)
	if err != nil {
		t.Fatal(err)
	}
	w, h, fps, err := codec.H264Info(d.H264.SPS)
	if err != nil {
		t.Fatal(err)
	}
	master, err := Master([]Variant{{URI: "video/index.m3u8", Bandwidth: 400_000, Width: w, Height: h, FrameRate: fps, Codecs: vc}},
		&AudioRendition{GroupID: "aac", Name: "Main", URI: "audio/index.m3u8", Codecs: ac, Channels: channels, Default: true})
	if err != nil {
		t.Fatal(err)
	}
	write(t, dir, "master.m3u8", master)

	for _, tc := range []struct {
		playlist     string
		video, audio int
	}{
		{"video/index.m3u8", len(d.Video), 0},
		{"audio/index.m3u8", 0, len(d.Audio)},
		{"master.m3u8", len(d.Video), len(d.Audio)},
	} {
		t.Run(tc.playlist, func(t *testing.T) {
			path := filepath.Join(dir, tc.playlist)
			var probe struct {
				Packets []struct {
					CodecType string `json:"codec_type"`
				}
			}
			if err := json.Unmarshal(runCmd(t, "ffprobe", "-v", "error", "-show_packets", "-of", "json", path), &probe); err != nil {
				t.Fatal(err)
			}
			count := map[string]int{}
			for _, p := range probe.Packets {
				count[p.CodecType]++
			}
			if count["video"] != tc.video || count["audio"] != tc.audio {
				t.Errorf("ffprobe read %d video and %d audio packets, want %d and %d", count["video"], count["audio"], tc.video, tc.audio)
			}
			if msg := runCmd(t, "ffmpeg", "-nostdin", "-v", "error", "-i", path, "-f", "null", "-"); len(strings.TrimSpace(string(msg))) > 0 {
				t.Errorf("ffmpeg decode: %s", msg)
			}
		})
	}
}

func write(t *testing.T, dir, name string, b []byte) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// runCmd runs a command and returns stdout and stderr together.
func runCmd(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}
