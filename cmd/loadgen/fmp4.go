package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/Eyevinn/mp4ff/mp4"
)

// trexDefaults are the track-extends defaults of an init segment.
type trexDefaults = mp4.TrexBox

// parseInit returns the timescale (mdhd) and trex defaults of a CMAF init segment's first
// track.
func parseInit(b []byte) (uint32, *trexDefaults, error) {
	f, err := mp4.DecodeFile(bytes.NewReader(b))
	if err != nil {
		return 0, nil, fmt.Errorf("init segment: %w", err)
	}
	moov := f.Moov
	if moov == nil && f.Init != nil {
		moov = f.Init.Moov
	}
	if moov == nil || moov.Trak == nil || moov.Trak.Mdia == nil || moov.Trak.Mdia.Mdhd == nil {
		return 0, nil, errors.New("init segment without moov/trak/mdia/mdhd")
	}
	ts := moov.Trak.Mdia.Mdhd.Timescale
	if ts == 0 {
		return 0, nil, errors.New("init segment with timescale 0")
	}
	var trex *mp4.TrexBox
	if moov.Mvex != nil {
		trex = moov.Mvex.Trex
	}
	return ts, trex, nil
}

var errShort = errors.New("fragment head truncated")

// parseFragmentTimes finds the first moof in the head of a media segment and returns its
// first track's base media decode time (tfdt) and the sum of its sample durations, in the
// track's timescale. If the moof does not fit in b it returns errShort and the bytes needed.
func parseFragmentTimes(b []byte, trex *mp4.TrexBox) (start, dur uint64, need int, err error) {
	pos := 0
	for pos+8 <= len(b) {
		size := uint64(binary.BigEndian.Uint32(b[pos:]))
		typ := string(b[pos+4 : pos+8])
		hdr := 8
		if size == 1 {
			if pos+16 > len(b) {
				return 0, 0, pos + 16, errShort
			}
			size = binary.BigEndian.Uint64(b[pos+8:])
			hdr = 16
		}
		if size == 0 || size < uint64(hdr) {
			return 0, 0, 0, fmt.Errorf("bad %q box size %d", typ, size)
		}
		if typ != "moof" {
			pos += int(size)
			continue
		}
		end := pos + int(size)
		if end > len(b) {
			return 0, 0, end, errShort
		}
		box, err := mp4.DecodeBox(uint64(pos), bytes.NewReader(b[pos:end]))
		if err != nil {
			return 0, 0, 0, fmt.Errorf("moof: %w", err)
		}
		moof, ok := box.(*mp4.MoofBox)
		if !ok || moof.Traf == nil || moof.Traf.Tfhd == nil || moof.Traf.Tfdt == nil {
			return 0, 0, 0, errors.New("moof without traf/tfhd/tfdt")
		}
		start = moof.Traf.Tfdt.BaseMediaDecodeTime()
		for _, trun := range moof.Traf.Truns {
			dur += trun.AddSampleDefaultValues(moof.Traf.Tfhd, trex)
		}
		return start, dur, 0, nil
	}
	return 0, 0, pos + 8, errShort
}
