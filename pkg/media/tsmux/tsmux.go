// Package tsmux writes the MPEG-TS of one chunk: an H.264 stream and an optional AAC (ADTS)
// stream, appended packet by packet to a byte slice the caller owns.
//
// It exists because the ingest muxes every byte of every stream it takes: the general writer
// it replaces (mediacommon's, over go-astits) encodes each packet field by field through a bit
// writer and allocates per access unit, which made muxing a sixth of the ingest's CPU. This
// one writes the same stream layout directly: the same PIDs (video 256, audio 257, PMT 4096),
// PAT and PMT first, again before every keyframe and every 40 PES packets, an access unit
// delimiter in front of every video access unit, a PCR on keyframes and every third video PES
// 100 ms behind its decode time, and the random access indicator on keyframes and every audio
// frame.
package tsmux

import (
	"errors"
	"fmt"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/gopcast/gopcast/pkg/media/mpegts"
)

// The stream's fixed identifiers.
const (
	PIDPAT   = mpegts.PIDPAT
	PIDVideo = 256
	PIDAudio = 257
	PIDPMT   = 0x1000

	packetSize    = mpegts.PacketSize
	tablesPeriod  = 40   // PES packets between two repetitions of PAT and PMT
	pcrPeriod     = 3    // video PES packets between two PCRs, keyframes aside
	pcrBehind     = 9000 // 100 ms at 90 kHz: the PCR runs this far behind the decode time
	streamIDVideo = 0xe0
	streamIDAudio = 0xc0
	maxADTSFrame  = 1<<13 - 1 // frame_length is 13 bits, its 7-byte header included
)

// ErrFrameTooLarge means an AAC frame is larger than an ADTS header can describe.
var ErrFrameTooLarge = errors.New("tsmux: AAC frame too large for ADTS")

// Muxer writes one MPEG-TS stream. The zero value is not usable; call New. It is not safe for
// concurrent use.
type Muxer struct {
	audio       bool
	adts        [7]byte // the ADTS header of the session's config, frame length to fill in
	pat, pmt    [packetSize]byte
	ccPAT       byte
	ccPMT       byte
	ccVideo     byte
	ccAudio     byte
	sinceTables int
	sincePCR    int
	pes         []byte // scratch: the PES packet being written
}

// New returns a Muxer for H.264 video and, when audio is not nil, AAC audio in ADTS.
func New(audio *mpeg4audio.AudioSpecificConfig) (*Muxer, error) {
	m := &Muxer{sinceTables: tablesPeriod}
	if audio != nil {
		m.audio = true
		hdr, err := mpeg4audio.ADTSPackets{{
			Type:          audio.Type,
			SampleRate:    audio.SampleRate,
			ChannelConfig: audio.ChannelConfig,
			ChannelCount:  audio.ChannelCount, //nolint:staticcheck // what ADTSPacket reads
		}}.Marshal()
		if err != nil {
			return nil, fmt.Errorf("tsmux: AAC config: %w", err)
		}
		copy(m.adts[:], hdr)
	}
	m.pat = mpegts.PSIPacket(PIDPAT, mpegts.TableIDPAT, []byte{
		0x00, 0x01, // transport_stream_id
		0xc1, 0x00, 0x00, // version 0, current; section 0 of 0
		0x00, 0x01, // program_number 1
		0xe0 | PIDPMT>>8, PIDPMT & 0xff,
	})
	pmt := []byte{
		0x00, 0x01, // program_number 1
		0xc1, 0x00, 0x00,
		0xe0 | PIDVideo>>8, PIDVideo & 0xff, // PCR_PID
		0xf0, 0x00, // no program descriptors
		mpegts.StreamTypeH264, 0xe0 | PIDVideo>>8, PIDVideo & 0xff, 0xf0, 0x00,
	}
	if m.audio {
		pmt = append(pmt, mpegts.StreamTypeAAC, 0xe0|PIDAudio>>8, PIDAudio&0xff, 0xf0, 0x00)
	}
	m.pmt = mpegts.PSIPacket(PIDPMT, mpegts.TableIDPMT, pmt)
	return m, nil
}

// WriteH264 appends one access unit at the given 90 kHz times; key marks an IDR (random
// access point).
func (m *Muxer) WriteH264(dst []byte, pts, dts int64, key bool, au [][]byte) []byte {
	n := 0
	for _, nalu := range au {
		n += 4 + len(nalu)
	}
	aud := len(au) == 0 || len(au[0]) == 0 || h264.NALUType(au[0][0]&0x1f) != h264.NALUTypeAccessUnitDelimiter
	if aud {
		n += 6
	}
	p := m.pesHeader(streamIDVideo, pts, dts, n)
	if aud {
		p = append(p, 0, 0, 0, 1, byte(h264.NALUTypeAccessUnitDelimiter), 0xf0)
	}
	for _, nalu := range au {
		p = append(p, 0, 0, 0, 1)
		p = append(p, nalu...)
	}
	m.pes = p
	pcr := int64(-1)
	if key || m.sincePCR == 0 {
		pcr = max(dts-pcrBehind, 0)
		m.sincePCR = pcrPeriod
	}
	m.sincePCR--
	dst = m.tables(dst, key)
	return packetize(dst, PIDVideo, &m.ccVideo, p, key, pcr)
}

// WriteAAC appends one raw AAC frame at the given 90 kHz time, with its ADTS header.
func (m *Muxer) WriteAAC(dst []byte, pts int64, frame []byte) ([]byte, error) {
	if !m.audio {
		return dst, errors.New("tsmux: the stream has no audio")
	}
	size := len(m.adts) + len(frame)
	if size > maxADTSFrame {
		return dst, fmt.Errorf("%w (%d bytes)", ErrFrameTooLarge, len(frame))
	}
	p := m.pesHeader(streamIDAudio, pts, pts, size)
	h := m.adts
	h[3] = h[3]&0xfc | byte(size>>11)
	h[4] = byte(size >> 3)
	h[5] = byte(size&0x07)<<5 | h[5]&0x1f
	p = append(p, h[:]...)
	p = append(p, frame...)
	m.pes = p
	dst = m.tables(dst, false)
	return packetize(dst, PIDAudio, &m.ccAudio, p, true, -1), nil
}

// pesHeader starts the scratch PES packet; payload is the size of what follows the header.
func (m *Muxer) pesHeader(streamID byte, pts, dts int64, payload int) []byte {
	p := m.pes[:0]
	flags, hlen := byte(0x80), 5
	if dts != pts {
		flags, hlen = 0xc0, 10
	}
	length := 0 // unbounded, for video
	if streamID != streamIDVideo {
		if length = 3 + hlen + payload; length > 0xffff {
			length = 0
		}
	}
	p = append(p, 0, 0, 1, streamID, byte(length>>8), byte(length), 0x80, flags, byte(hlen))
	if dts != pts {
		p = mpegts.AppendTimestamp(p, 0x3, pts)
		p = mpegts.AppendTimestamp(p, 0x1, dts)
	} else {
		p = mpegts.AppendTimestamp(p, 0x2, pts)
	}
	return p
}

// tables writes PAT and PMT when due: at the start, before a keyframe, every tablesPeriod PES.
func (m *Muxer) tables(dst []byte, force bool) []byte {
	m.sinceTables++
	if !force && m.sinceTables < tablesPeriod {
		return dst
	}
	m.sinceTables = 0
	dst = append(dst, m.pat[:]...)
	dst[len(dst)-packetSize+3] |= m.ccPAT
	m.ccPAT = (m.ccPAT + 1) & 0x0f
	dst = append(dst, m.pmt[:]...)
	dst[len(dst)-packetSize+3] |= m.ccPMT
	m.ccPMT = (m.ccPMT + 1) & 0x0f
	return dst
}

// packetize appends payload (a PES packet) as transport packets of pid. The first carries an
// adaptation field when rai is set or pcr is not negative; the last is filled up with
// adaptation field stuffing.
func packetize(dst []byte, pid uint16, cc *byte, payload []byte, rai bool, pcr int64) []byte {
	dst = grow(dst, (len(payload)/(packetSize-4-8)+2)*packetSize)
	first := true
	for len(payload) > 0 {
		start := len(dst)
		dst = dst[:start+packetSize]
		p := dst[start:]
		p[0] = mpegts.SyncByte
		p[1] = byte(pid >> 8)
		if first {
			p[1] |= 0x40 // payload_unit_start_indicator
		}
		p[2] = byte(pid)
		p[3] = 0x10 | *cc // payload only, for now
		*cc = (*cc + 1) & 0x0f

		var af []byte // the adaptation field's flags and fields, without its length byte
		var buf [7]byte
		if first && (rai || pcr >= 0) {
			af = buf[:1]
			if rai {
				af[0] |= 0x40
			}
			if pcr >= 0 {
				af[0] |= 0x10
				af = append(af, 0, 0, 0, 0, 0x7e, 0x00) // reserved bits, extension 0
				mpegts.PutPCR(af, pcr)
			}
		}
		space := packetSize - 4
		if af != nil {
			space -= 1 + len(af)
		}
		stuff := 0
		if len(payload) < space {
			stuff = space - len(payload)
		}
		i := 4
		if af != nil || stuff > 0 {
			p[3] |= 0x20 // adaptation field present
			switch {
			case af == nil && stuff == 1:
				p[i] = 0 // an empty adaptation field: its length byte alone
				i++
				stuff = 0
			case af == nil:
				af = buf[:1]
				stuff -= 2 // the length and flags bytes
			}
			if af != nil {
				p[i] = byte(len(af) + stuff)
				i++
				i += copy(p[i:], af)
				for j := range stuff {
					p[i+j] = 0xff
				}
				i += stuff
			}
		}
		n := copy(p[i:], payload)
		payload = payload[n:]
		first = false
	}
	return dst
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]byte, len(b), 2*cap(b)+n)
	copy(nb, b)
	return nb
}
