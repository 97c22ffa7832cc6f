package tsedit

import (
	"math/rand/v2"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/gopcast/gopcast/pkg/media/tsmux"
)

// benchTS is 2 s of a 3 Mbit/s 25 fps stream with audio, as tsmux writes a chunk: the size
// of what the transcoder passes through a Shifter and a Cutter for every chunk.
func benchTS(b *testing.B) []byte {
	b.Helper()
	m, err := tsmux.New(&mpeg4audio.AudioSpecificConfig{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelCount: 2, ChannelConfig: 2})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	var ts []byte
	for i := range 50 {
		dts := int64(900000 + i*3600)
		size := 12000
		if i%25 == 0 {
			size = 100000
		}
		slice := make([]byte, size)
		for j := range slice {
			slice[j] = byte(rng.IntN(256)) | 0x04
		}
		slice[0] = 0x41
		if i%25 == 0 {
			slice[0] = 0x65
		}
		ts = m.WriteH264(ts, dts+3600, dts, i%25 == 0, [][]byte{slice})
		for k := range 2 {
			if ts, err = m.WriteAAC(ts, dts+int64(k)*1920, make([]byte, 380)); err != nil {
				b.Fatal(err)
			}
		}
	}
	return ts
}

func BenchmarkShift(b *testing.B) {
	ts := benchTS(b)
	buf := make([]byte, len(ts))
	b.SetBytes(int64(len(ts)))
	b.ReportAllocs()
	s := &Shifter{Delta: 123456, Renumber: true}
	for b.Loop() {
		copy(buf, ts)
		s.WatchVideo()
		if _, err := s.Shift(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCut(b *testing.B) {
	ts := benchTS(b)
	b.SetBytes(int64(len(ts)))
	b.ReportAllocs()
	for b.Loop() {
		c := &Cutter{}
		if err := c.Write(ts); err != nil {
			b.Fatal(err)
		}
		if _, _, ok := c.Cut(900000 + 25*3600 + 3600); !ok {
			b.Fatal("no cut")
		}
		c.Rest()
	}
}
