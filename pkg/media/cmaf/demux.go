package cmaf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/gopcast/gopcast/pkg/media"
)

// Demuxed is the content of an MPEG-TS: the H.264 access units and AAC frames in file order,
// with their codec configuration. Audio and AAC are empty when the stream has no audio.
type Demuxed struct {
	Video []media.VideoFrame
	Audio []media.AudioFrame
	H264  *media.H264Config
	AAC   *media.AACConfig
}

// Demux reads an MPEG-TS holding one H.264 video stream and at most one AAC (ADTS) audio stream,
// as ffmpeg writes them, and returns their frames.
//
// Timestamps are the ones in the file (33-bit, 90 kHz), except that a stream crossing the
// 2^33 wrap keeps counting upwards instead of jumping back to 0. The H.264 configuration is the
// first SPS and PPS in the stream; a frame is Key when its access unit holds an IDR slice. A
// transport stream whose video is not H.264, or whose only audio is not AAC, is refused with
// ErrUnsupportedCodec and the codec's name; a damaged one with ErrInvalidInput.
func Demux(ts []byte) (*Demuxed, error) {
	r := &mpegts.Reader{R: bytes.NewReader(ts)}
	if err := r.Initialize(); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: MPEG-TS: no program map table, or a declared stream without data", ErrInvalidInput)
		}
		return nil, fmt.Errorf("%w: MPEG-TS: %v", ErrInvalidInput, err)
	}

	var video, audio *mpegts.Track
	var otherVideo, otherAudio []string
	for _, tr := range r.Tracks() {
		switch tr.Codec.(type) {
		case *codecs.H264:
			if video == nil {
				video = tr
			}
		case *codecs.MPEG4Audio:
			if audio == nil {
				audio = tr
			}
		default:
			name, isVideo, known := codecName(tr.Codec)
			switch {
			case !known: // data, subtitles, unknown stream types: not ours to package
			case isVideo:
				otherVideo = append(otherVideo, name)
			default:
				otherAudio = append(otherAudio, name)
			}
		}
	}
	if video == nil {
		if len(otherVideo) > 0 {
			return nil, fmt.Errorf("%w: video codec %s (only H.264 is supported)", ErrUnsupportedCodec, strings.Join(otherVideo, ", "))
		}
		return nil, fmt.Errorf("%w: MPEG-TS has no H.264 video stream", ErrInvalidInput)
	}
	if audio == nil && len(otherAudio) > 0 {
		return nil, fmt.Errorf("%w: audio codec %s (only AAC is supported)", ErrUnsupportedCodec, strings.Join(otherAudio, ", "))
	}

	var (
		out     Demuxed
		decErr  error
		times   timeline
		sps     []byte
		pps     []byte
		aacRate int
	)
	r.OnDecodeError(func(err error) {
		if decErr == nil {
			decErr = err
		}
	})
	r.OnDataH264(video, func(pts, dts int64, au [][]byte) error {
		f := media.VideoFrame{PTS: times.decode(pts), DTS: times.decode(dts), NALUs: copyNALUs(au)}
		for _, n := range f.NALUs {
			switch h264.NALUType(n[0] & 0x1f) {
			case h264.NALUTypeIDR:
				f.Key = true
			case h264.NALUTypeSPS:
				if sps == nil {
					sps = n
				}
			case h264.NALUTypePPS:
				if pps == nil {
					pps = n
				}
			}
		}
		out.Video = append(out.Video, f)
		return nil
	})
	if audio != nil {
		conf := audio.Codec.(*codecs.MPEG4Audio).Config
		asc, err := conf.Marshal()
		if err != nil {
			return nil, fmt.Errorf("%w: AAC configuration from ADTS: %v", ErrInvalidInput, err)
		}
		out.AAC = &media.AACConfig{ASC: asc}
		aacRate = conf.SampleRate
		r.OnDataMPEG4Audio(audio, func(pts int64, aus [][]byte) error {
			pts = times.decode(pts)
			// A PES may hold several ADTS frames but has one PTS, that of the first.
			for i, au := range aus {
				off := divRound(int64(i)*mpeg4audio.SamplesPerAccessUnit*media.Timescale, int64(aacRate))
				out.Audio = append(out.Audio, media.AudioFrame{PTS: pts + off, Data: bytes.Clone(au)})
			}
			return nil
		})
	}

	for {
		err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: MPEG-TS: %v", ErrInvalidInput, err)
		}
	}
	// mediacommon skips what it cannot decode and reports it here. A chunk comes from our own
	// ffmpeg, so anything skipped means a corrupt file; passing on fewer frames than were sent
	// would only move the damage somewhere harder to see.
	if decErr != nil {
		return nil, fmt.Errorf("%w: MPEG-TS: %v", ErrInvalidInput, decErr)
	}
	if len(out.Video) == 0 {
		return nil, fmt.Errorf("%w: MPEG-TS has no video frames", ErrInvalidInput)
	}
	if sps == nil || pps == nil {
		return nil, fmt.Errorf("%w: H.264 stream carries no SPS/PPS", ErrInvalidInput)
	}
	out.H264 = &media.H264Config{SPS: sps, PPS: pps}
	return &out, nil
}

// timeline unwraps the 33-bit MPEG-TS clock. One decoder serves every stream so that their
// relative timing is kept; mpegts.TimeDecoder counts from 0 at its first input, so that first
// value is added back to return the file's own numbers.
type timeline struct {
	dec     mpegts.TimeDecoder
	started bool
	first   int64
}

func (t *timeline) decode(ts int64) int64 {
	if !t.started {
		t.started, t.first = true, ts
	}
	return t.first + t.dec.Decode(ts)
}

// copyNALUs copies an access unit into one allocation, so frames do not alias demuxer buffers.
func copyNALUs(au [][]byte) [][]byte {
	size := 0
	for _, n := range au {
		size += len(n)
	}
	buf := make([]byte, 0, size)
	out := make([][]byte, 0, len(au))
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		start := len(buf)
		buf = append(buf, n...)
		out = append(out, buf[start:len(buf):len(buf)])
	}
	return out
}

// codecName names an MPEG-TS codec for error messages; known is false for streams that are
// neither audio nor video.
func codecName(c codecs.Codec) (name string, isVideo, known bool) {
	switch c.(type) {
	case *codecs.H265:
		return "H.265/HEVC", true, true
	case *codecs.MPEG4Video:
		return "MPEG-4 Part 2 video", true, true
	case *codecs.MPEG1Video:
		return "MPEG-1/2 video", true, true
	case *codecs.MPEG4AudioLATM:
		return "AAC in LATM", false, true
	case *codecs.MPEG1Audio:
		return "MPEG-1 audio (MP2/MP3)", false, true
	case *codecs.AC3:
		return "AC-3", false, true
	case *codecs.EAC3:
		return "E-AC-3", false, true
	case *codecs.Opus:
		return "Opus", false, true
	}
	return "", false, false
}
