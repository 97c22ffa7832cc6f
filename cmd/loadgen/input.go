package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/pmp4"
)

// sample is one access unit of the clip, with times relative to the clip's first keyframe and
// rounded to the millisecond, the resolution of RTMP timestamps, so what loadgen sends is
// exactly what it records.
type sample struct {
	Video bool
	DTS   time.Duration // decode time; for audio the presentation time
	PTS   time.Duration
	Key   bool
	AU    [][]byte // video NAL units
	Data  []byte   // one AAC access unit
}

// clip is a whole input file in memory, ready to be sent (and looped).
type clip struct {
	SPS, PPS []byte
	AAC      *mpeg4audio.AudioSpecificConfig // nil: no audio
	// Samples are in sending order: by decode time, video before audio on a tie.
	Samples []sample
	// FrameDuration is the typical video decode-time step.
	FrameDuration time.Duration
	// LoopDuration is the clip's length on the video decode timeline: the last frame's decode
	// time plus one frame. A loop k is sent with every time shifted by k*LoopDuration.
	LoopDuration time.Duration
}

func (c *clip) describe() string {
	var sps h264.SPS
	v := "H.264"
	if err := sps.Unmarshal(c.SPS); err == nil {
		v = fmt.Sprintf("H.264 %dx%d profile %d", sps.Width(), sps.Height(), sps.ProfileIdc)
	}
	if c.AAC != nil {
		v += fmt.Sprintf(" + AAC %d Hz %d ch", c.AAC.SampleRate, c.AAC.ChannelCount)
	}
	return v
}

func (c *clip) videoFrames() int {
	n := 0
	for _, s := range c.Samples {
		if s.Video {
			n++
		}
	}
	return n
}

func (c *clip) keyframes() int {
	n := 0
	for _, s := range c.Samples {
		if s.Video && s.Key {
			n++
		}
	}
	return n
}

func (c *clip) audioFrames() int { return len(c.Samples) - c.videoFrames() }

// loadClip reads an H.264 (+AAC) file: FLV (parsed here), MP4 (mediacommon's pmp4) or MPEG-TS
// (mediacommon's mpegts), chosen by extension.
func loadClip(path string) (*clip, error) {
	var (
		c   *clip
		err error
	)
	switch strings.ToLower(filepath.Ext(path)) {
	case ".flv":
		var b []byte
		if b, err = os.ReadFile(path); err == nil {
			c, err = parseFLV(b)
		}
	case ".mp4", ".mov", ".m4v":
		c, err = readMP4(path)
	case ".ts", ".m2ts", ".mts":
		c, err = readTS(path)
	default:
		return nil, fmt.Errorf("--input %s: unknown container (want .flv, .mp4 or .ts)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("--input %s: %w", path, err)
	}
	if err := c.finish(); err != nil {
		return nil, fmt.Errorf("--input %s: %w", path, err)
	}
	return c, nil
}

// finish checks the clip, makes its times relative to the first keyframe (dropping anything
// before it, which no receiver could decode), rounds them to milliseconds and orders the
// samples for sending.
func (c *clip) finish() error {
	if len(c.SPS) == 0 || len(c.PPS) == 0 {
		return errors.New("no H.264 SPS/PPS found")
	}
	origin := time.Duration(-1)
	for _, s := range c.Samples {
		if s.Video && s.Key && (origin < 0 || s.DTS < origin) {
			origin = s.DTS
		}
	}
	if origin < 0 {
		return errors.New("no H.264 keyframe found")
	}
	out := c.Samples[:0]
	for _, s := range c.Samples {
		if s.DTS < origin {
			continue
		}
		s.DTS = (s.DTS - origin).Round(time.Millisecond)
		s.PTS = (s.PTS - origin).Round(time.Millisecond)
		if s.Video && s.PTS < s.DTS {
			s.PTS = s.DTS // RTMP's composition offset may be negative, but ingest and players dislike it
		}
		out = append(out, s)
	}
	c.Samples = out
	sort.SliceStable(c.Samples, func(i, j int) bool {
		a, b := c.Samples[i], c.Samples[j]
		if a.DTS != b.DTS {
			return a.DTS < b.DTS
		}
		return a.Video && !b.Video
	})
	// Typical frame step: the median of positive decode-time steps.
	var steps []time.Duration
	var last time.Duration = -1
	var lastDTS time.Duration
	for _, s := range c.Samples {
		if !s.Video {
			continue
		}
		if last >= 0 && s.DTS > last {
			steps = append(steps, s.DTS-last)
		}
		last = s.DTS
		lastDTS = s.DTS
	}
	if len(steps) == 0 {
		return errors.New("fewer than two video frames")
	}
	slices.Sort(steps)
	c.FrameDuration = steps[len(steps)/2]
	c.LoopDuration = lastDTS + c.FrameDuration
	return nil
}

// parseFLV reads an FLV file with AVC video (codec 7) and, optionally, AAC audio (format 10).
// FLV tags are RTMP messages written to a file, so their timestamps are what an RTMP encoder
// would have sent.
func parseFLV(b []byte) (*clip, error) {
	if len(b) < 9 || string(b[:3]) != "FLV" {
		return nil, errors.New("not an FLV file")
	}
	pos := int(binary.BigEndian.Uint32(b[5:9])) + 4 // header, then PreviousTagSize0
	c := &clip{}
	lengthSize := 4
	for pos+11 <= len(b) {
		typ := b[pos] & 0x1f
		size := int(b[pos+1])<<16 | int(b[pos+2])<<8 | int(b[pos+3])
		ts := int64(b[pos+4])<<16 | int64(b[pos+5])<<8 | int64(b[pos+6]) | int64(b[pos+7])<<24
		if b[pos]&0x20 != 0 {
			return nil, errors.New("encrypted FLV tags are not supported")
		}
		body := pos + 11
		if body+size > len(b) {
			break // truncated last tag
		}
		data := b[body : body+size]
		pos = body + size + 4
		t := time.Duration(ts) * time.Millisecond
		switch typ {
		case 9: // video
			if len(data) < 5 {
				continue
			}
			if data[0]&0x80 != 0 {
				return nil, errors.New("enhanced RTMP (FourCC) video tags are not supported: use H.264 in plain FLV")
			}
			if codecID := data[0] & 0x0f; codecID != 7 {
				return nil, fmt.Errorf("video codec id %d is not H.264 (7)", codecID)
			}
			frameType := data[0] >> 4
			cts := int32(uint32(data[2])<<16|uint32(data[3])<<8|uint32(data[4])) << 8 >> 8 // signed 24 bits
			payload := data[5:]
			switch data[1] {
			case 0: // AVCDecoderConfigurationRecord
				sps, pps, ls, err := parseAVCConfig(payload)
				if err != nil {
					return nil, err
				}
				if c.SPS == nil {
					c.SPS, c.PPS = sps, pps
				}
				lengthSize = ls
			case 1:
				au, err := splitNALUs(payload, lengthSize)
				if err != nil {
					return nil, fmt.Errorf("video tag at %s: %w", t, err)
				}
				if len(au) == 0 {
					continue
				}
				key := frameType == 1 || h264.IsRandomAccess(au)
				c.Samples = append(c.Samples, sample{Video: true, DTS: t, PTS: t + time.Duration(cts)*time.Millisecond, Key: key, AU: au})
			}
		case 8: // audio
			if len(data) < 2 {
				continue
			}
			if format := data[0] >> 4; format != 10 {
				return nil, fmt.Errorf("audio format %d is not AAC (10)", format)
			}
			switch data[1] {
			case 0:
				if c.AAC == nil {
					var asc mpeg4audio.AudioSpecificConfig
					if err := asc.Unmarshal(data[2:]); err != nil {
						return nil, fmt.Errorf("AAC config: %w", err)
					}
					c.AAC = &asc
				}
			case 1:
				c.Samples = append(c.Samples, sample{DTS: t, PTS: t, Data: slices.Clone(data[2:])})
			}
		}
	}
	if c.AAC == nil {
		// Audio frames without a configuration cannot be sent.
		c.Samples = slices.DeleteFunc(c.Samples, func(s sample) bool { return !s.Video })
	}
	return c, nil
}

// parseAVCConfig reads an AVCDecoderConfigurationRecord (ISO 14496-15): the first SPS and
// PPS and the NAL unit length size.
func parseAVCConfig(b []byte) (sps, pps []byte, lengthSize int, err error) {
	bad := errors.New("malformed AVCDecoderConfigurationRecord")
	if len(b) < 7 {
		return nil, nil, 0, bad
	}
	lengthSize = int(b[4]&0x03) + 1
	n := int(b[5] & 0x1f)
	p := 6
	for i := 0; i < n; i++ {
		if p+2 > len(b) {
			return nil, nil, 0, bad
		}
		l := int(binary.BigEndian.Uint16(b[p:]))
		if p+2+l > len(b) {
			return nil, nil, 0, bad
		}
		if sps == nil {
			sps = slices.Clone(b[p+2 : p+2+l])
		}
		p += 2 + l
	}
	if p >= len(b) {
		return nil, nil, 0, bad
	}
	n = int(b[p])
	p++
	for i := 0; i < n; i++ {
		if p+2 > len(b) {
			return nil, nil, 0, bad
		}
		l := int(binary.BigEndian.Uint16(b[p:]))
		if p+2+l > len(b) {
			return nil, nil, 0, bad
		}
		if pps == nil {
			pps = slices.Clone(b[p+2 : p+2+l])
		}
		p += 2 + l
	}
	if sps == nil || pps == nil {
		return nil, nil, 0, errors.New("AVCDecoderConfigurationRecord without SPS or PPS")
	}
	return sps, pps, lengthSize, nil
}

// splitNALUs splits length-prefixed NAL units.
func splitNALUs(b []byte, lengthSize int) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		if len(b) < lengthSize {
			return nil, errors.New("truncated NAL unit length")
		}
		var l int
		for i := 0; i < lengthSize; i++ {
			l = l<<8 | int(b[i])
		}
		b = b[lengthSize:]
		if l > len(b) {
			return nil, errors.New("NAL unit longer than its tag")
		}
		if l > 0 {
			out = append(out, slices.Clone(b[:l]))
		}
		b = b[l:]
	}
	return out, nil
}

// readMP4 reads a progressive MP4 with mediacommon's pmp4: the first H.264 track and the
// first AAC track.
func readMP4(path string) (*clip, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var p pmp4.Presentation
	if err := p.Unmarshal(f); err != nil {
		return nil, fmt.Errorf("reading MP4: %w", err)
	}
	c := &clip{}
	var vt, at *pmp4.Track
	for _, t := range p.Tracks {
		switch codec := t.Codec.(type) {
		case *mp4codecs.H264:
			if vt == nil {
				vt = t
				c.SPS, c.PPS = codec.SPS, codec.PPS
			}
		case *mp4codecs.MPEG4Audio:
			if at == nil {
				at = t
				cfg := codec.Config
				c.AAC = &cfg
			}
		}
	}
	if vt == nil {
		return nil, errors.New("no H.264 track")
	}
	for _, t := range []*pmp4.Track{vt, at} {
		if t == nil {
			continue
		}
		video := t == vt
		ts := int64(t.TimeScale)
		if ts <= 0 {
			return nil, errors.New("track without timescale")
		}
		dts := int64(t.TimeOffset)
		for _, s := range t.Samples {
			payload, err := s.GetPayload()
			if err != nil {
				return nil, err
			}
			d := time.Duration(dts) * time.Second / time.Duration(ts)
			if video {
				au, err := splitNALUs(payload, 4)
				if err != nil {
					return nil, err
				}
				pts := time.Duration(dts+int64(s.PTSOffset)) * time.Second / time.Duration(ts)
				c.Samples = append(c.Samples, sample{Video: true, DTS: d, PTS: pts, Key: !s.IsNonSyncSample, AU: au})
			} else {
				c.Samples = append(c.Samples, sample{DTS: d, PTS: d, Data: payload})
			}
			dts += int64(s.Duration)
		}
	}
	return c, nil
}

// readTS reads an MPEG-TS file with mediacommon's mpegts reader: the first H.264 track
// (SPS/PPS taken from the stream) and the first AAC track.
func readTS(path string) (*clip, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r := &mpegts.Reader{R: bytes.NewReader(b)}
	if err := r.Initialize(); err != nil {
		return nil, fmt.Errorf("reading MPEG-TS: %w", err)
	}
	c := &clip{}
	ticks := func(v int64) time.Duration { return time.Duration(v) * time.Second / 90000 }
	var haveV, haveA bool
	for _, t := range r.Tracks() {
		switch codec := t.Codec.(type) {
		case *tscodecs.H264:
			if haveV {
				continue
			}
			haveV = true
			r.OnDataH264(t, func(pts, dts int64, au [][]byte) error {
				var frame [][]byte
				for _, n := range au {
					if len(n) == 0 {
						continue
					}
					switch h264.NALUType(n[0] & 0x1f) {
					case h264.NALUTypeSPS:
						if c.SPS == nil {
							c.SPS = slices.Clone(n)
						}
					case h264.NALUTypePPS:
						if c.PPS == nil {
							c.PPS = slices.Clone(n)
						}
					case h264.NALUTypeAccessUnitDelimiter:
					default:
						frame = append(frame, slices.Clone(n))
					}
				}
				if len(frame) > 0 {
					c.Samples = append(c.Samples, sample{Video: true, DTS: ticks(dts), PTS: ticks(pts), Key: h264.IsRandomAccess(au), AU: frame})
				}
				return nil
			})
		case *tscodecs.MPEG4Audio:
			if haveA {
				continue
			}
			haveA = true
			cfg := codec.Config
			c.AAC = &cfg
			rate := int64(max(cfg.SampleRate, 1))
			r.OnDataMPEG4Audio(t, func(pts int64, aus [][]byte) error {
				for i, au := range aus {
					p := ticks(pts) + time.Duration(int64(i)*1024)*time.Second/time.Duration(rate)
					c.Samples = append(c.Samples, sample{DTS: p, PTS: p, Data: slices.Clone(au)})
				}
				return nil
			})
		}
	}
	if !haveV {
		return nil, errors.New("no H.264 track")
	}
	for {
		if err := r.Read(); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("reading MPEG-TS: %w", err)
		}
	}
	return c, nil
}
