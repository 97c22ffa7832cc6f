// Package mpegts holds the pieces of MPEG-TS (ISO/IEC 13818-1) that gopcast's writer (tsmux),
// editor (tsedit) and reader (cmaf's demuxer) share: the transport packet header, the PSI
// sections that map a program (PAT, PMT) and their CRC, and the PES header's timestamps and
// the PCR, read and written in place. Each of the three used to carry its own copy of these bit
// layouts; now a fix to one reaches all.
//
// It is deliberately low-level. Each of those packages reads the stream its own way, with its
// own tolerance of damage (the editor passes what it does not understand through, the reader
// refuses it), so what is here splits and decodes fields and reports what is wrong; what to do
// about it, and everything above one packet or one section, stays with the callers. What runs
// for every packet (the header functions, Split, the timestamp and PCR functions) does not
// allocate.
package mpegts

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// PacketSize is the size of a transport packet.
const PacketSize = 188

// SyncByte starts every transport packet.
const SyncByte = 0x47

// Fixed PIDs.
const (
	PIDPAT  = 0x0000
	PIDNull = 0x1fff // stuffing packets
)

// Table ids of the PSI sections gopcast reads and writes.
const (
	TableIDPAT = 0x00
	TableIDPMT = 0x02
)

// Stream types a PMT gives its elementary streams (ISO/IEC 13818-1 table 2-34, and ATSC A/52
// for AC-3 and E-AC-3).
const (
	StreamTypeMPEG1Video  = 0x01
	StreamTypeMPEG2Video  = 0x02
	StreamTypeMPEG1Audio  = 0x03
	StreamTypeMPEG2Audio  = 0x04
	StreamTypePrivateData = 0x06
	StreamTypeAAC         = 0x0f // AAC in ADTS
	StreamTypeMPEG4Video  = 0x10
	StreamTypeAACLATM     = 0x11
	StreamTypeH264        = 0x1b
	StreamTypeH265        = 0x24
	StreamTypeAC3         = 0x81
	StreamTypeEAC3        = 0x87
)

// The header fields of a transport packet, pkt, that the callers read; like Split, they take
// the whole packet and do not look at the sync byte (each caller reports lost sync in its own
// terms).
//
// They are functions of the packet's bytes rather than a struct filled by a parser because they
// run for every packet and must be inlined: a struct holding the payload slice, filled through
// a pointer (with a GC write barrier) or returned in memory, made the demuxer's benchmark some
// 6% slower than the loops it replaced, and a call to Split still 4%.

// PID returns the packet's PID.
func PID(pkt []byte) uint16 { return uint16(pkt[1]&0x1f)<<8 | uint16(pkt[2]) }

// StartsUnit reports whether a PES packet or a PSI section begins in the packet's payload
// (payload_unit_start_indicator).
func StartsUnit(pkt []byte) bool { return pkt[1]&0x40 != 0 }

// HasPayload reports whether adaptation_field_control says the packet has a payload; it may
// still be empty when the adaptation field fills the packet. Only packets with a payload
// advance the continuity counter.
func HasPayload(pkt []byte) bool { return pkt[3]&0x10 != 0 }

// CC returns the packet's continuity_counter.
func CC(pkt []byte) uint8 { return pkt[3] & 0x0f }

// Split returns the packet's adaptation field after its length byte (flags first; nil if it
// has none) and its payload (nil if it has none), or an error if the adaptation field's length
// runs past the packet.
func Split(pkt []byte) (af, payload []byte, err error) {
	pkt = pkt[:PacketSize]
	payload = pkt[4:]
	if pkt[3]&0x20 != 0 {
		n := int(payload[0])
		if 1+n > len(payload) {
			return nil, nil, adaptationFieldLength(payload[0])
		}
		af, payload = payload[1:1+n], payload[1+n:]
	}
	if !HasPayload(pkt) {
		payload = nil
	}
	return af, payload, nil
}

// adaptationFieldLength is Split's error. A byte-sized type, rather than fmt.Errorf, keeps
// Split small enough to be inlined: it becomes an interface without a call or an allocation.
type adaptationFieldLength uint8

func (n adaptationFieldLength) Error() string {
	return fmt.Sprintf("adaptation field of %d bytes", n)
}

// PCR returns the 33-bit, 90 kHz base of the PCR an adaptation field (as Split returns it)
// carries, if it carries one; the 27 MHz extension is not read.
func PCR(af []byte) (base int64, ok bool) {
	if len(af) < 7 || af[0]&0x10 == 0 { // PCR_flag
		return 0, false
	}
	b := af[1:7]
	return int64(binary.BigEndian.Uint32(b))<<1 | int64(b[4]>>7), true
}

// PutPCR writes base, modulo 2^33, into the PCR of an adaptation field that has one (PCR
// reports it), keeping its reserved bits and extension.
func PutPCR(af []byte, base int64) {
	b := af[1:7]
	binary.BigEndian.PutUint32(b, uint32(base>>1))
	b[4] = b[4]&0x7f | byte(base&1)<<7
}

// Timestamp decodes a 5-byte PTS or DTS field.
func Timestamp(b []byte) int64 {
	return int64(b[0]>>1&0x07)<<30 | int64(b[1])<<22 | int64(b[2]>>1)<<15 | int64(b[3])<<7 | int64(b[4]>>1)
}

// PutTimestamp writes t, modulo 2^33, into a 5-byte PTS or DTS field, keeping its 4-bit
// prefix and marker bits.
func PutTimestamp(b []byte, t int64) {
	b[0] = b[0]&0xf1 | byte(t>>29)&0x0e
	b[1] = byte(t >> 22)
	b[2] = b[2]&0x01 | byte(t>>14)&0xfe
	b[3] = byte(t >> 7)
	b[4] = b[4]&0x01 | byte(t<<1)&0xfe
}

// AppendTimestamp appends a PTS or DTS field with its marker bits: prefix is 0x2 for a PTS
// alone, 0x3 for a PTS followed by a DTS, 0x1 for that DTS. It spells out PutTimestamp's
// layout again, with the marker bits set, so that it is inlined: the muxer calls it for every
// PES.
func AppendTimestamp(b []byte, prefix byte, t int64) []byte {
	return append(b,
		prefix<<4|byte(t>>29)&0x0e|1,
		byte(t>>22),
		byte(t>>14)|1,
		byte(t>>7),
		byte(t<<1)|1)
}

// PESHeader is what gopcast reads of a PES packet's header.
type PESHeader struct {
	StreamID byte
	// HasPTS and HasDTS are the PTS_DTS_flags. The PTS is at byte 9 of the packet, the DTS
	// at byte 14; DTS is PTS when there is none.
	HasPTS, HasDTS bool
	PTS, DTS       int64
	// DataOffset is where the packet's data begins: 9 + PES_header_data_length. It may be
	// past the bytes given.
	DataOffset int
}

// ErrNotPES is returned, unwrapped, for bytes that do not begin with a PES start code (a PSI
// section, for instance).
var ErrNotPES = errors.New("PES without a start code")

// ParsePESHeader reads the header of the PES packet that begins b. b need only hold the
// header up to the timestamps its flags announce, so that the first transport packet of a
// PES is enough. When b ends inside the DTS, the error comes with the PTS read (HasDTS false).
//
// The optional header (flags, timestamps) is read whatever the stream id: the audio and video
// streams gopcast reads all have it, and a caller that meets any stream asks
// HasOptionalHeader first.
func ParsePESHeader(b []byte) (PESHeader, error) {
	if len(b) < 3 || b[0] != 0 || b[1] != 0 || b[2] != 1 {
		return PESHeader{}, ErrNotPES
	}
	if len(b) < 9 {
		return PESHeader{}, errors.New("PES header cut short")
	}
	h := PESHeader{StreamID: b[3], DataOffset: 9 + int(b[8])}
	flags := b[7] >> 6
	if flags&2 == 0 { // 0: none; 1 is forbidden
		return h, nil
	}
	if len(b) < 9+5 {
		return PESHeader{}, errTimestampsPast
	}
	h.HasPTS = true
	h.PTS = Timestamp(b[9:14])
	h.DTS = h.PTS
	if flags == 3 {
		if len(b) < 9+10 {
			return h, errTimestampsPast
		}
		h.HasDTS = true
		h.DTS = Timestamp(b[14:19])
	}
	return h, nil
}

var errTimestampsPast = errors.New("PES timestamps past the packet")

// HasOptionalHeader reports whether PES packets of stream id carry the optional header with
// the timestamps (ISO/IEC 13818-1 2.4.3.7: all but the program stream map, padding, private 2,
// ECM, EMM, directory and DSM-CC and H.222.1 type E).
func HasOptionalHeader(id byte) bool {
	switch id {
	case 0xbc, 0xbe, 0xbf, 0xf0, 0xf1, 0xff, 0xf2, 0xf8:
		return false
	}
	return true
}
