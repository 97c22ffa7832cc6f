package cmaf

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/Eyevinn/mp4ff/mp4"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/codec"
)

func TestDemuxMatchesFFprobe(t *testing.T) {
	ts := mustSource(t)
	d, err := Demux(ts)
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := probePackets(t, writeFile(t, "src.ts", ts))

	if len(d.Video) != len(pk["video"]) || len(d.Video) != 120 {
		t.Fatalf("video frames: Demux %d, ffprobe %d, want 120", len(d.Video), len(pk["video"]))
	}
	keys := 0
	for i, f := range d.Video {
		p := pk["video"][i]
		if f.PTS != p.PTS || f.DTS != p.DTS {
			t.Errorf("video %d: PTS/DTS %d/%d, ffprobe %d/%d", i, f.PTS, f.DTS, p.PTS, p.DTS)
		}
		if f.Key != strings.HasPrefix(p.Flags, "K") {
			t.Errorf("video %d: Key %v, ffprobe flags %q", i, f.Key, p.Flags)
		}
		if f.Key {
			keys++
		}
	}
	if keys != 2 || !d.Video[0].Key || !d.Video[60].Key {
		t.Errorf("keyframes: %d, want frames 0 and 60", keys)
	}
	bframes := 0
	for _, f := range d.Video {
		if f.PTS < f.DTS {
			t.Errorf("PTS %d before DTS %d", f.PTS, f.DTS)
		}
		if f.PTS > f.DTS+3000 {
			bframes++ // reordered: shown later than the next decode slot
		}
	}
	if bframes == 0 {
		t.Error("test source has no reordered frames; B-frames are not being tested")
	}

	if len(d.Audio) != len(pk["audio"]) || len(d.Audio) < 180 {
		t.Fatalf("audio frames: Demux %d, ffprobe %d", len(d.Audio), len(pk["audio"]))
	}
	for i, f := range d.Audio {
		if p := pk["audio"][i]; f.PTS != p.PTS {
			t.Errorf("audio %d: PTS %d, ffprobe %d", i, f.PTS, p.PTS)
		}
	}

	if d.H264 == nil || d.AAC == nil {
		t.Fatalf("configs missing: %+v %+v", d.H264, d.AAC)
	}
	if w, h, fps, err := codec.H264Info(d.H264.SPS); err != nil || w != 1280 || h != 720 || fps != 30 {
		t.Errorf("SPS: %dx%d@%v %v", w, h, fps, err)
	}
	if got := hex.EncodeToString(d.AAC.ASC); got != "1190" {
		t.Errorf("ASC %s, want 1190 (AAC-LC 48 kHz stereo)", got)
	}
}

// videoSplit packages the demuxed video as init + one fragment per GOP, splitting at keyframes,
// and returns the parts. Each fragment's end is the next fragment's first DTS; the last has
// none (0), as a live packager would not know it yet.
func videoSplit(t *testing.T, d *Demuxed) (init []byte, frags [][]byte, firsts []int) {
	t.Helper()
	init, err := VideoInit(*d.H264)
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range d.Video {
		if f.Key {
			firsts = append(firsts, i)
		}
	}
	for k, first := range firsts {
		last, end := len(d.Video), int64(0)
		if k+1 < len(firsts) {
			last = firsts[k+1]
			end = d.Video[last].DTS
		}
		frag, err := VideoFragment(uint32(k+1), d.Video[first:last], end)
		if err != nil {
			t.Fatal(err)
		}
		frags = append(frags, frag)
	}
	return init, frags, firsts
}

func TestVideoRoundTrip(t *testing.T) {
	d, err := Demux(mustSource(t))
	if err != nil {
		t.Fatal(err)
	}
	init, frags, firsts := videoSplit(t, d)
	if len(frags) != 2 {
		t.Fatalf("%d fragments, want 2", len(frags))
	}
	path := writeFile(t, "video.mp4", append([][]byte{init}, frags...)...)

	pk, tb := probePackets(t, path)
	if tb["video"] != "1/90000" {
		t.Fatalf("video time base %s, want 1/90000", tb["video"])
	}
	got := pk["video"]
	if len(got) != len(d.Video) {
		t.Fatalf("ffprobe sees %d video packets, %d went in", len(got), len(d.Video))
	}
	for i, f := range d.Video {
		if got[i].PTS != f.PTS || got[i].DTS != f.DTS {
			t.Errorf("packet %d: PTS/DTS %d/%d, input %d/%d", i, got[i].PTS, got[i].DTS, f.PTS, f.DTS)
		}
		if strings.HasPrefix(got[i].Flags, "K") != f.Key {
			t.Errorf("packet %d: flags %q, input Key %v", i, got[i].Flags, f.Key)
		}
	}
	// No gap or overlap where the fragments meet: the first fragment's last sample ends exactly
	// where the second one's tfdt says it starts.
	b := firsts[1]
	if got[b-1].DTS+got[b-1].Duration != got[b].DTS {
		t.Errorf("fragment boundary: last DTS %d + duration %d != next first DTS %d",
			got[b-1].DTS, got[b-1].Duration, got[b].DTS)
	}
	f1, f2 := parseFragment(t, frags[0]), parseFragment(t, frags[1])
	if f1.Moof.Mfhd.SequenceNumber != 1 || f2.Moof.Mfhd.SequenceNumber != 2 {
		t.Errorf("mfhd sequence numbers %d, %d", f1.Moof.Mfhd.SequenceNumber, f2.Moof.Mfhd.SequenceNumber)
	}
	if tfdt := f1.Moof.Traf.Tfdt.BaseMediaDecodeTime(); tfdt != uint64(d.Video[0].DTS) || tfdt == 0 {
		t.Errorf("first tfdt %d, want the source DTS %d", tfdt, d.Video[0].DTS)
	}
	s1 := fullSamples(t, f1)
	endOf1 := s1[len(s1)-1].DecodeTime + uint64(s1[len(s1)-1].Dur)
	if endOf1 != f2.Moof.Traf.Tfdt.BaseMediaDecodeTime() {
		t.Errorf("fragment 1 ends at %d, fragment 2 tfdt %d", endOf1, f2.Moof.Traf.Tfdt.BaseMediaDecodeTime())
	}
	// The last fragment had no end: its last sample gets the median frame duration.
	s2 := fullSamples(t, f2)
	if dur := s2[len(s2)-1].Dur; dur != 3000 {
		t.Errorf("last sample duration %d, want 3000 (one frame at 30 fps)", dur)
	}
	checkSamples(t, d.Video, append(s1, s2...))
	decodeClean(t, path)
}

// checkSamples checks sample data: AVCC with 4-byte lengths, the input's NAL units in order
// minus SPS, PPS and AUD, and sync flags on exactly the keyframes.
func checkSamples(t *testing.T, in []media.VideoFrame, out []mp4.FullSample) {
	t.Helper()
	if len(in) != len(out) {
		t.Fatalf("%d samples for %d frames", len(out), len(in))
	}
	dropped := 0
	for i, s := range out {
		var au h264.AVCC
		if err := au.Unmarshal(s.Data); err != nil {
			t.Fatalf("sample %d is not AVCC: %v", i, err)
		}
		var want [][]byte
		for _, n := range in[i].NALUs {
			switch h264.NALUType(n[0] & 0x1f) {
			case h264.NALUTypeSPS, h264.NALUTypePPS, h264.NALUTypeAccessUnitDelimiter:
				dropped++
			default:
				want = append(want, n)
			}
		}
		if len(au) != len(want) {
			t.Fatalf("sample %d: %d NAL units, want %d", i, len(au), len(want))
		}
		for j := range au {
			if !bytes.Equal(au[j], want[j]) {
				t.Fatalf("sample %d NAL unit %d differs", i, j)
			}
		}
		if sync := s.IsSync(); sync != in[i].Key {
			t.Errorf("sample %d: sync %v, Key %v (flags %08x)", i, sync, in[i].Key, s.Flags)
		}
		if pts := s.PresentationTime(); pts != in[i].PTS {
			t.Errorf("sample %d: presentation time %d, PTS %d", i, pts, in[i].PTS)
		}
	}
	if dropped == 0 {
		t.Error("x264 output had no in-band SPS/PPS to drop; the test proves less than it says")
	}
}

func TestAudioRoundTrip(t *testing.T) {
	d, err := Demux(mustSource(t))
	if err != nil {
		t.Fatal(err)
	}
	init, err := AudioInit(*d.AAC)
	if err != nil {
		t.Fatal(err)
	}
	// Split where the video's second GOP starts, as a chunk boundary would.
	split := 0
	for split < len(d.Audio) && d.Audio[split].PTS < d.Video[60].PTS {
		split++
	}
	origin := d.Audio[0].PTS
	frag1, err := AudioFragment(1, d.Audio[:split], *d.AAC, origin)
	if err != nil {
		t.Fatal(err)
	}
	frag2, err := AudioFragment(2, d.Audio[split:], *d.AAC, origin)
	if err != nil {
		t.Fatal(err)
	}
	path := writeFile(t, "audio.mp4", init, frag1, frag2)

	pk, tb := probePackets(t, path)
	if tb["audio"] != "1/48000" {
		t.Fatalf("audio time base %s, want 1/48000", tb["audio"])
	}
	got := pk["audio"]
	if len(got) != len(d.Audio) {
		t.Fatalf("ffprobe sees %d audio packets, %d went in", len(got), len(d.Audio))
	}
	for i, f := range d.Audio {
		// ffmpeg wrote the source with exact 1920-tick (1024-sample) steps, so the conversion is exact.
		want := f.PTS * 48000 / media.Timescale
		if got[i].PTS != want || got[i].DTS != want {
			t.Errorf("packet %d: PTS/DTS %d/%d, want %d", i, got[i].PTS, got[i].DTS, want)
		}
		// ffprobe 5.1 reports no duration for the first AAC packet of a fragmented MP4 that
		// does not start at 0 (ffmpeg's own -copyts fMP4 shows the same); the trun has it, and
		// the sample checks below read it there.
		if i > 0 && got[i].Duration != 1024 {
			t.Errorf("packet %d: duration %d, want 1024", i, got[i].Duration)
		}
	}
	if got[split-1].DTS+got[split-1].Duration != got[split].DTS {
		t.Errorf("fragment boundary: %d + %d != %d", got[split-1].DTS, got[split-1].Duration, got[split].DTS)
	}
	f1, f2 := parseFragment(t, frag1), parseFragment(t, frag2)
	if a, b := f1.Moof.Traf.Tfdt.BaseMediaDecodeTime(), f2.Moof.Traf.Tfdt.BaseMediaDecodeTime(); b != a+uint64(split*1024) {
		t.Errorf("tfdt %d then %d, want a difference of %d", a, b, split*1024)
	}
	for i, s := range append(fullSamples(t, f1), fullSamples(t, f2)...) {
		if !bytes.Equal(s.Data, d.Audio[i].Data) || s.Dur != 1024 || !s.IsSync() {
			t.Fatalf("audio sample %d: data differs, or duration %d, flags %08x", i, s.Dur, s.Flags)
		}
	}
	decodeClean(t, path)
}

// TestLargeTimeline shifts the session far in: tfdt needs 64 bits (and, past 26.5 h, more than
// MPEG-TS's 33), and must be kept, not reset to 0.
func TestLargeTimeline(t *testing.T) {
	src, err := Demux(mustSource(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, hours := range []int64{10, 30} {
		t.Run(fmt.Sprintf("%dh", hours), func(t *testing.T) {
			shift := hours * 3600 * media.Timescale
			d := *src
			d.Video = make([]media.VideoFrame, len(src.Video))
			for i, f := range src.Video {
				f.PTS += shift
				f.DTS += shift
				d.Video[i] = f
			}
			d.Audio = make([]media.AudioFrame, len(src.Audio))
			for i, f := range src.Audio {
				f.PTS += shift
				d.Audio[i] = f
			}
			init, frags, _ := videoSplit(t, &d)
			vpath := writeFile(t, "video.mp4", append([][]byte{init}, frags...)...)
			pk, _ := probePackets(t, vpath)
			if len(pk["video"]) != len(d.Video) {
				t.Fatalf("%d video packets, want %d", len(pk["video"]), len(d.Video))
			}
			for i, f := range d.Video {
				if p := pk["video"][i]; p.PTS != f.PTS || p.DTS != f.DTS {
					t.Fatalf("packet %d: PTS/DTS %d/%d, want %d/%d", i, p.PTS, p.DTS, f.PTS, f.DTS)
				}
			}
			tfdt := parseFragment(t, frags[0]).Moof.Traf.Tfdt
			if tfdt.BaseMediaDecodeTime() != uint64(d.Video[0].DTS) {
				t.Errorf("tfdt %d, want %d", tfdt.BaseMediaDecodeTime(), d.Video[0].DTS)
			}
			if tfdt.BaseMediaDecodeTime() >= 1<<32 && tfdt.Version != 1 {
				t.Errorf("tfdt version %d for a time >= 2^32", tfdt.Version)
			}
			decodeClean(t, vpath)

			ainit, err := AudioInit(*d.AAC)
			if err != nil {
				t.Fatal(err)
			}
			afrag, err := AudioFragment(7, d.Audio, *d.AAC, d.Audio[0].PTS)
			if err != nil {
				t.Fatal(err)
			}
			apath := writeFile(t, "audio.mp4", ainit, afrag)
			pk, _ = probePackets(t, apath)
			if want := d.Audio[0].PTS * 48000 / media.Timescale; pk["audio"][0].DTS != want {
				t.Errorf("audio starts at %d, want %d", pk["audio"][0].DTS, want)
			}
			decodeClean(t, apath)
		})
	}
}

// TestAudioGrid feeds timestamps rounded to whole milliseconds, as RTMP delivers them, and cuts
// the frames into fragments at every possible place: each fragment, made on its own, must start
// exactly where the previous one ended.
func TestAudioGrid(t *testing.T) {
	for _, tc := range []struct {
		asc      string
		rate, fl int
	}{
		{"1190", 48000, 1024}, {"1210", 44100, 1024}, {"1194", 48000, 960},
	} {
		t.Run(fmt.Sprintf("%d/%d", tc.rate, tc.fl), func(t *testing.T) {
			cfg := media.AACConfig{ASC: mustHex(t, tc.asc)}
			const startMs = 36_000_123 // ten hours in
			frames := make([]media.AudioFrame, 400)
			for i := range frames {
				exactMs := float64(startMs) + float64(i*tc.fl)*1000/float64(tc.rate)
				ms := int64(exactMs + 0.5)
				frames[i] = media.AudioFrame{PTS: ms * 90, Data: []byte{0x21, byte(i)}}
			}
			origin := frames[0].PTS
			for _, cut := range []int{1, 2, 7, 93, 94, 187, 250, 399} {
				a, err := AudioFragment(1, frames[:cut], cfg, origin)
				if err != nil {
					t.Fatal(err)
				}
				b, err := AudioFragment(2, frames[cut:], cfg, origin)
				if err != nil {
					t.Fatal(err)
				}
				ta := parseFragment(t, a).Moof.Traf.Tfdt.BaseMediaDecodeTime()
				tb := parseFragment(t, b).Moof.Traf.Tfdt.BaseMediaDecodeTime()
				if tb != ta+uint64(cut*tc.fl) {
					t.Errorf("cut at %d: tfdt %d then %d, want +%d", cut, ta, tb, cut*tc.fl)
				}
				if want := uint64(divRound(origin*int64(tc.rate), media.Timescale)); ta != want {
					t.Errorf("first fragment tfdt %d, want origin in rate %d", ta, want)
				}
			}
		})
	}
}

func TestVideoFragmentDurationsAndOffsets(t *testing.T) {
	idr := []byte{0x65, 0x88, 0x84}
	p := []byte{0x41, 0x9a, 0x02}
	aud := []byte{0x09, 0xf0}
	sps, pps := []byte{0x67, 0x4d, 0x40, 0x1f}, []byte{0x68, 0xeb}
	frames := []media.VideoFrame{
		{DTS: 1000, PTS: 997, Key: true, NALUs: [][]byte{aud, sps, pps, idr}}, // PTS before DTS
		{DTS: 4000, PTS: 10000, NALUs: [][]byte{aud, p}},
		{DTS: 7000, PTS: 4000, NALUs: [][]byte{p}},
		{DTS: 10003, PTS: 7000, NALUs: [][]byte{p}},
	}
	for _, tc := range []struct {
		name    string
		end     int64
		lastDur uint32
	}{
		{"end given", 13000, 2997},
		{"no end", 0, 3000},
		{"end before last DTS", 9000, 3000},
		{"end absurdly far", 10003 + 11*media.Timescale, 3000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seg, err := VideoFragment(42, frames, tc.end)
			if err != nil {
				t.Fatal(err)
			}
			frag := parseFragment(t, seg)
			if frag.Moof.Mfhd.SequenceNumber != 42 || frag.Moof.Traf.Tfdt.BaseMediaDecodeTime() != 1000 {
				t.Errorf("mfhd %d tfdt %d", frag.Moof.Mfhd.SequenceNumber, frag.Moof.Traf.Tfdt.BaseMediaDecodeTime())
			}
			if v := frag.Moof.Traf.Trun.Version; v != 1 {
				t.Errorf("trun version %d, want 1 (signed composition offsets)", v)
			}
			s := fullSamples(t, frag)
			wantDur := []uint32{3000, 3000, 3003, tc.lastDur}
			for i := range s {
				if s[i].Dur != wantDur[i] || s[i].PresentationTime() != frames[i].PTS || s[i].DecodeTime != uint64(frames[i].DTS) {
					t.Errorf("sample %d: dur %d pts %d dts %d, want %d %d %d", i, s[i].Dur,
						s[i].PresentationTime(), s[i].DecodeTime, wantDur[i], frames[i].PTS, frames[i].DTS)
				}
			}
			if s[0].CompositionTimeOffset != -3 {
				t.Errorf("first composition offset %d, want -3", s[0].CompositionTimeOffset)
			}
			if want := []byte{0, 0, 0, 3, 0x65, 0x88, 0x84}; !bytes.Equal(s[0].Data, want) {
				t.Errorf("keyframe sample % x, want % x (AUD, SPS, PPS dropped)", s[0].Data, want)
			}
			if !s[0].IsSync() || s[1].IsSync() || s[1].Flags != mp4.SetNonSyncSampleFlags(0) {
				t.Errorf("flags %08x %08x", s[0].Flags, s[1].Flags)
			}
		})
	}
	t.Run("single frame without end", func(t *testing.T) {
		seg, err := VideoFragment(1, frames[:1], 0)
		if err != nil {
			t.Fatal(err)
		}
		if d := fullSamples(t, parseFragment(t, seg))[0].Dur; d != 3000 {
			t.Errorf("duration %d, want the 30 fps default 3000", d)
		}
	})
}

func TestErrors(t *testing.T) {
	key := media.VideoFrame{DTS: 0, PTS: 0, Key: true, NALUs: [][]byte{{0x65, 0x88}}}
	delta := media.VideoFrame{DTS: 3000, PTS: 3000, NALUs: [][]byte{{0x41, 0x9a}}}
	aac := media.AACConfig{ASC: []byte{0x11, 0x90}}
	for _, tc := range []struct {
		name string
		err  error
		call func() error
	}{
		{"video: no frames", ErrInvalidInput, func() error { _, err := VideoFragment(1, nil, 0); return err }},
		{"video: delta first", ErrInvalidInput, func() error {
			_, err := VideoFragment(1, []media.VideoFrame{delta, key}, 0)
			return err
		}},
		{"video: DTS repeats", ErrInvalidInput, func() error {
			_, err := VideoFragment(1, []media.VideoFrame{key, key}, 0)
			return err
		}},
		{"video: DTS goes back", ErrInvalidInput, func() error {
			d2 := delta
			d2.DTS = -5
			_, err := VideoFragment(1, []media.VideoFrame{key, delta, d2}, 0)
			return err
		}},
		{"video: negative DTS", ErrInvalidInput, func() error {
			k := key
			k.DTS = -1
			_, err := VideoFragment(1, []media.VideoFrame{k}, 0)
			return err
		}},
		{"video: only parameter sets", ErrInvalidInput, func() error {
			k := key
			k.NALUs = [][]byte{{0x67, 0x4d}, {0x68, 0xeb}, {0x09, 0xf0}}
			_, err := VideoFragment(1, []media.VideoFrame{k}, 0)
			return err
		}},
		{"audio: no frames", ErrInvalidInput, func() error { _, err := AudioFragment(1, nil, aac, 0); return err }},
		{"audio: empty frame", ErrInvalidInput, func() error {
			_, err := AudioFragment(1, []media.AudioFrame{{PTS: 0}}, aac, 0)
			return err
		}},
		{"audio: bad ASC", ErrInvalidInput, func() error {
			_, err := AudioFragment(1, []media.AudioFrame{{Data: []byte{1}}}, media.AACConfig{ASC: []byte{0xff}}, 0)
			return err
		}},
		{"audio: before origin", ErrInvalidInput, func() error {
			_, err := AudioFragment(1, []media.AudioFrame{{PTS: 0, Data: []byte{1}}}, aac, 90000)
			return err
		}},
		{"audio init: bad ASC", ErrInvalidInput, func() error { _, err := AudioInit(media.AACConfig{}); return err }},
		{"video init: no SPS", ErrInvalidInput, func() error {
			_, err := VideoInit(media.H264Config{PPS: []byte{0x68, 0xeb}})
			return err
		}},
		{"video init: swapped", ErrInvalidInput, func() error {
			_, err := VideoInit(media.H264Config{SPS: []byte{0x68, 0xeb}, PPS: []byte{0x67, 0x4d}})
			return err
		}},
		{"video init: garbage SPS", ErrInvalidInput, func() error {
			_, err := VideoInit(media.H264Config{SPS: []byte{0x67, 0xff}, PPS: []byte{0x68, 0xeb}})
			return err
		}},
		{"demux: empty", ErrInvalidInput, func() error { _, err := Demux(nil); return err }},
		{"demux: not TS", ErrInvalidInput, func() error { _, err := Demux(bytes.Repeat([]byte("gopcast!"), 1000)); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			t.Log(err)
		})
	}
}

func TestDemuxUnsupported(t *testing.T) {
	needTools(t)
	for _, tc := range []struct {
		name  string
		args  []string
		err   error
		codec string
	}{
		{"MPEG-2 video", []string{"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "0.5", "-c:v", "mpeg2video"},
			ErrUnsupportedCodec, "MPEG-1/2 video"},
		{"MP2 audio", []string{"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine",
			"-t", "0.5", "-c:v", "libx264", "-c:a", "mp2"}, ErrUnsupportedCodec, "MPEG-1 audio"},
		{"audio only", []string{"-f", "lavfi", "-i", "sine", "-t", "0.5", "-c:a", "aac"},
			ErrInvalidInput, "no H.264 video"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, err := ffmpegTS(tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Demux(ts)
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.codec) {
				t.Fatalf("error %v, want %v naming %q", err, tc.err, tc.codec)
			}
		})
	}
}

// TestDemuxWrap starts the stream 2 s before the 33-bit clock wraps: timestamps keep counting up.
func TestDemuxWrap(t *testing.T) {
	needTools(t)
	start := float64(1<<33)/media.Timescale - 2
	ts, err := ffmpegTS("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine",
		"-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", "30", "-c:a", "aac",
		"-output_ts_offset", fmt.Sprintf("%.3f", start))
	if err != nil {
		t.Fatal(err)
	}
	d, err := Demux(ts)
	if err != nil {
		t.Fatal(err)
	}
	if d.Video[0].DTS >= 1<<33 || d.Video[len(d.Video)-1].DTS < 1<<33 {
		t.Fatalf("DTS from %d to %d: the test does not cross the wrap at %d", d.Video[0].DTS, d.Video[len(d.Video)-1].DTS, int64(1)<<33)
	}
	for i := 1; i < len(d.Video); i++ {
		if d.Video[i].DTS-d.Video[i-1].DTS != 3000 {
			t.Fatalf("DTS %d then %d", d.Video[i-1].DTS, d.Video[i].DTS)
		}
	}
	for i := 1; i < len(d.Audio); i++ {
		if step := d.Audio[i].PTS - d.Audio[i-1].PTS; step < 2000 || step > 2200 {
			t.Fatalf("audio PTS %d then %d", d.Audio[i-1].PTS, d.Audio[i].PTS)
		}
	}
	init, frags, _ := videoSplit(t, d)
	decodeClean(t, writeFile(t, "wrapped.mp4", append([][]byte{init}, frags...)...))
}

func FuzzDemux(f *testing.F) {
	if ts, err := sourceTS(); err == nil {
		f.Add(ts[:188*40])
	}
	f.Add([]byte{0x47, 0x40, 0x00, 0x10, 0x00})
	f.Fuzz(func(_ *testing.T, b []byte) {
		_, _ = Demux(b)
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

// FuzzInit feeds arbitrary configuration bytes (they come from a publisher's RTMP stream).
func FuzzInit(f *testing.F) {
	f.Add([]byte{0x67, 0x4d, 0x40, 0x1f, 0xec, 0xa0, 0x28, 0x02, 0xdd, 0x80, 0x88}, []byte{0x68, 0xeb, 0xe3, 0xcb, 0x20})
	f.Add([]byte{0x11, 0x90}, []byte{})
	f.Fuzz(func(_ *testing.T, a, b []byte) {
		_, _ = VideoInit(media.H264Config{SPS: a, PPS: b})
		_, _ = AudioInit(media.AACConfig{ASC: a})
	})
}

// TestInitSizes checks the sizes mp4ff's own SPS parser puts into tkhd and avc1 against
// mediacommon's (package codec), on SPSs that need cropping.
func TestInitSizes(t *testing.T) {
	pps := mustHex(t, "68ebe3cb20")
	for _, sps := range []string{
		"674d401feca02802dd8088000003000800000301e078c18cb0", // 1280x720
		"67640028acd940780227e5c04400000fa40003a9803c60c658", // 1920x1080 (1088 coded)
		"6742c015d901b1fe4f011000000300100000030320f162e480", // 426x240 (432 coded)
	} {
		b := mustHex(t, sps)
		init, err := VideoInit(media.H264Config{SPS: b, PPS: pps})
		if err != nil {
			t.Fatal(err)
		}
		f, err := mp4.DecodeFile(bytes.NewReader(init))
		if err != nil {
			t.Fatal(err)
		}
		w, h, _, err := codec.H264Info(b)
		if err != nil {
			t.Fatal(err)
		}
		trak := f.Init.Moov.Trak
		avc1 := trak.Mdia.Minf.Stbl.Stsd.AvcX
		if avc1 == nil || avc1.Type() != "avc1" || int(avc1.Width) != w || int(avc1.Height) != h ||
			int(trak.Tkhd.Width>>16) != w || int(trak.Tkhd.Height>>16) != h {
			t.Errorf("SPS %s: init says %dx%d (tkhd %dx%d), SPS %dx%d", sps[:8], avc1.Width, avc1.Height,
				trak.Tkhd.Width>>16, trak.Tkhd.Height>>16, w, h)
		}
		if trak.Tkhd.TrackID != 1 || trak.Mdia.Mdhd.Timescale != media.Timescale {
			t.Errorf("track %d timescale %d", trak.Tkhd.TrackID, trak.Mdia.Mdhd.Timescale)
		}
	}
	ainit, err := AudioInit(media.AACConfig{ASC: mustHex(t, "1208")}) // 44.1 kHz mono
	if err != nil {
		t.Fatal(err)
	}
	f, err := mp4.DecodeFile(bytes.NewReader(ainit))
	if err != nil {
		t.Fatal(err)
	}
	trak := f.Init.Moov.Trak
	mp4a := trak.Mdia.Minf.Stbl.Stsd.Mp4a
	if trak.Mdia.Mdhd.Timescale != 44100 || mp4a.ChannelCount != 1 || mp4a.SampleRate != 44100 ||
		!bytes.Equal(mp4a.Esds.DecConfigDescriptor.DecSpecificInfo.DecConfig, []byte{0x12, 0x08}) {
		t.Errorf("audio init: timescale %d, %d ch, %d Hz, ASC % x", trak.Mdia.Mdhd.Timescale, mp4a.ChannelCount,
			mp4a.SampleRate, mp4a.Esds.DecConfigDescriptor.DecSpecificInfo.DecConfig)
	}
}

// The Append forms write what the plain ones return, after dst's bytes, and the same into a
// reused buffer holding an earlier, larger fragment.
func TestAppendFragments(t *testing.T) {
	d, err := Demux(mustSource(t))
	if err != nil {
		t.Fatal(err)
	}
	end := d.Video[len(d.Video)-1].DTS + 3000
	want, err := VideoFragment(1, d.Video, end)
	if err != nil {
		t.Fatal(err)
	}
	got, err := AppendVideoFragment([]byte("prefix"), 1, d.Video, end)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append([]byte("prefix"), want...)) {
		t.Error("AppendVideoFragment after a prefix differs from VideoFragment")
	}
	small, err := VideoFragment(2, d.Video[:60], d.Video[60].DTS)
	if err != nil {
		t.Fatal(err)
	}
	reused, err := AppendVideoFragment(want[:0], 2, d.Video[:60], d.Video[60].DTS)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(reused, small) || &reused[0] != &want[0] {
		t.Error("AppendVideoFragment into a reused, large enough buffer: different bytes or new memory")
	}

	origin := d.Audio[0].PTS
	wantA, err := AudioFragment(1, d.Audio, *d.AAC, origin)
	if err != nil {
		t.Fatal(err)
	}
	gotA, err := AppendAudioFragment([]byte("prefix"), 1, d.Audio, *d.AAC, origin)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gotA, append([]byte("prefix"), wantA...)) {
		t.Error("AppendAudioFragment after a prefix differs from AudioFragment")
	}
}
