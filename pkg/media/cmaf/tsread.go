package cmaf

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/gopcast/gopcast/pkg/media/tsedit"
)

// A transport stream reader of just what Demux needs: the first program's elementary streams
// (from the PAT and PMT) and their PES packets with PTS and DTS, in file order.
//
// It exists because of cost, not features. mediacommon's MPEG-TS reader is built on go-astits,
// whose packet accumulator copies and re-parses a PES's whole payload at every 188-byte packet
// added to it, which is quadratic in the PES size: a 100 KB keyframe is ~550 packets and ~27 MB
// copied. Profiled under 20 passthrough streams, that demux was a tenth of the whole pipeline's
// CPU. This reader appends each packet's payload once. Codec payloads are still parsed by
// mediacommon (Annex-B, ADTS).

const tsPacketSize = 188

// MPEG-TS stream types (ISO/IEC 13818-1 table 2-34, and ATSC A/52 for AC-3).
const (
	stMPEG1Video  = 0x01
	stMPEG2Video  = 0x02
	stMPEG1Audio  = 0x03
	stMPEG2Audio  = 0x04
	stPrivateData = 0x06
	stAAC         = 0x0f
	stMPEG4Video  = 0x10
	stAACLATM     = 0x11
	stH264        = 0x1b
	stH265        = 0x24
	stAC3         = 0x81
	stEAC3        = 0x87
)

// tsStream is one elementary stream of the program.
type tsStream struct {
	pid  uint16
	typ  uint8
	desc []byte // ES_info descriptors
	// The PES being gathered: its packets' payloads, joined once at its end into a buffer
	// of its own (the frames returned alias it).
	parts [][]byte
	size  int
}

// pesPacket is one PES packet's payload with its timestamps (33-bit, as in the file).
type pesPacket struct {
	stream   *tsStream
	pts, dts int64
	data     []byte
}

// readTS parses ts and returns the program's streams and its PES packets in file order. Every
// PES of the program's streams is returned, also of streams Demux does not use.
func readTS(ts []byte) ([]*tsStream, []pesPacket, error) {
	if len(ts) == 0 {
		return nil, nil, errors.New("empty")
	}
	if len(ts)%tsPacketSize != 0 {
		return nil, nil, fmt.Errorf("%d bytes is not a whole number of %d-byte packets", len(ts), tsPacketSize)
	}
	var (
		pmtPID  = -1
		streams []*tsStream
		byPID   = map[uint16]*tsStream{}
		out     []pesPacket
	)
	flush := func(st *tsStream) error {
		if st.size == 0 {
			return nil
		}
		pes := make([]byte, 0, st.size)
		for _, b := range st.parts {
			pes = append(pes, b...)
		}
		st.parts, st.size = st.parts[:0], 0
		p, err := parsePES(pes)
		if err != nil {
			return fmt.Errorf("PID %d: %w", st.pid, err)
		}
		p.stream = st
		out = append(out, p)
		return nil
	}
	for off := 0; off < len(ts); off += tsPacketSize {
		pkt := ts[off : off+tsPacketSize]
		if pkt[0] != 0x47 {
			return nil, nil, fmt.Errorf("packet %d: no sync byte", off/tsPacketSize)
		}
		pusi := pkt[1]&0x40 != 0
		pid := uint16(pkt[1]&0x1f)<<8 | uint16(pkt[2])
		afc := pkt[3] >> 4 & 3
		payload := pkt[4:]
		if afc&2 != 0 {
			n := int(payload[0])
			if 1+n > len(payload) {
				return nil, nil, fmt.Errorf("packet %d: adaptation field of %d bytes", off/tsPacketSize, n)
			}
			payload = payload[1+n:]
		}
		if afc&1 == 0 || len(payload) == 0 {
			continue
		}
		switch {
		case pid == 0:
			if !pusi || pmtPID >= 0 {
				continue
			}
			sec, err := psiSection(payload, 0x00)
			if err != nil {
				return nil, nil, fmt.Errorf("PAT: %w", err)
			}
			// table_id, section_length, transport_stream_id, version, section numbers: 8 bytes.
			for p := 8; p+4 <= len(sec); p += 4 {
				if program := binary.BigEndian.Uint16(sec[p:]); program != 0 {
					pmtPID = int(binary.BigEndian.Uint16(sec[p+2:]) & 0x1fff)
					break
				}
			}
		case int(pid) == pmtPID:
			if !pusi || streams != nil {
				continue
			}
			sec, err := psiSection(payload, 0x02)
			if err != nil {
				return nil, nil, fmt.Errorf("PMT: %w", err)
			}
			// 8 bytes of header as the PAT's, PCR_PID, program_info_length and its descriptors.
			if len(sec) < 12 {
				return nil, nil, errors.New("PMT: short section")
			}
			p := 12 + int(binary.BigEndian.Uint16(sec[10:])&0x0fff)
			for p+5 <= len(sec) {
				es := &tsStream{typ: sec[p], pid: binary.BigEndian.Uint16(sec[p+1:]) & 0x1fff}
				n := int(binary.BigEndian.Uint16(sec[p+3:]) & 0x0fff)
				if p+5+n > len(sec) {
					return nil, nil, errors.New("PMT: descriptors overrun the section")
				}
				es.desc = sec[p+5 : p+5+n]
				p += 5 + n
				if byPID[es.pid] == nil {
					streams = append(streams, es)
					byPID[es.pid] = es
				}
			}
			if streams == nil {
				streams = []*tsStream{} // a program without streams: parsed, nothing to read
			}
		default:
			st := byPID[pid]
			if st == nil {
				continue
			}
			if pusi {
				if err := flush(st); err != nil {
					return nil, nil, err
				}
				st.parts = append(st.parts, payload)
				st.size = len(payload)
			} else if st.size > 0 {
				st.parts = append(st.parts, payload)
				st.size += len(payload)
			}
		}
	}
	if streams == nil {
		return nil, nil, errors.New("no program map table")
	}
	for _, st := range streams {
		if err := flush(st); err != nil {
			return nil, nil, err
		}
	}
	return streams, out, nil
}

// psiSection returns the section (from table_id up to, not including, the CRC) that starts in
// payload, which must hold it whole (gopcast's chunks and ffmpeg's PSI are one packet).
func psiSection(payload []byte, tableID byte) ([]byte, error) {
	ptr := int(payload[0])
	if 1+ptr+3 > len(payload) {
		return nil, errors.New("pointer field past the packet")
	}
	sec := payload[1+ptr:]
	if sec[0] != tableID {
		return nil, fmt.Errorf("table id %#x, want %#x", sec[0], tableID)
	}
	n := int(binary.BigEndian.Uint16(sec[1:]) & 0x0fff)
	if 3+n > len(sec) {
		return nil, errors.New("section spans packets")
	}
	if n < 4+5 {
		return nil, errors.New("short section")
	}
	return sec[:3+n-4], nil
}

// parsePES reads a PES packet's header.
func parsePES(b []byte) (pesPacket, error) {
	if len(b) < 9 || b[0] != 0 || b[1] != 0 || b[2] != 1 {
		return pesPacket{}, errors.New("PES without a start code")
	}
	if length := int(binary.BigEndian.Uint16(b[4:])); length != 0 {
		if 6+length > len(b) {
			return pesPacket{}, fmt.Errorf("PES of %d bytes cut short at %d", 6+length, len(b))
		}
		b = b[:6+length]
	}
	flags, hlen := b[7]>>6, int(b[8])
	if 9+hlen > len(b) {
		return pesPacket{}, errors.New("PES header past its data")
	}
	var p pesPacket
	switch flags {
	case 2:
		if hlen < 5 {
			return pesPacket{}, errors.New("PES header too short for its PTS")
		}
		p.pts = tsedit.Time(b[9:])
		p.dts = p.pts
	case 3:
		if hlen < 10 {
			return pesPacket{}, errors.New("PES header too short for its PTS and DTS")
		}
		p.pts, p.dts = tsedit.Time(b[9:]), tsedit.Time(b[14:])
	default:
		return pesPacket{}, errors.New("PES without a PTS")
	}
	p.data = b[9+hlen:]
	return p, nil
}

// hasRegistration reports whether descriptors hold a registration descriptor (tag 5) for id.
func hasRegistration(desc []byte, id string) bool {
	return findDescriptor(desc, func(tag byte, body []byte) bool { return tag == 0x05 && string(body[:min(4, len(body))]) == id })
}

// hasDescriptor reports whether descriptors hold one with tag.
func hasDescriptor(desc []byte, tag byte) bool {
	return findDescriptor(desc, func(t byte, _ []byte) bool { return t == tag })
}

func findDescriptor(desc []byte, match func(tag byte, body []byte) bool) bool {
	for len(desc) >= 2 {
		n := int(desc[1])
		if 2+n > len(desc) {
			return false
		}
		if match(desc[0], desc[2:2+n]) {
			return true
		}
		desc = desc[2+n:]
	}
	return false
}
