// Package cmaf turns media.VideoFrame and media.AudioFrame values into CMAF: one init segment
// (ftyp+moov) and a sequence of media segments (styp+moof+mdat, one fragment each) per track,
// one track per file, as HLS and DASH both fetch them. It also reads the MPEG-TS that ffmpeg
// writes back into frames (Demux).
//
// Fragments carry the session timeline in tfdt, so segments produced independently by different
// workers concatenate into one continuous track. Boxes are built with github.com/Eyevinn/mp4ff;
// MPEG-TS is read with mediacommon. It is pure: bytes in, values out.
package cmaf

import (
	"errors"
	"fmt"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/gopcast/gopcast/pkg/media/codec"
)

// Errors wrapped by this package. Both mean the input will never work (a worker should not retry).
var (
	// ErrInvalidInput: frames or bytes that break the rules of the format or of this package
	// (no frames, no keyframe first, decode times going backwards, a corrupt transport stream).
	ErrInvalidInput = errors.New("invalid media input")
	// ErrUnsupportedCodec: a codec this project does not package (the message names it).
	ErrUnsupportedCodec = errors.New("unsupported codec")
)

// videoTrackID and audioTrackID are the track IDs of the single track in every init segment
// and fragment. CMAF puts one track in each file, so both are 1.
const (
	videoTrackID = 1
	audioTrackID = 1
)

// aacParams is what packaging needs from an AudioSpecificConfig.
type aacParams struct {
	rate     int // track timescale: the AAC core sampling rate
	frameLen int // samples per access unit: 1024, or 960 when the ASC says so
	channels int
}

func parseAAC(asc []byte) (aacParams, error) {
	rate, channels, err := codec.AACInfo(asc)
	if err != nil {
		return aacParams{}, fmt.Errorf("%w: %w", ErrInvalidInput, err)
	}
	var c mpeg4audio.AudioSpecificConfig
	if err := c.Unmarshal(asc); err != nil { // parsed fine just above; kept for FrameLengthFlag
		return aacParams{}, fmt.Errorf("%w: AAC AudioSpecificConfig: %v", ErrInvalidInput, err)
	}
	p := aacParams{rate: rate, frameLen: mpeg4audio.SamplesPerAccessUnit, channels: channels}
	if c.FrameLengthFlag {
		p.frameLen = 960
	}
	return p, nil
}
