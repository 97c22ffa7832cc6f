package codec

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
)

// The SPS vectors below are the first SPS of one-frame x264 encodes made by ffmpeg 5.1:
//
//	ffmpeg -f lavfi -i testsrc2=size=WxH:rate=R -frames:v 1 -c:v libx264 -profile:v P -f h264 out.h264
//
// "no VUI" is the main-720p SPS with vui_parameters_present_flag cleared (what many hardware
// encoders send): it has no timing information, so the frame rate is unknown.
var spsCases = []struct {
	name          string
	sps           string
	codec         string
	width, height int
	fps           float64
}{
	{"main 720p30", "674d401feca02802dd8088000003000800000301e078c18cb0", "avc1.4D401F", 1280, 720, 30},
	{"high 1080p29.97 cropped", "67640028acd940780227e5c04400000fa40003a9803c60c658", "avc1.640028", 1920, 1080, 30000.0 / 1001},
	{"constrained baseline 426x240p25 cropped", "6742c015d901b1fe4f011000000300100000030320f162e480", "avc1.42C015", 426, 240, 25},
	{"main 720p no VUI", "674d401feca02802dc80", "avc1.4D401F", 1280, 720, 0},
}

func TestH264(t *testing.T) {
	for _, tc := range spsCases {
		t.Run(tc.name, func(t *testing.T) {
			sps := mustHex(t, tc.sps)
			got, err := H264Codec(sps)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.codec {
				t.Errorf("H264Codec = %q, want %q", got, tc.codec)
			}
			w, h, fps, err := H264Info(sps)
			if err != nil {
				t.Fatal(err)
			}
			if w != tc.width || h != tc.height || math.Abs(fps-tc.fps) > 1e-9 {
				t.Errorf("H264Info = %dx%d@%v, want %dx%d@%v", w, h, fps, tc.width, tc.height, tc.fps)
			}
		})
	}
}

func TestH264Invalid(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":       nil,
		"short":       {0x67, 0x42},
		"PPS not SPS": mustHex(t, "68ebe3cb20"),
		"truncated":   mustHex(t, "674d401feca0"),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := H264Codec(b); !errors.Is(err, ErrInvalid) {
				t.Errorf("H264Codec error = %v, want ErrInvalid", err)
			}
			if _, _, _, err := H264Info(b); !errors.Is(err, ErrInvalid) {
				t.Errorf("H264Info error = %v, want ErrInvalid", err)
			}
		})
	}
}

var ascCases = []struct {
	name     string
	asc      string
	codec    string
	rate, ch int
}{
	// What ffmpeg's aac encoder writes into an MP4 esds for 48 kHz stereo: the two-byte ASC
	// followed by a backward-compatible "no SBR" sync extension (0x2b7).
	{"ffmpeg LC 48k stereo", "119056e500", "mp4a.40.2", 48000, 2},
	{"LC 48k stereo", "1190", "mp4a.40.2", 48000, 2},
	{"LC 44.1k mono", "1208", "mp4a.40.2", 44100, 1},
	{"LC 48k stereo 960-sample frames", "1194", "mp4a.40.2", 48000, 2},
	// Explicit hierarchical signalling: AOT 5/29, core 24 kHz, extension 48 kHz, core AAC-LC.
	{"HE-AAC 24k core stereo", "2b118800", "mp4a.40.5", 24000, 2},
	{"HE-AAC v2 24k core PS", "eb098800", "mp4a.40.29", 24000, 2},
}

func TestAAC(t *testing.T) {
	for _, tc := range ascCases {
		t.Run(tc.name, func(t *testing.T) {
			asc := mustHex(t, tc.asc)
			got, err := AACCodec(asc)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.codec {
				t.Errorf("AACCodec = %q, want %q", got, tc.codec)
			}
			rate, ch, err := AACInfo(asc)
			if err != nil {
				t.Fatal(err)
			}
			if rate != tc.rate || ch != tc.ch {
				t.Errorf("AACInfo = %d Hz %d ch, want %d Hz %d ch", rate, ch, tc.rate, tc.ch)
			}
		})
	}
}

func TestAACInvalid(t *testing.T) {
	for _, tc := range []struct {
		name, asc  string
		codecKnown bool // the codec string can be named even though AACInfo cannot answer
	}{
		{"empty", "", false},
		{"one byte", "12", false},
		{"AAC Main", "0990", false},
		{"reserved sample rate index", "1690", false},
		{"channel layout in a PCE", "1180", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := mustHex(t, tc.asc)
			if _, err := AACCodec(b); tc.codecKnown != (err == nil) || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Errorf("AACCodec error = %v", err)
			}
			if _, _, err := AACInfo(b); !errors.Is(err, ErrInvalid) {
				t.Errorf("AACInfo error = %v, want ErrInvalid", err)
			}
		})
	}
}

// TestH264AgainstFFprobe encodes with x264 and checks every value against what ffprobe reports
// for the same stream, so the expectations above are not just our own reading of the bits.
func TestH264AgainstFFprobe(t *testing.T) {
	ffmpeg, ffprobe := tool(t, "ffmpeg"), tool(t, "ffprobe")
	profiles := map[string]byte{"Constrained Baseline": 66, "Baseline": 66, "Main": 77, "High": 100}
	for _, tc := range []struct{ size, rate, profile string }{
		{"1280x720", "30", "main"},
		{"854x480", "30000/1001", "high"},
		{"320x180", "25", "baseline"},
		{"1920x1080", "60", "high"},
	} {
		t.Run(tc.size+"@"+tc.rate+"/"+tc.profile, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "v.h264")
			run(t, ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size="+tc.size+":rate="+tc.rate,
				"-frames:v", "1", "-c:v", "libx264", "-profile:v", tc.profile, "-pix_fmt", "yuv420p", "-f", "h264", out)
			data, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			var au h264.AnnexB
			if err := au.Unmarshal(data); err != nil {
				t.Fatal(err)
			}
			var sps []byte
			for _, n := range au {
				if h264.NALUType(n[0]&0x1f) == h264.NALUTypeSPS {
					sps = n
					break
				}
			}
			if sps == nil {
				t.Fatal("no SPS in x264 output")
			}

			var probe struct {
				Streams []struct {
					Width, Height int
					Profile       string
					Level         int
					RFrameRate    string `json:"r_frame_rate"`
				}
			}
			if err := json.Unmarshal(run(t, ffprobe, "-v", "error", "-show_streams", "-of", "json", out), &probe); err != nil {
				t.Fatal(err)
			}
			if len(probe.Streams) != 1 {
				t.Fatalf("ffprobe found %d streams", len(probe.Streams))
			}
			ps := probe.Streams[0]

			w, h, fps, err := H264Info(sps)
			if err != nil {
				t.Fatal(err)
			}
			if w != ps.Width || h != ps.Height {
				t.Errorf("size %dx%d, ffprobe %dx%d", w, h, ps.Width, ps.Height)
			}
			if want := ratio(t, tc.rate); math.Abs(fps-want) > 1e-9 {
				t.Errorf("fps %v, want %v", fps, want)
			}
			c, err := H264Codec(sps)
			if err != nil {
				t.Fatal(err)
			}
			prof, ok := profiles[ps.Profile]
			if !ok {
				t.Fatalf("unexpected ffprobe profile %q", ps.Profile)
			}
			if want := "avc1." + strings.ToUpper(hex.EncodeToString([]byte{prof})); !strings.HasPrefix(c, want) {
				t.Errorf("codec %s, want prefix %s (ffprobe profile %s)", c, want, ps.Profile)
			}
			if lvl, _ := strconv.ParseUint(c[len(c)-2:], 16, 8); int(lvl) != ps.Level {
				t.Errorf("codec %s level %d, ffprobe level %d", c, lvl, ps.Level)
			}
		})
	}
}

func FuzzH264(f *testing.F) {
	for _, tc := range spsCases {
		b, _ := hex.DecodeString(tc.sps)
		f.Add(b)
	}
	f.Fuzz(func(_ *testing.T, b []byte) {
		_, _ = H264Codec(b)
		_, _, _, _ = H264Info(b)
	})
}

func FuzzAAC(f *testing.F) {
	for _, tc := range ascCases {
		b, _ := hex.DecodeString(tc.asc)
		f.Add(b)
	}
	f.Fuzz(func(_ *testing.T, b []byte) {
		_, _ = AACCodec(b)
		_, _, _ = AACInfo(b)
	})
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ratio(t *testing.T, s string) float64 {
	t.Helper()
	num, den, ok := strings.Cut(s, "/")
	n, err := strconv.ParseFloat(num, 64)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return n
	}
	d, err := strconv.ParseFloat(den, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n / d
}

func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is needed for this test (Debian: apt-get install ffmpeg): %v", name, err)
	}
	return p
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return out
}
