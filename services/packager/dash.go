package packager

import (
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
}

// videoInfo is the timing of an entry's video (the source rendition, which every rung shares).
func videoInfo(e entry) (segmentInfo, bool) {
	if si, ok := e.Renditions["source"]; ok && !si.Failed && si.TS != 0 {
		return si, true
	}
	for _, si := range e.Renditions {
		if !si.Failed && si.TS == media.Timescale && si.D > 0 {
			return si, true
		}
	}
	return segmentInfo{}, false
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

// dashPeriods groups entries into Periods: one per session, split again after a gap or where
// an init segment changes (a DASH timeline can neither skip a number nor change init).
func dashPeriods(entries []entry, timing map[string]sessionTiming, r map[string]*rendInfo) []dash.Period {
	video, audio := dashRepresentations(r)
	var out []dash.Period
	var cur *dash.Period
	var curSession, curVInit, curAInit string
	split := 0
	for _, e := range entries {
		v, ok := videoInfo(e)
		if e.Gap || !ok {
			cur = nil // the next entry opens a new Period
			continue
		}
		a, hasAudio := e.Renditions["audio"]
		hasAudio = hasAudio && !a.Failed && a.TS != 0 && audio != nil
		vInit, aInit := initName(v.Map), initName(a.Map)
		if cur == nil || e.Session != curSession || vInit != curVInit || (hasAudio && aInit != curAInit) {
			t, ok := timing[e.Session]
			if !ok {
				t = sessionTiming{PTO: v.T}
			}
			if e.Session != curSession {
				split = 0
			} else {
				split++
			}
			id := e.Session
			if split > 0 {
				id += "-" + strconv.Itoa(split)
			}
			offset := time.Duration(float64(v.T-t.PTO) / media.Timescale * float64(time.Second))
			out = append(out, dash.Period{
				ID: id, Start: t.Start + offset,
				Video: video, VideoTimescale: media.Timescale, VideoPresentationTimeOffset: uint64(v.T),
			})
			cur = &out[len(out)-1]
			if audio != nil && hasAudio {
				cur.Audio = audio
				cur.AudioTimescale = a.TS
				cur.AudioPresentationTimeOffset = uint64(v.T * int64(a.TS) / media.Timescale)
			}
			curSession, curVInit, curAInit = e.Session, vInit, aInit
		}
		cur.VideoSegments = append(cur.VideoSegments, dash.Segment{N: e.N, T: v.T, D: v.D, Init: vInit})
		if cur.Audio != nil && hasAudio {
			cur.AudioSegments = append(cur.AudioSegments, dash.Segment{N: e.N, T: a.T, D: a.D, Init: aInit})
		}
	}
	// A Period whose audio missed a segment cannot list audio consecutively; keep video.
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
	periods := dashPeriods(st.Window, st.Timing, st.Renditions)
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
	periods := dashPeriods(entries, timing, r)
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
