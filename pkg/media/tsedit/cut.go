package tsedit

import (
	"fmt"

	"github.com/gopcast/gopcast/pkg/media/mpegts"
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
		if pkt[0] != mpegts.SyncByte {
			return fmt.Errorf("tsedit: at byte %d: %w", c.scan, ErrSync)
		}
		if !mpegts.StartsUnit(pkt) {
			continue // most packets: passed over before their header is split
		}
		_, payload, err := mpegts.Split(pkt)
		if err != nil || len(payload) == 0 {
			continue
		}
		switch pid := int(mpegts.PID(pkt)); {
		case pid == mpegts.PIDPAT:
			c.pat = append(c.pat[:0], pkt...)
			sec, _ := mpegts.Section(payload, mpegts.TableIDPAT) // nil if damaged
			for prog := range mpegts.Programs(sec) {
				c.pmtPID = int(prog.PMTPID) // a single-program stream: its first entry
				break
			}
		case pid == c.pmtPID && c.pmtPID != 0:
			c.pmt = append(c.pmt[:0], pkt...)
			sec, _ := mpegts.Section(payload, mpegts.TableIDPMT)
			c.videoPID = videoPID(sec)
		case pid == c.videoPID && c.videoPID != 0:
			// The PTS is read even when the DTS after it is cut off.
			if pes, _ := mpegts.ParsePESHeader(payload); pes.HasPTS {
				c.starts = append(c.starts, start{off: c.scan, pts: pes.PTS})
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

// videoPID returns the PID of the first video stream a PMT section lists (0 if none). What
// can be read of a damaged section is used: the stream is passed on as it is.
func videoPID(pmt []byte) int {
	for es := range mpegts.Streams(pmt) {
		switch es.Type {
		case mpegts.StreamTypeMPEG1Video, mpegts.StreamTypeMPEG2Video, mpegts.StreamTypeMPEG4Video,
			mpegts.StreamTypeH264, mpegts.StreamTypeH265:
			return int(es.PID)
		}
	}
	return 0
}
