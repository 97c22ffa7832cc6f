package packager

import (
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/dash"
)

// sessionTiming pins a session on the DASH timeline: its Period starts Start after the
// availability start time, at media time PTO (90 kHz, the session's first video presentation
// time). Both are fixed when the session's first segment is listed and never move.
type sessionTiming struct {
	Start time.Duration `json:"start"`
	PTO   int64         `json:"pto"`
}

// noteSessionTiming places a session that is listing its first segment e.
func (st *state) noteSessionTiming(e entry, now time.Time) {
	if st.Timing == nil {
		st.Timing = map[string]sessionTiming{}
	}
	if _, ok := st.Timing[e.Session]; ok {
		return
	}
	v, ok := videoInfo(e)
	if !ok {
		return
	}
	first := time.Duration(float64(v.D) / float64(v.TS) * float64(time.Second))
	// The slack keeps a segment's announced availability after its real listing even when a
	// later chunk takes a little longer through the pipeline than the first did.
	slack := time.Duration(st.Target) * time.Second
	if st.AST.IsZero() {
		st.AST = now.Add(-first).Add(slack).Truncate(time.Millisecond)
	}
	start := now.Add(-first).Add(slack).Sub(st.AST)
	// Periods must not overlap: a session cannot start before the previous one's media ended.
	if start < st.LastPeriodEnd {
		start = st.LastPeriodEnd
	}
	st.Timing[e.Session] = sessionTiming{Start: start.Truncate(time.Millisecond), PTO: v.T}
}

// noteListed advances the end of the stream's DASH timeline past entry e, and forgets the
// timing of sessions no longer in the window.
func (st *state) noteListed(e entry) {
	t, ok := st.Timing[e.Session]
	v, vok := videoInfo(e)
	if ok && vok {
		end := t.Start + time.Duration(float64(v.T+v.D-t.PTO)/media.Timescale*float64(time.Second))
		st.LastPeriodEnd = max(st.LastPeriodEnd, end)
	}
	for sess := range st.Timing {
		if sess == e.Session {
			continue
		}
		inWindow := false
		for _, w := range st.Window {
			if w.Session == sess {
				inWindow = true
				break
			}
		}
		if !inWindow {
			delete(st.Timing, sess)
		}
	}
	for id := range st.PeriodPTO {
		if !slices.ContainsFunc(st.Window, func(w entry) bool { return w.Period == id }) {
			delete(st.PeriodPTO, id)
		}
	}
}

// videoInfo is the timing of an entry's video (the source rendition, which every rung shares).
func videoInfo(e entry) (segmentInfo, bool) {
	_, si, ok := videoRef(e)
	return si, ok
}

// videoRef is the entry's reference video: the source when it is there, otherwise the first
// rung by name (a chunk whose ingest record never came), so the choice does not depend on map
// order.
func videoRef(e entry) (string, segmentInfo, bool) {
	if si, ok := e.Renditions["source"]; ok && !si.Failed && si.TS != 0 {
		return "source", si, true
	}
	names := make([]string, 0, len(e.Renditions))
	for n := range e.Renditions {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if si := e.Renditions[n]; n != "audio" && !si.Failed && si.TS == media.Timescale && si.D > 0 {
			return n, si, true
		}
	}
	return "", segmentInfo{}, false
}

// periodShape is what consecutive entries must share to be in one DASH Period: a Period lists
// every segment number for each of its Representations, from one init segment per
// AdaptationSet, so a rendition missing from a chunk (a rung whose transcoder record never
// came, the source and audio whose ingest record never came) or needing another init segment
// must not be in the same Period as the chunks that have it.
type periodShape struct {
	session string
	vInit   string
	video   []string // the video renditions present, needing vInit, by name
	aInit   string   // "" without audio
}

func (a periodShape) equal(b periodShape) bool {
	return a.session == b.session && a.vInit == b.vInit && a.aInit == b.aInit && slices.Equal(a.video, b.video)
}

// shapeOf is entry e's Period shape; false when DASH cannot list it (a gap, no video).
func shapeOf(e entry, r map[string]*rendInfo) (periodShape, segmentInfo, bool) {
	_, v, ok := videoRef(e)
	if e.Gap || !ok {
		return periodShape{}, v, false
	}
	sh := periodShape{session: e.Session, vInit: initName(v.Map)}
	for n, si := range e.Renditions {
		if ri := r[n]; ri != nil && ri.Kind == "video" && !si.Failed && si.TS != 0 && si.D > 0 && initName(si.Map) == sh.vInit {
			sh.video = append(sh.video, n)
		}
	}
	sort.Strings(sh.video)
	if a, ok := e.Renditions["audio"]; ok && !a.Failed && a.TS != 0 && r["audio"] != nil && r["audio"].Kind == "audio" {
		sh.aInit = initName(a.Map)
	}
	return sh, v, len(sh.video) > 0
}

// assignPeriod names the DASH Period a newly listed entry e is in: prev's (the entry listed
// before it) when e continues it, a new one otherwise. A session's first Period is named after
// the session, its later ones after their first segment number, so names never depend on what
// is still in the window.
func (st *state) assignPeriod(e *entry, prev *entry) {
	sh, v, ok := shapeOf(*e, st.Renditions)
	if !ok {
		e.Period = ""
		return
	}
	if prev != nil && prev.Period != "" && prev.N+1 == e.N {
		if psh, _, pok := shapeOf(*prev, st.Renditions); pok && psh.equal(sh) {
			e.Period = prev.Period
			return
		}
	}
	if st.DashOpened != e.Session {
		st.DashOpened = e.Session
		e.Period = e.Session
	} else {
		e.Period = e.Session + "-" + strconv.FormatUint(e.N, 10)
	}
	if st.PeriodPTO == nil {
		st.PeriodPTO = map[string]int64{}
	}
	st.PeriodPTO[e.Period] = v.T
}

// dashRepresentations describes the renditions for an MPD: video rungs best first, then audio.
func dashRepresentations(r map[string]*rendInfo) ([]dash.Representation, *dash.Representation) {
	var video []dash.Representation
	var audio *dash.Representation
	names := make([]string, 0, len(r))
	for n := range r {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		ri := r[n]
		bw := max(ri.Peak, ri.Nominal, 1)
		switch ri.Kind {
		case "video":
			video = append(video, dash.Representation{ID: n, Codecs: ri.Codec, Bandwidth: bw, Width: ri.Width,
				Height: ri.Height, FrameRate: ri.FPS})
		case "audio":
			audio = &dash.Representation{ID: n, Codecs: ri.Codec, Bandwidth: bw, AudioSamplingRate: ri.SampleRate,
				AudioChannels: max(ri.Channels, 1)}
		}
	}
	sort.SliceStable(video, func(i, j int) bool { return video[i].Bandwidth > video[j].Bandwidth })
	return video, audio
}

// dashPeriods groups entries into Periods: the entries of one Period share its shape and have
// consecutive numbers (a DASH timeline can neither skip a number nor change init), and carry
// its id (entries saved by an earlier release, without one, are grouped by shape and named
// after their session and a count, as that release did). A Period starts at the media time
// ptos gives for it, else at its first entry's; a session's timing places it.
func dashPeriods(entries []entry, timing map[string]sessionTiming, ptos map[string]int64, r map[string]*rendInfo) []dash.Period {
	video, audio := dashRepresentations(r)
	var out []dash.Period
	var cur *dash.Period
	var curShape periodShape
	var curID, curSession string
	var lastN uint64
	split := 0
	used := map[string]bool{}
	for _, e := range entries {
		sh, v, ok := shapeOf(e, r)
		if !ok {
			cur = nil // the next entry opens a new Period
			continue
		}
		a := e.Renditions["audio"]
		if cur == nil || !sh.equal(curShape) || e.Period != curID || e.N != lastN+1 {
			t, ok := timing[e.Session]
			if !ok {
				t = sessionTiming{PTO: v.T}
			}
			if e.Session != curSession {
				split = 0
			} else {
				split++
			}
			id := e.Period
			if id == "" {
				id = e.Session
				if split > 0 {
					id += "-" + strconv.Itoa(split)
				}
			}
			for used[id] {
				id += "-" + strconv.FormatUint(e.N, 10)
			}
			used[id] = true
			var reps []dash.Representation
			for _, rep := range video {
				if slices.Contains(sh.video, rep.ID) {
					reps = append(reps, rep)
				}
			}
			// The Period keeps the start it had when it opened, whatever of it is still in the
			// window: a live MPD must not move a Period's timeline between updates.
			pto, ok := ptos[e.Period]
			if !ok || pto > v.T {
				pto = v.T
			}
			offset := time.Duration(float64(pto-t.PTO) / media.Timescale * float64(time.Second))
			out = append(out, dash.Period{
				ID: id, Start: t.Start + offset,
				Video: reps, VideoTimescale: media.Timescale, VideoPresentationTimeOffset: uint64(pto),
			})
			cur = &out[len(out)-1]
			if audio != nil && sh.aInit != "" {
				cur.Audio = audio
				cur.AudioTimescale = a.TS
				cur.AudioPresentationTimeOffset = uint64(pto * int64(a.TS) / media.Timescale)
			}
			curShape, curID, curSession = sh, e.Period, e.Session
		}
		lastN = e.N
		cur.VideoSegments = append(cur.VideoSegments, dash.Segment{N: e.N, T: v.T, D: v.D, Init: sh.vInit})
		if cur.Audio != nil {
			cur.AudioSegments = append(cur.AudioSegments, dash.Segment{N: e.N, T: a.T, D: a.D, Init: sh.aInit})
		}
	}
	// Safety net: a Period whose audio is not consecutive cannot list it; keep video.
	for i := range out {
		if p := &out[i]; p.Audio != nil && !consecutive(p.AudioSegments) {
			p.Audio, p.AudioSegments = nil, nil
		}
	}
	return out
}

func consecutive(segs []dash.Segment) bool {
	for i := 1; i < len(segs); i++ {
		if segs[i].N != segs[i-1].N+1 {
			return false
		}
	}
	return len(segs) > 0
}

func initName(m string) string {
	if m == "" {
		return "init.mp4"
	}
	return m
}

// liveMPD renders the stream's manifest.mpd: dynamic while the session is live, static once
// it ended.
func (st *state) liveMPD(now time.Time, window int) ([]byte, error) {
	target := time.Duration(st.Target) * time.Second
	periods := dashPeriods(st.Window, st.Timing, st.PeriodPTO, st.Renditions)
	m := dash.MPD{
		Dynamic:                    !st.Ended,
		AvailabilityStartTime:      st.AST,
		PublishTime:                now,
		MinimumUpdatePeriod:        target,
		TimeShiftBufferDepth:       time.Duration(window) * target,
		SuggestedPresentationDelay: 3 * target,
		MinBufferTime:              target,
		UTCTiming:                  []dash.UTCTiming{{Scheme: dash.UTCDirect, Value: now.UTC().Format(time.RFC3339Nano)}},
		Periods:                    periods,
	}
	if st.Ended {
		rebase(m.Periods)
		m.AvailabilityStartTime = time.Time{}
	}
	return m.Render()
}

// rebase makes a static presentation start at 0.
func rebase(periods []dash.Period) {
	if len(periods) == 0 {
		return
	}
	first := periods[0].Start
	for i := range periods {
		periods[i].Start -= first
	}
}

// vodMPD renders a recording's static manifest over the live segments.
func vodMPD(j *recordingJob, entries []entry) ([]byte, error) {
	r := map[string]*rendInfo{}
	for n, ri := range j.renditions {
		r[n] = &ri
	}
	var timing map[string]sessionTiming
	if v, ok := firstVideo(entries); ok {
		timing = map[string]sessionTiming{j.session: {PTO: v.T}}
	}
	periods := dashPeriods(entries, timing, nil, r)
	rebase(periods)
	m := dash.MPD{
		MinBufferTime: 2 * time.Second,
		BaseURL:       "../../../live/" + j.streamID + "/",
		Periods:       periods,
	}
	return m.Render()
}

func firstVideo(entries []entry) (segmentInfo, bool) {
	for _, e := range entries {
		if v, ok := videoInfo(e); ok && !e.Gap {
			return v, true
		}
	}
	return segmentInfo{}, false
}
