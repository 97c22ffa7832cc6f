package cmaf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/Eyevinn/mp4ff/mp4"
)

// sourceTS is a 4 s 1280x720 30 fps x264 test pattern with B-frames and a keyframe every 60
// frames, plus 48 kHz stereo AAC, as ffmpeg writes MPEG-TS. Made once per test binary.
var sourceTS = sync.OnceValues(func() ([]byte, error) {
	return ffmpegTS("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "4",
		"-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", "60", "-keyint_min", "60",
		"-sc_threshold", "0", "-pix_fmt", "yuv420p", "-b:v", "300k",
		"-c:a", "aac", "-b:a", "64k", "-ac", "2")
})

// ffmpegTS runs ffmpeg with args and an MPEG-TS output, and returns the output.
func ffmpegTS(args ...string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "cmaf-test-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "out.ts")
	cmd := exec.Command("ffmpeg", append(append([]string{"-v", "error", "-nostdin"}, args...), "-f", "mpegts", out)...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ffmpeg %s: %v\n%s", strings.Join(args, " "), err, msg)
	}
	return os.ReadFile(out)
}

func mustSource(t *testing.T) []byte {
	t.Helper()
	needTools(t)
	ts, err := sourceTS()
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func needTools(t *testing.T) {
	t.Helper()
	for _, name := range []string{"ffmpeg", "ffprobe"} {
		if _, err := exec.LookPath(name); err != nil {
			t.Fatalf("%s is needed for this test (Debian: apt-get install ffmpeg): %v", name, err)
		}
	}
}

type packet struct {
	CodecType string `json:"codec_type"`
	PTS       int64  `json:"pts"`
	DTS       int64  `json:"dts"`
	Duration  int64  `json:"duration"`
	Flags     string `json:"flags"`
	Size      string `json:"size"`
}

// probePackets returns ffprobe's packets of the file, per codec type, and the stream time bases.
func probePackets(t *testing.T, path string) (map[string][]packet, map[string]string) {
	t.Helper()
	var out struct {
		Packets []packet
		Streams []struct {
			CodecType string `json:"codec_type"`
			TimeBase  string `json:"time_base"`
		}
	}
	raw := run(t, "ffprobe", "-v", "error", "-show_packets", "-show_streams", "-of", "json", path)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	pk := map[string][]packet{}
	for _, p := range out.Packets {
		pk[p.CodecType] = append(pk[p.CodecType], p)
	}
	tb := map[string]string{}
	for _, s := range out.Streams {
		tb[s.CodecType] = s.TimeBase
	}
	return pk, tb
}

// decodeClean runs a full decode of path and fails on anything ffmpeg prints at level error.
func decodeClean(t *testing.T, path string) {
	t.Helper()
	cmd := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-i", path, "-f", "null", "-")
	msg, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(msg)) > 0 {
		t.Errorf("ffmpeg decode of %s: err=%v output:\n%s", filepath.Base(path), err, msg)
	}
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

func writeFile(t *testing.T, name string, parts ...[]byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, bytes.Join(parts, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// parseFragment decodes one media segment made by this package and returns its only fragment.
func parseFragment(t *testing.T, seg []byte) *mp4.Fragment {
	t.Helper()
	f, err := mp4.DecodeFile(bytes.NewReader(seg))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Segments) != 1 || len(f.Segments[0].Fragments) != 1 || f.Segments[0].Styp == nil {
		t.Fatalf("want styp + one fragment, got %d segments", len(f.Segments))
	}
	return f.Segments[0].Fragments[0]
}

func fullSamples(t *testing.T, frag *mp4.Fragment) []mp4.FullSample {
	t.Helper()
	s, err := frag.GetFullSamples(nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
