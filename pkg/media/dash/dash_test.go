package dash

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Eyevinn/dash-mpd/mpd"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

// contiguous returns segments numbered from n, the first starting at t, each starting where the
// previous one ends.
func contiguous(n uint64, t int64, init string, durs ...int64) []Segment {
	segs := make([]Segment, len(durs))
	for i, d := range durs {
		segs[i] = Segment{N: n + uint64(i), T: t, D: d, Init: init}
		t += d
	}
	return segs
}

var (
	ast    = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ladder = []Representation{
		{ID: "source", Codecs: "avc1.640028", Bandwidth: 6_500_000, Width: 1920, Height: 1080, FrameRate: 30000.0 / 1001},
		{ID: "720p", Codecs: "avc1.64001F", Bandwidth: 3_300_000, Width: 1280, Height: 720, FrameRate: 30000.0 / 1001},
		{ID: "360p", Codecs: "avc1.4D401E", Bandwidth: 900_000, Width: 640, Height: 360, FrameRate: 30000.0 / 1001},
	}
	aac = &Representation{ID: "audio", Codecs: "mp4a.40.2", Bandwidth: 130_000, AudioSamplingRate: 48000, AudioChannels: 2}
)

var cases = []struct {
	name string
	mpd  MPD
}{
	// A live window deep into a session: the presentation time offsets stay at the session's
	// first sample (1.4 s, as ffmpeg's MPEG-TS starts), chunk durations follow the GOP, the
	// newest chunk's audio has not arrived yet.
	{"live_window", MPD{
		Dynamic:                    true,
		AvailabilityStartTime:      ast,
		PublishTime:                ast.Add(10*time.Minute + 15*time.Second + 250*time.Millisecond),
		MinimumUpdatePeriod:        2 * time.Second,
		TimeShiftBufferDepth:       14 * time.Second,
		SuggestedPresentationDelay: 6 * time.Second,
		MinBufferTime:              4 * time.Second,
		MaxSegmentDuration:         4 * time.Second,
		UTCTiming: []UTCTiming{
			{UTCHTTPISO, "https://cdn.example.com/time"},
			{UTCDirect, "2026-03-01T12:10:15.25Z"},
		},
		Periods: []Period{{
			ID: "3f2a9c1e", Start: 0,
			Video: ladder, VideoTimescale: 90000, VideoPresentationTimeOffset: 126000,
			VideoSegments: contiguous(300, 54_180_000, "", 180180, 180180, 180180, 177177, 183183, 180180, 180180),
			Audio:         aac, AudioTimescale: 48000, AudioPresentationTimeOffset: 67200,
			AudioSegments: contiguous(300, 28_895_872, "", 96256, 96256, 95232, 94208, 98304, 96256),
		}},
	}},
	// A reconnect: the first session's last segments, then a new Period for the second session,
	// whose timestamps restart, whose source is smaller (a new init segment, one rung fewer), and
	// whose encoder stalled for 1.5 s between segments 44 and 45 (an explicit @t). Its audio
	// starts 66 ms before the video, so before the Period (players trim it).
	{"reconnect", MPD{
		Dynamic:                    true,
		AvailabilityStartTime:      ast,
		PublishTime:                ast.Add(98 * time.Second),
		MinimumUpdatePeriod:        2 * time.Second,
		TimeShiftBufferDepth:       30 * time.Second,
		SuggestedPresentationDelay: 6 * time.Second,
		MinBufferTime:              4 * time.Second,
		UTCTiming:                  []UTCTiming{{UTCHTTPHead, "/time"}},
		Periods: []Period{
			{
				ID: "sess-a", Start: 0,
				Video: ladder, VideoTimescale: 90000,
				VideoSegments: contiguous(40, 7_207_200, "", 180180, 180180, 108108),
				Audio:         aac, AudioTimescale: 48000,
				AudioSegments: contiguous(40, 3_843_840, "", 96256, 96256, 59392),
			},
			{
				ID: "sess-b", Start: 91*time.Second + 500*time.Millisecond,
				Video: []Representation{
					{ID: "source", Codecs: "avc1.64001F", Bandwidth: 4_500_000, Width: 1280, Height: 720, FrameRate: 30000.0 / 1001},
					ladder[2],
				},
				VideoTimescale: 90000, VideoPresentationTimeOffset: 6006,
				VideoSegments: append(contiguous(43, 6006, "init-43.mp4", 180180, 180180),
					contiguous(45, 501501, "init-43.mp4", 180180, 180180)...),
				Audio: aac, AudioTimescale: 48000, AudioPresentationTimeOffset: 3203,
				AudioSegments: append(contiguous(43, 0, "", 96256, 96256), contiguous(45, 264512, "", 96256)...),
			},
		},
	}},
	// A recording: static, in vod/{id}/{session}/, listing the live segments through BaseURL;
	// mediaPresentationDuration and maxSegmentDuration computed.
	{"recording", MPD{
		PublishTime:   ast.Add(time.Hour),
		MinBufferTime: 2 * time.Second,
		BaseURL:       "../../../live/stream1/",
		Periods: []Period{{
			ID: "3f2a9c1e", Start: 0,
			Video: ladder, VideoTimescale: 90000, VideoPresentationTimeOffset: 126000,
			VideoSegments: contiguous(0, 126000, "", 180180, 180180, 180180, 96096),
			Audio:         aac, AudioTimescale: 48000, AudioPresentationTimeOffset: 67200,
			AudioSegments: contiguous(0, 67200, "", 96256, 96256, 95232, 52224),
		}},
	}},
}

func TestGolden(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := tc.mpd.Render()
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name+".mpd", out)
			checkParsed(t, tc.mpd, out)
		})
	}
}

// checkParsed reads the MPD back with dash-mpd and compares every value with the input.
func checkParsed(t *testing.T, in MPD, out []byte) {
	t.Helper()
	m, err := mpd.MPDFromBytes(out)
	if err != nil {
		t.Fatal(err)
	}
	wantType := map[bool]string{false: "static", true: "dynamic"}[in.Dynamic]
	if m.GetType() != wantType || m.Profiles != Profiles || m.XMLNs != mpd.DASH_NAMESPACE {
		t.Errorf("type %q profiles %q namespace %q", m.GetType(), m.Profiles, m.XMLNs)
	}
	checkTime(t, "availabilityStartTime", m.AvailabilityStartTime, in.AvailabilityStartTime)
	checkTime(t, "publishTime", m.PublishTime, in.PublishTime)

	dynamicOnly := func(d time.Duration) time.Duration {
		if !in.Dynamic {
			return 0
		}
		return d
	}
	checkDur(t, "minimumUpdatePeriod", m.MinimumUpdatePeriod, dynamicOnly(in.MinimumUpdatePeriod))
	checkDur(t, "timeShiftBufferDepth", m.TimeShiftBufferDepth, dynamicOnly(in.TimeShiftBufferDepth))
	checkDur(t, "suggestedPresentationDelay", m.SuggestedPresentationDelay, dynamicOnly(in.SuggestedPresentationDelay))
	checkDur(t, "minBufferTime", m.MinBufferTime, in.MinBufferTime)

	// Recomputed here from the input: the longest segment, and where the last Period's media end.
	var longest, end time.Duration
	for _, p := range in.Periods {
		end = p.Start
		for _, set := range []struct {
			segs []Segment
			ts   uint32
			pto  uint64
		}{{p.VideoSegments, p.VideoTimescale, p.VideoPresentationTimeOffset}, {p.AudioSegments, p.AudioTimescale, p.AudioPresentationTimeOffset}} {
			for i, s := range set.segs {
				d := s.D
				if i+1 < len(set.segs) {
					d = min(d, set.segs[i+1].T-s.T)
				}
				longest = max(longest, ticks(uint64(d), set.ts)) // ticks has its own test
				if i == len(set.segs)-1 {
					end = max(end, p.Start+ticks(uint64(s.T+d)-set.pto, set.ts))
				}
			}
		}
	}
	msd := in.MaxSegmentDuration
	if msd == 0 {
		msd = time.Duration(math.Ceil(float64(longest)/float64(time.Millisecond))) * time.Millisecond
	}
	checkDur(t, "maxSegmentDuration", m.MaxSegmentDuration, msd)
	if in.Dynamic {
		checkDur(t, "mediaPresentationDuration", m.MediaPresentationDuration, 0)
	} else {
		want := in.MediaPresentationDuration
		if want == 0 {
			want = end
		}
		checkDur(t, "mediaPresentationDuration", m.MediaPresentationDuration, want)
	}

	if in.BaseURL == "" && len(m.BaseURL) != 0 || in.BaseURL != "" && (len(m.BaseURL) != 1 || string(m.BaseURL[0].Value) != in.BaseURL) {
		t.Errorf("BaseURL %+v, want %q", m.BaseURL, in.BaseURL)
	}
	if len(m.UTCTimings) != len(in.UTCTiming) {
		t.Fatalf("%d UTCTiming, want %d", len(m.UTCTimings), len(in.UTCTiming))
	}
	for i, u := range in.UTCTiming {
		if got := m.UTCTimings[i]; string(got.SchemeIdUri) != u.Scheme || got.Value != u.Value {
			t.Errorf("UTCTiming %d: %+v, want %+v", i, got, u)
		}
	}

	if len(m.Periods) != len(in.Periods) {
		t.Fatalf("%d Periods, want %d", len(m.Periods), len(in.Periods))
	}
	for i, p := range in.Periods {
		got := m.Periods[i]
		if got.Id != p.ID {
			t.Errorf("Period %d: id %q, want %q", i, got.Id, p.ID)
		}
		checkDur(t, "Period@start", got.Start, p.Start)
		checkPeriod(t, got, p)
	}
}

func checkPeriod(t *testing.T, got *mpd.Period, p Period) {
	t.Helper()
	var video, audio *mpd.AdaptationSetType
	for _, a := range got.AdaptationSets {
		switch a.ContentType {
		case "video":
			video = a
		case "audio":
			audio = a
		default:
			t.Errorf("AdaptationSet of content type %q", a.ContentType)
		}
	}
	if (video != nil) != (len(p.Video) > 0) || (audio != nil) != (p.Audio != nil) || len(got.AdaptationSets) > 2 {
		t.Fatalf("Period %s: %d AdaptationSets", p.ID, len(got.AdaptationSets))
	}
	if video != nil {
		if video.MimeType != "video/mp4" || !video.SegmentAlignment || video.StartWithSAP != 1 || video.Id == nil || *video.Id != 1 {
			t.Errorf("video AdaptationSet %+v", video)
		}
		var maxW, maxH uint32
		var maxRate float64
		for i, r := range p.Video {
			maxW, maxH, maxRate = max(maxW, uint32(r.Width)), max(maxH, uint32(r.Height)), max(maxRate, r.FrameRate)
			if i >= len(video.Representations) {
				t.Fatalf("%d video Representations, want %d", len(video.Representations), len(p.Video))
			}
			rep := video.Representations[i]
			if rep.Id != r.ID || int(rep.Bandwidth) != r.Bandwidth || rep.Codecs != r.Codecs || int(rep.Width) != r.Width ||
				int(rep.Height) != r.Height || math.Abs(ratio(t, string(rep.FrameRate))-r.FrameRate) > 1e-6 || rep.GetMimeType() != "video/mp4" {
				t.Errorf("video Representation %d: %+v, want %+v", i, rep, r)
			}
			checkURLs(t, rep, p.VideoSegments)
		}
		if video.MaxWidth != maxW || video.MaxHeight != maxH || math.Abs(ratio(t, video.MaxFrameRate)-maxRate) > 1e-6 {
			t.Errorf("video AdaptationSet max %dx%d@%s, want %dx%d@%v", video.MaxWidth, video.MaxHeight, video.MaxFrameRate, maxW, maxH, maxRate)
		}
		if len(video.Representations) != len(p.Video) {
			t.Errorf("%d video Representations, want %d", len(video.Representations), len(p.Video))
		}
		checkTemplate(t, video.SegmentTemplate, p.VideoSegments, p.VideoTimescale, p.VideoPresentationTimeOffset)
	}
	if audio != nil {
		if audio.MimeType != "audio/mp4" || audio.Lang != "und" || !audio.SegmentAlignment || audio.StartWithSAP != 1 ||
			audio.Id == nil || *audio.Id != 2 || len(audio.Representations) != 1 {
			t.Fatalf("audio AdaptationSet %+v", audio)
		}
		rep, r := audio.Representations[0], p.Audio
		if rep.Id != r.ID || int(rep.Bandwidth) != r.Bandwidth || rep.Codecs != r.Codecs || rep.AudioSamplingRate == nil ||
			string(*rep.AudioSamplingRate) != fmt.Sprint(r.AudioSamplingRate) || len(rep.AudioChannelConfigurations) != 1 ||
			rep.AudioChannelConfigurations[0].SchemeIdUri != channelConfiguration(r.AudioChannels).SchemeIdUri ||
			rep.AudioChannelConfigurations[0].Value != channelConfiguration(r.AudioChannels).Value {
			t.Errorf("audio Representation %+v, want %+v", rep, r)
		}
		checkURLs(t, rep, p.AudioSegments)
		checkTemplate(t, audio.SegmentTemplate, p.AudioSegments, p.AudioTimescale, p.AudioPresentationTimeOffset)
	}
}

// checkURLs checks the addresses a player makes for a Representation.
func checkURLs(t *testing.T, rep *mpd.RepresentationType, segs []Segment) {
	t.Helper()
	init, err := rep.GetInit()
	if err != nil {
		t.Fatal(err)
	}
	media, err := rep.GetMedia()
	if err != nil {
		t.Fatal(err)
	}
	if want := rep.Id + "/" + cmpOr(segs[0].Init, DefaultInit); init != want {
		t.Errorf("init %q, want %q", init, want)
	}
	if want := rep.Id + "/$Number$.m4s"; media != want {
		t.Errorf("media %q, want %q", media, want)
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func checkTemplate(t *testing.T, st *mpd.SegmentTemplateType, segs []Segment, ts uint32, pto uint64) {
	t.Helper()
	if st == nil || st.Timescale == nil || *st.Timescale != ts || st.StartNumber == nil || uint64(*st.StartNumber) != segs[0].N ||
		st.PresentationTimeOffset == nil || *st.PresentationTimeOffset != pto || st.Duration != nil {
		t.Fatalf("SegmentTemplate %+v", st)
	}
	got := expand(t, st)
	if len(got) != len(segs) {
		t.Fatalf("timeline lists %d segments, want %d", len(got), len(segs))
	}
	for i, s := range segs {
		want := s
		want.Init = ""
		if i+1 < len(segs) {
			want.D = min(s.D, segs[i+1].T-s.T) // an overlap ends where the next segment begins
		}
		if got[i] != want {
			t.Errorf("timeline segment %d: %+v, want %+v", i, got[i], want)
		}
	}
}

// expand reads a SegmentTimeline as a player does (ISO/IEC 23009-1 5.3.9.6): each S is a run of
// 1+r segments of duration d, starting at t when given and where the previous one ended
// otherwise, numbered from startNumber. It also checks that the timeline is as compact as it
// can be: an S without t never repeats the previous S's d (it would have been a longer run).
func expand(t *testing.T, st *mpd.SegmentTemplateType) []Segment {
	t.Helper()
	var out []Segment
	n, next := uint64(*st.StartNumber), int64(0)
	for i, s := range st.SegmentTimeline.S {
		switch {
		case i == 0 && s.T == nil:
			t.Error("first S without t")
		case s.T != nil && i > 0 && int64(*s.T) == next:
			t.Errorf("S %d has a t that only repeats where the previous run ends", i)
		case s.T == nil && i > 0 && st.SegmentTimeline.S[i-1].D == s.D:
			t.Errorf("S %d could have been part of the previous run", i)
		}
		if s.T != nil {
			next = int64(*s.T)
		}
		if s.R < 0 || s.D == 0 {
			t.Fatalf("S %d: d=%d r=%d", i, s.D, s.R)
		}
		for range s.R + 1 {
			out = append(out, Segment{N: n, T: next, D: int64(s.D)})
			n++
			next += int64(s.D)
		}
	}
	return out
}

func checkTime(t *testing.T, name string, got mpd.DateTime, want time.Time) {
	t.Helper()
	if want.IsZero() {
		if got != "" {
			t.Errorf("%s %q, want none", name, got)
		}
		return
	}
	if !strings.HasSuffix(string(got), "Z") {
		t.Errorf("%s %q is not in UTC with a Z", name, got)
	}
	parsed, err := time.Parse(time.RFC3339Nano, string(got))
	if err != nil || !parsed.Equal(want.Round(time.Millisecond)) {
		t.Errorf("%s %q (%v), want %v", name, got, err, want)
	}
}

func checkDur(t *testing.T, name string, got *mpd.Duration, want time.Duration) {
	t.Helper()
	switch {
	case want == 0 && got == nil:
	case got == nil:
		t.Errorf("%s missing, want %v", name, want)
	// dash-mpd parses seconds as a float64 and truncates: "PT2.006S" reads as 2.005999999 s.
	case time.Duration(*got).Round(time.Millisecond) != want.Round(time.Millisecond):
		t.Errorf("%s %v, want %v", name, time.Duration(*got), want)
	}
}

// ratio parses a FrameRateType ("30", "30000/1001"); "" is 0.
func ratio(t *testing.T, s string) float64 {
	t.Helper()
	if s == "" {
		return 0
	}
	var num, den float64 = 0, 1
	if _, err := fmt.Sscanf(s, "%g/%g", &num, &den); err != nil {
		if _, err := fmt.Sscanf(s, "%g", &num); err != nil || strings.Contains(s, ".") {
			t.Fatalf("frame rate %q is not a FrameRateType", s)
		}
	}
	return num / den
}

// TestTimelineRoundTrip renders random timelines (runs of equal durations, holes, small
// overlaps, any timescale) and checks that a player reading them back finds every segment's
// number, start and duration.
func TestTimelineRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for iter := range 300 {
		ts := []uint32{1000, 48000, 44100, 90000, 10_000_000}[r.IntN(5)]
		pto := uint64(r.Int64N(1 << 40))
		n := uint64(r.Int64N(1 << 31))
		tt := max(0, int64(pto)+r.Int64N(int64(ts))-int64(ts)/2)
		common := []int64{int64(ts) * 2, int64(ts)*2 + 1, int64(ts) * 19 / 10}
		var segs []Segment
		for range 1 + r.IntN(30) {
			d := common[r.IntN(len(common))]
			if r.IntN(4) == 0 {
				d = 1 + r.Int64N(int64(ts)*4)
			}
			segs = append(segs, Segment{N: n, T: tt, D: d})
			n++
			tt += d
			switch r.IntN(10) {
			case 0: // a hole
				tt += 1 + r.Int64N(int64(ts)*3)
			case 1: // an overlap, smaller than the segment
				tt -= r.Int64N(d)
			}
		}
		end0 := segs[0].T + segs[0].D
		if len(segs) > 1 {
			end0 = min(end0, segs[1].T)
		}
		if end0 <= int64(pto) { // the first segment would end before the Period starts: refused
			continue
		}
		m := MPD{MinBufferTime: time.Second, Periods: []Period{{ID: "p", Video: ladder[:1], VideoTimescale: ts,
			VideoSegments: segs, VideoPresentationTimeOffset: pto}}}
		out, err := m.Render()
		if err != nil {
			t.Fatalf("iteration %d: %v", iter, err)
		}
		checkParsed(t, m, out)
		if t.Failed() {
			t.Fatalf("iteration %d:\n%s", iter, out)
		}
	}
}

func TestTimelineShapes(t *testing.T) {
	for _, tc := range []struct {
		name string
		segs []Segment
		want string // the S elements
	}{
		{"one run", contiguous(7, 100, "", 10, 10, 10), `<S t="100" d="10" r="2"></S>`},
		{"changing durations", contiguous(7, 0, "", 10, 10, 9, 11, 11),
			`<S t="0" d="10" r="1"></S><S d="9"></S><S d="11" r="1"></S>`},
		{"hole", append(contiguous(1, 0, "", 10, 10), contiguous(3, 25, "", 10)...),
			`<S t="0" d="10" r="1"></S><S t="25" d="10"></S>`},
		{"overlap ends the earlier segment", []Segment{{N: 1, T: 0, D: 10}, {N: 2, T: 8, D: 10}, {N: 3, T: 18, D: 10}},
			`<S t="0" d="8"></S><S d="10" r="1"></S>`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := MPD{MinBufferTime: time.Second, Periods: []Period{{ID: "p", Audio: aac, AudioTimescale: 1000,
				AudioSegments: tc.segs}}}.Render()
			if err != nil {
				t.Fatal(err)
			}
			flat := strings.Join(strings.Fields(string(out)), "")
			if !strings.Contains(flat, strings.ReplaceAll(tc.want, " ", "")) {
				t.Errorf("want %s in\n%s", tc.want, out)
			}
		})
	}
}

func TestStaticAndDynamicOnly(t *testing.T) {
	base := cases[0].mpd
	static := base
	static.Dynamic = false
	static.AvailabilityStartTime = time.Time{}
	static.MediaPresentationDuration = 90 * time.Second
	out, err := static.Render()
	if err != nil {
		t.Fatal(err)
	}
	for _, attr := range []string{"minimumUpdatePeriod", "timeShiftBufferDepth", "suggestedPresentationDelay", "availabilityStartTime"} {
		if bytes.Contains(out, []byte(attr)) {
			t.Errorf("static MPD has %s", attr)
		}
	}
	if !bytes.Contains(out, []byte(`type="static"`)) || !bytes.Contains(out, []byte(`mediaPresentationDuration="PT1M30S"`)) {
		t.Errorf("static MPD:\n%s", out)
	}
	checkParsed(t, static, out)

	dynamic := base
	dynamic.MediaPresentationDuration = time.Hour
	out, err = dynamic.Render()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out, []byte("mediaPresentationDuration")) {
		t.Error("dynamic MPD has mediaPresentationDuration")
	}
}

func TestAudioOnly(t *testing.T) {
	m := MPD{MinBufferTime: 2 * time.Second, Periods: []Period{{ID: "a", Audio: aac, AudioTimescale: 48000,
		AudioSegments: contiguous(5, 0, "", 96256, 95232)}}}
	out, err := m.Render()
	if err != nil {
		t.Fatal(err)
	}
	checkParsed(t, m, out)
	if bytes.Contains(out, []byte("video")) {
		t.Errorf("audio-only MPD mentions video:\n%s", out)
	}
}

func TestFrameRate(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want string
	}{
		{0, ""}, {30, "30"}, {29.999999999, "30"}, {60, "60"}, {30000.0 / 1001, "30000/1001"}, {29.97002997, "30000/1001"},
		{24000.0 / 1001, "24000/1001"}, {60000.0 / 1001, "60000/1001"}, {12.5, "25/2"}, {29.97, "2997/100"}, {0.5, "1/2"},
	} {
		got, err := frameRate(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("frameRate(%v) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []float64{-1, math.NaN(), math.Inf(1), 1e6, 0.0001} {
		if _, err := frameRate(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("frameRate(%v): %v, want ErrInvalid", bad, err)
		}
	}
}

func TestChannelConfiguration(t *testing.T) {
	for ch, want := range map[int]string{
		1: "urn:mpeg:mpegB:cicp:ChannelConfiguration=1",
		2: "urn:mpeg:mpegB:cicp:ChannelConfiguration=2",
		6: "urn:mpeg:mpegB:cicp:ChannelConfiguration=6",
		8: "urn:mpeg:mpegB:cicp:ChannelConfiguration=7",
		7: "urn:mpeg:dash:23003:3:audio_channel_configuration:2011=7",
	} {
		d := channelConfiguration(ch)
		if got := string(d.SchemeIdUri) + "=" + d.Value; got != want {
			t.Errorf("%d channels: %s, want %s", ch, got, want)
		}
	}
}

func TestMaxSegmentDuration(t *testing.T) {
	m := MPD{MinBufferTime: time.Second, Periods: []Period{{ID: "p", Video: ladder[:1], VideoTimescale: 90000,
		VideoSegments: contiguous(0, 0, "", 180180, 180181)}}}
	out, err := m.Render()
	if err != nil {
		t.Fatal(err)
	}
	// 180181/90000 = 2.0020111 s: rounded up, never below the segment.
	if !bytes.Contains(out, []byte(`maxSegmentDuration="PT2.003S"`)) {
		t.Errorf("computed maxSegmentDuration:\n%s", out)
	}
	m.MaxSegmentDuration = 2002 * time.Millisecond // the longest segment rounds to it: accepted
	if _, err := m.Render(); err != nil {
		t.Error(err)
	}
	m.MaxSegmentDuration = 2 * time.Second
	if _, err := m.Render(); !errors.Is(err, ErrInvalid) {
		t.Errorf("segment above MaxSegmentDuration: %v, want ErrInvalid", err)
	}
}

func TestTicks(t *testing.T) {
	for _, tc := range []struct {
		n    uint64
		ts   uint32
		want time.Duration
	}{
		{0, 90000, 0}, {90000, 90000, time.Second}, {1, 90000, 11111 * time.Nanosecond}, {1, 3, 333333333},
		{1 << 62, 1, time.Duration(math.MaxInt64)}, {180180 * 1_000_000, 90000, 2002 * 1_000_000 * time.Millisecond},
	} {
		if got := ticks(tc.n, tc.ts); got != tc.want {
			t.Errorf("ticks(%d, %d) = %v, want %v", tc.n, tc.ts, got, tc.want)
		}
	}
}

func TestInvalid(t *testing.T) {
	valid := func() MPD {
		m := cases[0].mpd
		p := m.Periods[0]
		p.Video = append([]Representation(nil), p.Video...)
		p.VideoSegments = append([]Segment(nil), p.VideoSegments...)
		p.AudioSegments = append([]Segment(nil), p.AudioSegments...)
		a := *p.Audio
		p.Audio = &a
		m.Periods = []Period{p}
		return m
	}
	if _, err := valid().Render(); err != nil {
		t.Fatal(err)
	}
	second := func(m *MPD) *Period {
		p := m.Periods[0]
		p.ID, p.Start = "second", m.Periods[0].Start+time.Minute
		m.Periods = append(m.Periods, p)
		return &m.Periods[1]
	}
	for name, mod := range map[string]func(m *MPD){
		"no Periods":                    func(m *MPD) { m.Periods = nil },
		"no MinBufferTime":              func(m *MPD) { m.MinBufferTime = 0 },
		"dynamic without AST":           func(m *MPD) { m.AvailabilityStartTime = time.Time{} },
		"dynamic without publishTime":   func(m *MPD) { m.PublishTime = time.Time{} },
		"dynamic without update period": func(m *MPD) { m.MinimumUpdatePeriod = 0 },
		"negative time shift":           func(m *MPD) { m.TimeShiftBufferDepth = -time.Second },
		"segment above max":             func(m *MPD) { m.MaxSegmentDuration = time.Second },
		"BaseURL without slash":         func(m *MPD) { m.BaseURL = "../live/x" },
		"BaseURL with space":            func(m *MPD) { m.BaseURL = "../live x/" },
		"UTCTiming without value":       func(m *MPD) { m.UTCTiming = []UTCTiming{{Scheme: UTCHTTPISO}} },
		"Period without ID":             func(m *MPD) { m.Periods[0].ID = "" },
		"Period ID twice":               func(m *MPD) { second(m).ID = m.Periods[0].ID },
		"Period starts not increasing":  func(m *MPD) { second(m).Start = m.Periods[0].Start },
		"negative Period start":         func(m *MPD) { m.Periods[0].Start = -time.Second },
		"Period without Representations": func(m *MPD) {
			m.Periods[0].Video, m.Periods[0].VideoSegments, m.Periods[0].Audio, m.Periods[0].AudioSegments = nil, nil, nil, nil
		},
		"video segments without video":   func(m *MPD) { m.Periods[0].Video = nil },
		"audio segments without audio":   func(m *MPD) { m.Periods[0].Audio = nil },
		"video without segments":         func(m *MPD) { m.Periods[0].VideoSegments = nil },
		"audio without segments":         func(m *MPD) { m.Periods[0].AudioSegments = nil },
		"video timescale 0":              func(m *MPD) { m.Periods[0].VideoTimescale = 0 },
		"audio timescale 0":              func(m *MPD) { m.Periods[0].AudioTimescale = 0 },
		"ID with slash":                  func(m *MPD) { m.Periods[0].Video[0].ID = "a/b" },
		"ID with template":               func(m *MPD) { m.Periods[0].Video[0].ID = "$Number$" },
		"ID dot-dot":                     func(m *MPD) { m.Periods[0].Video[0].ID = ".." },
		"ID twice":                       func(m *MPD) { m.Periods[0].Audio.ID = m.Periods[0].Video[1].ID },
		"no codecs":                      func(m *MPD) { m.Periods[0].Video[0].Codecs = "" },
		"codecs with space":              func(m *MPD) { m.Periods[0].Audio.Codecs = "mp4a.40.2 x" },
		"no bandwidth":                   func(m *MPD) { m.Periods[0].Video[0].Bandwidth = 0 },
		"bandwidth above 32 bits":        func(m *MPD) { m.Periods[0].Video[0].Bandwidth = 1 << 32 },
		"no width":                       func(m *MPD) { m.Periods[0].Video[0].Width = 0 },
		"NaN frame rate":                 func(m *MPD) { m.Periods[0].Video[0].FrameRate = math.NaN() },
		"no sampling rate":               func(m *MPD) { m.Periods[0].Audio.AudioSamplingRate = 0 },
		"no channels":                    func(m *MPD) { m.Periods[0].Audio.AudioChannels = 0 },
		"zero duration":                  func(m *MPD) { m.Periods[0].VideoSegments[2].D = 0 },
		"negative time":                  func(m *MPD) { m.Periods[0].VideoSegments[0].T = -1 },
		"numbers skip":                   func(m *MPD) { m.Periods[0].AudioSegments[3].N++ },
		"numbers repeat":                 func(m *MPD) { m.Periods[0].AudioSegments[3].N-- },
		"time goes back":                 func(m *MPD) { m.Periods[0].VideoSegments[3].T = m.Periods[0].VideoSegments[2].T },
		"init changes within the Period": func(m *MPD) { m.Periods[0].VideoSegments[4].Init = "init-304.mp4" },
		"first segment's init differs":   func(m *MPD) { m.Periods[0].VideoSegments[0].Init = "init-300.mp4" },
		"init with a path":               func(m *MPD) { setInit(m.Periods[0].AudioSegments, "../init.mp4") },
		"start number above 32 bits":     func(m *MPD) { m.Periods[0].AudioSegments = contiguous(1<<32, 28_895_872, "", 96256) },
		"offset after the first segment": func(m *MPD) {
			m.Periods[0].VideoPresentationTimeOffset = uint64(m.Periods[0].VideoSegments[0].T + m.Periods[0].VideoSegments[0].D)
		},
		"audio offset after its first segment": func(m *MPD) { m.Periods[0].AudioPresentationTimeOffset += 3600 * 48000 },
		"audio offset forgotten": func(m *MPD) {
			m.Periods[0].VideoPresentationTimeOffset = 10 * 3600 * 90000
			m.Periods[0].AudioPresentationTimeOffset = 0
			for i := range m.Periods[0].VideoSegments {
				m.Periods[0].VideoSegments[i].T += 10 * 3600 * 90000
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			m := valid()
			mod(&m)
			out, err := m.Render()
			t.Log(err)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v, want ErrInvalid; output:\n%s", err, out)
			}
		})
	}
}

func setInit(segs []Segment, init string) {
	for i := range segs {
		segs[i].Init = init
	}
}
