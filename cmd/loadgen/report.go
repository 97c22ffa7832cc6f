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
	Name     string   `json:"name"`
	Expected int      `json:"segments_expected"`
	Listed   int      `json:"segments_listed"`
	Gaps     int      `json:"gaps"`
	Missing  int      `json:"missing"`
	Lost     int      `json:"lost"`
	Delay    stats    `json:"delay_s"`
	Extra    int      `json:"unexpected_numbers,omitempty"`
	Methods  []string `json:"media_end_from,omitempty"`
	delays   []float64
	methods  map[string]int
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
}

type streamReport struct {
	Index      int                      `json:"index"`
	ID         string                   `json:"id"`
	Error      string                   `json:"error,omitempty"`
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
	fmt.Fprintf(w, "\ntimeline check: %d %s fragments read (%d errors); |fragment end - EXTINF sum| <= %.1f ms; |fragment start - publisher chunk start| <= %.1f ms\n",
		rep.Check.FragmentsRead, rep.RefRendition, rep.Check.FragmentErrors, rep.Check.MaxFragVsExtinfMS, rep.Check.MaxFragVsChunkStartMS)
	if rep.Check.FirstFragmentError != "" {
		fmt.Fprintf(w, "  first fragment error: %s\n", rep.Check.FirstFragmentError)
	}
	for _, s := range rep.PerStream {
		p := s.Publisher
		fmt.Fprintf(w, "stream %d %s: published %.3f s, %d video + %d audio frames, %.2f Mbit/s, %d chunks expected, write lag mean %.2f ms max %.2f ms, %d poll errors",
			s.Index, s.ID, p.MediaSeconds, p.VideoFrames, p.AudioFrames, p.Mbps, p.Chunks, p.MeanLagMS, p.MaxLagMS, s.PollErrors)
		if s.Error != "" {
			fmt.Fprintf(w, "; ERROR: %s", s.Error)
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
