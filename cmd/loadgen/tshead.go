package main

import (
	"errors"
	"fmt"
)

// MPEG-TS segments (nginx-rtmp's HLS, and any server writing HLS without EXT-X-MAP) carry their
// timing in PES headers. loadgen fetches only the head of each segment and reads the decode
// time of its first video access unit: PAT → PMT → the first PES that starts on the video
// PID. The 90 kHz value is returned as is; what the server added to the publisher's RTMP
// timestamps (nginx-rtmp: 700 ms) is subtracted by the report (--ts-offset).

const tsPacketSize = 188

// tsTimescale is the MPEG-TS PTS/DTS clock.
const tsTimescale = 90000

// errTSShort says the head ended before the first video PES header: fetch more.
var errTSShort = errors.New("MPEG-TS head ends before the first video PES header")

// tsVideoStreamType reports whether a PMT stream_type is video loadgen can time.
func tsVideoStreamType(t byte) bool {
	switch t {
	case 0x01, 0x02, 0x10, 0x1b, 0x24, 0x33: // MPEG-1/2 video, MPEG-4 visual, H.264, H.265, H.266
		return true
	}
	return false
}

// tsFirstVideoDTS returns the decode time (DTS, or PTS when the PES carries no DTS) of the
// first PES that starts on the program's first video stream, in 90 kHz ticks, and whether it
// came from a DTS. When the program has no video stream, the first elementary stream is used.
// A head that ends too early gives errTSShort.
func tsFirstVideoDTS(b []byte) (ts int64, fromDTS bool, err error) {
	start, err := tsSync(b)
	if err != nil {
		return 0, false, err
	}
	pmtPID, mediaPID := -1, -1
	for off := start; off+tsPacketSize <= len(b); off += tsPacketSize {
		p := b[off : off+tsPacketSize]
		if p[0] != 0x47 {
			return 0, false, fmt.Errorf("MPEG-TS sync byte lost at offset %d", off)
		}
		pusi := p[1]&0x40 != 0
		pid := int(p[1]&0x1f)<<8 | int(p[2])
		payload, ok := tsPayload(p)
		if !ok || !pusi {
			continue
		}
		switch {
		case pid == 0 && pmtPID < 0:
			if v, err := tsParsePAT(payload); err != nil {
				return 0, false, err
			} else if v >= 0 {
				pmtPID = v
			}
		case pid == pmtPID && mediaPID < 0:
			v, err := tsParsePMT(payload)
			if err != nil {
				return 0, false, err
			}
			mediaPID = v
		case pid == mediaPID:
			return tsPESTime(payload)
		}
	}
	return 0, false, errTSShort
}

// tsSync finds the first packet: offset 0 when the data starts with a sync byte (as segments
// do), else the first offset whose next two packets also start with one.
func tsSync(b []byte) (int, error) {
	if len(b) > 0 && b[0] == 0x47 {
		return 0, nil
	}
	for i := 0; i+2*tsPacketSize < len(b) && i < tsPacketSize; i++ {
		if b[i] == 0x47 && b[i+tsPacketSize] == 0x47 && b[i+2*tsPacketSize] == 0x47 {
			return i, nil
		}
	}
	if len(b) < 3*tsPacketSize {
		return 0, errTSShort
	}
	return 0, errors.New("not MPEG-TS: no sync byte")
}

// tsPayload returns a packet's payload (after the adaptation field), if it has one.
func tsPayload(p []byte) ([]byte, bool) {
	afc := p[3] >> 4 & 0x03
	i := 4
	if afc&0x02 != 0 {
		i += 1 + int(p[4])
	}
	if afc&0x01 == 0 || i >= len(p) {
		return nil, false
	}
	return p[i:], true
}

// tsSection returns the PSI section that starts in a payload (after its pointer field), cut
// to its section_length, checking its table id.
func tsSection(payload []byte, tableID byte) ([]byte, error) {
	if len(payload) < 1 {
		return nil, errors.New("empty PSI payload")
	}
	i := 1 + int(payload[0])
	if i+3 > len(payload) {
		return nil, errors.New("PSI pointer field past the packet")
	}
	s := payload[i:]
	if s[0] != tableID {
		return nil, fmt.Errorf("PSI table id %#x, want %#x", s[0], tableID)
	}
	n := int(s[1]&0x0f)<<8 | int(s[2])
	if 3+n > len(s) || n < 9 {
		return nil, errors.New("PSI section longer than its packet (multi-packet sections are not supported)")
	}
	return s[:3+n-4], nil // without the CRC
}

// tsParsePAT returns the PMT PID of the first program (-1: none).
func tsParsePAT(payload []byte) (int, error) {
	s, err := tsSection(payload, 0x00)
	if err != nil {
		return 0, fmt.Errorf("PAT: %w", err)
	}
	for i := 8; i+4 <= len(s); i += 4 {
		program := int(s[i])<<8 | int(s[i+1])
		if program != 0 { // 0 is the network PID
			return int(s[i+2]&0x1f)<<8 | int(s[i+3]), nil
		}
	}
	return -1, nil
}

// tsParsePMT returns the PID of the first video stream, or of the first stream when there is
// no video.
func tsParsePMT(payload []byte) (int, error) {
	s, err := tsSection(payload, 0x02)
	if err != nil {
		return 0, fmt.Errorf("PMT: %w", err)
	}
	if len(s) < 12 {
		return 0, errors.New("PMT: short section")
	}
	first := -1
	i := 12 + (int(s[10]&0x0f)<<8 | int(s[11]))
	for i+5 <= len(s) {
		typ := s[i]
		pid := int(s[i+1]&0x1f)<<8 | int(s[i+2])
		if tsVideoStreamType(typ) {
			return pid, nil
		}
		if first < 0 {
			first = pid
		}
		i += 5 + (int(s[i+3]&0x0f)<<8 | int(s[i+4]))
	}
	if first < 0 {
		return 0, errors.New("PMT lists no elementary stream")
	}
	return first, nil
}

// tsPESTime reads the DTS (or the PTS) of a PES header.
func tsPESTime(payload []byte) (int64, bool, error) {
	if len(payload) < 9 || payload[0] != 0 || payload[1] != 0 || payload[2] != 1 {
		return 0, false, errors.New("PES without start code")
	}
	flags := payload[7] >> 6
	hdr := payload[9:]
	if int(payload[8]) > len(hdr) {
		return 0, false, errors.New("PES header longer than its packet")
	}
	switch flags {
	case 0x02:
		if len(hdr) < 5 {
			return 0, false, errors.New("short PES PTS")
		}
		return tsTimestamp(hdr[:5]), false, nil
	case 0x03:
		if len(hdr) < 10 {
			return 0, false, errors.New("short PES DTS")
		}
		return tsTimestamp(hdr[5:10]), true, nil
	}
	return 0, false, errors.New("PES without PTS")
}

// tsTimestamp decodes a 33-bit PTS/DTS field (5 bytes with marker bits).
func tsTimestamp(b []byte) int64 {
	return int64(b[0]>>1&0x07)<<30 | int64(b[1])<<22 | int64(b[2]>>1)<<15 | int64(b[3])<<7 | int64(b[4]>>1)
}
