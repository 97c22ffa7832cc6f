// Package codec turns codec configuration bytes (an H.264 SPS, an AAC AudioSpecificConfig) into
// the facts other packages advertise: RFC 6381 codec strings for HLS CODECS and DASH @codecs,
// picture size and frame rate for RESOLUTION and FRAME-RATE, sample rate and channel count.
// The values come from the real bitstream, never from configuration, so what a playlist
// promises is what the segments hold. It is pure: bytes in, values out.
package codec

import (
	"errors"
	"fmt"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
)

// ErrInvalid is wrapped by every error about configuration bytes that do not parse or describe
// something this project does not handle (for example AAC Main profile, or an AAC channel layout
// given by a program config element). A job that meets it should not be retried.
var ErrInvalid = errors.New("invalid codec configuration")

// H264Codec returns the RFC 6381 codec string of an H.264 stream, "avc1.PPCCLL" in hexadecimal:
// profile_idc, the constraint-flags byte and level_idc, read from sps (one SPS NAL unit, header
// byte included, without start code or length prefix).
func H264Codec(sps []byte) (string, error) {
	if _, err := parseSPS(sps); err != nil {
		return "", err
	}
	// Bytes 1..3 after the NAL header are profile_idc, constraint_set0..5 flags plus
	// reserved_zero_2bits, and level_idc. RFC 6381 copies them verbatim (reserved bits included),
	// so they are taken from the bytes rather than rebuilt from parsed flags. An emulation
	// prevention byte cannot occur here: it needs two zero bytes first, and profile_idc is never 0.
	return fmt.Sprintf("avc1.%02X%02X%02X", sps[1], sps[2], sps[3]), nil
}

// H264Info returns the display size of the pictures an SPS describes (cropping applied) and the
// frame rate from its VUI timing information, or 0 when the SPS carries none.
func H264Info(sps []byte) (width, height int, fps float64, err error) {
	s, err := parseSPS(sps)
	if err != nil {
		return 0, 0, 0, err
	}
	width, height = s.Width(), s.Height()
	if width <= 0 || height <= 0 {
		return 0, 0, 0, fmt.Errorf("%w: SPS gives a %dx%d picture", ErrInvalid, width, height)
	}
	// time_scale / (2 × num_units_in_tick): a frame is two field ticks. A zero tick would make
	// mediacommon divide by zero, and means "unknown" as much as a missing VUI does.
	if s.VUI != nil && s.VUI.TimingInfo != nil && s.VUI.TimingInfo.NumUnitsInTick != 0 {
		fps = s.FPS()
	}
	return width, height, fps, nil
}

// AACCodec returns the RFC 6381 codec string of an AAC stream, "mp4a.40.N" with N the audio
// object type that asc (a marshaled AudioSpecificConfig) signals: 2 for AAC-LC, 5 for HE-AAC
// (SBR) and 29 for HE-AAC v2 (PS) when signalled explicitly.
func AACCodec(asc []byte) (string, error) {
	c, err := parseASC(asc)
	if err != nil {
		return "", err
	}
	aot := c.Type
	if c.ExtensionType != 0 {
		// mediacommon reports the core type (AAC-LC) in Type and the signalled SBR/PS type in
		// ExtensionType; the codec string names what the ASC signals.
		aot = c.ExtensionType
	}
	return fmt.Sprintf("mp4a.40.%d", aot), nil
}

// AACInfo returns the sampling rate of the AAC core (the rate whose 1024-sample frames the
// access units are; HE-AAC decoders output twice that) and the number of output channels.
func AACInfo(asc []byte) (sampleRate, channels int, err error) {
	c, err := parseASC(asc)
	if err != nil {
		return 0, 0, err
	}
	switch {
	case c.ChannelConfig >= 1 && c.ChannelConfig <= 6:
		channels = int(c.ChannelConfig)
	case c.ChannelConfig == 7:
		channels = 8
	default:
		// 0: the layout is in a program config element that mediacommon does not read.
		return 0, 0, fmt.Errorf("%w: AAC channel configuration %d is not supported", ErrInvalid, c.ChannelConfig)
	}
	if c.ExtensionType == mpeg4audio.ObjectTypePS {
		// Parametric stereo carries one coded channel that decodes to two.
		channels = 2
	}
	return c.SampleRate, channels, nil
}

func parseSPS(sps []byte) (*h264.SPS, error) {
	if len(sps) < 4 {
		return nil, fmt.Errorf("%w: SPS of %d bytes is too short", ErrInvalid, len(sps))
	}
	var s h264.SPS
	if err := s.Unmarshal(sps); err != nil {
		return nil, fmt.Errorf("%w: H.264 SPS: %v", ErrInvalid, err)
	}
	return &s, nil
}

func parseASC(asc []byte) (*mpeg4audio.AudioSpecificConfig, error) {
	if len(asc) < 2 {
		return nil, fmt.Errorf("%w: AudioSpecificConfig of %d bytes is too short", ErrInvalid, len(asc))
	}
	var c mpeg4audio.AudioSpecificConfig
	if err := c.Unmarshal(asc); err != nil {
		return nil, fmt.Errorf("%w: AAC AudioSpecificConfig: %v", ErrInvalid, err)
	}
	return &c, nil
}
