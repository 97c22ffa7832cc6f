package cmaf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/Eyevinn/mp4ff/mp4"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/gopcast/gopcast/pkg/media"
)

// maxFrameDuration bounds the duration VideoFragment accepts for the last frame from end. A
// longer one (a clock jump, a wrong end) is treated as unknown rather than stretching one frame
// over the gap; an encoder that really paused for this long has a discontinuity anyway.
const maxFrameDuration = 10 * media.Timescale

// defaultFrameDuration is the last frame's duration when a fragment has a single frame and no
// usable end: one frame at 30 fps.
const defaultFrameDuration = media.Timescale / 30

// VideoFragment returns one CMAF media segment (styp+moof+mdat holding one fragment) of the
// video track that VideoInit describes, with mfhd sequence number seq.
//
// frames are in decode order and start with a keyframe. The fragment's tfdt is frames[0].DTS
// unchanged: it is the session timeline, which lets segments made by different workers line up.
// Each sample lasts until the next frame's DTS; the last one lasts until end, the decode time at
// which the next segment starts (when end is not after the last DTS, or implausibly far, the
// median duration of the other frames is used instead). Each sample's composition offset is
// PTS − DTS, signed, so a PTS before its DTS is kept as it is. Samples are written in AVCC form
// with 4-byte lengths, without access unit delimiters, SPS or PPS: the avc1 sample entry carries
// the parameter sets.
func VideoFragment(seq uint32, frames []media.VideoFrame, end int64) ([]byte, error) {
	return AppendVideoFragment(nil, seq, frames, end)
}

// AppendVideoFragment is VideoFragment appending the segment to dst: a caller that reuses its
// buffers saves allocating (and zeroing) a segment's worth of memory per fragment.
func AppendVideoFragment(dst []byte, seq uint32, frames []media.VideoFrame, end int64) ([]byte, error) {
	if len(frames) == 0 {
		return nil, fmt.Errorf("%w: video fragment %d has no frames", ErrInvalidInput, seq)
	}
	if !frames[0].Key {
		return nil, fmt.Errorf("%w: video fragment %d starts with a frame that is not a keyframe (DTS %d)",
			ErrInvalidInput, seq, frames[0].DTS)
	}
	if frames[0].DTS < 0 {
		return nil, fmt.Errorf("%w: video fragment %d starts at negative DTS %d", ErrInvalidInput, seq, frames[0].DTS)
	}

	durs := make([]int64, len(frames))
	for i := range len(frames) - 1 {
		d := frames[i+1].DTS - frames[i].DTS
		if d <= 0 || d > math.MaxUint32 {
			return nil, fmt.Errorf("%w: video fragment %d: DTS goes from %d to %d at frame %d; decode times must increase",
				ErrInvalidInput, seq, frames[i].DTS, frames[i+1].DTS, i+1)
		}
		durs[i] = d
	}
	last := len(frames) - 1
	durs[last] = end - frames[last].DTS
	if durs[last] <= 0 || durs[last] > maxFrameDuration {
		durs[last] = medianDuration(durs[:last])
	}

	frag, err := mp4.CreateFragment(seq, videoTrackID)
	if err != nil {
		return nil, fmt.Errorf("create fragment: %w", err)
	}
	// The samples are written once, straight into the segment after its moof and mdat header
	// (a lazy mdat), rather than appended to the mdat sample by sample (its doublings were 15 %
	// of a passthrough worker's CPU) or gathered in a buffer of their own and copied.
	total := 0
	for i, f := range frames {
		size, err := avccSize(f.NALUs)
		if err != nil {
			return nil, fmt.Errorf("%w: video fragment %d frame %d (DTS %d): %v", ErrInvalidInput, seq, i, f.DTS, err)
		}
		total += size
		cto := f.PTS - f.DTS
		if cto < math.MinInt32 || cto > math.MaxInt32 {
			return nil, fmt.Errorf("%w: video fragment %d frame %d: PTS %d is too far from DTS %d",
				ErrInvalidInput, seq, i, f.PTS, f.DTS)
		}
		flags := mp4.SyncSampleFlags
		if !f.Key {
			flags = mp4.SetNonSyncSampleFlags(0) // non-sync, depends on other samples
		}
		frag.AddFullSample(mp4.FullSample{
			// mp4ff's trun is version 1, so CompositionTimeOffset is written signed.
			Sample:     mp4.NewSample(flags, uint32(durs[i]), uint32(size), int32(cto)),
			DecodeTime: uint64(f.DTS),
		})
	}
	frag.Mdat.SetLazyDataSize(uint64(total))
	out, err := encodeFragment(dst, frag)
	if err != nil {
		return nil, err
	}
	for _, f := range frames {
		out = appendAVCC(out, f.NALUs)
	}
	return out, nil
}

// AudioFragment returns one CMAF media segment of the AAC track that AudioInit(cfg) describes,
// with mfhd sequence number seq. frames are consecutive AAC access units; each sample lasts one
// frame length (1024 samples, 960 when the ASC says so) in the track timescale, the sampling rate.
//
// origin is the PTS (90 kHz) of the session's first audio frame. The fragment's tfdt is origin in
// the track timescale plus a whole number of frames:
//
//	tfdt = round(origin × rate / 90000) + round((frames[0].PTS − origin) × rate / 90000 / N) × N
//
// with N the frame length. RTMP timestamps are whole milliseconds, so the PTS of a frame is off
// by up to half a millisecond from where the audio really is (21.33 ms frames at 48 kHz). Chunks
// are packaged by different workers that cannot see each other's output; if each converted its
// first PTS naively, neighbouring fragments would overlap or leave gaps of a few samples, which
// players hear as clicks and which accumulate into A/V drift on some players. AAC frames are
// contiguous by construction, so the true timeline is origin + k×N: snapping to that grid makes
// every fragment, from whichever worker, start exactly where the previous one ended.
func AudioFragment(seq uint32, frames []media.AudioFrame, cfg media.AACConfig, origin int64) ([]byte, error) {
	return AppendAudioFragment(nil, seq, frames, cfg, origin)
}

// AppendAudioFragment is AudioFragment appending the segment to dst.
func AppendAudioFragment(dst []byte, seq uint32, frames []media.AudioFrame, cfg media.AACConfig, origin int64) ([]byte, error) {
	if len(frames) == 0 {
		return nil, fmt.Errorf("%w: audio fragment %d has no frames", ErrInvalidInput, seq)
	}
	p, err := parseAAC(cfg.ASC)
	if err != nil {
		return nil, err
	}
	tfdt := audioDecodeTime(frames[0].PTS, origin, p.rate, p.frameLen)
	if tfdt < 0 {
		return nil, fmt.Errorf("%w: audio fragment %d starts at negative time (PTS %d, origin %d)",
			ErrInvalidInput, seq, frames[0].PTS, origin)
	}
	frag, err := mp4.CreateFragment(seq, audioTrackID)
	if err != nil {
		return nil, fmt.Errorf("create fragment: %w", err)
	}
	for i, f := range frames {
		if len(f.Data) == 0 {
			return nil, fmt.Errorf("%w: audio fragment %d frame %d is empty", ErrInvalidInput, seq, i)
		}
		frag.AddFullSample(mp4.FullSample{
			Sample:     mp4.NewSample(mp4.SyncSampleFlags, uint32(p.frameLen), uint32(len(f.Data)), 0),
			DecodeTime: uint64(tfdt) + uint64(i*p.frameLen),
			Data:       f.Data,
		})
	}
	return encodeFragment(dst, frag)
}

// audioDecodeTime is the tfdt AudioFragment gives a fragment whose first frame has PTS pts, in a
// track of the given rate and frame length whose session's first audio frame had PTS origin (all
// PTS in media.Timescale units). See AudioFragment for why it snaps to the frame grid.
func audioDecodeTime(pts, origin int64, rate, frameLen int) int64 {
	r, n := int64(rate), int64(frameLen)
	originInRate := divRound(origin*r, media.Timescale)
	frames := divRound((pts-origin)*r, media.Timescale*n)
	return originInRate + frames*n
}

// divRound is a/b rounded to the nearest integer, halves away from zero (b > 0).
func divRound(a, b int64) int64 {
	if a >= 0 {
		return (a + b/2) / b
	}
	return -((-a + b/2) / b)
}

func medianDuration(durs []int64) int64 {
	if len(durs) == 0 {
		return defaultFrameDuration
	}
	s := slices.Clone(durs)
	slices.Sort(s)
	return s[len(s)/2]
}

// appendAVCC appends an access unit to dst as length-prefixed NAL units (4-byte lengths),
// leaving out what must not be in an avc1 sample: parameter sets (they are in the sample
// entry) and access unit delimiters.
func appendAVCC(dst []byte, nalus [][]byte) []byte {
	for _, n := range nalus {
		if keptInSample(n) {
			dst = binary.BigEndian.AppendUint32(dst, uint32(len(n)))
			dst = append(dst, n...)
		}
	}
	return dst
}

// avccSize is the size of the sample appendAVCC writes for an access unit, which must keep at
// least one NAL unit, none over 4 GiB.
func avccSize(nalus [][]byte) (int, error) {
	size, kept := 0, 0
	for _, n := range nalus {
		if !keptInSample(n) {
			continue
		}
		if uint64(len(n)) > math.MaxUint32 {
			return 0, fmt.Errorf("NAL unit of %d bytes", len(n))
		}
		size += 4 + len(n)
		kept++
	}
	if kept == 0 {
		return 0, fmt.Errorf("access unit has no NAL units besides parameter sets and delimiters")
	}
	return size, nil
}

// keptInSample reports whether a NAL unit goes into a sample: access unit delimiters, SPS and
// PPS do not (the sample entry carries the parameter sets).
func keptInSample(n []byte) bool {
	if len(n) == 0 {
		return false
	}
	switch h264.NALUType(n[0] & 0x1f) {
	case h264.NALUTypeAccessUnitDelimiter, h264.NALUTypeSPS, h264.NALUTypePPS:
		return false
	}
	return true
}

func encodeFragment(dst []byte, frag *mp4.Fragment) ([]byte, error) {
	styp := mp4.CreateStyp()
	buf := bytes.NewBuffer(dst)
	buf.Grow(int(styp.Size() + frag.Size()))
	if err := styp.Encode(buf); err != nil {
		return nil, fmt.Errorf("encode styp: %w", err)
	}
	if err := frag.Encode(buf); err != nil {
		return nil, fmt.Errorf("encode fragment: %w", err)
	}
	return buf.Bytes(), nil
}

// AudioTiming is where AudioFragment places frames: the fragment's decode time (tfdt) and
// duration in the track's timescale, which is the sample rate. DASH timelines and playlists
// use it so they describe exactly what the fragment holds.
func AudioTiming(frames []media.AudioFrame, cfg media.AACConfig, origin int64) (start, duration int64, timescale uint32, err error) {
	if len(frames) == 0 {
		return 0, 0, 0, fmt.Errorf("%w: no audio frames", ErrInvalidInput)
	}
	p, err := parseAAC(cfg.ASC)
	if err != nil {
		return 0, 0, 0, err
	}
	start = audioDecodeTime(frames[0].PTS, origin, p.rate, p.frameLen)
	return start, int64(len(frames) * p.frameLen), uint32(p.rate), nil
}
