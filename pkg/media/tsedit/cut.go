package tsedit

import (
	"encoding/binary"
	"fmt"
)

// Cutter gathers a single-program transport stream, such as one ffmpeg writes, and cuts it
// into pieces at video PES packets: Cut(t) returns everything before the first video PES whose
// PTS is t or later (the access unit where a piece of the stream beginning at t starts). Each
// piece begins with the stream's latest PAT and PMT, so it is a transport stream of its own.
//
// Times are compared as they are, without unwrapping: the stream's clock must not wrap
// between the times cut at (26.5 hours from 0).
type Cutter struct {
	buf  []byte // whole packets since the last cut
	rest []byte // a partial packet
	// scan is how far buf has been looked at; starts are the offsets and PTSs of the video
	// PES packets found in buf.
	scan   int
	starts []start

	pmtPID, videoPID int
	pat, pmt         []byte // latest PAT and PMT packets
}

type start struct {
	off int
	pts int64
}

// Write adds the stream's next bytes.
func (c *Cutter) Write(p []byte) error {
	if len(c.rest) > 0 {
		need := PacketSize - len(c.rest)
		if len(p) < need {
			c.rest = append(c.rest, p...)
			return nil
		}
		c.buf = append(c.buf, c.rest...)
		c.buf = append(c.buf, p[:need]...)
		c.rest, p = c.rest[:0], p[need:]
	}
	n := len(p) - len(p)%PacketSize
	c.buf = append(c.buf, p[:n]...)
	c.rest = append(c.rest, p[n:]...)
	return c.index()
}

// index finds the PSI and video PES starts in the bytes not yet looked at.
func (c *Cutter) index() error {
	for ; c.scan+PacketSize <= len(c.buf); c.scan += PacketSize {
		pkt := c.buf[c.scan : c.scan+PacketSize]
		if pkt[0] != 0x47 {
			return fmt.Errorf("tsedit: at byte %d: %w", c.scan, ErrSync)
		}
		if pkt[1]&0x40 == 0 || pkt[3]>>4&1 == 0 {
			continue // not the start of a payload unit
		}
		pid := int(pkt[1]&0x1f)<<8 | int(pkt[2])
		payload := pkt[4:]
		if pkt[3]>>4&2 != 0 {
			n := int(payload[0])
			if 1+n >= len(payload) {
				continue
			}
			payload = payload[1+n:]
		}
		switch {
		case pid == 0:
			c.pat = append(c.pat[:0], pkt...)
			if sec := section(payload, 0x00); len(sec) >= 12 {
				c.pmtPID = int(binary.BigEndian.Uint16(sec[10:]) & 0x1fff)
			}
		case pid == c.pmtPID && c.pmtPID != 0:
			c.pmt = append(c.pmt[:0], pkt...)
			c.videoPID = videoPID(section(payload, 0x02))
		case pid == c.videoPID && c.videoPID != 0:
			if len(payload) >= 14 && payload[0] == 0 && payload[1] == 0 && payload[2] == 1 && payload[7]>>7 == 1 {
				c.starts = append(c.starts, start{off: c.scan, pts: Time(payload[9:14])})
			}
		}
	}
	return nil
}

// Cut returns the bytes before the first video PES with a PTS of t or later, behind the PAT
// and PMT, and the number of video PES packets (frames) among them, and keeps the rest; ok is
// false (and nothing is cut) while no such PES has come.
func (c *Cutter) Cut(t int64) (piece []byte, frames int, ok bool) {
	for i, s := range c.starts {
		if s.pts < t {
			continue
		}
		piece, frames = c.piece(c.buf[:s.off]), i
		c.buf = append(c.buf[:0:0], c.buf[s.off:]...)
		c.scan -= s.off
		c.starts = c.starts[i:]
		for j := range c.starts {
			c.starts[j].off -= s.off
		}
		c.starts = append([]start(nil), c.starts...)
		return piece, frames, true
	}
	return nil, 0, false
}

// Rest returns everything not cut yet (behind the PAT and PMT; nil if there is nothing), the
// number of video PES packets in it, and the number of bytes of a trailing partial packet,
// which are dropped.
func (c *Cutter) Rest() (piece []byte, frames, partial int) {
	partial, frames = len(c.rest), len(c.starts)
	if len(c.buf) > 0 {
		piece = c.piece(c.buf)
	}
	c.buf, c.rest, c.starts, c.scan = nil, nil, nil, 0
	return piece, frames, partial
}

func (c *Cutter) piece(b []byte) []byte {
	out := make([]byte, 0, len(c.pat)+len(c.pmt)+len(b))
	out = append(out, c.pat...)
	out = append(out, c.pmt...)
	return append(out, b...)
}

// section returns the PSI section (up to its CRC) starting in payload with tableID, or nil.
func section(payload []byte, tableID byte) []byte {
	if len(payload) < 1 {
		return nil
	}
	ptr := int(payload[0])
	if 1+ptr+3 > len(payload) {
		return nil
	}
	sec := payload[1+ptr:]
	if sec[0] != tableID {
		return nil
	}
	n := int(binary.BigEndian.Uint16(sec[1:]) & 0x0fff)
	if n < 9 || 3+n > len(sec) {
		return nil
	}
	return sec[:3+n-4]
}

// videoPID returns the PID of the first video stream a PMT section lists (0 if none).
func videoPID(sec []byte) int {
	if len(sec) < 12 {
		return 0
	}
	p := 12 + int(binary.BigEndian.Uint16(sec[10:])&0x0fff)
	for p+5 <= len(sec) {
		typ, pid := sec[p], int(binary.BigEndian.Uint16(sec[p+1:])&0x1fff)
		switch typ {
		case 0x01, 0x02, 0x10, 0x1b, 0x24: // MPEG-1/2, MPEG-4 part 2, H.264, H.265 video
			return pid
		}
		p += 5 + int(binary.BigEndian.Uint16(sec[p+3:])&0x0fff)
	}
	return 0
}
