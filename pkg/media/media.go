// Package media holds the codec-level values every media package shares: access units with
// their timestamps and the codec configuration needed to decode them. It is pure: bytes in,
// values out; it imports neither the queue nor storage.
package media

// Timescale is the clock of every timestamp in a session's timeline: 90 kHz, as in MPEG-TS.
// Timestamps are int64 so a session never wraps (MPEG-TS's 33 bits wrap after 26.5 hours).
const Timescale = 90000

// SessionOrigin is where a session's timeline starts: the publisher's timestamp 0 maps to 10 s.
// Encoders run decode times ahead of presentation times by their reorder delay (x264 with
// B-frames: two frames), so a ladder rung of a source presented from 0 would start at a
// negative decode time, which no CMAF tfdt can hold. The headroom keeps every rendition's
// timestamps positive, whatever the publisher sends.
const SessionOrigin = 10 * Timescale

// VideoFrame is one H.264 access unit.
type VideoFrame struct {
	PTS int64 // presentation time, Timescale units
	DTS int64 // decode time, Timescale units
	Key bool  // IDR: decoding can start here
	// NALUs are the access unit's NAL units without start codes or length prefixes.
	NALUs [][]byte
}

// AudioFrame is one AAC access unit (raw, without ADTS header).
type AudioFrame struct {
	PTS  int64 // Timescale units
	Data []byte
}

// H264Config is the decoder configuration of an H.264 track.
type H264Config struct {
	SPS []byte
	PPS []byte
}

// AACConfig is the decoder configuration of an AAC track.
type AACConfig struct {
	// ASC is the marshaled MPEG-4 AudioSpecificConfig.
	ASC []byte
}
