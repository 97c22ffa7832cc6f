package packager

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/hls"
	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/segment"
)

// state is one stream's packaging state. It is saved after every change, so numbering survives
// a packager restart.
type state struct {
	// rev is the state store revision this state was loaded at (0: not stored yet).
	rev      uint64
	StreamID string `json:"stream_id"`
	// NextN is past the highest segment number listed. Numbers are the ingest's (a chunk's
	// record says its number): they run on across sessions, so a live URL keeps working when a
	// publisher reconnects.
	NextN   uint64 `json:"next_n"`
	Session string `json:"session"`
	Base    uint64 `json:"base"`     // segment number of the session's seq 0
	NextSeq uint64 `json:"next_seq"` // the session's next seq to list
	// NextMSN is the next media sequence number (EXT-X-MEDIA-SEQUENCE counts entries, one
	// by one); MSNBase is the session's seq 0's. Media sequence numbers equal segment numbers
	// unless a session's ingest died and left numbers unused.
	NextMSN uint64 `json:"next_msn"`
	MSNBase uint64 `json:"msn_base"`
	Ended   bool   `json:"ended"`
	// EndedByTimeout marks a session ended for silence rather than by its last chunk.
	EndedByTimeout bool                `json:"ended_by_timeout,omitempty"`
	LastActivity   time.Time           `json:"last_activity"`
	SessionStart   bool                `json:"session_start"` // the next listed entry opens a session
	Pending        map[uint64]*pending `json:"pending"`
	WaitingSince   time.Time           `json:"waiting_since"`
	Window         []entry             `json:"window"`
	// DiscSeq counts discontinuities that have left the window (EXT-X-DISCONTINUITY-SEQUENCE).
	DiscSeq uint64 `json:"disc_seq"`
	// Target is the playlists' target duration; it only grows, as HLS requires.
	Target     int                  `json:"target"`
	Renditions map[string]*rendInfo `json:"renditions"`
	// Maps hold each rendition's current init segment: its content hash and name.
	Maps map[string]mapInfo `json:"maps"`
	// Dirty means the playlists in storage lag this state (a write failed); they are rewritten
	// at the next chance.
	Dirty bool `json:"dirty,omitempty"`
	// MasterHash identifies the multivariant playlist last written.
	MasterHash string `json:"master_hash,omitempty"`
	// Record keeps the current session whole: its entries go to recording pages (RecPages
	// full ones in the state store, RecBuf the current one) and its segments are never retired.
	Record         bool      `json:"record,omitempty"`
	RecPages       int       `json:"rec_pages,omitempty"`
	RecBuf         []entry   `json:"rec_buf,omitempty"`
	SessionStarted time.Time `json:"session_started"`
	// Retired are segments out of the window, deleted after the grace period.
	Retired []retired `json:"retired,omitempty"`
	// DASH timing: the availability start time of the stream's live MPD and each session's
	// period start.
	AST           time.Time                `json:"ast"`
	Timing        map[string]sessionTiming `json:"timing,omitempty"`
	LastPeriodEnd time.Duration            `json:"last_period_end"`
	// DashOpened is the session whose first DASH Period has been named (after the session);
	// its later Periods are named after their first segment.
	DashOpened string `json:"dash_opened,omitempty"`
	// PeriodPTO is the media time (90 kHz) each DASH Period in the window starts at: its first
	// segment's, fixed for the life of the Period as a live MPD requires.
	PeriodPTO map[string]int64 `json:"period_pto,omitempty"`
}

type mapInfo struct {
	Hash   string `json:"hash"`
	URI    string `json:"uri"`
	Stored bool   `json:"stored,omitempty"` // written to the bucket
}

type rendInfo struct {
	Kind       string  `json:"kind"`
	Codec      string  `json:"codec"`
	Width      int     `json:"width,omitempty"`
	Height     int     `json:"height,omitempty"`
	FPS        float64 `json:"fps,omitempty"`
	Channels   int     `json:"channels,omitempty"`
	SampleRate int     `json:"sample_rate,omitempty"`
	Peak       int     `json:"peak"`    // highest segment bitrate seen
	Bits       float64 `json:"bits"`    // total bits listed, for the average
	Seconds    float64 `json:"seconds"` // total seconds listed
	Nominal    int     `json:"nominal"` // the ladder's target bitrate, 0 for source and audio
	FirstSeen  uint64  `json:"first_seen"`
}

// pending is a chunk whose records are coming in, waiting for its turn to be listed. It is
// ready once the ingest's record is in and, when the session has rungs, a transcoder's; or once
// it waited too long (Forced: it is listed with what it has, the rest as gaps).
type pending struct {
	Seq        uint64                 `json:"seq"`
	N          uint64                 `json:"n"`
	Start      int64                  `json:"start"`
	Duration   int64                  `json:"duration"`
	Last       bool                   `json:"last,omitempty"`
	Gap        bool                   `json:"gap,omitempty"` // the chunk never came
	Error      string                 `json:"error,omitempty"`
	Renditions map[string]segmentInfo `json:"renditions"`
	Ingest     bool                   `json:"ingest,omitempty"`
	Rungs      bool                   `json:"rungs,omitempty"` // a transcoder's record is due
	Transcoder bool                   `json:"transcoder,omitempty"`
	Forced     bool                   `json:"forced,omitempty"`
	// Since is when the chunk's first record came: a chunk still incomplete GapTimeout later is
	// listed with what came, however long the chunks before it took.
	Since time.Time `json:"since"`
}

// merge adds a record's renditions; maps are the renditions' current init segments.
func (p *pending) merge(seg *queue.Segment, maps map[string]mapInfo) {
	switch seg.From {
	case queue.FromTranscoder:
		p.Transcoder = true
	case queue.FromIngest:
		p.Ingest, p.Rungs = true, seg.Encoding
	default: // a record of a release before records were split: the whole chunk
		p.Ingest, p.Transcoder = true, true
	}
	if seg.From != queue.FromTranscoder || p.Duration == 0 {
		p.Start, p.Duration = seg.Start, seg.Duration
	}
	p.N, p.Last = seg.N, p.Last || seg.Last
	if seg.Failed {
		p.addError(seg.From + ": " + seg.Error)
	}
	for _, r := range seg.Renditions {
		ts := r.Timescale
		if ts == 0 {
			ts = media.Timescale
		}
		si := segmentInfo{Duration: float64(r.Duration) / float64(ts), Bytes: r.Bytes, Failed: r.Failed, T: r.Start, D: r.Duration, TS: ts}
		if r.Failed {
			p.addError(r.Name + ": " + r.Error)
		} else {
			si.Map = maps[r.Name].URI
		}
		p.Renditions[r.Name] = si
	}
}

func (p *pending) addError(e string) {
	switch {
	case p.Error == "":
		p.Error = e
	case !slices.Contains(strings.Split(p.Error, "; "), e): // a redelivered record says it again
		p.Error += "; " + e
	}
}

// force makes the chunk ready with what came: the renditions of a record that never came are
// listed as gaps.
func (p *pending) force() {
	p.Forced = true
	if !p.Ingest {
		p.addError("the ingest's record never came")
	} else if p.Rungs && !p.Transcoder {
		p.addError("the transcoders' record never came")
	}
}

func (p *pending) ready() bool {
	return p.Forced || p.Gap || (p.Ingest && (!p.Rungs || p.Transcoder))
}

// gap reports whether nothing of the chunk can be listed.
func (p *pending) gap() bool {
	if p.Gap {
		return true
	}
	for _, si := range p.Renditions {
		if !si.Failed {
			return false
		}
	}
	return true
}

type segmentInfo struct {
	Duration float64 `json:"duration"` // seconds
	Bytes    int     `json:"bytes"`
	Failed   bool    `json:"failed,omitempty"`
	Map      string  `json:"map"`
	// T and D are the segment's earliest presentation time and duration in timescale TS, for
	// DASH timelines.
	T  int64  `json:"t,omitempty"`
	D  int64  `json:"d,omitempty"`
	TS uint32 `json:"ts,omitempty"`
}

// entry is one listed segment number.
type entry struct {
	N             uint64                 `json:"n"`   // segment number: the file is {N}.m4s
	MSN           uint64                 `json:"msn"` // media sequence number
	Session       string                 `json:"session,omitempty"`
	Listed        time.Time              `json:"listed"`
	Duration      float64                `json:"duration"` // seconds, the chunk's
	Discontinuity bool                   `json:"disc,omitempty"`
	Gap           bool                   `json:"gap,omitempty"`
	Renditions    map[string]segmentInfo `json:"renditions"`
	// Recorded marks an entry of a recorded session: its segments belong to the recording and
	// are not deleted when it leaves the window, whatever session is current by then.
	Recorded bool `json:"recorded,omitempty"`
	// Period is the id of the DASH Period the entry is in, fixed when it is listed so that a
	// Period keeps its id while the window slides (empty for gaps, and in states saved by an
	// earlier release until load assigns it).
	Period string `json:"period,omitempty"`
}

func newState(streamID string, target time.Duration) *state {
	return &state{
		StreamID:   streamID,
		Pending:    map[uint64]*pending{},
		Target:     int(math.Ceil(target.Seconds())),
		Renditions: map[string]*rendInfo{},
		Maps:       map[string]mapInfo{},
	}
}

// migrate brings a state saved by an earlier release up to date.
func (st *state) migrate() {
	if st.NextMSN == 0 && st.NextN > 0 {
		// Saved before media sequence numbers had their own count: they were the numbers.
		st.NextMSN, st.MSNBase = st.NextN, st.Base
		for i := range st.Window {
			st.Window[i].MSN = st.Window[i].N
		}
	}
	for _, p := range st.Pending {
		if !p.Ingest && !p.Transcoder {
			// A chunk that release had whole (its segments written, or a gap), numbered from
			// the session's base: records did not say their number then.
			p.N = st.Base + p.Seq
			p.Ingest, p.Transcoder = true, true
		}
	}
	for i := range st.Window {
		if e := &st.Window[i]; e.Period == "" && !e.Gap {
			var prev *entry
			if i > 0 {
				prev = &st.Window[i-1]
			}
			st.assignPeriod(e, prev)
		}
	}
}

// forceOverdue makes the chunks that waited too long ready to be listed with what came: the
// next one once the stream has waited timeout for it (an entirely missing chunk becomes a gap,
// one per timeout), and every one, in order, up to the last whose first record came more than
// timeout ago (with any missing before it as gaps). A transcoder outage thus costs a stall of
// one timeout, not one per chunk: the transcoders skip chunks that old, so their records never
// come. It reports whether it changed anything.
func (st *state) forceOverdue(now time.Time, timeout time.Duration) bool {
	stalled := !st.WaitingSince.IsZero() && now.Sub(st.WaitingSince) > timeout
	var upTo uint64
	overdue := false
	for seq, p := range st.Pending {
		if !p.Since.IsZero() && now.Sub(p.Since) > timeout && (!overdue || seq > upTo) {
			upTo, overdue = seq, true
		}
	}
	changed := false
	for seq := st.NextSeq; (seq == st.NextSeq && stalled) || (overdue && seq <= upTo); seq++ {
		p := st.Pending[seq]
		switch {
		case p == nil:
			p = st.gapFor(seq)
			st.Pending[seq] = p
			changed = true
		case !p.ready():
			p.force()
			changed = true
		}
		if p.Last {
			break
		}
	}
	return changed
}

func (st *state) gapFor(seq uint64) *pending {
	return &pending{Seq: seq, N: st.Base + seq, Duration: int64(st.Target) * media.Timescale, Gap: true, Error: "chunk never arrived",
		Renditions: map[string]segmentInfo{}}
}

// mapFor returns the init segment name for rendition name given this session's init bytes:
// the current one if unchanged, otherwise a new name (the first init is "init.mp4"; a changed
// one is "init-N.mp4", N the first segment using it), so players holding the old one are not
// broken by an overwrite.
func (st *state) mapFor(name string, init []byte, n uint64) string {
	h := sha256.Sum256(init)
	hash := hex.EncodeToString(h[:8])
	cur, ok := st.Maps[name]
	if ok && cur.Hash == hash {
		return cur.URI
	}
	uri := "init.mp4"
	if ok {
		uri = "init-" + strconv.FormatUint(n, 10) + ".mp4"
	}
	st.Maps[name] = mapInfo{Hash: hash, URI: uri}
	return uri
}

func (st *state) key(rendition, file string) string {
	return path.Join("live", st.StreamID, rendition, file)
}

// list appends a ready chunk to the window.
func (st *state) list(p *pending) {
	n, msn := p.N, st.MSNBase+p.Seq
	e := entry{N: n, MSN: msn, Session: st.Session, Listed: time.Now().UTC(), Duration: float64(p.Duration) / media.Timescale, Gap: p.gap(),
		Recorded: st.Record, Renditions: map[string]segmentInfo{}}
	if st.SessionStart {
		e.Discontinuity = len(st.Window) > 0 || st.NextN > 0
		st.SessionStart = false
	}
	for name, si := range p.Renditions {
		e.Renditions[name] = si
		if ri := st.Renditions[name]; ri != nil && !si.Failed && si.Duration > 0 {
			rate := int(float64(si.Bytes*8) / si.Duration)
			ri.Peak = max(ri.Peak, rate)
			ri.Bits += float64(si.Bytes * 8)
			ri.Seconds += si.Duration
		}
		if d := int(math.Round(si.Duration)); d > st.Target {
			st.Target = d
		}
	}
	if d := int(math.Round(e.Duration)); d > st.Target {
		st.Target = d
	}
	var prev *entry
	if len(st.Window) > 0 {
		prev = &st.Window[len(st.Window)-1]
	}
	st.assignPeriod(&e, prev)
	st.Window = append(st.Window, e)
	st.NextN = max(st.NextN, n+1)
	st.NextMSN = max(st.NextMSN, msn+1)
	if !e.Gap {
		st.noteSessionTiming(e, e.Listed)
		st.noteListed(e)
	}
}

// trim keeps the last window entries, counting discontinuities that leave. An entry listed
// less than hold ago stays even so: after a stall (a chunk redelivered after its transcoder
// died) the waiting chunks are listed in one update, and trimming straight to the window would
// drop some before any player's reload saw them. The playlist grows for a while instead, which
// HLS and DASH players follow. hold 0 is window−1 target durations (a steady stream, listing a
// segment per target duration, keeps exactly window entries); negative, none.
func (st *state) trim(window int, hold time.Duration, now time.Time) {
	if hold == 0 {
		hold = time.Duration(max(window-1, 1)*max(st.Target, 1)) * time.Second
	}
	for len(st.Window) > window && (hold < 0 || now.Sub(st.Window[0].Listed) >= hold) {
		if st.Window[0].Discontinuity {
			st.DiscSeq++
		}
		st.retire(st.Window[0])
		st.Window = st.Window[1:]
	}
}

// noteRenditions records what the multivariant playlist needs to know about each rendition.
func (st *state) noteRenditions(seg *queue.Segment) {
	for _, r := range seg.Renditions {
		if r.Failed {
			continue
		}
		ri := st.Renditions[r.Name]
		if ri == nil {
			ri = &rendInfo{FirstSeen: st.Base + seg.Seq}
			st.Renditions[r.Name] = ri
		}
		ri.Kind, ri.Codec, ri.Width, ri.Height, ri.FPS, ri.Channels = r.Kind, r.Codec, r.Width, r.Height, r.FPS, r.Channels
		ri.SampleRate = r.SampleRate
		if r.Name != "source" && r.Kind == "video" {
			ri.Nominal = r.Bandwidth
		}
	}
}

// mediaPlaylist renders rendition name's live playlist.
func (st *state) mediaPlaylist(name string) ([]byte, error) {
	p := hls.MediaPlaylist{
		TargetDuration:        st.Target,
		DiscontinuitySequence: st.DiscSeq,
		Ended:                 st.Ended,
	}
	if len(st.Window) > 0 {
		p.MediaSequence = st.Window[0].MSN
	}
	curMap := ""
	for i, e := range st.Window {
		si, ok := e.Renditions[name]
		seg := hls.Segment{URI: segment.Name(e.N), Duration: e.Duration, Discontinuity: e.Discontinuity}
		if ok && !si.Failed && !e.Gap {
			if si.Duration > 0 {
				seg.Duration = si.Duration
			}
			if si.Map != "" && si.Map != curMap {
				if i == 0 {
					p.MapURI = si.Map
				} else {
					seg.MapURI = si.Map
				}
				curMap = si.Map
			}
		} else {
			seg.Gap = true
		}
		p.Segments = append(p.Segments, seg)
	}
	if p.MapURI == "" {
		p.MapURI = "init.mp4"
	}
	return p.Render()
}

// master renders the multivariant playlist from the renditions seen so far.
func (st *state) master() ([]byte, error) {
	var audio *hls.AudioRendition
	audioRate := 0
	if a := st.Renditions["audio"]; a != nil {
		audio = &hls.AudioRendition{GroupID: "audio", Name: "Audio", URI: "audio/index.m3u8", Codecs: a.Codec,
			Channels: a.Channels, Default: true}
		audioRate = max(a.Peak, 1)
	}
	var variants []hls.Variant
	names := make([]string, 0, len(st.Renditions))
	for n := range st.Renditions {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		r := st.Renditions[n]
		if r.Kind != "video" {
			continue
		}
		peak := max(r.Peak, r.Nominal)
		avg := peak
		if r.Seconds > 0 {
			avg = int(r.Bits / r.Seconds)
		}
		// hls.Master adds the audio group's codec to each variant's CODECS.
		// Figures are kept to 50 kbit/s steps so the playlist stays the same (and is not
		// rewritten) while the measured rates wander a little from segment to segment.
		variants = append(variants, hls.Variant{URI: n + "/index.m3u8", Bandwidth: roundUp(peak+audioRate, 50_000),
			AverageBandwidth: roundUp(avg+audioRate, 50_000), Width: r.Width, Height: r.Height, FrameRate: r.FPS, Codecs: r.Codec})
	}
	return hls.Master(variants, audio)
}

func (st *state) hasVideo() bool {
	for _, r := range st.Renditions {
		if r.Kind == "video" {
			return true
		}
	}
	return false
}

// publish writes every rendition's media playlist, then the multivariant playlist.
func (s *Service) publish(ctx context.Context, st *state) error {
	names := make([]string, 0, len(st.Renditions))
	for n := range st.Renditions {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		b, err := st.mediaPlaylist(n)
		if err != nil {
			return err
		}
		if err := s.put(ctx, st.key(n, "index.m3u8"), b, !st.Ended); err != nil {
			return err
		}
	}
	if !st.hasVideo() {
		// Nothing playable yet (the stream's first chunks failed): no multivariant playlist
		// or manifest can describe it, and none is needed.
		return nil
	}
	b, err := st.master()
	if err != nil {
		return err
	}
	// The multivariant playlist changes rarely (new renditions, better bandwidth figures, the
	// end of the session's cache lifetime); rewriting it per segment would double its PUTs.
	h := sha256.Sum256(append(b, byte(btoi(st.Ended))))
	if sum := hex.EncodeToString(h[:8]); sum != st.MasterHash {
		if err := s.put(ctx, path.Join("live", st.StreamID, "master.m3u8"), b, !st.Ended); err != nil {
			return err
		}
		st.MasterHash = sum
	}
	mpd, err := st.liveMPD(time.Now().UTC(), s.cfg.Window)
	if err != nil {
		// HLS is up to date; a manifest the renderer refuses must not stall it.
		s.log.Error("rendering the DASH manifest failed", "stream_id", st.StreamID, "err", err)
		return nil
	}
	return s.put(ctx, path.Join("live", st.StreamID, "manifest.mpd"), mpd, !st.Ended)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// roundUp rounds v up to a multiple of step.
func roundUp(v, step int) int { return (v + step - 1) / step * step }
