package tsedit

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gopcast/gopcast/internal/testenv"
)

// encodeTS makes a transport stream with ffmpeg: 6 s of 320x240 25 fps H.264 (B-frames, a
// keyframe every gop frames, scene cuts off) with AAC, its clock starting at 10 s as a chunk's.
func encodeTS(t *testing.T, gop int) []byte {
	t.Helper()
	ffmpeg, _ := testenv.FFmpeg(t)
	out := filepath.Join(t.TempDir(), "in.ts")
	cmd := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "6", "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", strconv.Itoa(gop), "-keyint_min", strconv.Itoa(gop),
		"-sc_threshold", "0", "-c:a", "aac", "-output_ts_offset", "10", "-muxdelay", "0", "-muxpreload", "0",
		"-f", "mpegts", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// probed is one packet as ffprobe reads it.
type probed struct {
	Type string `json:"codec_type"`
	PTS  int64  `json:"pts"`
	DTS  int64  `json:"dts"`
	Key  bool
	Flag string `json:"flags"`
}

// probe reads ts's packets with ffprobe; it fails the test on anything ffprobe complains of.
func probe(t *testing.T, ts []byte) []probed {
	t.Helper()
	_, ffprobe := testenv.FFmpeg(t)
	f := filepath.Join(t.TempDir(), "p.ts")
	if err := os.WriteFile(f, ts, 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(ffprobe, "-v", "warning", "-show_entries", "packet=codec_type,pts,dts,flags", "-of", "json", f)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ffprobe: %v\n%s", err, stderr.Bytes())
	}
	if stderr.Len() > 0 {
		t.Errorf("ffprobe complained:\n%s", stderr.Bytes())
	}
	var r struct{ Packets []probed }
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatal(err)
	}
	for i := range r.Packets {
		r.Packets[i].Key = strings.HasPrefix(r.Packets[i].Flag, "K")
	}
	return r.Packets
}

// inPieces passes b through s in randomly sized parts.
func inPieces(t *testing.T, s *Shifter, b []byte, rng *rand.Rand) []byte {
	t.Helper()
	var out []byte
	b = append([]byte(nil), b...)
	for len(b) > 0 {
		n := min(len(b), 1+rng.IntN(3*PacketSize))
		got, err := s.Shift(b[:n])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, got...)
		b = b[n:]
	}
	if s.Pending() != 0 {
		t.Fatalf("%d bytes held at the end", s.Pending())
	}
	return out
}

func TestShiftMovesEveryTimestamp(t *testing.T) {
	t.Parallel()
	src := encodeTS(t, 50)
	orig := probe(t, src)
	rng := rand.New(rand.NewPCG(1, 2))
	const delta = 123456
	sh := &Shifter{Delta: delta}
	sh.WatchVideo()
	shifted := inPieces(t, sh, src, rng)
	for _, p := range orig {
		if p.Type == "video" {
			if got, ok := sh.FirstVideoPTS(); !ok || got != p.PTS+delta {
				t.Fatalf("FirstVideoPTS = %d, %v; want %d", got, ok, p.PTS+delta)
			}
			break
		}
	}
	if len(shifted) != len(src) {
		t.Fatalf("%d bytes out of %d", len(shifted), len(src))
	}
	got := probe(t, shifted)
	if len(got) != len(orig) || len(orig) < 200 {
		t.Fatalf("%d packets after, %d before", len(got), len(orig))
	}
	for i := range orig {
		if got[i].PTS != orig[i].PTS+delta || got[i].DTS != orig[i].DTS+delta || got[i].Type != orig[i].Type {
			t.Fatalf("packet %d: %+v, was %+v", i, got[i], orig[i])
		}
	}
	// And back, across the 33-bit wrap: -(10 s + delta) puts the first frames before 0.
	back := inPieces(t, &Shifter{Delta: -delta}, shifted, rng)
	if !bytes.Equal(back, src) {
		t.Fatal("shifting back did not restore the bytes")
	}
	wrapped := inPieces(t, &Shifter{Delta: -10*90000 - 45000}, append([]byte(nil), src...), rng)
	again := inPieces(t, &Shifter{Delta: 10*90000 + 45000}, wrapped, rng)
	if !bytes.Equal(again, src) {
		t.Fatal("shifting across the 33-bit wrap and back did not restore the bytes")
	}
}

// Two streams joined with the second moved past the first, continuity counters renumbered,
// read as one stream: timestamps run on and ffprobe reports no continuity errors.
func TestJoinedStreamsReadAsOne(t *testing.T) {
	t.Parallel()
	src := encodeTS(t, 50)
	one := probe(t, src)
	rng := rand.New(rand.NewPCG(3, 4))
	j := &Shifter{Renumber: true}
	joined := inPieces(t, j, src, rng)
	j.Delta = 6 * 90000
	joined = append(joined, inPieces(t, j, src, rng)...)

	_, ffprobe := testenv.FFmpeg(t)
	f := filepath.Join(t.TempDir(), "j.ts")
	if err := os.WriteFile(f, joined, 0o644); err != nil {
		t.Fatal(err)
	}
	// ffmpeg's MPEG-TS reader reports continuity errors at debug level.
	ccErrors := func() int {
		var stderr bytes.Buffer
		cmd := exec.Command(ffprobe, "-v", "debug", "-show_entries", "packet=pts", "-of", "csv", f)
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("ffprobe: %v\n%s", err, stderr.Bytes())
		}
		return strings.Count(stderr.String(), "Continuity check failed")
	}
	if n := ccErrors(); n > 0 {
		t.Fatalf("%d continuity errors in the joined stream", n)
	}
	got := probe(t, joined)
	if len(got) != 2*len(one) {
		t.Fatalf("%d packets, want %d", len(got), 2*len(one))
	}
	for i, p := range got[len(one):] {
		if p.PTS != one[i].PTS+6*90000 {
			t.Fatalf("second stream's packet %d at %d, want %d", i, p.PTS, one[i].PTS+6*90000)
		}
	}
	// Without renumbering the same join has continuity errors: the test can tell.
	plain := append(append([]byte(nil), src...), inPieces(t, &Shifter{Delta: 6 * 90000}, src, rng)...)
	if err := os.WriteFile(f, plain, 0o644); err != nil {
		t.Fatal(err)
	}
	if ccErrors() == 0 {
		t.Fatal("no continuity errors reported without renumbering; the check above proves nothing")
	}
}

func TestCutAtKeyframes(t *testing.T) {
	t.Parallel()
	src := encodeTS(t, 25) // a keyframe every second
	all := probe(t, src)
	var first int64 = -1
	for _, p := range all {
		if p.Type == "video" && (first < 0 || p.PTS < first) {
			first = p.PTS
		}
	}
	rng := rand.New(rand.NewPCG(5, 6))
	c := &Cutter{}
	var pieces [][]byte
	var counted []int
	cuts := []int64{first + 2*90000, first + 4*90000}
	b := src
	for len(b) > 0 {
		n := min(len(b), 1+rng.IntN(5*PacketSize))
		if err := c.Write(b[:n]); err != nil {
			t.Fatal(err)
		}
		b = b[n:]
		for len(cuts) > 0 {
			p, n, ok := c.Cut(cuts[0])
			if !ok {
				break
			}
			pieces, cuts, counted = append(pieces, p), cuts[1:], append(counted, n)
		}
	}
	rest, n, partial := c.Rest()
	if partial != 0 || len(cuts) != 0 {
		t.Fatalf("partial %d bytes, cuts left %v", partial, cuts)
	}
	pieces, counted = append(pieces, rest), append(counted, n)
	frames := 0
	for i, p := range pieces {
		var video []probed
		for _, pk := range probe(t, p) {
			if pk.Type == "video" {
				video = append(video, pk)
			}
		}
		if len(video) == 0 {
			t.Fatalf("piece %d has no video", i)
		}
		lo, hi := first+int64(i)*2*90000, first+int64(i+1)*2*90000
		if !video[0].Key || video[0].PTS != lo {
			t.Errorf("piece %d starts with %+v, want a keyframe at %d", i, video[0], lo)
		}
		for _, v := range video {
			if v.PTS < lo || v.PTS >= hi {
				t.Errorf("piece %d holds a frame at %d, outside [%d, %d)", i, v.PTS, lo, hi)
			}
		}
		if counted[i] != len(video) {
			t.Errorf("piece %d: Cutter counted %d frames, ffprobe read %d", i, counted[i], len(video))
		}
		frames += len(video)
	}
	if frames != 150 {
		t.Fatalf("%d video frames in the pieces, want 150", frames)
	}
}

func FuzzShift(f *testing.F) {
	f.Add([]byte{0x47, 0x41, 0x00, 0x30, 0x07, 0x10, 0, 0, 0, 0, 0, 0}, int64(90000))
	f.Add(bytes.Repeat([]byte{0x47, 0x40, 0x11, 0x10, 0, 0, 1, 0xe0, 0, 0, 0x80, 0xc0, 10, 0x31, 0, 1, 0, 1}, 11), int64(-5))
	f.Fuzz(func(t *testing.T, b []byte, delta int64) {
		s := &Shifter{Delta: delta % wrap, Renumber: true}
		if out, err := s.Shift(append([]byte(nil), b...)); err == nil && len(out)%PacketSize != 0 {
			t.Fatalf("%d bytes out", len(out))
		}
		c := &Cutter{}
		if c.Write(b) == nil {
			c.Cut(delta)
			c.Rest()
		}
		s.WatchVideo()
		if _, err := s.Shift(append([]byte(nil), b...)); err == nil {
			s.FirstVideoPTS()
		}
	})
}
