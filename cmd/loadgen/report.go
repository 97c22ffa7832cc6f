package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Definitions, printed with every report so a number is never read without them.
const (
	defMediaEnd = "media end of segment n = the wall-clock instant the publisher's media clock reached the segment's end " +
		"T_end (the decode time where segment n+1 starts): send time of the segment's last video frame + that frame's duration. " +
		"T_end comes from the reference rendition's fragment (tfdt + sum of trun sample durations, i.e. the chunk the ingest cut); " +
		"when that fragment could not be read, from the sum of EXTINF durations of segments 0..n (the session starts at media time 0)"
	defListed = "listed at = arrival of the first media-playlist response that lists the segment (polled every --poll, so it is late by " +
		"up to one poll interval plus one request)"
	defMediaEndTS = "MPEG-TS segments (playlists without EXT-X-MAP, e.g. nginx-rtmp): each rendition is cut and numbered on its own, so " +
		"T_end of segment n = the first video DTS of segment n+1 read from its head (or, when that is unknown, segment n's first DTS + its EXTINF), " +
		"less --ts-offset (what the server adds to the RTMP timestamps), snapped to the publisher's nearest chunk start or media end within 250 ms; " +
		"a segment is mapped to the publisher's chunk where it starts, and a rendition is expected to list every chunk from the one where its " +
		"segment --first-seq starts (earlier chunks, e.g. before an exec'd encoder connected, are reported as skipped at start, not lost)"
	defDelay       = "delay = listed at - media end"
	defPercentiles = "percentiles: nearest rank over all segments (gaps excluded)"
)

// report is loadgen's result.
type report struct {
	Started      time.Time          `json:"started"`
	Input        string             `json:"input"`
	Clip         string             `json:"clip"`
	Streams      int                `json:"streams"`
	MediaSeconds float64            `json:"media_seconds_per_stream"`
	PollMS       float64            `json:"poll_ms"`
	RefRendition string             `json:"ref_rendition"`
	Definitions  []string           `json:"definitions"`
	Renditions   []*renditionReport `json:"renditions"`
	Overall      *renditionReport   `json:"overall"`
	Check        timelineCheck      `json:"timeline_check"`
	PerStream    []*streamReport    `json:"per_stream"`
}

// renditionReport aggregates one rendition over every stream (or everything, for overall).
type renditionReport struct {
	Name     string `json:"name"`
	Expected int    `json:"segments_expected"`
	Listed   int    `json:"segments_listed"`
	Gaps     int    `json:"gaps"`
	Missing  int    `json:"missing"`
	Lost     int    `json:"lost"`
	Delay    stats  `json:"delay_s"`
	Extra    int    `json:"unexpected_numbers,omitempty"`
	// MPEG-TS renditions: publisher chunks before the rendition's first segment (not expected).
	Skipped int      `json:"skipped_at_start,omitempty"`
	Methods []string `json:"media_end_from,omitempty"`
	TS      bool     `json:"mpegts,omitempty"`
	delays  []float64
	methods map[string]int
}

type stats struct {
	N      int     `json:"n"`
	Min    float64 `json:"min"`
	Median float64 `json:"median"`
	Mean   float64 `json:"mean"`
	P95    float64 `json:"p95"`
	P99    float64 `json:"p99"`
	Max    float64 `json:"max"`
}

type timelineCheck struct {
	// Largest |fragment end − EXTINF-sum end| over reference segments: both say where a segment
	// ends; a large value means one of the two media-end sources is wrong.
	MaxFragVsExtinfMS float64 `json:"max_frag_vs_extinf_ms"`
	// Largest |fragment start − the publisher's predicted chunk start|.
	MaxFragVsChunkStartMS float64 `json:"max_frag_start_vs_publisher_chunk_ms"`
	FragmentsRead         int     `json:"ref_fragments_read"`
	FragmentErrors        int     `json:"ref_fragment_errors"`
	FirstFragmentError    string  `json:"first_fragment_error,omitempty"`
	// MPEG-TS segments: heads read, and how well their first DTS (less --ts-offset) matches the
	// publisher's chunk starts: a large or unaligned value means a wrong --ts-offset or a server
	// that rewrites timestamps.
	TSSegmentsRead      int     `json:"ts_segments_read,omitempty"`
	TSErrors            int     `json:"ts_segment_errors,omitempty"`
	FirstTSError        string  `json:"first_ts_error,omitempty"`
	MaxTSStartVsChunkMS float64 `json:"max_ts_start_vs_publisher_chunk_ms,omitempty"`
	MaxTSEndSnapMS      float64 `json:"max_ts_end_snap_ms,omitempty"`
	TSUnaligned         int     `json:"ts_segments_unaligned,omitempty"`
	// Segments listed before the publisher had sent their media: impossible unless a media end
	// is wrong.
	NegativeDelays int `json:"negative_delays"`
}

type streamReport struct {
	Index      int                      `json:"index"`
	ID         string                   `json:"id"`
	Error      string                   `json:"error,omitempty"`
	Warning    string                   `json:"warning,omitempty"`
	Publisher  pubStats                 `json:"publisher"`
	PollErrors int                      `json:"poll_errors"`
	LastError  string                   `json:"last_poll_error,omitempty"`
	Renditions map[string][]segmentLine `json:"segments"`
}

// segmentLine is one segment of one rendition of one stream.
type segmentLine struct {
	N        uint64  `json:"n"`
	Gap      bool    `json:"gap,omitempty"`
	Extinf   float64 `json:"extinf"`
	MediaEnd float64 `json:"media_end_s"` // T_end on the session timeline
	From     string  `json:"media_end_from"`
	ListedAt string  `json:"listed_at"`
	// Unix seconds, for joining with server logs: when listed, and the media end's wall clock.
	ListedUnix   float64  `json:"listed_unix"`
	MediaEndUnix *float64 `json:"media_end_wall_unix,omitempty"`
	DelayS       *float64 `json:"delay_s,omitempty"`
	FragStart    *float64 `json:"frag_start_s,omitempty"`
	// MPEG-TS: the segment's first video DTS on the publisher's timeline, and the publisher
	// chunk it is mapped to.
	TSStart *float64 `json:"ts_start_s,omitempty"`
	Chunk   *int     `json:"chunk,omitempty"`
}

func buildReport(cfg *loadConfig, c *clip, dur time.Duration, runs []*streamRun, started time.Time) *report {
	rep := &report{Started: started, Input: cfg.Input, Clip: c.describe(), Streams: cfg.Streams,
		MediaSeconds: dur.Seconds(), PollMS: ms(cfg.Poll), RefRendition: cfg.RefRendition,
		Definitions: []string{defMediaEnd, defListed, defDelay, defPercentiles}}
	byName := map[string]*renditionReport{}
	var names []string
	overall := &renditionReport{Name: "all", methods: map[string]int{}}

	for _, run := range runs {
		sr := &streamReport{Index: run.index, ID: run.id, Renditions: map[string][]segmentLine{}}
		rep.PerStream = append(rep.PerStream, sr)
		if run.err != nil {
			sr.Error = run.err.Error()
		}
		sr.Warning = run.warn
		if run.pub == nil || run.watch == nil {
			continue
		}
		ps := run.pub.stats()
		sr.Publisher = ps
		w := run.watch
		w.mu.Lock()
		sr.PollErrors, sr.LastError = w.pollErrs, w.lastErr
		ref := w.renditions[cfg.RefRendition]
		for _, name := range w.order {
			r := w.renditions[name]
			rr := byName[name]
			if rr == nil {
				rr = &renditionReport{Name: name, methods: map[string]int{}}
				byName[name] = rr
				names = append(names, name)
			}
			if r.TS {
				if !slices.Contains(rep.Definitions, defMediaEndTS) {
					rep.Definitions = slices.Insert(rep.Definitions, 1, defMediaEndTS)
				}
				rep.tsRendition(cfg, run, ps, sr, r, rr, overall)
				continue
			}
			rr.Expected += ps.Chunks
			overall.Expected += ps.Chunks
			ns := make([]uint64, 0, len(r.Segs))
			for n := range r.Segs {
				ns = append(ns, n)
			}
			slices.Sort(ns)
			// EXTINF sums from the session's first segment (number 0 for a new stream).
			extinfEnd := map[uint64]float64{}
			sum, contiguous := 0.0, true
			for i, n := range ns {
				if n != uint64(i) {
					contiguous = false
				}
				sum += r.Segs[n].Extinf
				if contiguous {
					extinfEnd[n] = sum
				}
			}
			for _, n := range ns {
				s := r.Segs[n]
				line := segmentLine{N: n, Gap: s.Gap, Extinf: s.Extinf, ListedAt: s.ListedAt.Format(time.RFC3339Nano),
					ListedUnix: unixSeconds(s.ListedAt)}
				if n >= uint64(ps.Chunks) {
					rr.Extra++
					overall.Extra++
				}
				if s.Gap {
					rr.Gaps++
					overall.Gaps++
					sr.Renditions[name] = append(sr.Renditions[name], line)
					continue
				}
				rr.Listed++
				overall.Listed++
				var tEnd time.Duration
				var from string
				if ref != nil && ref.Segs[n] != nil && ref.Segs[n].FragOK {
					tEnd, from = ref.Segs[n].FragEnd, "tfdt"
				} else if e, ok := extinfEnd[n]; ok {
					tEnd, from = time.Duration(math.Round(e*1e3))*time.Millisecond, "extinf"
				}
				if r == ref {
					if s.FragOK {
						rep.Check.FragmentsRead++
						fs := s.FragStart.Seconds()
						line.FragStart = &fs
						if e, ok := extinfEnd[n]; ok {
							rep.Check.MaxFragVsExtinfMS = max(rep.Check.MaxFragVsExtinfMS, math.Abs(ms(s.FragEnd)-e*1e3))
						}
						if n < uint64(len(ps.ChunkStarts)) {
							rep.Check.MaxFragVsChunkStartMS = max(rep.Check.MaxFragVsChunkStartMS, math.Abs(fs-ps.ChunkStarts[n])*1e3)
						}
					} else if s.FragErr != "" {
						rep.Check.FragmentErrors++
						if rep.Check.FirstFragmentError == "" {
							rep.Check.FirstFragmentError = s.FragErr
						}
					}
				}
				line.From = from
				if from != "" {
					line.MediaEnd = tEnd.Seconds()
					if wall, ok := run.pub.mediaWall(tEnd); ok {
						d := s.ListedAt.Sub(wall).Seconds()
						if d < 0 {
							rep.Check.NegativeDelays++
						}
						wu := unixSeconds(wall)
						line.DelayS, line.MediaEndUnix = &d, &wu
						rr.delays = append(rr.delays, d)
						overall.delays = append(overall.delays, d)
						rr.methods[from]++
						overall.methods[from]++
					}
				}
				sr.Renditions[name] = append(sr.Renditions[name], line)
			}
			// Numbers the publisher's chunks should have produced but that never appeared.
			for n := uint64(0); n < uint64(ps.Chunks); n++ {
				if r.Segs[n] == nil {
					rr.Missing++
					overall.Missing++
				}
			}
		}
		w.mu.Unlock()
	}
	sort.SliceStable(names, func(i, j int) bool { return renditionRank(names[i]) < renditionRank(names[j]) })
	for _, n := range names {
		rep.Renditions = append(rep.Renditions, byName[n].finish())
	}
	rep.Overall = overall.finish()
	return rep
}

// tsSnapTolerance is how far a time read from an MPEG-TS segment may be from the publisher's
// chunk start (or media end) it is taken to be: codecs shift decode times by a few frames.
const tsSnapTolerance = 250 * time.Millisecond

// nearest returns the index of the value of sorted closest to t and the distance (-1: empty).
func nearest(sorted []time.Duration, t time.Duration) (int, time.Duration) {
	if len(sorted) == 0 {
		return -1, 0
	}
	i := sort.Search(len(sorted), func(i int) bool { return sorted[i] >= t })
	best := -1
	var bd time.Duration
	for _, j := range []int{i - 1, i} {
		if j < 0 || j >= len(sorted) {
			continue
		}
		d := sorted[j] - t
		if d < 0 {
			d = -d
		}
		if best < 0 || d < bd {
			best, bd = j, d
		}
	}
	return best, bd
}

// tsRendition adds one MPEG-TS rendition of one stream to the report (see defMediaEndTS). The
// caller holds the watcher's lock.
func (rep *report) tsRendition(cfg *loadConfig, run *streamRun, ps pubStats, sr *streamReport, r *rendition, rr, overall *renditionReport) {
	rr.TS = true
	chunks := ps.chunkStartsD
	bounds := append(slices.Clone(chunks), ps.MediaEnd) // where a segment may end
	start := func(s *segment) (time.Duration, bool) {
		if s == nil || !s.TSOK || s.Gap {
			return 0, false
		}
		return ticksToDuration90k(s.TSDTS) - cfg.TSOffset, true
	}
	ns := make([]uint64, 0, len(r.Segs))
	for n := range r.Segs {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	// Segment n holds chunk n + base: base from the lowest-numbered segment whose start is a
	// chunk start.
	base, haveBase := 0, false
	for _, n := range ns {
		if st, ok := start(r.Segs[n]); ok {
			if k, d := nearest(chunks, st); k >= 0 && d <= tsSnapTolerance {
				base, haveBase = k-int(n), true
				break
			}
		}
	}
	first := cfg.FirstSeq
	if first < 0 {
		first = 0
		if len(ns) > 0 {
			first = int(ns[0])
		}
	}
	startChunk := min(max(0, first+base), len(chunks))
	rr.Expected += len(chunks) - startChunk
	overall.Expected += len(chunks) - startChunk
	rr.Skipped += startChunk
	overall.Skipped += startChunk

	for _, n := range ns {
		s := r.Segs[n]
		line := segmentLine{N: n, Gap: s.Gap, Extinf: s.Extinf, ListedAt: s.ListedAt.Format(time.RFC3339Nano),
			ListedUnix: unixSeconds(s.ListedAt)}
		k := int(n) + base
		if haveBase {
			kk := k
			line.Chunk = &kk
		}
		if k < 0 || k >= len(chunks) {
			rr.Extra++
			overall.Extra++
		}
		if s.Gap {
			rr.Gaps++
			overall.Gaps++
			sr.Renditions[r.Name] = append(sr.Renditions[r.Name], line)
			continue
		}
		rr.Listed++
		overall.Listed++
		st, ok := start(s)
		if ok {
			rep.Check.TSSegmentsRead++
			v := st.Seconds()
			line.TSStart = &v
			if ki, d := nearest(chunks, st); ki < 0 || d > tsSnapTolerance || ki != k {
				rep.Check.TSUnaligned++
			} else {
				rep.Check.MaxTSStartVsChunkMS = max(rep.Check.MaxTSStartVsChunkMS, ms(d))
			}
		} else if s.TSErr != "" {
			rep.Check.TSErrors++
			if rep.Check.FirstTSError == "" {
				rep.Check.FirstTSError = s.TSErr
			}
		}
		// Where the segment ends: the next segment's start, else this one's start + EXTINF.
		var tEnd, raw time.Duration
		from, haveRaw := "", false
		if nx, nok := start(r.Segs[n+1]); nok {
			raw, haveRaw = nx, true
		} else if ok {
			raw, haveRaw = st+time.Duration(math.Round(s.Extinf*1e3))*time.Millisecond, true
		}
		switch {
		case haveRaw:
			if i, d := nearest(bounds, raw); i >= 0 && d <= tsSnapTolerance {
				tEnd, from = bounds[i], "ts"
				rep.Check.MaxTSEndSnapMS = max(rep.Check.MaxTSEndSnapMS, ms(d))
			} else {
				tEnd, from = raw, "ts-unsnapped"
			}
		case haveBase && k+1 >= 1 && k+1 < len(bounds):
			tEnd, from = bounds[k+1], "seq"
		}
		line.From = from
		if from != "" {
			line.MediaEnd = tEnd.Seconds()
			if wall, ok := run.pub.mediaWall(tEnd); ok {
				d := s.ListedAt.Sub(wall).Seconds()
				if d < 0 {
					rep.Check.NegativeDelays++
				}
				wu := unixSeconds(wall)
				line.DelayS, line.MediaEndUnix = &d, &wu
				rr.delays = append(rr.delays, d)
				overall.delays = append(overall.delays, d)
				rr.methods[from]++
				overall.methods[from]++
			}
		}
		sr.Renditions[r.Name] = append(sr.Renditions[r.Name], line)
	}
	// Chunks from the rendition's first segment on that no segment was listed for.
	for k := startChunk; k < len(chunks); k++ {
		if n := k - base; n < 0 || r.Segs[uint64(n)] == nil {
			rr.Missing++
			overall.Missing++
		}
	}
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// renditionRank orders source first, then video rungs by height descending, then audio.
func renditionRank(name string) int {
	switch {
	case name == "source":
		return -1 << 20
	case name == "audio":
		return 1 << 20
	}
	var h int
	if _, err := fmt.Sscanf(name, "%dp", &h); err == nil {
		return -h
	}
	return 0
}

func (r *renditionReport) finish() *renditionReport {
	r.Lost = r.Gaps + r.Missing
	r.Delay = summarize(r.delays)
	for m, n := range r.methods {
		r.Methods = append(r.Methods, fmt.Sprintf("%s:%d", m, n))
	}
	slices.Sort(r.Methods)
	return r
}

func summarize(v []float64) stats {
	if len(v) == 0 {
		return stats{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	sum := 0.0
	for _, x := range s {
		sum += x
	}
	return stats{N: len(s), Min: s[0], Median: percentile(s, 50), Mean: sum / float64(len(s)),
		P95: percentile(s, 95), P99: percentile(s, 99), Max: s[len(s)-1]}
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func (rep *report) writeTable(w io.Writer) {
	fmt.Fprintf(w, "\nloadgen: %d stream(s) x %.1f s of %s, playlists polled every %.0f ms\n",
		rep.Streams, rep.MediaSeconds, rep.Clip, rep.PollMS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "rendition\texpected\tlisted\tgaps\tmissing\tlost\tmedian s\tp95 s\tp99 s\tmax s\tmin s\t")
	row := func(r *renditionReport) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t\n", r.Name, r.Expected, r.Listed, r.Gaps,
			r.Missing, r.Lost, r.Delay.Median, r.Delay.P95, r.Delay.P99, r.Delay.Max, r.Delay.Min)
	}
	for _, r := range rep.Renditions {
		row(r)
	}
	row(rep.Overall)
	_ = tw.Flush()
	fmt.Fprintln(w)
	if c := rep.Check; c.FragmentsRead > 0 || c.FragmentErrors > 0 || c.TSSegmentsRead == 0 && c.TSErrors == 0 {
		fmt.Fprintf(w, "timeline check: %d %s fragments read (%d errors); |fragment end - EXTINF sum| <= %.1f ms; |fragment start - publisher chunk start| <= %.1f ms\n",
			c.FragmentsRead, rep.RefRendition, c.FragmentErrors, c.MaxFragVsExtinfMS, c.MaxFragVsChunkStartMS)
	}
	if rep.Check.FirstFragmentError != "" {
		fmt.Fprintf(w, "  first fragment error: %s\n", rep.Check.FirstFragmentError)
	}
	if c := rep.Check; c.TSSegmentsRead > 0 || c.TSErrors > 0 {
		fmt.Fprintf(w, "MPEG-TS timeline: %d segment heads read (%d errors); |first DTS - publisher chunk start| <= %.1f ms, %d unaligned; |segment end - snapped end| <= %.1f ms\n",
			c.TSSegmentsRead, c.TSErrors, c.MaxTSStartVsChunkMS, c.TSUnaligned, c.MaxTSEndSnapMS)
		if c.FirstTSError != "" {
			fmt.Fprintf(w, "  first segment error: %s\n", c.FirstTSError)
		}
	}
	if rep.Check.NegativeDelays > 0 {
		fmt.Fprintf(w, "WARNING: %d segment(s) listed before the publisher sent their media end: a media end is wrong (--ts-offset?)\n", rep.Check.NegativeDelays)
	}
	for _, r := range rep.Renditions {
		if r.Skipped > 0 {
			fmt.Fprintf(w, "rendition %s: %d publisher chunk(s) before its first segment, not expected (e.g. an exec'd encoder connected late)\n", r.Name, r.Skipped)
		}
	}
	for _, s := range rep.PerStream {
		p := s.Publisher
		fmt.Fprintf(w, "stream %d %s: published %.3f s, %d video + %d audio frames, %.2f Mbit/s, %d chunks expected, write lag mean %.2f ms max %.2f ms, %d poll errors",
			s.Index, s.ID, p.MediaSeconds, p.VideoFrames, p.AudioFrames, p.Mbps, p.Chunks, p.MeanLagMS, p.MaxLagMS, s.PollErrors)
		if s.Error != "" {
			fmt.Fprintf(w, "; ERROR: %s", s.Error)
		}
		if s.Warning != "" {
			fmt.Fprintf(w, "; WARNING: %s", s.Warning)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
	for _, d := range rep.Definitions {
		fmt.Fprintf(w, "  %s\n", wrap(d, 110, "    "))
	}
}

// wrap breaks s into lines of at most width characters, continuing lines with indent.
func wrap(s string, width int, indent string) string {
	var b strings.Builder
	n := 0
	for i, word := range strings.Fields(s) {
		if i > 0 && n+1+len(word) > width {
			b.WriteString("\n" + indent)
			n = len(indent)
		} else if i > 0 {
			b.WriteByte(' ')
			n++
		}
		b.WriteString(word)
		n += len(word)
	}
	return b.String()
}
