package cmaf

import (
	"bytes"
	"errors"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/gopcast/gopcast/pkg/media/tsmux"
)

// A stream declared in the PMT that never carries a packet (the publisher's audio had not
// started) is simply absent: the video still demuxes.
func TestDemuxDeclaredStreamWithoutData(t *testing.T) {
	src := mustSource(t)
	d, err := Demux(src)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	v := &mpegts.Track{Codec: &tscodecs.H264{}}
	a := &mpegts.Track{Codec: &tscodecs.MPEG4Audio{Config: mpeg4audio.AudioSpecificConfig{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelCount: 2}}}
	w := &mpegts.Writer{W: &buf, Tracks: []*mpegts.Track{v, a}}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	for _, f := range d.Video[:60] {
		nalus := f.NALUs
		if f.Key {
			nalus = append([][]byte{d.H264.SPS, d.H264.PPS}, nalus...)
		}
		if err := w.WriteH264(v, f.PTS, f.DTS, nalus); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Demux(buf.Bytes())
	if err != nil {
		t.Fatalf("a declared audio stream without data: %v", err)
	}
	if len(got.Video) != 60 || got.AAC != nil || len(got.Audio) != 0 {
		t.Fatalf("%d video frames, AAC %v, %d audio frames; want 60, none, 0", len(got.Video), got.AAC, len(got.Audio))
	}
	for i, f := range got.Video {
		if f.PTS != d.Video[i].PTS || f.DTS != d.Video[i].DTS || f.Key != d.Video[i].Key {
			t.Fatalf("frame %d: %+v, want %+v", i, f, d.Video[i])
		}
	}
}

// TestDemuxRefusesDamage: truncation, a lost sync byte and a PES without a start code are
// errors, never fewer frames.
func TestDemuxRefusesDamage(t *testing.T) {
	src := mustSource(t)
	for name, ts := range map[string][]byte{
		"truncated mid-packet": src[:len(src)-100],
		"no sync byte":         append(append([]byte(nil), src[:188*10]...), append([]byte{0x48}, src[188*10+1:]...)...),
	} {
		if _, err := Demux(ts); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// BenchmarkDemux reads a 2 s 1280x720 3 Mbit/s chunk (keyframes of ~100 KB), as the
// transcoder does for every chunk of every stream.
func BenchmarkDemux(b *testing.B) {
	ts, err := ffmpegTS("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "2",
		"-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", "60", "-pix_fmt", "yuv420p",
		"-b:v", "3000k", "-minrate", "3000k", "-maxrate", "3000k", "-bufsize", "3000k", "-c:a", "aac", "-b:a", "128k")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(ts)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Demux(ts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVideoFragment packages the video of the same 2 s 720p chunk as one CMAF fragment,
// as the transcoder does for every video rendition of every chunk.
func BenchmarkVideoFragment(b *testing.B) {
	ts, err := ffmpegTS("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-t", "2",
		"-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", "60", "-pix_fmt", "yuv420p",
		"-b:v", "3000k", "-minrate", "3000k", "-maxrate", "3000k", "-bufsize", "3000k")
	if err != nil {
		b.Fatal(err)
	}
	dem, err := Demux(ts)
	if err != nil {
		b.Fatal(err)
	}
	end := dem.Video[len(dem.Video)-1].DTS + 3000
	b.Run("fresh", func(b *testing.B) {
		b.SetBytes(int64(len(ts)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := VideoFragment(1, dem.Video, end); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reused", func(b *testing.B) { // as the transcoder writes them
		b.SetBytes(int64(len(ts)))
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			if buf, err = AppendVideoFragment(buf[:0], 1, dem.Video, end); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A PES whose PES_packet_length leaves less than its fixed header (1 or 2 bytes) is refused;
// it used to index past the clipped packet and panic.
func TestDemuxPESLengthInsideHeader(t *testing.T) {
	m, err := tsmux.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := m.WriteH264(nil, 90000, 90000, true, [][]byte{{0x65, 0x88, 0x84}})
	for off := 0; off < len(ts); off += 188 {
		p := ts[off : off+188]
		if int(p[1]&0x1f)<<8|int(p[2]) == tsmux.PIDVideo && p[1]&0x40 != 0 {
			pes := p[4+1+int(p[4]):] // a keyframe's first packet has an adaptation field
			for _, length := range []byte{1, 2} {
				pes[4], pes[5] = 0, length
				if _, err := Demux(ts); !errors.Is(err, ErrInvalidInput) {
					t.Errorf("PES_packet_length %d: error %v, want ErrInvalidInput", length, err)
				}
			}
			return
		}
	}
	t.Fatal("no video PES")
}
