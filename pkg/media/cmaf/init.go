package cmaf

import (
	"bytes"
	"fmt"

	"github.com/Eyevinn/mp4ff/mp4"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/gopcast/gopcast/pkg/media"
)

// VideoInit returns the CMAF init segment (ftyp+moov) of an H.264 track: track ID 1, timescale
// media.Timescale (90 kHz, so fragment times are the session's timestamps unchanged), an avc1
// sample entry whose avcC holds cfg's SPS and PPS, and the picture size read from the SPS.
func VideoInit(cfg media.H264Config) ([]byte, error) {
	if err := checkNALU(cfg.SPS, h264.NALUTypeSPS); err != nil {
		return nil, err
	}
	if err := checkNALU(cfg.PPS, h264.NALUTypePPS); err != nil {
		return nil, err
	}
	init := mp4.CreateEmptyInit()
	trak := init.AddEmptyTrack(media.Timescale, "video", "und")
	// avc1 (not avc3): parameter sets live in the sample entry only, which is why fragments
	// drop in-band SPS/PPS. Safari and the CMAF profiles expect avc1.
	if err := trak.SetAVCDescriptor("avc1", [][]byte{cfg.SPS}, [][]byte{cfg.PPS}, true); err != nil {
		return nil, fmt.Errorf("%w: avc1 sample entry: %v", ErrInvalidInput, err)
	}
	return encode(init)
}

// AudioInit returns the CMAF init segment of an AAC track: track ID 1, timescale = the sampling
// rate in cfg's AudioSpecificConfig (so each access unit lasts exactly 1024 ticks), and an mp4a
// sample entry whose esds carries cfg.ASC byte for byte.
func AudioInit(cfg media.AACConfig) ([]byte, error) {
	p, err := parseAAC(cfg.ASC)
	if err != nil {
		return nil, err
	}
	if p.rate > 0xffff {
		// AudioSampleEntry v0 has a 16.16 sample-rate field.
		return nil, fmt.Errorf("%w: AAC at %d Hz does not fit an mp4a sample entry", ErrUnsupportedCodec, p.rate)
	}
	init := mp4.CreateEmptyInit()
	trak := init.AddEmptyTrack(uint32(p.rate), "audio", "und")
	// Not trak.SetAACDescriptor: it re-creates the ASC from an object type and a rate, always
	// stereo (mp4ff v0.56.0), which would misdescribe mono, 960-sample or PCE streams. The
	// encoder's own ASC goes into the esds instead.
	esds := mp4.CreateEsdsBox(cfg.ASC)
	entry := mp4.CreateAudioSampleEntryBox("mp4a", uint16(p.channels), 16, uint16(p.rate), esds)
	trak.Mdia.Minf.Stbl.Stsd.AddChild(entry)
	return encode(init)
}

func encode(init *mp4.InitSegment) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(int(init.Size()))
	if err := init.Encode(&buf); err != nil {
		return nil, fmt.Errorf("encode init segment: %w", err)
	}
	return buf.Bytes(), nil
}

func checkNALU(n []byte, want h264.NALUType) error {
	if len(n) == 0 {
		return fmt.Errorf("%w: H.264 config has no %v", ErrInvalidInput, want)
	}
	if got := h264.NALUType(n[0] & 0x1f); got != want {
		return fmt.Errorf("%w: H.264 config: %v NAL unit where %v belongs", ErrInvalidInput, got, want)
	}
	return nil
}
