package ladder

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares args, one per line, with testdata/NAME.golden.
func golden(t *testing.T, name string, args []string) {
	t.Helper()
	got := []byte(strings.Join(args, "\n") + "\n")
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update creates it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

func TestArgsGolden(t *testing.T) {
	def := Profiles["default"]
	hd := Profiles["hd"]
	for _, tc := range []struct {
		name string
		job  Job
	}{
		{"default_720p_source", Job{Input: "/tmp/chunk/in.ts", OutDir: "/tmp/chunk", Rungs: def.Select(720, 2_500_000),
			Preset: def.Preset, GOP: 60}},
		{"hd_1080p_source_threads", Job{Input: "/tmp/chunk/in.ts", OutDir: "/tmp/chunk", Rungs: hd.Select(1080, 8_000_000),
			Preset: hd.Preset, GOP: 50, Threads: 2}},
		{"default_1080p_streamed", Job{Input: "ignored.ts", OutDir: "/tmp/chunk", Rungs: def.Select(1080, 6_000_000),
			Preset: def.Preset, GOP: 60, Stream: true}},
		{"single_rung", Job{Input: "in.ts", OutDir: "out", Rungs: []Rung{{Name: "240p", Height: 240, Bitrate: 400_000}},
			Preset: "ultrafast", GOP: 48}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.job.Args()
			golden(t, tc.name, args)
			// The same job always gives the same command line (map order must not leak in).
			for range 20 {
				if again := tc.job.Args(); !slices.Equal(again, args) {
					t.Fatalf("Args is not deterministic:\n%q\n%q", args, again)
				}
			}
		})
	}
}

// The properties the transcoder depends on, whatever the golden files say.
func TestArgsProperties(t *testing.T) {
	p := Profiles["hd"]
	job := Job{Input: "/c/in.ts", OutDir: "/c", Rungs: p.Rungs, Preset: p.Preset, GOP: 60, Threads: 3}
	args := job.Args()
	in := slices.Index(args, "-i")
	if in < 0 || args[in+1] != job.Input {
		t.Fatalf("no -i %s in %q", job.Input, args)
	}
	// Input options come before -i: MPEG-TS with its timestamps kept.
	for _, opt := range []string{"-copyts", "-f"} {
		if i := slices.Index(args, opt); i < 0 || i > in {
			t.Errorf("%s missing or after -i", opt)
		}
	}
	// Never waits on stdin, overwrites its temp outputs, logs errors only (kept for the error).
	if !slices.Equal(args[:5], []string{"-hide_banner", "-nostdin", "-loglevel", "error", "-y"}) {
		t.Errorf("global options %q", args[:5])
	}
	// One output per rung, each preceded by its own options.
	prev := in + 1
	for _, r := range job.Rungs {
		out := slices.Index(args, job.Output(r))
		if out < 0 {
			t.Fatalf("no output %s", job.Output(r))
		}
		opts := args[prev:out]
		kv := map[string]string{}
		for i := 0; i+1 < len(opts); i++ {
			if strings.HasPrefix(opts[i], "-") {
				kv[opts[i]] = opts[i+1]
			}
		}
		want := map[string]string{
			"-c:v": "libx264", "-preset": p.Preset, "-vf": "scale=-2:" + strconv.Itoa(r.Height), "-b:v": strconv.Itoa(r.Bitrate),
			"-g": "60", "-keyint_min": "60", "-sc_threshold": "0", "-flags": "+cgop", "-fps_mode": "passthrough",
			"-muxdelay": "0", "-muxpreload": "0", "-f": "mpegts", "-threads": "3", "-pix_fmt": "yuv420p",
			"-maxrate": strconv.Itoa(r.Bitrate * 11 / 10), "-bufsize": strconv.Itoa(r.Bitrate * 2), "-map": "0:v",
		}
		for k, v := range want {
			if kv[k] != v {
				t.Errorf("%s: %s = %q, want %q", r.Name, k, kv[k], v)
			}
		}
		if !slices.Contains(opts, "-an") {
			t.Errorf("%s: no -an: audio is passed through separately", r.Name)
		}
		prev = out + 1
	}
	if prev != len(args) {
		t.Errorf("arguments after the last output: %q", args[prev:])
	}
	if got := job.Output(Rung{Name: "480p"}); got != filepath.Join("/c", "480p.ts") {
		t.Errorf("Output = %s", got)
	}
}

func TestArgsWithoutThreadsLeavesThemToFFmpeg(t *testing.T) {
	job := Job{Input: "in.ts", OutDir: "out", Rungs: Profiles["default"].Rungs, Preset: "veryfast", GOP: 60}
	if slices.Contains(job.Args(), "-threads") {
		t.Errorf("-threads written with Threads 0: %q", job.Args())
	}
}

func TestArgsWithoutRungs(t *testing.T) {
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("Args panicked: %v", r)
		}
	}()
	_ = Job{Input: "in.ts", OutDir: "out", Preset: "veryfast", GOP: 60}.Args()
}

func rungNames(rs []Rung) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}

func TestSelect(t *testing.T) {
	for _, tc := range []struct {
		profile   string
		height    int
		bitrate   int
		wantRungs []string
	}{
		// 720p at 2.5 Mbit/s: a 3 Mbit/s 720p rung would not save 20 %, so it is skipped.
		{"default", 720, 2_500_000, []string{"480p", "360p"}},
		// Exactly at the line: 3 Mbit/s >= 0.8 × 3.75 Mbit/s, still skipped.
		{"default", 720, 3_750_000, []string{"480p", "360p"}},
		{"default", 720, 3_750_001, []string{"720p", "480p", "360p"}},
		{"default", 720, 8_000_000, []string{"720p", "480p", "360p"}},
		// Unknown source bitrate: the same-height rung is kept.
		{"default", 720, 0, []string{"720p", "480p", "360p"}},
		{"default", 1080, 1_000_000, []string{"720p", "480p", "360p"}},
		{"default", 719, 9_000_000, []string{"480p", "360p"}},
		{"default", 480, 1_000_000, []string{"360p"}},
		{"default", 480, 2_000_000, []string{"480p", "360p"}},
		{"default", 360, 5_000_000, []string{"360p"}},
		{"default", 240, 5_000_000, []string{}},
		{"default", 0, 0, []string{}},
		{"hd", 1080, 6_000_000, []string{"720p", "480p", "360p"}},
		{"hd", 1080, 8_000_000, []string{"1080p", "720p", "480p", "360p"}},
		{"hd", 2160, 20_000_000, []string{"1080p", "720p", "480p", "360p"}},
		{"passthrough", 1080, 6_000_000, []string{}},
	} {
		p, err := Lookup(tc.profile)
		if err != nil {
			t.Fatal(err)
		}
		if got := rungNames(p.Select(tc.height, tc.bitrate)); !slices.Equal(got, tc.wantRungs) {
			t.Errorf("%s.Select(%d, %d) = %v, want %v", tc.profile, tc.height, tc.bitrate, got, tc.wantRungs)
		}
	}
}

// Select never upscales and keeps the profile's order, for any source.
func TestSelectNeverUpscales(t *testing.T) {
	for _, name := range Names() {
		p := Profiles[name]
		for h := 0; h <= 2200; h += 7 {
			for _, rate := range []int{0, 500_000, 3_000_000, 50_000_000} {
				got := p.Select(h, rate)
				for i, r := range got {
					if r.Height > h {
						t.Fatalf("%s.Select(%d, %d) includes %s", name, h, rate, r.Name)
					}
					if i > 0 && got[i-1].Height <= r.Height {
						t.Fatalf("%s.Select(%d, %d) out of order: %v", name, h, rate, rungNames(got))
					}
				}
				// Every rung strictly below the source is kept.
				for _, r := range p.Rungs {
					if r.Height < h && !slices.Contains(got, r) {
						t.Fatalf("%s.Select(%d, %d) drops %s", name, h, rate, r.Name)
					}
				}
			}
		}
	}
}

func TestLookup(t *testing.T) {
	if got := Names(); !slices.Equal(got, []string{"default", "hd", "passthrough"}) {
		t.Errorf("Names() = %v", got)
	}
	for _, n := range Names() {
		p, err := Lookup(n)
		if err != nil || p.Name != n {
			t.Errorf("Lookup(%q) = %+v, %v", n, p, err)
		}
		if n != "passthrough" && (p.Preset == "" || len(p.Rungs) == 0) {
			t.Errorf("%s has no preset or rungs", n)
		}
		for _, r := range p.Rungs {
			if r.Name == "" || r.Height <= 0 || r.Height%2 != 0 || r.Bitrate <= 0 {
				t.Errorf("%s rung %+v", n, r)
			}
		}
	}
	_, err := Lookup("nope")
	if err == nil || !strings.Contains(err.Error(), `"nope"`) || !strings.Contains(err.Error(), "default") {
		t.Errorf("Lookup(nope) error %v: want the name and the known profiles", err)
	}
}
