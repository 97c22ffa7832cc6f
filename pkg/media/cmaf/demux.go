package cmaf

import (
	"fmt"
	"strings"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	mcmpegts "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"

	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/mpegts"
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
	streams, packets, err := readTS(ts)
	if err != nil {
		return nil, fmt.Errorf("%w: MPEG-TS: %v", ErrInvalidInput, err)
	}

	var video, audio *tsStream
	var otherVideo, otherAudio []string
	for _, st := range streams {
		switch {
		case st.Type == mpegts.StreamTypeH264:
			if video == nil {
				video = st
			}
		case st.Type == mpegts.StreamTypeAAC:
			if audio == nil {
				audio = st
			}
		default:
			name, isVideo, known := codecName(st)
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
		times   timeline
		sps     []byte
		pps     []byte
		aacRate int
	)
	// Anything that does not decode is an error: a chunk comes from our own ingest or ffmpeg,
	// so it means a corrupt file, and passing on fewer frames than were sent would only move
	// the damage somewhere harder to see.
	for i, p := range packets {
		switch p.stream {
		case video:
			var au h264.AnnexB
			if err := au.Unmarshal(p.data); err != nil {
				return nil, fmt.Errorf("%w: MPEG-TS: H.264 PES %d: %v", ErrInvalidInput, i, err)
			}
			if au[0][0]&0x1f == byte(h264.NALUTypeAccessUnitDelimiter) {
				au = au[1:]
			}
			if len(au) == 0 {
				return nil, fmt.Errorf("%w: MPEG-TS: H.264 PES %d: empty access unit", ErrInvalidInput, i)
			}
			// The NAL units alias the PES's own buffer, which nothing else holds; capped, so
			// an append to one cannot run into the next.
			for k, n := range au {
				au[k] = n[:len(n):len(n)]
			}
			f := media.VideoFrame{PTS: times.decode(p.pts), DTS: times.decode(p.dts), NALUs: au}
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
		case audio:
			if p.pts != p.dts {
				return nil, fmt.Errorf("%w: MPEG-TS: AAC PES %d: PTS is not DTS", ErrInvalidInput, i)
			}
			var pkts mpeg4audio.ADTSPackets
			if err := pkts.Unmarshal(p.data); err != nil {
				return nil, fmt.Errorf("%w: MPEG-TS: invalid ADTS in PES %d: %v", ErrInvalidInput, i, err)
			}
			if out.AAC == nil {
				conf := mpeg4audio.AudioSpecificConfig{Type: pkts[0].Type, SampleRate: pkts[0].SampleRate,
					ChannelConfig: pkts[0].ChannelConfig, ChannelCount: pkts[0].ChannelCount} //nolint:staticcheck
				asc, err := conf.Marshal()
				if err != nil {
					return nil, fmt.Errorf("%w: AAC configuration from ADTS: %v", ErrInvalidInput, err)
				}
				out.AAC = &media.AACConfig{ASC: asc}
				aacRate = conf.SampleRate
			}
			pts := times.decode(p.pts)
			// A PES may hold several ADTS frames but has one PTS, that of the first.
			for k, pkt := range pkts {
				off := divRound(int64(k)*mpeg4audio.SamplesPerAccessUnit*media.Timescale, int64(aacRate))
				au := pkt.AU[:len(pkt.AU):len(pkt.AU)]
				out.Audio = append(out.Audio, media.AudioFrame{PTS: pts + off, Data: au})
			}
		}
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
// relative timing is kept; mediacommon's TimeDecoder counts from 0 at its first input, so
// that first value is added back to return the file's own numbers.
type timeline struct {
	dec     mcmpegts.TimeDecoder
	started bool
	first   int64
}

func (t *timeline) decode(ts int64) int64 {
	if !t.started {
		t.started, t.first = true, ts
	}
	return t.first + t.dec.Decode(ts)
}

// codecName names a stream type Demux does not take, for error messages; known is false for
// streams that are neither audio nor video.
func codecName(st *tsStream) (name string, isVideo, known bool) {
	switch st.Type {
	case mpegts.StreamTypeH265:
		return "H.265/HEVC", true, true
	case mpegts.StreamTypeMPEG4Video:
		return "MPEG-4 Part 2 video", true, true
	case mpegts.StreamTypeMPEG1Video, mpegts.StreamTypeMPEG2Video:
		return "MPEG-1/2 video", true, true
	case mpegts.StreamTypeAACLATM:
		return "AAC in LATM", false, true
	case mpegts.StreamTypeMPEG1Audio, mpegts.StreamTypeMPEG2Audio:
		return "MPEG-1 audio (MP2/MP3)", false, true
	case mpegts.StreamTypeAC3:
		return "AC-3", false, true
	case mpegts.StreamTypeEAC3:
		return "E-AC-3", false, true
	case mpegts.StreamTypePrivateData:
		switch {
		case hasRegistration(st.Descriptors, "Opus"):
			return "Opus", false, true
		case hasDescriptor(st.Descriptors, 0x6a) || hasRegistration(st.Descriptors, "AC-3"):
			return "AC-3", false, true
		case hasDescriptor(st.Descriptors, 0x7a) || hasRegistration(st.Descriptors, "EAC3"):
			return "E-AC-3", false, true
		}
	}
	return "", false, false
}
