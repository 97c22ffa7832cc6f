package cmaf

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/gopcast/gopcast/pkg/media/mpegts"
)

// A transport stream reader of just what Demux needs: the first program's elementary streams
// (from the PAT and PMT) and their PES packets with PTS and DTS, in file order.
//
// It exists because of cost, not features. mediacommon's MPEG-TS reader is built on go-astits,
// whose packet accumulator copies and re-parses a PES's whole payload at every 188-byte packet
// added to it, which is quadratic in the PES size: a 100 KB keyframe is ~550 packets and ~27 MB
// copied. Profiled under 20 passthrough streams, that demux was a tenth of the whole pipeline's
// CPU. This reader appends each packet's payload once. Codec payloads are still parsed by
// mediacommon (Annex-B, ADTS); packets, PSI and PES headers by package mpegts.

// tsStream is one elementary stream of the program.
type tsStream struct {
	mpegts.Stream
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
	if len(ts)%mpegts.PacketSize != 0 {
		return nil, nil, fmt.Errorf("%d bytes is not a whole number of %d-byte packets", len(ts), mpegts.PacketSize)
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
			return fmt.Errorf("PID %d: %w", st.PID, err)
		}
		p.stream = st
		out = append(out, p)
		return nil
	}
	for off := 0; off < len(ts); off += mpegts.PacketSize {
		pkt := ts[off : off+mpegts.PacketSize]
		if pkt[0] != mpegts.SyncByte {
			return nil, nil, fmt.Errorf("packet %d: no sync byte", off/mpegts.PacketSize)
		}
		_, payload, err := mpegts.Split(pkt)
		if err != nil {
			return nil, nil, fmt.Errorf("packet %d: %w", off/mpegts.PacketSize, err)
		}
		if len(payload) == 0 {
			continue
		}
		pid, start := mpegts.PID(pkt), mpegts.StartsUnit(pkt)
		switch {
		case pid == mpegts.PIDPAT:
			if !start || pmtPID >= 0 {
				continue
			}
			sec, err := mpegts.Section(payload, mpegts.TableIDPAT)
			if err != nil {
				return nil, nil, fmt.Errorf("PAT: %w", err)
			}
			for prog := range mpegts.Programs(sec) {
				if prog.Number != 0 { // 0 is the network PID
					pmtPID = int(prog.PMTPID)
					break
				}
			}
		case int(pid) == pmtPID:
			if !start || streams != nil {
				continue
			}
			sec, err := mpegts.Section(payload, mpegts.TableIDPMT)
			if err != nil {
				return nil, nil, fmt.Errorf("PMT: %w", err)
			}
			for es, err := range mpegts.Streams(sec) {
				if err != nil {
					return nil, nil, fmt.Errorf("PMT: %w", err)
				}
				if byPID[es.PID] == nil {
					st := &tsStream{Stream: es}
					streams = append(streams, st)
					byPID[es.PID] = st
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
			if start {
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

// parsePES reads a PES packet's header.
func parsePES(b []byte) (pesPacket, error) {
	h, err := mpegts.ParsePESHeader(b)
	if err != nil {
		return pesPacket{}, err
	}
	if length := int(binary.BigEndian.Uint16(b[4:])); length != 0 {
		if 6+length > len(b) {
			return pesPacket{}, fmt.Errorf("PES of %d bytes cut short at %d", 6+length, len(b))
		}
		b = b[:6+length]
	}
	switch {
	case h.DataOffset > len(b):
		return pesPacket{}, errors.New("PES header past its data")
	case !h.HasPTS:
		return pesPacket{}, errors.New("PES without a PTS")
	case h.HasDTS && h.DataOffset < 9+10:
		return pesPacket{}, errors.New("PES header too short for its PTS and DTS")
	case h.DataOffset < 9+5:
		return pesPacket{}, errors.New("PES header too short for its PTS")
	}
	return pesPacket{pts: h.PTS, dts: h.DTS, data: b[h.DataOffset:]}, nil
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
