// Package tsedit edits MPEG-TS streams on their way through: it moves every timestamp by an
// offset (joining transport streams one after another into one with a continuous clock), and
// cuts a stream into pieces at the video access units where given times begin.
//
// The transcoder needs both to keep one ffmpeg running across a stream's chunks: each chunk's
// MPEG-TS starts its clock again (at chunker.TSBase), so the chunks are moved onto one timeline
// and their continuity counters renumbered as they are fed to ffmpeg, and each rendition
// ffmpeg writes is cut back into the chunks it came from and moved back to their own clocks.
// No library at hand edits packets in place: mediacommon and go-astits demux and mux whole
// PES packets, which costs a copy of every frame for a change of a few header bytes.
package tsedit

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// PacketSize is the size of an MPEG-TS packet.
const PacketSize = 188

// wrap is the period of MPEG-TS's 33-bit clock.
const wrap = 1 << 33

// ErrSync is returned for bytes that are not MPEG-TS packets.
var ErrSync = errors.New("tsedit: lost packet sync (no 0x47 sync byte)")

// Shifter moves the PES timestamps (PTS, DTS) and PCRs of the packets passed through it by
// Delta ticks of 90 kHz, modulo 2^33. Packets may arrive split anywhere: what does not make a
// whole packet is kept for the next call. With Renumber, each PID's continuity counter is
// rewritten to count on from the packets before, so streams joined back to back read as one.
type Shifter struct {
	Delta    int64
	Renumber bool

	cc   map[uint16]uint8 // next continuity counter per PID (Renumber)
	rest []byte
	// video is the shifted PTS of the first video PES (stream id 0xe0-0xef) since
	// WatchVideo, or -1.
	video int64
}

// WatchVideo makes FirstVideoPTS report the first video PES passed after this call.
func (s *Shifter) WatchVideo() { s.video = -1 }

// FirstVideoPTS returns the shifted PTS of the first video PES since WatchVideo, if one has
// passed.
func (s *Shifter) FirstVideoPTS() (int64, bool) { return s.video, s.video >= 0 }

// Shift edits p's whole packets in place and returns them, with any bytes held from the
// previous call first (then as a new slice); a trailing partial packet is held back.
func (s *Shifter) Shift(p []byte) ([]byte, error) {
	buf := p
	if len(s.rest) > 0 {
		buf = append(s.rest, p...)
		s.rest = nil
	}
	n := len(buf) - len(buf)%PacketSize
	if n < len(buf) {
		s.rest = append([]byte(nil), buf[n:]...)
	}
	buf = buf[:n]
	for off := 0; off < n; off += PacketSize {
		if err := s.packet(buf[off : off+PacketSize]); err != nil {
			return nil, fmt.Errorf("packet %d: %w", off/PacketSize, err)
		}
	}
	return buf, nil
}

// Pending is the number of bytes held back as a partial packet.
func (s *Shifter) Pending() int { return len(s.rest) }

func (s *Shifter) packet(pkt []byte) error {
	if pkt[0] != 0x47 {
		return ErrSync
	}
	pid := uint16(pkt[1]&0x1f)<<8 | uint16(pkt[2])
	afc := pkt[3] >> 4 & 3
	if s.Renumber && afc&1 != 0 && pid != 0x1fff {
		if s.cc == nil {
			s.cc = make(map[uint16]uint8)
		}
		if next, ok := s.cc[pid]; ok {
			pkt[3] = pkt[3]&0xf0 | next
		}
		s.cc[pid] = (pkt[3]&0x0f + 1) & 0x0f
	}
	payload := pkt[4:]
	if afc&2 != 0 {
		n := int(payload[0])
		if 1+n > len(payload) {
			return fmt.Errorf("adaptation field of %d bytes", n)
		}
		if n >= 7 && payload[1]&0x10 != 0 { // PCR_flag
			shiftPCR(payload[2:8], s.Delta)
		}
		payload = payload[1+n:]
	}
	if afc&1 == 0 || pkt[1]&0x40 == 0 || pid == 0 || pid == 0x1fff {
		return nil
	}
	pts, err := shiftPES(payload, s.Delta)
	if err == nil && pts >= 0 && s.video < 0 && payload[3]&0xf0 == 0xe0 {
		s.video = pts
	}
	return err
}

// shiftPES moves the PTS and DTS of the PES header that starts payload, if it has one, and
// returns the new PTS (-1 if none).
func shiftPES(b []byte, delta int64) (int64, error) {
	if len(b) < 3 || b[0] != 0 || b[1] != 0 || b[2] != 1 {
		return -1, nil // a PSI section (a PMT on its PID), not a PES
	}
	if len(b) < 9 {
		return -1, errors.New("PES header cut short")
	}
	if !hasOptionalHeader(b[3]) {
		return -1, nil
	}
	flags := b[7] >> 6
	need := 0
	switch flags {
	case 2:
		need = 14
	case 3:
		need = 19
	default:
		return -1, nil
	}
	if len(b) < need {
		return -1, errors.New("PES timestamps past the packet")
	}
	pts := add(Time(b[9:14]), delta)
	putTime(b[9:14], pts)
	if flags == 3 {
		putTime(b[14:19], add(Time(b[14:19]), delta))
	}
	return pts, nil
}

// hasOptionalHeader reports whether PES packets of stream id carry the optional header with
// the timestamps (ISO/IEC 13818-1 2.4.3.7: all but the program stream map, padding, private 2,
// ECM, EMM, directory and DSM-CC and H.222.1 type E).
func hasOptionalHeader(id byte) bool {
	switch id {
	case 0xbc, 0xbe, 0xbf, 0xf0, 0xf1, 0xff, 0xf2, 0xf8:
		return false
	}
	return true
}

// Time decodes a 33-bit PTS or DTS field (5 bytes).
func Time(b []byte) int64 {
	return int64(b[0]>>1&0x07)<<30 | int64(b[1])<<22 | int64(b[2]>>1)<<15 | int64(b[3])<<7 | int64(b[4]>>1)
}

// putTime encodes t into a PTS or DTS field, keeping its 4-bit prefix and marker bits.
func putTime(b []byte, t int64) {
	b[0] = b[0]&0xf1 | byte(t>>29)&0x0e
	b[1] = byte(t >> 22)
	b[2] = b[2]&0x01 | byte(t>>14)&0xfe
	b[3] = byte(t >> 7)
	b[4] = b[4]&0x01 | byte(t<<1)&0xfe
}

// shiftPCR moves the 33-bit base of a 6-byte PCR field; the 27 MHz extension is kept.
func shiftPCR(b []byte, delta int64) {
	base := int64(binary.BigEndian.Uint32(b))<<1 | int64(b[4]>>7)
	base = add(base, delta)
	binary.BigEndian.PutUint32(b, uint32(base>>1))
	b[4] = b[4]&0x7f | byte(base&1)<<7
}

func add(t, delta int64) int64 {
	return ((t+delta)%wrap + wrap) % wrap
}
