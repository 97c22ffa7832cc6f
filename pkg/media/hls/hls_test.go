package hls

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/Eyevinn/hls-m3u8/m3u8"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
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

var mediaCases = []struct {
	name string
	pl   MediaPlaylist
}{
	{"live_window", MediaPlaylist{
		MediaSequence: 1234,
		MapURI:        "init.mp4",
		Segments: []Segment{
			{URI: "1234.m4s", Duration: 2.002}, {URI: "1235.m4s", Duration: 2.002},
			{URI: "1236.m4s", Duration: 1.968}, {URI: "1237.m4s", Duration: 2.035},
			{URI: "1238.m4s", Duration: 2.0000000004}, {URI: "1239.m4s", Duration: 1.001},
		},
	}},
	{"ended_vod", MediaPlaylist{
		TargetDuration: 2,
		MapURI:         "init.mp4",
		Segments: []Segment{
			{URI: "0.m4s", Duration: 2}, {URI: "1.m4s", Duration: 2}, {URI: "2.m4s", Duration: 2},
			{URI: "3.m4s", Duration: 0.5333},
		},
		Ended: true,
		VOD:   true,
	}},
	{"discontinuity", MediaPlaylist{
		TargetDuration:        2,
		MediaSequence:         57,
		DiscontinuitySequence: 3,
		MapURI:                "init-s1.mp4",
		Segments: []Segment{
			{URI: "57.m4s", Duration: 2}, {URI: "58.m4s", Duration: 1.2},
			// A new publishing session: new timeline and a new init segment (other resolution).
			{URI: "59.m4s", Duration: 2, Discontinuity: true, MapURI: "init-s2.mp4"},
			{URI: "60.m4s", Duration: 2, MapURI: "init-s2.mp4"}, // the same init again: not repeated
		},
	}},
	{"gap", MediaPlaylist{
		TargetDuration: 2,
		MediaSequence:  10,
		MapURI:         "init.mp4",
		Segments: []Segment{
			{URI: "10.m4s", Duration: 2}, {URI: "11.m4s", Duration: 2, Gap: true}, {URI: "12.m4s", Duration: 2},
		},
		Ended: true,
	}},
}

func TestMediaPlaylistGolden(t *testing.T) {
	for _, tc := range mediaCases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := tc.pl.Render()
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name+".m3u8", out)
			checkSpec(t, out)
			checkParsedMedia(t, tc.pl, out)
		})
	}
}

// checkParsedMedia reads the playlist back with hls-m3u8 in strict mode and compares values.
func checkParsedMedia(t *testing.T, in MediaPlaylist, out []byte) {
	t.Helper()
	pl, typ, err := m3u8.DecodeFrom(bytes.NewReader(out), true)
	if err != nil {
		t.Fatal(err)
	}
	if typ != m3u8.MEDIA {
		t.Fatalf("parsed as list type %v", typ)
	}
	mp := pl.(*m3u8.MediaPlaylist)
	if mp.Version() != Version || mp.SeqNo != in.MediaSequence || mp.DiscontinuitySeq != in.DiscontinuitySequence ||
		mp.Closed != in.Ended || (mp.MediaType == m3u8.VOD) != in.VOD || !mp.IndependentSegments() {
		t.Errorf("parsed header: version %d seq %d disc %d closed %v type %v independent %v",
			mp.Version(), mp.SeqNo, mp.DiscontinuitySeq, mp.Closed, mp.MediaType, mp.IndependentSegments())
	}
	if in.TargetDuration != 0 && int(mp.TargetDuration) != in.TargetDuration {
		t.Errorf("target duration %d, want %d", mp.TargetDuration, in.TargetDuration)
	}
	if mp.Map == nil || mp.Map.URI != in.MapURI {
		t.Errorf("map %+v, want %s", mp.Map, in.MapURI)
	}
	if int(mp.Count()) != len(in.Segments) {
		t.Fatalf("%d segments, want %d", mp.Count(), len(in.Segments))
	}
	currentMap := in.MapURI
	for i, s := range in.Segments {
		got := mp.Segments[i]
		if got.URI != s.URI || math.Abs(got.Duration-s.Duration) > 0.0005 || got.Discontinuity != s.Discontinuity ||
			got.Gap != s.Gap || got.SeqId != in.MediaSequence+uint64(i) {
			t.Errorf("segment %d: %+v, want %+v", i, got, s)
		}
		if wantMap := s.MapURI != "" && s.MapURI != currentMap; (got.Map != nil) != wantMap ||
			(wantMap && got.Map.URI != s.MapURI) {
			t.Errorf("segment %d: map %+v, want %q", i, got.Map, s.MapURI)
		}
		if s.MapURI != "" {
			currentMap = s.MapURI
		}
	}
}

var extinf = regexp.MustCompile(`^#EXTINF:(\d+\.(\d+)),$`)

// checkSpec checks rules of RFC 8216bis on the text itself, independent of the library: the
// version, EXT-X-MAP before any segment, an EXTINF with milliseconds followed by a URI line for
// every segment, and each EXTINF rounded to the nearest integer within the target duration.
func checkSpec(t *testing.T, out []byte) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(out))
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) == 0 || lines[0] != "#EXTM3U" {
		t.Fatal("playlist does not start with #EXTM3U")
	}
	target, version := -1, -1
	sawMap := false
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "#EXT-X-VERSION:"):
			version, _ = strconv.Atoi(strings.TrimPrefix(l, "#EXT-X-VERSION:"))
		case strings.HasPrefix(l, "#EXT-X-TARGETDURATION:"):
			target, _ = strconv.Atoi(strings.TrimPrefix(l, "#EXT-X-TARGETDURATION:"))
		case strings.HasPrefix(l, "#EXT-X-MAP:"):
			sawMap = true
		case strings.HasPrefix(l, "#EXTINF:"):
			m := extinf.FindStringSubmatch(l)
			if m == nil || len(m[2]) < 3 {
				t.Errorf("line %d: %q: want an EXTINF with at least 3 decimals", i+1, l)
				continue
			}
			if !sawMap {
				t.Errorf("line %d: segment before any EXT-X-MAP", i+1)
			}
			d, _ := strconv.ParseFloat(m[1], 64)
			if target < 0 || int(math.Round(d)) > target {
				t.Errorf("line %d: EXTINF %s rounds above EXT-X-TARGETDURATION %d", i+1, m[1], target)
			}
			if i+1 >= len(lines) || lines[i+1] == "" || strings.HasPrefix(lines[i+1], "#") {
				t.Errorf("line %d: EXTINF not followed by a URI", i+1)
			}
		}
	}
	if version < 6 {
		t.Errorf("EXT-X-VERSION %d, want at least 6 for EXT-X-MAP", version)
	}
}

func TestTargetDuration(t *testing.T) {
	seg := func(d ...float64) []Segment {
		var s []Segment
		for i, x := range d {
			s = append(s, Segment{URI: fmt.Sprintf("%d.m4s", i), Duration: x})
		}
		return s
	}
	for _, tc := range []struct {
		name    string
		target  int
		durs    []float64
		want    int
		wantErr bool
	}{
		{"computed: ceil", 0, []float64{2.002, 1.9}, 3, false},
		{"computed: exact", 0, []float64{2, 2, 1.5}, 2, false},
		{"computed: float noise ignored", 0, []float64{2.0000001, 1.9999999}, 2, false},
		{"computed: short", 0, []float64{0.2}, 1, false},
		{"given: rounding allows 2.4", 2, []float64{2.4}, 2, false},
		{"given: 2.5 rounds to 3", 2, []float64{2.5}, 0, true},
		{"given: too small", 2, []float64{4}, 0, true},
		{"given: negative", -1, []float64{1}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := MediaPlaylist{TargetDuration: tc.target, MapURI: "init.mp4", Segments: seg(tc.durs...)}.Render()
			if tc.wantErr {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("error %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("#EXT-X-TARGETDURATION:%d\n", tc.want); !bytes.Contains(out, []byte(want)) {
				t.Errorf("want %q in\n%s", want, out)
			}
			checkSpec(t, out)
		})
	}
	// Random windows: the computed target always satisfies the rule.
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		d := make([]float64, 1+r.IntN(10))
		for i := range d {
			d[i] = 0.001 + r.Float64()*6
		}
		out, err := MediaPlaylist{MapURI: "init.mp4", Segments: seg(d...)}.Render()
		if err != nil {
			t.Fatal(err)
		}
		checkSpec(t, out)
	}
}

func TestMediaPlaylistInvalid(t *testing.T) {
	ok := []Segment{{URI: "0.m4s", Duration: 2}}
	for name, pl := range map[string]MediaPlaylist{
		"no segments":       {MapURI: "init.mp4"},
		"VOD not ended":     {MapURI: "init.mp4", Segments: ok, VOD: true},
		"zero duration":     {MapURI: "init.mp4", Segments: []Segment{{URI: "0.m4s"}}},
		"NaN duration":      {MapURI: "init.mp4", Segments: []Segment{{URI: "0.m4s", Duration: math.NaN()}}},
		"empty URI":         {MapURI: "init.mp4", Segments: []Segment{{Duration: 2}}},
		"URI with newline":  {MapURI: "init.mp4", Segments: []Segment{{URI: "0.m4s\n#EXT-X-ENDLIST", Duration: 2}}},
		"URI like a tag":    {MapURI: "init.mp4", Segments: []Segment{{URI: "#EXT-X-ENDLIST", Duration: 2}}},
		"map URI quote":     {MapURI: `init".mp4`, Segments: ok},
		"segment map quote": {MapURI: "init.mp4", Segments: []Segment{{URI: "0.m4s", Duration: 2, MapURI: `a"b`}}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := pl.Render(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v, want ErrInvalid", err)
			}
		})
	}
}

var (
	masterVariants = []Variant{
		// Deliberately out of order: Master sorts by bandwidth.
		{URI: "720p/index.m3u8", Bandwidth: 3_300_000, AverageBandwidth: 2_900_000, Width: 1280, Height: 720, FrameRate: 30, Codecs: "avc1.64001F"},
		{URI: "240p/index.m3u8", Bandwidth: 500_000, AverageBandwidth: 420_000, Width: 426, Height: 240, FrameRate: 30, Codecs: "avc1.42C015"},
		{URI: "source/index.m3u8", Bandwidth: 6_500_000, AverageBandwidth: 6_000_000, Width: 1920, Height: 1080, FrameRate: 30000.0 / 1001, Codecs: "avc1.640028"},
		{URI: "480p/index.m3u8", Bandwidth: 1_400_000, AverageBandwidth: 1_200_000, Width: 854, Height: 480, FrameRate: 30, Codecs: "avc1.4D401E"},
	}
	masterAudio = &AudioRendition{GroupID: "audio", Name: "Main", URI: "audio/index.m3u8", Codecs: "mp4a.40.2", Channels: 2, Default: true}
)

func TestMasterGolden(t *testing.T) {
	in := append([]Variant(nil), masterVariants...)
	out, err := Master(in, masterAudio)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "master.m3u8", out)
	if in[0].URI != masterVariants[0].URI {
		t.Error("Master reordered the caller's slice")
	}

	pl, typ, err := m3u8.DecodeFrom(bytes.NewReader(out), true)
	if err != nil {
		t.Fatal(err)
	}
	if typ != m3u8.MASTER {
		t.Fatalf("parsed as list type %v", typ)
	}
	mp := pl.(*m3u8.MasterPlaylist)
	if mp.Version() != Version || !mp.IndependentSegments() {
		t.Errorf("version %d, independent segments %v", mp.Version(), mp.IndependentSegments())
	}
	wantOrder := []string{"240p/index.m3u8", "480p/index.m3u8", "720p/index.m3u8", "source/index.m3u8"}
	if len(mp.Variants) != len(wantOrder) {
		t.Fatalf("%d variants", len(mp.Variants))
	}
	byURI := map[string]Variant{}
	for _, v := range masterVariants {
		byURI[v.URI] = v
	}
	for i, v := range mp.Variants {
		want := byURI[wantOrder[i]]
		if v.URI != want.URI || int(v.Bandwidth) != want.Bandwidth || int(v.AverageBandwidth) != want.AverageBandwidth ||
			v.Codecs != want.Codecs+",mp4a.40.2" || v.Resolution != fmt.Sprintf("%dx%d", want.Width, want.Height) ||
			math.Abs(v.FrameRate-want.FrameRate) > 0.0005 || v.Audio != "audio" {
			t.Errorf("variant %d: %+v, want %+v", i, v.VariantParams, want)
		}
		if len(v.Alternatives) != 1 {
			t.Fatalf("variant %d has %d alternatives", i, len(v.Alternatives))
		}
		a := v.Alternatives[0]
		if a.Type != "AUDIO" || a.GroupId != "audio" || a.Name != "Main" || a.URI != "audio/index.m3u8" ||
			!a.Default || !a.Autoselect || a.Channels == nil || a.Channels.Amount != 2 {
			t.Errorf("audio rendition %+v", a)
		}
	}
}

func TestMasterWithoutAudio(t *testing.T) {
	out, err := Master(masterVariants[:1], nil)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out, []byte("EXT-X-MEDIA")) || bytes.Contains(out, []byte("AUDIO=")) ||
		!bytes.Contains(out, []byte(`CODECS="avc1.64001F"`)) {
		t.Errorf("unexpected:\n%s", out)
	}
}

func TestMasterInvalid(t *testing.T) {
	v := masterVariants[0]
	mod := func(f func(*Variant)) []Variant { c := v; f(&c); return []Variant{c} }
	for name, tc := range map[string]struct {
		v []Variant
		a *AudioRendition
	}{
		"no variants":        {nil, masterAudio},
		"no bandwidth":       {mod(func(v *Variant) { v.Bandwidth = 0 }), nil},
		"average above peak": {mod(func(v *Variant) { v.AverageBandwidth = v.Bandwidth + 1 }), nil},
		"width only":         {mod(func(v *Variant) { v.Height = 0 }), nil},
		"no codecs":          {mod(func(v *Variant) { v.Codecs = "" }), nil},
		"quote in codecs":    {mod(func(v *Variant) { v.Codecs = `avc1"` }), nil},
		"no URI":             {mod(func(v *Variant) { v.URI = "" }), nil},
		"audio without URI":  {masterVariants, &AudioRendition{GroupID: "a", Name: "n", Codecs: "mp4a.40.2"}},
		"audio no codecs":    {masterVariants, &AudioRendition{GroupID: "a", Name: "n", URI: "a.m3u8"}},
		"audio no group":     {masterVariants, &AudioRendition{Name: "n", URI: "a.m3u8", Codecs: "mp4a.40.2"}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Master(tc.v, tc.a); !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v, want ErrInvalid", err)
			}
		})
	}
}
