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
	"errors"
	"fmt"

	"github.com/gopcast/gopcast/pkg/media/mpegts"
)

// PacketSize is the size of an MPEG-TS packet.
const PacketSize = mpegts.PacketSize

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
	if pkt[0] != mpegts.SyncByte {
		return ErrSync
	}
	pid := mpegts.PID(pkt)
	// The continuity counter is renumbered before the adaptation field is looked at, so also
	// in a packet whose adaptation field is damaged.
	if s.Renumber && mpegts.HasPayload(pkt) && pid != mpegts.PIDNull {
		if s.cc == nil {
			s.cc = make(map[uint16]uint8)
		}
		cc := mpegts.CC(pkt)
		if next, ok := s.cc[pid]; ok {
			cc = next
			pkt[3] = pkt[3]&0xf0 | cc
		}
		s.cc[pid] = (cc + 1) & 0x0f
	}
	af, payload, err := mpegts.Split(pkt)
	if err != nil {
		return err
	}
	if pcr, ok := mpegts.PCR(af); ok {
		mpegts.PutPCR(af, add(pcr, s.Delta))
	}
	if payload == nil || !mpegts.StartsUnit(pkt) { // payload is nil without the payload flag
		return nil
	}
	if pid == mpegts.PIDPAT || pid == mpegts.PIDNull {
		return nil
	}
	// Only PES packets with the optional header have timestamps; ParsePESHeader reads one
	// regardless. (A header cut short is reported whatever its stream id.)
	if len(payload) >= 9 && !mpegts.HasOptionalHeader(payload[3]) {
		return nil
	}
	pes, err := mpegts.ParsePESHeader(payload)
	switch {
	case err == mpegts.ErrNotPES: // a PSI section (a PMT on its PID); never wrapped
		return nil
	case err != nil:
		return err
	case !pes.HasPTS:
		return nil
	}
	pts := add(pes.PTS, s.Delta)
	mpegts.PutTimestamp(payload[9:14], pts)
	if pes.HasDTS {
		mpegts.PutTimestamp(payload[14:19], add(pes.DTS, s.Delta))
	}
	if s.video < 0 && pes.StreamID&0xf0 == 0xe0 { // video stream ids 0xe0-0xef
		s.video = pts
	}
	return nil
}

// Time decodes a 33-bit PTS or DTS field (5 bytes).
func Time(b []byte) int64 { return mpegts.Timestamp(b) }

func add(t, delta int64) int64 {
	return ((t+delta)%wrap + wrap) % wrap
}
