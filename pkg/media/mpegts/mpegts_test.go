package mpegts

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// pesPacket is one transport packet of pid starting a PES of stream id with the given times
// (dts < 0: none), an adaptation field of afLen bytes after its length byte (< 0: none).
func pesPacket(pid uint16, id byte, pts, dts int64, afLen int) []byte {
	p := []byte{SyncByte, 0x40 | byte(pid>>8), byte(pid), 0x15}
	if afLen >= 0 {
		p[3] |= 0x20
		p = append(p, byte(afLen))
		p = append(p, bytes.Repeat([]byte{0xff}, afLen)...)
		if afLen > 0 {
			p[5] = 0x00 // no flags
		}
	}
	flags, hlen := byte(0x80), byte(5)
	if dts >= 0 {
		flags, hlen = 0xc0, 10
	}
	p = append(p, 0, 0, 1, id, 0, 0, 0x80, flags, hlen)
	if dts >= 0 {
		p = AppendTimestamp(p, 0x3, pts)
		p = AppendTimestamp(p, 0x1, dts)
	} else {
		p = AppendTimestamp(p, 0x2, pts)
	}
	for len(p) < PacketSize {
		p = append(p, 0xaa)
	}
	return p[:PacketSize]
}

func patPacket() [PacketSize]byte {
	return PSIPacket(PIDPAT, TableIDPAT, []byte{0x00, 0x01, 0xc1, 0x00, 0x00,
		0x00, 0x00, 0xe0, 0x10, // program 0: the network PID, 16
		0x00, 0x01, 0xf0, 0x00, // program 1 on PID 0x1000
	})
}

func pmtPacket() [PacketSize]byte {
	return PSIPacket(0x1000, TableIDPMT, []byte{0x00, 0x01, 0xc1, 0x00, 0x00,
		0xe1, 0x00, // PCR PID 256
		0xf0, 0x02, 0x0e, 0x00, // a program descriptor
		StreamTypeH264, 0xe1, 0x00, 0xf0, 0x00,
		StreamTypePrivateData, 0xe1, 0x01, 0xf0, 0x06, 0x05, 0x04, 'O', 'p', 'u', 's',
	})
}

// The check value of CRC-32/MPEG-2, and the property readers check sections by: the CRC of a
// section with its CRC is 0.
func TestCRC32MPEG2(t *testing.T) {
	if got := crc32MPEG2([]byte("123456789")); got != 0x0376e6e7 {
		t.Fatalf("CRC %#08x, want 0x0376e6e7", got)
	}
	for _, pkt := range [][PacketSize]byte{patPacket(), pmtPacket()} {
		n := int(pkt[6]&0x0f)<<8 | int(pkt[7])
		if crc := crc32MPEG2(pkt[5 : 5+3+n]); crc != 0 {
			t.Errorf("PID %d: CRC over the section and its CRC is %#x", int(pkt[1]&0x1f)<<8|int(pkt[2]), crc)
		}
	}
}

func TestPSIRoundTrip(t *testing.T) {
	pat, pmt := patPacket(), pmtPacket()
	h, err := parsePacket(pat[:])
	if err != nil || h.PID != PIDPAT || !h.Start || !h.HasPayload || h.CC != 0 || h.AdaptationField != nil {
		t.Fatalf("PAT packet %+v, %v", h, err)
	}
	sec, err := Section(h.Payload, TableIDPAT)
	if err != nil {
		t.Fatal(err)
	}
	if got := slices.Collect(Programs(sec)); len(got) != 2 || got[0] != (Program{0, 16}) || got[1] != (Program{1, 0x1000}) {
		t.Fatalf("PAT %+v", got)
	}
	if _, err := Section(h.Payload, TableIDPMT); err == nil {
		t.Fatal("a PAT read as a PMT")
	}

	h, _ = parsePacket(pmt[:])
	sec, err = Section(h.Payload, TableIDPMT)
	if err != nil {
		t.Fatal(err)
	}
	streams, err := allStreams(sec)
	if err != nil || len(streams) != 2 {
		t.Fatalf("PMT %+v, %v", streams, err)
	}
	if s := streams[0]; s.Type != StreamTypeH264 || s.PID != 256 || len(s.Descriptors) != 0 {
		t.Errorf("stream 0: %+v", s)
	}
	if s := streams[1]; s.Type != StreamTypePrivateData || s.PID != 257 || string(s.Descriptors) != "\x05\x04Opus" {
		t.Errorf("stream 1: %+v", s)
	}
}

// A PMT whose last stream's descriptors run past the section: the streams up to and including
// that one, then the error, for the callers that pass damage on.
// allStreams collects what Streams yields, and its error.
func allStreams(pmt []byte) (out []Stream, err error) {
	for s, e := range Streams(pmt) {
		if err != nil {
			panic("Streams yielded after an error")
		}
		out, err = append(out, s), e
	}
	return out, err
}

func TestStreamsDamaged(t *testing.T) {
	pmt := pmtPacket()
	h, _ := parsePacket(pmt[:])
	sec, _ := Section(h.Payload, TableIDPMT)
	sec = append([]byte(nil), sec...)
	sec[len(sec)-7] = 0x07 // ES_info_length 6 -> 7
	streams, err := allStreams(sec)
	if err == nil || len(streams) != 2 || streams[1].PID != 257 || string(streams[1].Descriptors) != "\x05\x04Opus" {
		t.Fatalf("%+v, %v", streams, err)
	}
	if streams, err := allStreams(sec[:11]); err == nil || len(streams) != 1 || streams[0].PID != 0 {
		t.Fatalf("short section: %+v, %v", streams, err)
	}
}

func TestSectionErrors(t *testing.T) {
	pat := patPacket()
	good := pat[4:]
	for name, payload := range map[string][]byte{
		"empty":           {},
		"pointer past":    {0xb7, 0, 0, 0},
		"spans packets":   append([]byte{0, 0, 0xb0, 0xff}, make([]byte, 100)...),
		"short section":   {0, 0, 0xb0, 0x08, 0, 1, 0xc1, 0, 0, 0, 0, 0, 0},
		"other table id":  append([]byte{0, 0x40}, good[2:]...),
		"cut before body": good[:3],
	} {
		if sec, err := Section(payload, TableIDPAT); err == nil {
			t.Errorf("%s: section % x", name, sec)
		}
	}
}

func TestPacketHeader(t *testing.T) {
	pkt := pesPacket(0x101, 0xc0, 1000, -1, 7)
	pkt[5] = 0x50 // RAI and PCR_flag
	h, err := parsePacket(pkt)
	if err != nil || h.PID != 0x101 || !h.Start || !h.HasPayload || h.CC != 5 ||
		len(h.AdaptationField) != 7 || len(h.Payload) != PacketSize-4-8 {
		t.Fatalf("%+v, %v", h, err)
	}
	PutPCR(h.AdaptationField, 0x1_2345_6789)
	if pcr, ok := PCR(h.AdaptationField); !ok || pcr != 0x1_2345_6789 {
		t.Fatalf("PCR %d, %v", pcr, ok)
	}
	if h.AdaptationField[5]&0x7e != 0x7e || h.AdaptationField[6] != 0xff {
		t.Fatalf("PCR's reserved bits or extension changed: % x", h.AdaptationField)
	}
	pkt[5] = 0x40 // no PCR
	if _, ok := PCR(h.AdaptationField); ok {
		t.Fatal("a PCR without PCR_flag")
	}

	pkt[4] = 184 // the adaptation field runs one byte past the packet
	h, err = parsePacket(pkt)
	if err == nil || h.PID != 0x101 || h.AdaptationField != nil || h.Payload != nil {
		t.Fatalf("%+v, %v", h, err)
	}
	pkt[4] = 183 // and fills it
	if h, err = parsePacket(pkt); err != nil || !h.HasPayload || len(h.Payload) != 0 || len(h.AdaptationField) != 183 {
		t.Fatalf("%+v, %v", h, err)
	}
	pkt[3] = 0x25 // adaptation field only
	if h, err = parsePacket(pkt); err != nil || h.HasPayload || h.Payload != nil {
		t.Fatalf("%+v, %v", h, err)
	}
}

func TestTimestamps(t *testing.T) {
	for _, ts := range []int64{0, 1, 90000, 1<<32 + 12345, 1<<33 - 1} {
		b := AppendTimestamp(nil, 0x3, ts)
		if got := Timestamp(b); got != ts {
			t.Errorf("%d read back as %d", ts, got)
		}
		if b[0]>>4 != 0x3 || b[0]&1 != 1 || b[2]&1 != 1 || b[4]&1 != 1 {
			t.Errorf("%d: prefix or marker bits wrong: % x", ts, b)
		}
		// Written over another time, the prefix and markers stay as they were.
		c := AppendTimestamp(nil, 0x3, 1<<33-1-ts)
		PutTimestamp(c, ts)
		if !bytes.Equal(b, c) {
			t.Errorf("%d: % x written over another, % x appended", ts, c, b)
		}
	}
	if got := Timestamp(AppendTimestamp(nil, 0x2, 1<<33+7)); got != 7 {
		t.Errorf("2^33+7 read back as %d, want 7", got)
	}
}

func TestParsePESHeader(t *testing.T) {
	pts, dts := int64(1<<33-5), int64(1<<33-3005)
	h, err := ParsePESHeader(pesPacket(0x100, 0xe0, pts, dts, -1)[4:])
	if err != nil || h != (PESHeader{StreamID: 0xe0, HasPTS: true, HasDTS: true, PTS: pts, DTS: dts, DataOffset: 19}) {
		t.Fatalf("%+v, %v", h, err)
	}
	pes := pesPacket(0x101, 0xc0, pts, -1, -1)[4:]
	h, err = ParsePESHeader(pes)
	if err != nil || h != (PESHeader{StreamID: 0xc0, HasPTS: true, PTS: pts, DTS: pts, DataOffset: 14}) {
		t.Fatalf("%+v, %v", h, err)
	}
	if HasOptionalHeader(0xbe) || !HasOptionalHeader(0xe0) || !HasOptionalHeader(0xbd) {
		t.Error("HasOptionalHeader is wrong about padding, video or private stream 1")
	}
	pes[7] = 0x00 // no timestamps
	if h, err = ParsePESHeader(pes); err != nil || h.HasPTS || h.DataOffset != 14 {
		t.Fatalf("no timestamps: %+v, %v", h, err)
	}
	if _, err := ParsePESHeader([]byte{0, 0, 0x01, 0xe0, 0}); err == nil || errors.Is(err, ErrNotPES) {
		t.Fatalf("cut short: %v", err)
	}
	if h, err := ParsePESHeader(pesPacket(0x100, 0xe0, pts, dts, -1)[4 : 4+18]); err == nil || !h.HasPTS || h.PTS != pts || h.HasDTS {
		t.Fatalf("a DTS past the bytes given: %+v, %v", h, err)
	}
	if h, err := ParsePESHeader(pesPacket(0x100, 0xe0, pts, dts, -1)[4 : 4+13]); err == nil || h.HasPTS {
		t.Fatalf("a PTS past the bytes given: %+v, %v", h, err)
	}
	pmt := pmtPacket()
	for _, b := range [][]byte{nil, {0, 0}, {0, 0, 2, 0xe0, 0, 0, 0x80, 0x80, 5, 0, 0, 0, 0, 0}, pmt[4:]} {
		if _, err := ParsePESHeader(b); !errors.Is(err, ErrNotPES) {
			t.Errorf("% x: %v, want ErrNotPES", b[:min(len(b), 8)], err)
		}
	}
}

// FuzzParse feeds arbitrary packets to every parser. Besides not panicking, what is read must
// lie in the input, and writing a time back as it was read must not change a byte.
func FuzzParse(f *testing.F) {
	pat, pmt := patPacket(), pmtPacket()
	f.Add(pat[:])
	f.Add(pmt[:])
	f.Add(pesPacket(0x100, 0xe0, 1<<33-5, 12345, 7))
	f.Add(pesPacket(0x101, 0xc0, 900000, -1, -1))
	f.Add(pesPacket(0x101, 0xbf, 900000, -1, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < PacketSize {
			b = append(b, make([]byte, PacketSize-len(b))...)
		}
		pkt := b[:PacketSize]
		orig := bytes.Clone(pkt)
		h, err := parsePacket(pkt)
		if err != nil {
			if h.AdaptationField != nil || h.Payload != nil {
				t.Fatalf("error %v with %+v", err, h)
			}
			return
		}
		if 4+len(h.AdaptationField)+len(h.Payload) > PacketSize {
			t.Fatalf("%d + %d bytes in a packet", len(h.AdaptationField), len(h.Payload))
		}
		if pcr, ok := PCR(h.AdaptationField); ok {
			PutPCR(h.AdaptationField, pcr)
		}
		for _, id := range []byte{TableIDPAT, TableIDPMT} {
			sec, err := Section(h.Payload, id)
			if err != nil {
				continue
			}
			if len(sec) < 8 || sec[0] != id {
				t.Fatalf("section % x", sec)
			}
			for range Programs(sec) {
			}
			streams, _ := allStreams(sec)
			for _, s := range streams {
				if len(s.Descriptors) > len(sec) {
					t.Fatalf("%d bytes of descriptors in a %d-byte section", len(s.Descriptors), len(sec))
				}
			}
		}
		if pes, err := ParsePESHeader(h.Payload); err == nil && pes.HasPTS {
			PutTimestamp(h.Payload[9:14], pes.PTS)
			if pes.HasDTS {
				PutTimestamp(h.Payload[14:19], pes.DTS)
			}
		}
		if !bytes.Equal(pkt, orig) {
			t.Fatalf("times written back as read changed the packet:\n% x\n% x", orig, pkt)
		}
	})
}

// packet is what the header functions and Split read of a packet, in one value for the tests.
type packet struct {
	PID                      uint16
	Start, HasPayload        bool
	CC                       uint8
	AdaptationField, Payload []byte
}

func parsePacket(b []byte) (p packet, err error) {
	p = packet{PID: PID(b), Start: StartsUnit(b), HasPayload: HasPayload(b), CC: CC(b)}
	p.AdaptationField, p.Payload, err = Split(b)
	return p, err
}

// Split's error is a value that needs no allocation (what keeps Split inlined), with the
// message the readers have always given.
func TestSplitErrorAllocs(t *testing.T) {
	pkt := make([]byte, PacketSize)
	pkt[0], pkt[3], pkt[4] = SyncByte, 0x30, 200
	var err error
	if n := testing.AllocsPerRun(100, func() { _, _, err = Split(pkt) }); n != 0 || err == nil || err.Error() != "adaptation field of 200 bytes" {
		t.Fatalf("%v allocations, error %v", n, err)
	}
}
