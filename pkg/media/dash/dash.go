// Package dash renders MPEG-DASH manifests (MPDs) over the same CMAF segments the HLS playlists
// list: {rendition}/init.mp4 (or a later init-N.mp4) and {rendition}/{n}.m4s, where n is the
// stream-wide segment number. Rendering only: values in, bytes out, no clocks and no storage;
// the packager decides what to list and uploads the result after the segments it names.
//
// The XML is written by github.com/Eyevinn/dash-mpd. This package adds what a CMAF live service
// must hold the library to: the isoff-live and CMAF profiles, one video AdaptationSet holding
// every rung and one audio AdaptationSet, a SegmentTemplate with a SegmentTimeline per
// AdaptationSet, one Period per publishing session (or per init segment), and input checks so
// that a bad value fails here instead of producing a manifest a player rejects.
//
// Why SegmentTimeline and not a plain $Number$ template with @duration: a segment is one chunk,
// and chunks are cut at the first keyframe at or after the target duration, so their length
// follows the source's GOP and is not constant (2.002 s, 1.968 s, a short last one). @duration
// promises every segment lasts exactly that long, and players compute which segment holds a
// given time from it; the error accumulates over a session until they request segments that do
// not exist yet or skip ones that do. A SegmentTimeline lists every segment's real start and
// duration (runs of equal durations compressed with @r), so addresses and times stay exact, and
// a hole in the timeline can be written as such.
package dash

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/Eyevinn/dash-mpd/mpd"
)

// ErrInvalid is wrapped by every error about values that cannot make a valid MPD.
var ErrInvalid = errors.New("invalid MPD")

// Profiles is MPD@profiles: the live profile (SegmentTemplate, segments that start with a
// keyframe, one init segment per Representation) and the CMAF profile, which the segments meet:
// package cmaf writes one track per file, a 'cmfc' ftyp and 'cmfs' styp brands, and tfdt on the
// session timeline.
const Profiles = mpd.PROFILE_LIVE + "," + mpd.PROFILE_CMAF

// DefaultInit is the init segment name used for a Segment whose Init is empty.
const DefaultInit = "init.mp4"

// UTCTiming schemes (ISO/IEC 23009-1 Table 32) that players implement. Direct carries the time
// in the MPD itself (an xs:dateTime as Value); the HTTP ones give a URL a player fetches.
const (
	UTCDirect     = "urn:mpeg:dash:utc:direct:2014"
	UTCHTTPHead   = "urn:mpeg:dash:utc:http-head:2014"
	UTCHTTPISO    = "urn:mpeg:dash:utc:http-iso:2014"
	UTCHTTPXSDate = "urn:mpeg:dash:utc:http-xsdate:2014"
)

// Representation is one rendition: a video rung or the audio.
type Representation struct {
	// ID is the rendition's directory name ("source", "720p", "audio"). It replaces
	// $RepresentationID$ in segment URLs, so it must be a plain path segment: ASCII letters,
	// digits, '.', '_' and '-', not starting with a punctuation character.
	ID        string
	Codecs    string // RFC 6381, from the real SPS or ASC (codec.H264Codec, codec.AACCodec)
	Bandwidth int    // bits/s: the peak rate a player must sustain to play it

	Width, Height int     // video only, both required
	FrameRate     float64 // video only; 0 leaves it out. Written as a ratio: 30, 30000/1001, 25/2.

	AudioSamplingRate int // audio only, required
	AudioChannels     int // audio only, required
}

// Segment is one CMAF media segment, as listed for every Representation of an AdaptationSet:
// all rungs of a chunk share its number, start and duration.
type Segment struct {
	N uint64 // segment number: the file {N}.m4s, $Number$ in the template
	// T is the segment's earliest presentation time in the AdaptationSet's timescale: with
	// B-frames that is the first frame's PTS (tfdt plus its composition offset), not its tfdt.
	T int64
	D int64 // duration in the same timescale
	// Init is the file name of the init segment this segment needs ("init.mp4" when empty).
	// It must be the same for every segment of an AdaptationSet in a Period: a Representation has
	// one init segment, so a changed one (a new resolution, new codec parameters) starts a new
	// Period, with the new Representation values.
	Init string
}

// Period is one span of the presentation with a fixed set of Representations and init segments:
// normally one publishing session.
//
// Video and audio are listed independently: each AdaptationSet has its own SegmentTemplate and
// timeline, so their segment counts may differ (audio of the newest chunk may arrive later).
// Within one AdaptationSet segment numbers must be consecutive, because $Number$ addressing
// numbers the timeline's entries in order: a missing segment cannot be listed and must not be
// skipped silently, so the caller starts a new Period after it. Times may jump (an explicit @t
// is written after a hole), and a segment that overlaps the next is written as ending where the
// next begins, since a timeline cannot express overlap (the media keep their own timestamps).
//
// The presentation time offsets are inputs, not derived from the segments listed, because two
// rules bind them. Both must name the same instant on the session's clock, each in its own
// timescale: normally the session's earliest sample, say the first video segment's T and that
// × AudioTimescale / VideoTimescale; taking each set's own first T would shift audio against
// video by the difference of their starts. And in a live MPD they stay fixed for the life of the
// Period: the first segment still in the sliding window would move the Period's timeline at
// every update.
type Period struct {
	// ID names the Period; it must stay the same across updates of a live MPD (a session id).
	ID string
	// Start is the Period's start: from availabilityStartTime in a dynamic MPD, from the start of
	// the presentation in a static one. Written with millisecond precision.
	Start time.Duration

	Video          []Representation // every video rung, one AdaptationSet
	VideoTimescale uint32
	VideoSegments  []Segment
	// VideoPresentationTimeOffset is the media time, in VideoTimescale, that plays at Start.
	VideoPresentationTimeOffset uint64

	Audio          *Representation // one audio AdaptationSet when not nil
	AudioTimescale uint32
	AudioSegments  []Segment
	// AudioPresentationTimeOffset is the media time, in AudioTimescale, that plays at Start.
	AudioPresentationTimeOffset uint64
}

// maxOffsetSkew bounds how far apart the video and audio presentation time offsets of a Period
// may be, in seconds. They should name the same instant; a larger difference is a forgotten or
// mis-scaled offset, which would play one track hours late.
const maxOffsetSkew = 1.0

// UTCTiming is a clock source for players (an MPD UTCTiming element). dash.js, for one, calls a
// public time server unless the MPD names one.
type UTCTiming struct {
	Scheme string // UTCDirect, UTCHTTPHead, UTCHTTPISO, UTCHTTPXSDate
	Value  string // the time (UTCDirect, an xs:dateTime) or the URL to fetch
}

// MPD is a whole manifest: dynamic while a stream is live, static once it ended or for a
// recording.
type MPD struct {
	Dynamic bool
	// AvailabilityStartTime anchors a dynamic MPD's Periods to wall-clock time (required when
	// Dynamic; written for a static MPD when not zero, as a live MPD turned static keeps it).
	AvailabilityStartTime time.Time
	// PublishTime is when this version was made (required when Dynamic, written when not zero).
	PublishTime time.Time

	// MinimumUpdatePeriod tells players how often to reload; required when Dynamic (a dynamic MPD
	// without it promises never to change, which is the static MPD's job here).
	MinimumUpdatePeriod time.Duration
	// TimeShiftBufferDepth is the window behind the live edge whose segments stay available; it
	// should match the HLS window. 0 leaves it out (the whole timeline stays available).
	TimeShiftBufferDepth time.Duration
	// SuggestedPresentationDelay is how far behind the live edge players should play; 0 leaves it
	// to the player.
	SuggestedPresentationDelay time.Duration
	// MinBufferTime is required in every MPD (with the segments' bandwidths it bounds the buffer a
	// player needs before it starts); about one segment duration.
	MinBufferTime time.Duration
	// MaxSegmentDuration bounds every segment listed, now and in later updates; a live packager
	// should set it from its configuration so that it does not change. 0 computes it as the
	// longest segment listed. A segment longer than a given value is an error.
	MaxSegmentDuration time.Duration
	// MediaPresentationDuration is the length of a static presentation; 0 computes it as the end
	// of the last Period's media.
	MediaPresentationDuration time.Duration

	UTCTiming []UTCTiming
	// BaseURL, when not empty, is the prefix segment URLs are resolved against, normally relative
	// to the MPD's own URL: "../../../live/ID/" for a recording that lists the live segments. It
	// must end with "/", as without it the last path segment would be replaced, not extended.
	BaseURL string

	Periods []Period
}

// Render writes the MPD. MinimumUpdatePeriod, TimeShiftBufferDepth and SuggestedPresentationDelay
// are only written when Dynamic, MediaPresentationDuration only when not.
func (m MPD) Render() ([]byte, error) {
	if len(m.Periods) == 0 {
		return nil, fmt.Errorf("%w: no Periods", ErrInvalid)
	}
	if m.MinBufferTime <= 0 {
		return nil, fmt.Errorf("%w: MinBufferTime %v must be positive", ErrInvalid, m.MinBufferTime)
	}
	if m.MaxSegmentDuration < 0 || m.TimeShiftBufferDepth < 0 || m.SuggestedPresentationDelay < 0 ||
		m.MediaPresentationDuration < 0 {
		return nil, fmt.Errorf("%w: negative duration", ErrInvalid)
	}

	typ := mpd.STATIC_TYPE
	if m.Dynamic {
		typ = mpd.DYNAMIC_TYPE
	}
	out := mpd.NewMPD(typ)
	out.Profiles = Profiles
	if m.Dynamic {
		if m.AvailabilityStartTime.IsZero() || m.PublishTime.IsZero() {
			return nil, fmt.Errorf("%w: a dynamic MPD needs AvailabilityStartTime and PublishTime", ErrInvalid)
		}
		if m.MinimumUpdatePeriod <= 0 {
			return nil, fmt.Errorf("%w: a dynamic MPD needs a positive MinimumUpdatePeriod", ErrInvalid)
		}
		out.MinimumUpdatePeriod = dur(m.MinimumUpdatePeriod)
		if m.TimeShiftBufferDepth > 0 {
			out.TimeShiftBufferDepth = dur(m.TimeShiftBufferDepth)
		}
		if m.SuggestedPresentationDelay > 0 {
			out.SuggestedPresentationDelay = dur(m.SuggestedPresentationDelay)
		}
	}
	if !m.AvailabilityStartTime.IsZero() {
		out.AvailabilityStartTime = dateTime(m.AvailabilityStartTime)
	}
	if !m.PublishTime.IsZero() {
		out.PublishTime = dateTime(m.PublishTime)
	}
	out.MinBufferTime = dur(m.MinBufferTime)

	if m.BaseURL != "" {
		if err := checkBaseURL(m.BaseURL); err != nil {
			return nil, err
		}
		out.BaseURL = []*mpd.BaseURLType{mpd.NewBaseURL(m.BaseURL)}
	}

	var longest, end time.Duration
	ids := map[string]bool{}
	for i, p := range m.Periods {
		if p.ID == "" || strings.IndexFunc(p.ID, unicode.IsControl) >= 0 {
			return nil, fmt.Errorf("%w: Period %d: ID %q is empty or holds control characters", ErrInvalid, i, p.ID)
		}
		if ids[p.ID] {
			return nil, fmt.Errorf("%w: Period ID %q appears twice", ErrInvalid, p.ID)
		}
		ids[p.ID] = true
		if p.Start < 0 || (i > 0 && roundMS(p.Start) <= roundMS(m.Periods[i-1].Start)) { // as written
			return nil, fmt.Errorf("%w: Period %s starts at %v: starts must be non-negative and increasing", ErrInvalid, p.ID, p.Start)
		}
		period, info, err := renderPeriod(p)
		if err != nil {
			return nil, fmt.Errorf("period %s: %w", p.ID, err)
		}
		longest = max(longest, info.longest)
		end = p.Start + info.end
		out.AppendPeriod(period)
	}

	msd := m.MaxSegmentDuration
	switch {
	case msd == 0:
		// Rounded up to the millisecond the attribute is written with, so it never reads shorter
		// than the segment it bounds.
		msd = longest.Truncate(time.Millisecond)
		if msd < longest {
			msd += time.Millisecond
		}
	case roundMS(longest) > roundMS(msd):
		return nil, fmt.Errorf("%w: a segment lasts %v, above MaxSegmentDuration %v", ErrInvalid, longest, msd)
	}
	out.MaxSegmentDuration = dur(msd)

	if !m.Dynamic {
		mpdur := m.MediaPresentationDuration
		if mpdur == 0 {
			mpdur = end
		}
		out.MediaPresentationDuration = dur(mpdur)
	}

	for i, u := range m.UTCTiming {
		if u.Scheme == "" || u.Value == "" || strings.ContainsFunc(u.Scheme+u.Value, unicode.IsControl) {
			return nil, fmt.Errorf("%w: UTCTiming %d %+v: scheme and value are required", ErrInvalid, i, u)
		}
		out.UTCTimings = append(out.UTCTimings, mpd.NewDescriptor(u.Scheme, u.Value, ""))
	}

	var buf bytes.Buffer
	if _, err := out.Write(&buf, "  ", true); err != nil {
		return nil, fmt.Errorf("write MPD: %w", err)
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// periodInfo is what the MPD level needs to know about a rendered Period.
type periodInfo struct {
	longest time.Duration // the longest segment
	end     time.Duration // where the Period's media end, from its Start
}

// AdaptationSet ids, the same in every Period so that players see the same tracks continue.
const (
	videoSetID = 1
	audioSetID = 2
)

func renderPeriod(p Period) (*mpd.Period, periodInfo, error) {
	var info periodInfo
	if len(p.Video) == 0 && p.Audio == nil {
		return nil, info, fmt.Errorf("%w: no Representations", ErrInvalid)
	}
	if len(p.Video) == 0 && len(p.VideoSegments) > 0 {
		return nil, info, fmt.Errorf("%w: video segments without video Representations", ErrInvalid)
	}
	if p.Audio == nil && len(p.AudioSegments) > 0 {
		return nil, info, fmt.Errorf("%w: audio segments without an audio Representation", ErrInvalid)
	}
	out := mpd.NewPeriod()
	out.Id = p.ID
	out.Start = dur(p.Start)
	seen := map[string]bool{}

	if len(p.Video) > 0 {
		set := mpd.NewAdaptationSetWithParams("video", mpd.MIME_TYPE_VIDEO_MP4, true, 1)
		set.Id = mpd.Ptr(uint32(videoSetID))
		var maxRate float64
		for i, r := range p.Video {
			rep, err := videoRepresentation(r, seen)
			if err != nil {
				return nil, info, fmt.Errorf("video Representation %d (%s): %w", i, r.ID, err)
			}
			set.MaxWidth = max(set.MaxWidth, rep.Width)
			set.MaxHeight = max(set.MaxHeight, rep.Height)
			if rep.FrameRate != "" && r.FrameRate > maxRate {
				maxRate, set.MaxFrameRate = r.FrameRate, string(rep.FrameRate)
			}
			set.Representations = append(set.Representations, rep)
		}
		st, si, err := segmentTemplate(p.VideoSegments, p.VideoTimescale, p.VideoPresentationTimeOffset)
		if err != nil {
			return nil, info, fmt.Errorf("video: %w", err)
		}
		set.SegmentTemplate = st
		info = merge(info, si)
		out.AdaptationSets = append(out.AdaptationSets, set)
	}

	if p.Audio != nil {
		set := mpd.NewAdaptationSetWithParams("audio", mpd.MIME_TYPE_AUDIO_MP4, true, 1)
		set.Id = mpd.Ptr(uint32(audioSetID))
		set.Lang = "und"
		rep, err := audioRepresentation(*p.Audio, seen)
		if err != nil {
			return nil, info, fmt.Errorf("audio Representation (%s): %w", p.Audio.ID, err)
		}
		set.Representations = append(set.Representations, rep)
		st, si, err := segmentTemplate(p.AudioSegments, p.AudioTimescale, p.AudioPresentationTimeOffset)
		if err != nil {
			return nil, info, fmt.Errorf("audio: %w", err)
		}
		set.SegmentTemplate = st
		info = merge(info, si)
		out.AdaptationSets = append(out.AdaptationSets, set)
	}

	if len(p.Video) > 0 && p.Audio != nil { // both timescales checked above
		v := float64(p.VideoPresentationTimeOffset) / float64(p.VideoTimescale)
		a := float64(p.AudioPresentationTimeOffset) / float64(p.AudioTimescale)
		if math.Abs(v-a) > maxOffsetSkew {
			return nil, info, fmt.Errorf("%w: video presentation time offset %.3f s and audio %.3f s do not name the same instant",
				ErrInvalid, v, a)
		}
	}
	return out, info, nil
}

func merge(a, b periodInfo) periodInfo {
	return periodInfo{longest: max(a.longest, b.longest), end: max(a.end, b.end)}
}

func videoRepresentation(r Representation, seen map[string]bool) (*mpd.RepresentationType, error) {
	if err := checkRepresentation(r, seen); err != nil {
		return nil, err
	}
	if r.Width <= 0 || r.Height <= 0 || r.Width > math.MaxUint32 || r.Height > math.MaxUint32 {
		return nil, fmt.Errorf("%w: size %dx%d", ErrInvalid, r.Width, r.Height)
	}
	rate, err := frameRate(r.FrameRate)
	if err != nil {
		return nil, err
	}
	return mpd.NewVideoRepresentation(r.ID, r.Codecs, "", rate, r.Bandwidth, r.Width, r.Height), nil
}

func audioRepresentation(r Representation, seen map[string]bool) (*mpd.RepresentationType, error) {
	if err := checkRepresentation(r, seen); err != nil {
		return nil, err
	}
	if r.AudioSamplingRate <= 0 || r.AudioChannels <= 0 || r.AudioSamplingRate > math.MaxUint32 {
		return nil, fmt.Errorf("%w: audio at %d Hz with %d channels", ErrInvalid, r.AudioSamplingRate, r.AudioChannels)
	}
	rep := mpd.NewAudioRepresentation(r.ID, r.Codecs, "", r.Bandwidth, r.AudioSamplingRate)
	rep.AudioChannelConfigurations = []*mpd.DescriptorType{channelConfiguration(r.AudioChannels)}
	return rep, nil
}

// channelConfiguration describes a channel count. The CICP ChannelConfiguration scheme is the
// one DASH-IF prefers for every codec, but its value is a layout index, not a count: it is used
// where the count names one AAC layout (AAC's channelConfiguration 1-7 equal the CICP indexes,
// 7 being 8 channels). Other counts are written with the 23003-3 scheme, whose value players
// read as the number of channels.
func channelConfiguration(channels int) *mpd.DescriptorType {
	switch {
	case channels >= 1 && channels <= 6:
		return mpd.NewDescriptor(mpd.AUDIO_CHANNEL_CONFIGURATION_CICP, strconv.Itoa(channels), "")
	case channels == 8:
		return mpd.NewDescriptor(mpd.AUDIO_CHANNEL_CONFIGURATION_CICP, "7", "")
	default:
		return mpd.NewDescriptor(mpd.AUDIO_CHANNEL_CONFIGURATION_MPEG_DASH, strconv.Itoa(channels), "")
	}
}

// pathSegment is what an ID or init name may look like: it becomes part of a segment URL and of
// a storage key, so nothing that a URL or a template would read specially ('/', '$', '%', '?',
// whitespace), and no "." or "..".
var pathSegment = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func checkRepresentation(r Representation, seen map[string]bool) error {
	if !pathSegment.MatchString(r.ID) {
		return fmt.Errorf("%w: ID %q is not a plain path segment", ErrInvalid, r.ID)
	}
	if seen[r.ID] {
		return fmt.Errorf("%w: Representation ID %q appears twice in the Period", ErrInvalid, r.ID)
	}
	seen[r.ID] = true
	if r.Codecs == "" || strings.ContainsFunc(r.Codecs, func(c rune) bool { return unicode.IsSpace(c) || unicode.IsControl(c) }) {
		return fmt.Errorf("%w: codecs %q", ErrInvalid, r.Codecs)
	}
	if r.Bandwidth <= 0 || int64(r.Bandwidth) > math.MaxUint32 {
		return fmt.Errorf("%w: bandwidth %d", ErrInvalid, r.Bandwidth)
	}
	return nil
}

// segmentTemplate builds the SegmentTemplate of one AdaptationSet: addresses from the
// Representation ID and the segment number, and a timeline of the segments' times.
func segmentTemplate(segs []Segment, timescale uint32, pto uint64) (*mpd.SegmentTemplateType, periodInfo, error) {
	var info periodInfo
	if timescale == 0 {
		return nil, info, fmt.Errorf("%w: timescale 0", ErrInvalid)
	}
	if len(segs) == 0 {
		return nil, info, fmt.Errorf("%w: a Representation without segments", ErrInvalid)
	}
	first := segs[0]
	if first.N > math.MaxUint32 {
		// startNumber is an xs:unsignedInt; 2^32 two-second segments is 272 years.
		return nil, info, fmt.Errorf("%w: segment number %d does not fit startNumber", ErrInvalid, first.N)
	}
	init := cmp.Or(first.Init, DefaultInit)
	if !pathSegment.MatchString(init) {
		return nil, info, fmt.Errorf("%w: init segment name %q is not a plain file name", ErrInvalid, init)
	}

	// Durations as written: a segment that overlaps the next ends where the next begins.
	durs := make([]uint64, len(segs))
	for i, s := range segs {
		if s.T < 0 || s.D <= 0 {
			return nil, info, fmt.Errorf("%w: segment %d has time %d and duration %d", ErrInvalid, s.N, s.T, s.D)
		}
		if got := cmp.Or(s.Init, DefaultInit); got != init {
			return nil, info, fmt.Errorf("%w: segment %d needs init segment %q, the Period's segments before it %q: start a new Period",
				ErrInvalid, s.N, got, init)
		}
		durs[i] = uint64(s.D)
		if i == 0 {
			continue
		}
		prev := segs[i-1]
		if s.N != prev.N+1 {
			return nil, info, fmt.Errorf("%w: segment %d follows segment %d: numbers must be consecutive within a Period (start a new one after a missing segment)",
				ErrInvalid, s.N, prev.N)
		}
		if s.T <= prev.T {
			return nil, info, fmt.Errorf("%w: segment %d starts at %d, not after segment %d at %d", ErrInvalid, s.N, s.T, prev.N, prev.T)
		}
		if uint64(prev.T)+uint64(prev.D) > uint64(s.T) { // two int64s: no overflow in uint64
			durs[i-1] = uint64(s.T - prev.T)
		}
	}
	if uint64(first.T)+durs[0] <= pto {
		return nil, info, fmt.Errorf("%w: segment %d ends at %d, before the presentation time offset %d", ErrInvalid,
			first.N, uint64(first.T)+durs[0], pto)
	}

	timeline := mpd.NewSegmentTimeline()
	var s *mpd.S
	var next uint64 // where the previous segment ends
	for i, seg := range segs {
		t, d := uint64(seg.T), durs[i]
		switch {
		case s != nil && t == next && d == s.D:
			s.R++
		case s != nil && t == next:
			s = &mpd.S{D: d}
			timeline.S = append(timeline.S, s)
		default: // the first segment, or after a hole: say where it starts
			s = &mpd.S{T: mpd.Ptr(t), D: d}
			timeline.S = append(timeline.S, s)
		}
		next = t + d
		info.longest = max(info.longest, ticks(d, timescale))
	}
	if next > pto {
		info.end = ticks(next-pto, timescale)
	}

	st := mpd.NewSegmentTemplate()
	st.Initialization = "$RepresentationID$/" + init
	st.Media = "$RepresentationID$/$Number$.m4s"
	st.Timescale = mpd.Ptr(timescale)
	st.StartNumber = mpd.Ptr(uint32(first.N))
	st.PresentationTimeOffset = mpd.Ptr(pto)
	st.SegmentTimeline = timeline
	return st, info, nil
}

// ticks converts a count of timescale units to a duration, rounded to the nanosecond, without
// overflowing for any uint64 count that fits a time.Duration.
func ticks(n uint64, timescale uint32) time.Duration {
	ts := uint64(timescale)
	whole, rest := n/ts, n%ts
	if whole > uint64(math.MaxInt64/int64(time.Second)) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(whole)*time.Second + time.Duration((rest*uint64(time.Second)+ts/2)/ts)
}

// frameRate writes a frame rate as the FrameRateType ratio DASH requires ("30", "30000/1001",
// "25/2"): the attribute has no decimal form.
func frameRate(f float64) (string, error) {
	switch {
	case f == 0:
		return "", nil
	case math.IsNaN(f) || f < 0 || f > 1000:
		return "", fmt.Errorf("%w: frame rate %v", ErrInvalid, f)
	}
	if n := math.Round(f); math.Abs(f-n) < 1e-6 {
		return strconv.FormatFloat(n, 'f', 0, 64), nil
	}
	// The NTSC family: 24000/1001, 30000/1001, 60000/1001 …
	if n := math.Round(f * 1001); math.Abs(f*1001-n) < 1e-3 && math.Mod(n, 1000) == 0 {
		return strconv.FormatFloat(n, 'f', 0, 64) + "/1001", nil
	}
	num, den := int64(math.Round(f*1000)), int64(1000)
	if num == 0 {
		return "", fmt.Errorf("%w: frame rate %v", ErrInvalid, f)
	}
	g := gcd(num, den)
	return strconv.FormatInt(num/g, 10) + "/" + strconv.FormatInt(den/g, 10), nil
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func checkBaseURL(s string) error {
	if strings.ContainsFunc(s, func(c rune) bool { return unicode.IsSpace(c) || unicode.IsControl(c) }) {
		return fmt.Errorf("%w: BaseURL %q contains whitespace", ErrInvalid, s)
	}
	if _, err := url.Parse(s); err != nil {
		return fmt.Errorf("%w: BaseURL %q: %v", ErrInvalid, s, err)
	}
	if !strings.HasSuffix(s, "/") {
		return fmt.Errorf("%w: BaseURL %q must end with /", ErrInvalid, s)
	}
	return nil
}

// dur converts to the library's xs:duration, which it writes with at most millisecond precision
// and without trailing zeros ("PT2S", "PT1M0.5S").
func dur(d time.Duration) *mpd.Duration {
	x := mpd.Duration(roundMS(d))
	return &x
}

func roundMS(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// dateTime writes an xs:dateTime in UTC with milliseconds when there are any. The trailing Z
// matters beyond style: ffmpeg's DASH demuxer reads only that form.
func dateTime(t time.Time) mpd.DateTime {
	return mpd.DateTime(t.UTC().Round(time.Millisecond).Format(mpd.RFC3339MS))
}
