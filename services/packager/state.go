package packager

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math"
	"path"
	"sort"
	"strconv"
	"time"

	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/hls"
	"github.com/gopcast/gopcast/pkg/queue"
)

// state is one stream's packaging state. It is saved after every change, so numbering survives
// a packager restart.
type state struct {
	// rev is the state store revision this state was loaded at (0: not stored yet).
	rev      uint64
	StreamID string `json:"stream_id"`
	// NextN is the next unused segment number of the stream; numbers run on across sessions so
	// a live URL keeps working when a publisher reconnects.
	NextN   uint64 `json:"next_n"`
	Session string `json:"session"`
	Base    uint64 `json:"base"`     // segment number of the session's seq 0
	NextSeq uint64 `json:"next_seq"` // the session's next seq to list
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

// pending is a finished chunk waiting for its turn to be listed.
type pending struct {
	Seq        uint64                 `json:"seq"`
	Start      int64                  `json:"start"`
	Duration   int64                  `json:"duration"`
	Last       bool                   `json:"last,omitempty"`
	Gap        bool                   `json:"gap,omitempty"`
	Error      string                 `json:"error,omitempty"`
	Renditions map[string]segmentInfo `json:"renditions"`
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
	N             uint64                 `json:"n"`
	Session       string                 `json:"session,omitempty"`
	Listed        time.Time              `json:"listed"`
	Duration      float64                `json:"duration"` // seconds, the chunk's
	Discontinuity bool                   `json:"disc,omitempty"`
	Gap           bool                   `json:"gap,omitempty"`
	Renditions    map[string]segmentInfo `json:"renditions"`
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

func pendingFrom(seg *queue.Segment) *pending {
	p := &pending{Seq: seg.Seq, Start: seg.Start, Duration: seg.Duration, Last: seg.Last, Gap: seg.Failed,
		Error: seg.Error, Renditions: map[string]segmentInfo{}}
	for _, r := range seg.Renditions {
		ts := r.Timescale
		if ts == 0 {
			ts = media.Timescale
		}
		p.Renditions[r.Name] = segmentInfo{Duration: float64(r.Duration) / float64(ts), Bytes: r.Bytes, Failed: r.Failed,
			T: r.Start, D: r.Duration, TS: ts}
	}
	return p
}

func (st *state) gapFor(seq uint64) *pending {
	return &pending{Seq: seq, Duration: int64(st.Target) * media.Timescale, Gap: true, Error: "chunk never arrived",
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

func segmentName(n uint64) string { return strconv.FormatUint(n, 10) + ".m4s" }

// list appends a ready chunk to the window as segment number n.
func (st *state) list(p *pending, n uint64) {
	e := entry{N: n, Session: st.Session, Listed: time.Now().UTC(), Duration: float64(p.Duration) / media.Timescale, Gap: p.Gap,
		Renditions: map[string]segmentInfo{}}
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
	st.Window = append(st.Window, e)
	st.NextN = max(st.NextN, n+1)
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
		p.MediaSequence = st.Window[0].N
	}
	curMap := ""
	for i, e := range st.Window {
		si, ok := e.Renditions[name]
		seg := hls.Segment{URI: segmentName(e.N), Duration: e.Duration, Discontinuity: e.Discontinuity}
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
