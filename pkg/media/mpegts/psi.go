package mpegts

import (
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
)

// Section returns the PSI section with tableID that begins in payload (the payload of a packet
// that starts a unit), from table_id up to, not including, its CRC. The section must be whole
// in payload: the PAT and PMT of gopcast's chunks and of ffmpeg's output are one packet each.
// The CRC is not checked, as tsedit and cmaf never have: checking it would make them refuse
// streams they take now.
func Section(payload []byte, tableID byte) ([]byte, error) {
	if len(payload) < 1 || 1+int(payload[0])+3 > len(payload) {
		return nil, errors.New("pointer field past the packet")
	}
	sec := payload[1+int(payload[0]):]
	if sec[0] != tableID {
		return nil, fmt.Errorf("table id %#x, want %#x", sec[0], tableID)
	}
	n := int(binary.BigEndian.Uint16(sec[1:]) & 0x0fff)
	if 3+n > len(sec) {
		return nil, errors.New("section spans packets")
	}
	if n < 5+4 { // the long form's 5 header bytes after section_length, and the CRC
		return nil, errors.New("short section")
	}
	return sec[:3+n-4], nil
}

// Program is one entry of a PAT: a program number (0 for the network PID) and the PID of its
// PMT.
type Program struct {
	Number uint16
	PMTPID uint16
}

// Programs yields the programs a PAT section (as Section returns it) lists, in its order.
// Like Streams it is an iterator so that reading the tables, which ffmpeg repeats every
// 100 ms, allocates nothing.
func Programs(pat []byte) iter.Seq[Program] {
	return func(yield func(Program) bool) {
		// table_id, section_length, transport_stream_id, version, section numbers: 8 bytes.
		for p := 8; p+4 <= len(pat); p += 4 {
			prog := Program{
				Number: binary.BigEndian.Uint16(pat[p:]),
				PMTPID: binary.BigEndian.Uint16(pat[p+2:]) & 0x1fff,
			}
			if !yield(prog) {
				return
			}
		}
	}
}

// Stream is one elementary stream a PMT lists.
type Stream struct {
	Type        uint8
	PID         uint16
	Descriptors []byte // its ES_info, as in the section
}

// Streams yields the elementary streams a PMT section (as Section returns it) lists, in its
// order. A damaged section ends with an error: a section too short for its header yields a
// zero Stream with it; a stream whose descriptors run past the section's end is yielded with
// it, with what there is of its descriptors, so that a caller that passes damage on can still
// find it.
func Streams(pmt []byte) iter.Seq2[Stream, error] {
	return func(yield func(Stream, error) bool) {
		// 8 bytes of header as the PAT's, PCR_PID, program_info_length and its descriptors.
		if len(pmt) < 12 {
			yield(Stream{}, errors.New("short section"))
			return
		}
		p := 12 + int(binary.BigEndian.Uint16(pmt[10:])&0x0fff)
		for p+5 <= len(pmt) {
			es := Stream{Type: pmt[p], PID: binary.BigEndian.Uint16(pmt[p+1:]) & 0x1fff}
			n := int(binary.BigEndian.Uint16(pmt[p+3:]) & 0x0fff)
			if p+5+n > len(pmt) {
				es.Descriptors = pmt[p+5:]
				yield(es, errors.New("descriptors overrun the section"))
				return
			}
			es.Descriptors = pmt[p+5 : p+5+n]
			if !yield(es, nil) {
				return
			}
			p += 5 + n
		}
	}
}

// PSIPacket is a transport packet of pid holding one PSI section: tableID, then body (the
// section after its length field, up to the CRC), then the CRC, then stuffing. The body must
// fit one packet; the continuity counter is 0, for the caller to set.
func PSIPacket(pid uint16, tableID byte, body []byte) [PacketSize]byte {
	var p [PacketSize]byte
	for i := range p {
		p[i] = 0xff
	}
	p[0], p[1], p[2], p[3] = SyncByte, 0x40|byte(pid>>8), byte(pid), 0x10
	p[4] = 0                // pointer_field
	length := len(body) + 4 // body and CRC
	sec := append([]byte{tableID, 0xb0 | byte(length>>8), byte(length)}, body...)
	crc := crc32MPEG2(sec)
	sec = binary.BigEndian.AppendUint32(sec, crc)
	copy(p[5:], sec)
	return p
}

// crc32MPEG2 is the CRC of PSI sections: polynomial 0x04C11DB7, MSB first, initial value all
// ones, no final inversion (hash/crc32 has only the bit-reversed form).
func crc32MPEG2(b []byte) uint32 {
	crc := uint32(0xffffffff)
	for _, c := range b {
		crc ^= uint32(c) << 24
		for range 8 {
			if crc&0x80000000 != 0 {
				crc = crc<<1 ^ 0x04c11db7
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
