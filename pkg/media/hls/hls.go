// Package hls renders HLS playlists for CMAF media: the multivariant (master) playlist that lists
// the video variants and the audio rendition, and the media playlist of one rendition. Rendering
// only: values in, bytes out, no clocks and no storage; the packager decides what to list and
// uploads the result after the segments it names.
//
// The text is written by github.com/Eyevinn/hls-m3u8. This package adds what a CMAF live service
// must hold the library to: EXT-X-VERSION 7 (EXT-X-MAP in a media playlist needs at least 6),
// EXT-X-INDEPENDENT-SEGMENTS (every segment starts with a keyframe), milliseconds in EXTINF,
// a target duration that keeps the spec's rounding rule, and input checks so that a bad value
// fails here instead of producing a playlist a player rejects.
package hls

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/Eyevinn/hls-m3u8/m3u8"
)

// Version is the EXT-X-VERSION of every playlist this package writes. EXT-X-MAP in a media
// playlist without EXT-X-I-FRAMES-ONLY requires 6; one number for both kinds of playlist keeps
// them consistent, and nothing written here needs more than 7.
const Version = 7

// ErrInvalid is wrapped by every error about values that cannot make a valid playlist.
var ErrInvalid = errors.New("invalid playlist")

// Variant is one video rendition as the multivariant playlist lists it (EXT-X-STREAM-INF).
type Variant struct {
	URI              string  // media playlist, relative to the multivariant playlist
	Bandwidth        int     // peak segment bit rate, bits/s, audio included
	AverageBandwidth int     // average segment bit rate, bits/s; 0 to leave out
	Width, Height    int     // RESOLUTION; 0×0 to leave out
	FrameRate        float64 // FRAME-RATE; 0 to leave out
	Codecs           string  // video codec, RFC 6381 (codec.H264Codec); the audio codec is appended
}

// AudioRendition is the audio media playlist shared by every variant (EXT-X-MEDIA TYPE=AUDIO).
type AudioRendition struct {
	GroupID  string // GROUP-ID, and the variants' AUDIO attribute
	Name     string // NAME shown in a player's audio menu
	URI      string // media playlist, relative to the multivariant playlist
	Codecs   string // audio codec, RFC 6381 (codec.AACCodec)
	Channels int    // CHANNELS; 0 to leave out
	Default  bool   // DEFAULT=YES (AUTOSELECT=YES is always written)
}

// Master renders the multivariant playlist. Variants are listed by ascending bandwidth, whatever
// their order in variants: Safari and hls.js begin playback with the first variant listed, and
// starting on the lightest one gets the first frame on screen fastest and avoids a stall at the
// live edge (where the buffer is shortest) before the player has measured the network; adaptive
// switching moves up within a segment or two. When audio is not nil, every variant refers to it
// and its CODECS lists the video codec followed by the audio codec.
func Master(variants []Variant, audio *AudioRendition) ([]byte, error) {
	if len(variants) == 0 {
		return nil, fmt.Errorf("%w: multivariant playlist without variants", ErrInvalid)
	}
	var alt *m3u8.Alternative
	if audio != nil {
		if err := checkAudio(audio); err != nil {
			return nil, err
		}
		alt = &m3u8.Alternative{
			Type:       "AUDIO",
			GroupId:    audio.GroupID,
			Name:       audio.Name,
			URI:        audio.URI,
			Default:    audio.Default,
			Autoselect: true,
		}
		if audio.Channels > 0 {
			alt.Channels = &m3u8.Channels{Amount: audio.Channels}
		}
	}

	sorted := slices.Clone(variants)
	slices.SortStableFunc(sorted, func(a, b Variant) int { return cmp.Compare(a.Bandwidth, b.Bandwidth) })

	pl := m3u8.NewMasterPlaylist()
	pl.SetIndependentSegments(true)
	for i, v := range sorted {
		if err := checkVariant(v); err != nil {
			return nil, fmt.Errorf("variant %d (%s): %w", i, v.URI, err)
		}
		params := m3u8.VariantParams{
			Bandwidth:        uint32(v.Bandwidth),
			AverageBandwidth: uint32(v.AverageBandwidth),
			Codecs:           v.Codecs,
			FrameRate:        v.FrameRate, // three decimals: the library's default precision
		}
		if v.Width > 0 {
			params.Resolution = fmt.Sprintf("%dx%d", v.Width, v.Height)
		}
		if alt != nil {
			params.Codecs += "," + audio.Codecs
			params.Audio = alt.GroupId
			params.Alternatives = []*m3u8.Alternative{alt}
		}
		pl.Append(v.URI, nil, params)
	}
	// Set after Append, which moves the version itself (to 4 for variants with alternatives).
	pl.SetVersion(Version)
	return []byte(pl.String()), nil
}

// Segment is one media segment of a media playlist.
type Segment struct {
	URI      string
	Duration float64 // seconds; written with millisecond precision
	// Discontinuity writes EXT-X-DISCONTINUITY before the segment: its timeline or encoding
	// does not continue the previous segment's (a new publishing session).
	Discontinuity bool
	// Gap writes EXT-X-GAP: the segment could not be produced and players must not fetch it.
	// It keeps its EXTINF and URI, as the spec requires, so the timeline stays whole.
	Gap bool
	// MapURI, when not empty, writes EXT-X-MAP before the segment: from here on segments need
	// this init segment. Repeating the init segment already in force writes nothing (the
	// library suppresses it; the playlist means the same).
	MapURI string
}

// MediaPlaylist is the media playlist of one rendition: the live window, or the whole
// recording once Ended.
type MediaPlaylist struct {
	// TargetDuration is EXT-X-TARGETDURATION in seconds; 0 computes it as the longest segment
	// rounded up. A live playlist must not change it between updates, so a packager should
	// set it from its configured segment duration. Either way every EXTINF rounded to the
	// nearest integer must not exceed it.
	TargetDuration        int
	MediaSequence         uint64 // EXT-X-MEDIA-SEQUENCE: the number of the first segment listed
	DiscontinuitySequence uint64 // EXT-X-DISCONTINUITY-SEQUENCE, written when not 0
	MapURI                string // EXT-X-MAP of the first segment, normally "init.mp4"
	Segments              []Segment
	Ended                 bool // EXT-X-ENDLIST: no segment will be added
	VOD                   bool // EXT-X-PLAYLIST-TYPE:VOD: the playlist will never change; needs Ended
}

// Render writes the media playlist.
func (p MediaPlaylist) Render() ([]byte, error) {
	if len(p.Segments) == 0 {
		return nil, fmt.Errorf("%w: media playlist without segments", ErrInvalid)
	}
	if p.VOD && !p.Ended {
		return nil, fmt.Errorf("%w: a VOD playlist must be Ended", ErrInvalid)
	}
	if p.MapURI != "" {
		if err := checkURI(p.MapURI); err != nil {
			return nil, fmt.Errorf("map: %w", err)
		}
	}

	longest := 0.0 // as written: milliseconds
	for i, s := range p.Segments {
		if err := checkURI(s.URI); err != nil {
			return nil, fmt.Errorf("segment %d: %w", i, err)
		}
		if s.MapURI != "" {
			if err := checkURI(s.MapURI); err != nil {
				return nil, fmt.Errorf("segment %d map: %w", i, err)
			}
		}
		if math.IsNaN(s.Duration) || math.IsInf(s.Duration, 0) || s.Duration <= 0 {
			return nil, fmt.Errorf("%w: segment %d (%s) has duration %v", ErrInvalid, i, s.URI, s.Duration)
		}
		longest = max(longest, math.Round(s.Duration*1000)/1000)
	}
	target := p.TargetDuration
	switch {
	case target == 0:
		target = int(math.Ceil(longest))
	case target < 0 || float64(target) < math.Round(longest):
		return nil, fmt.Errorf("%w: target duration %d s is below the longest segment, %.3f s", ErrInvalid, target, longest)
	}

	pl, err := m3u8.NewMediaPlaylist(0, uint(len(p.Segments))) // window 0: list every segment given
	if err != nil {
		return nil, fmt.Errorf("new media playlist: %w", err)
	}
	pl.SetVersion(Version)
	pl.SetIndependentSegments(true)
	pl.SetTargetDuration(uint(target))
	pl.SeqNo = p.MediaSequence
	pl.DiscontinuitySeq = p.DiscontinuitySequence
	if p.MapURI != "" {
		pl.Map = &m3u8.Map{URI: p.MapURI}
	}
	for _, s := range p.Segments {
		seg := &m3u8.MediaSegment{
			URI:           s.URI,
			Duration:      s.Duration,
			Discontinuity: s.Discontinuity,
			Gap:           s.Gap,
		}
		if s.MapURI != "" {
			seg.Map = &m3u8.Map{URI: s.MapURI}
		}
		if err := pl.AppendSegment(seg); err != nil {
			return nil, fmt.Errorf("append segment %s: %w", s.URI, err)
		}
	}
	if p.VOD {
		pl.MediaType = m3u8.VOD
	}
	// Closed only adds EXT-X-ENDLIST when encoding (Close() would also write into a cached buffer).
	pl.Closed = p.Ended
	return []byte(pl.String()), nil
}

func checkVariant(v Variant) error {
	if err := checkURI(v.URI); err != nil {
		return err
	}
	if v.Bandwidth <= 0 || int64(v.Bandwidth) > math.MaxUint32 {
		return fmt.Errorf("%w: BANDWIDTH %d", ErrInvalid, v.Bandwidth)
	}
	if v.AverageBandwidth < 0 || v.AverageBandwidth > v.Bandwidth {
		return fmt.Errorf("%w: AVERAGE-BANDWIDTH %d outside 0..BANDWIDTH %d", ErrInvalid, v.AverageBandwidth, v.Bandwidth)
	}
	if (v.Width > 0) != (v.Height > 0) || v.Width < 0 || v.Height < 0 {
		return fmt.Errorf("%w: RESOLUTION %dx%d", ErrInvalid, v.Width, v.Height)
	}
	if v.FrameRate < 0 || math.IsNaN(v.FrameRate) || math.IsInf(v.FrameRate, 0) {
		return fmt.Errorf("%w: FRAME-RATE %v", ErrInvalid, v.FrameRate)
	}
	return checkQuoted("CODECS", v.Codecs)
}

func checkAudio(a *AudioRendition) error {
	if err := checkURI(a.URI); err != nil {
		return fmt.Errorf("audio rendition: %w", err)
	}
	for _, f := range []struct{ name, v string }{{"GROUP-ID", a.GroupID}, {"NAME", a.Name}, {"audio CODECS", a.Codecs}} {
		if err := checkQuoted(f.name, f.v); err != nil {
			return fmt.Errorf("audio rendition: %w", err)
		}
	}
	if a.Channels < 0 {
		return fmt.Errorf("%w: audio rendition CHANNELS %d", ErrInvalid, a.Channels)
	}
	return nil
}

// checkQuoted refuses what the library would write unescaped into a quoted-string attribute
// and so break the playlist: double quotes and line breaks. Empty values are refused too.
func checkQuoted(name, v string) error {
	if v == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, name)
	}
	if strings.ContainsAny(v, "\"\r\n") {
		return fmt.Errorf("%w: %s %q contains a quote or line break", ErrInvalid, name, v)
	}
	return nil
}

func checkURI(uri string) error {
	if err := checkQuoted("URI", uri); err != nil {
		return err
	}
	if strings.HasPrefix(uri, "#") {
		return fmt.Errorf("%w: URI %q would read as a tag", ErrInvalid, uri)
	}
	return nil
}
