package tsmux

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/asticode/go-astits"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"
)

var asc = mpeg4audio.AudioSpecificConfig{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelCount: 2, ChannelConfig: 2}

type unit struct {
	audio    bool
	pts, dts int64
	key      bool
	au       [][]byte // video NAL units, or one AAC frame
}

// units is a session of video access units and AAC frames whose sizes cross every packet
// boundary case: payloads that end exactly at a packet's end, one or two bytes short of it,
// and with an adaptation field (keyframes, PCRs) in the first packet.
func units(seed uint64) []unit {
	rng := rand.New(rand.NewPCG(seed, 1))
	var out []unit
	dts := int64(900000)
	for i := range 300 {
		key := i%30 == 0
		var au [][]byte
		if rng.IntN(4) == 0 {
			au = append(au, []byte{0x09, 0x10}) // the publisher's own delimiter
		}
		if key {
			au = append(au, []byte{0x67, 0x64, 0x00, 0x1f}, []byte{0x68, 0xeb})
		}
		size := 1 + rng.IntN(3*packetSize)
		if i%7 == 0 {
			size = 20000 + rng.IntN(100000)
		}
		slice := make([]byte, size)
		for j := range slice {
			slice[j] = byte(rng.IntN(256)) | 0x04 // no accidental start codes
		}
		slice[0] = 0x41
		if key {
			slice[0] = 0x65
		}
		au = append(au, slice)
		pts := dts + int64(rng.IntN(3))*3000
		out = append(out, unit{pts: pts, dts: dts, key: key, au: au})
		for range 2 {
			frame := make([]byte, 1+rng.IntN(2*packetSize))
			for j := range frame {
				frame[j] = byte(rng.IntN(256))
			}
			out = append(out, unit{audio: true, pts: dts + int64(rng.IntN(3000)), au: [][]byte{frame}})
		}
		dts += 3000
	}
	return out
}

func writeOurs(t testing.TB, us []unit, audio bool) []byte { return writeOursTo(t, nil, us, audio) }

func writeOursTo(t testing.TB, b []byte, us []unit, audio bool) []byte {
	var cfg *mpeg4audio.AudioSpecificConfig
	if audio {
		cfg = &asc
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range us {
		switch {
		case !u.audio:
			b = m.WriteH264(b, u.pts, u.dts, u.key, u.au)
		case audio:
			if b, err = m.WriteAAC(b, u.pts, u.au[0]); err != nil {
				t.Fatal(err)
			}
		}
	}
	return b
}

func writeMediacommon(t testing.TB, us []unit, audio bool) []byte {
	var buf bytes.Buffer
	return writeMediacommonTo(t, &buf, us, audio)
}

func writeMediacommonTo(t testing.TB, buf *bytes.Buffer, us []unit, audio bool) []byte {
	v := &mpegts.Track{Codec: &tscodecs.H264{}}
	a := &mpegts.Track{Codec: &tscodecs.MPEG4Audio{Config: asc}}
	tracks := []*mpegts.Track{v}
	if audio {
		tracks = append(tracks, a)
	}
	w := &mpegts.Writer{W: buf, Tracks: tracks}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	for _, u := range us {
		var err error
		switch {
		case !u.audio:
			err = w.WriteH264(v, u.pts, u.dts, u.au)
		case audio:
			err = w.WriteMPEG4Audio(a, u.pts, u.au)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// The muxer writes, packet for packet, the stream the general writer it replaces writes for the
// same input: the same PES packets cut the same way, the same adaptation fields, PCRs and
// continuity counters, PAT and PMT at the same places. Only the tables' own bytes differ (that
// writer starts at table version 1 with transport stream id 0); they must list the same program.
func TestSameStreamAsMediacommon(t *testing.T) {
	for _, audio := range []bool{true, false} {
		us := units(7)
		ours, theirs := writeOurs(t, us, audio), writeMediacommon(t, us, audio)
		if len(ours) != len(theirs) {
			t.Fatalf("audio %v: %d bytes, the reference %d", audio, len(ours), len(theirs))
		}
		if len(ours)%packetSize != 0 {
			t.Fatalf("audio %v: %d bytes is not whole packets", audio, len(ours))
		}
		tables := 0
		for off := 0; off < len(ours); off += packetSize {
			p, q := ours[off:off+packetSize], theirs[off:off+packetSize]
			pid := uint16(p[1]&0x1f)<<8 | uint16(p[2])
			if pid == PIDPAT || pid == PIDPMT {
				tables++
				continue
			}
			if !bytes.Equal(p, q) {
				t.Fatalf("audio %v: packet %d (PID %d) differs:\n ours   % x\n theirs % x", audio, off/packetSize, pid, p[:32], q[:32])
			}
		}
		if tables < 2*10 {
			t.Errorf("audio %v: %d table packets; want PAT and PMT before each of the 10 keyframes", audio, tables)
		}
		if got, want := programs(t, ours), programs(t, theirs); got != want {
			t.Errorf("audio %v: tables list %v; the reference %v", audio, got, want)
		}
	}
}

// programs demuxes the tables with go-astits (an independent reader that checks the CRCs) and
// describes the program they list.
func programs(t *testing.T, ts []byte) string {
	t.Helper()
	dmx := astits.NewDemuxer(context.Background(), bytes.NewReader(ts))
	var pat, pmt string
	for pat == "" || pmt == "" {
		d, err := dmx.NextData()
		if err != nil {
			t.Fatalf("tables not read: %v", err)
		}
		switch {
		case d.PAT != nil:
			for _, p := range d.PAT.Programs {
				pat += fmt.Sprintf("program %d on PID %d; ", p.ProgramNumber, p.ProgramMapID)
			}
		case d.PMT != nil:
			pmt = fmt.Sprintf("PCR PID %d", d.PMT.PCRPID)
			for _, es := range d.PMT.ElementaryStreams {
				pmt += fmt.Sprintf(", type %d on PID %d", es.StreamType, es.ElementaryPID)
			}
		}
	}
	return pat + pmt
}

// What the muxer writes reads back, with mediacommon's reader, as the same access units, frames
// and times.
func TestReadsBack(t *testing.T) {
	us := units(11)
	r := &mpegts.Reader{R: bytes.NewReader(writeOurs(t, us, true))}
	if err := r.Initialize(); err != nil {
		t.Fatal(err)
	}
	var video, audio []unit
	for _, tr := range r.Tracks() {
		switch tr.Codec.(type) {
		case *tscodecs.H264:
			r.OnDataH264(tr, func(pts, dts int64, au [][]byte) error {
				video = append(video, unit{pts: pts, dts: dts, au: au})
				return nil
			})
		case *tscodecs.MPEG4Audio:
			r.OnDataMPEG4Audio(tr, func(pts int64, aus [][]byte) error {
				for _, a := range aus {
					audio = append(audio, unit{pts: pts, au: [][]byte{a}})
				}
				return nil
			})
		}
	}
	for {
		if err := r.Read(); err != nil {
			break
		}
	}
	vi, ai := 0, 0
	for _, u := range us {
		if u.audio {
			if ai >= len(audio) || audio[ai].pts != u.pts || !bytes.Equal(audio[ai].au[0], u.au[0]) {
				t.Fatalf("audio frame %d not read back as written", ai)
			}
			ai++
			continue
		}
		if vi >= len(video) {
			t.Fatalf("video access unit %d not read back", vi)
		}
		// The reader drops access unit delimiters, the muxer's and the publisher's.
		got := video[vi]
		want := u.au
		if want[0][0]&0x1f == 9 {
			want = want[1:]
		}
		if got.pts != u.pts || got.dts != u.dts || len(got.au) != len(want) {
			t.Fatalf("video access unit %d: pts %d dts %d %d NALUs; want %d %d %d", vi, got.pts, got.dts, len(got.au), u.pts, u.dts, len(want))
		}
		for i := range want {
			if !bytes.Equal(got.au[i], want[i]) {
				t.Fatalf("video access unit %d: NAL unit %d differs", vi, i)
			}
		}
		vi++
	}
	// The reader holds the last PES of each stream until it sees the next one start.
	if vi < len(video) || ai < len(audio) {
		t.Errorf("read %d video and %d audio units more than written", len(video)-vi, len(audio)-ai)
	}
}

func TestAACFrameLimits(t *testing.T) {
	m, err := New(&asc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.WriteAAC(nil, 0, make([]byte, maxADTSFrame-7)); err != nil {
		t.Errorf("the largest ADTS frame: %v", err)
	}
	if _, err := m.WriteAAC(nil, 0, make([]byte, maxADTSFrame-6)); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("a frame one byte too large: %v; want ErrFrameTooLarge", err)
	}
	v, _ := New(nil)
	if _, err := v.WriteAAC(nil, 0, []byte{1}); err == nil {
		t.Error("audio written to a video-only stream")
	}
	if _, err := New(&mpeg4audio.AudioSpecificConfig{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 44101, ChannelCount: 2}); err == nil {
		t.Error("a sample rate ADTS cannot carry was accepted")
	}
}

func BenchmarkWriteH264(b *testing.B) {
	us := units(3)
	var bytesIn int64
	for _, u := range us {
		for _, n := range u.au {
			bytesIn += int64(len(n))
		}
	}
	// Both write into a buffer kept from the last run, as the chunker presizes each chunk's.
	b.Run("tsmux", func(b *testing.B) {
		b.SetBytes(bytesIn)
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf = writeOursTo(b, buf[:0], us, true)
		}
	})
	b.Run("mediacommon", func(b *testing.B) {
		b.SetBytes(bytesIn)
		b.ReportAllocs()
		var buf bytes.Buffer
		for b.Loop() {
			buf.Reset()
			writeMediacommonTo(b, &buf, us, true)
		}
	})
}
