package packager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/gopcast/gopcast/pkg/ffmpeg"
	"github.com/gopcast/gopcast/pkg/media/hls"
	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/segment"
	"github.com/gopcast/gopcast/pkg/storage"
	"github.com/gopcast/gopcast/pkg/streams"
)

// Recordings is where finished recordings are registered, so the API can list them.
type Recordings interface {
	PutRecording(ctx context.Context, r *streams.Recording) error
	ListRecordings(ctx context.Context, streamID string) ([]*streams.Recording, error)
	DeleteRecording(ctx context.Context, streamID, sessionID string) error
	// Exists reports whether a stream still exists; a deleted stream's recordings go with it.
	Exists(ctx context.Context, streamID string) (bool, error)
}

// recPageSize bounds one page of a session's recorded segment list in the state store, so a
// long recording never makes one oversized value or rewrites its whole history per segment.
const recPageSize = 256

// deleter is implemented by state stores that can delete keys.
type deleter interface {
	Delete(ctx context.Context, key string) error
}

func recPageKey(streamID, session string, page int) string {
	return "rec." + streamID + "." + session + "." + strconv.Itoa(page)
}

// record appends a listed entry to the session's recording, flushing a full page.
func (s *Service) record(ctx context.Context, st *state, e entry) error {
	st.RecBuf = append(st.RecBuf, e)
	if len(st.RecBuf) < recPageSize {
		return nil
	}
	b, err := json.Marshal(st.RecBuf)
	if err != nil {
		return err
	}
	if _, err := s.state.Put(ctx, recPageKey(st.StreamID, st.Session, st.RecPages), b); err != nil {
		return err
	}
	st.RecPages++
	st.RecBuf = nil
	return nil
}

// recordingJob is everything needed to finish a recording after its session ended.
type recordingJob struct {
	streamID, session string
	pages             int
	buf               []entry
	renditions        map[string]rendInfo
	started           time.Time
}

func (st *state) recordingJob() *recordingJob {
	j := &recordingJob{streamID: st.StreamID, session: st.Session, pages: st.RecPages, buf: st.RecBuf,
		renditions: map[string]rendInfo{}, started: st.SessionStarted}
	for n, r := range st.Renditions {
		j.renditions[n] = *r
	}
	return j
}

// finishRecording writes the VOD playlists, the static MPD and the downloadable MP4 of a
// session, over the live segments (nothing is copied), and registers the recording.
func (s *Service) finishRecording(ctx context.Context, j *recordingJob, log *slog.Logger) error {
	entries, err := s.loadRecording(ctx, j)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return nil
	}
	prefix := path.Join("vod", j.streamID, j.session)
	names := make([]string, 0, len(j.renditions))
	for n := range j.renditions {
		names = append(names, n)
	}
	sort.Strings(names)
	var total float64
	for _, e := range entries {
		total += e.Duration
	}
	for _, name := range names {
		b, err := vodPlaylist(j.streamID, name, entries)
		if err != nil {
			return err
		}
		if err := s.put(ctx, path.Join(prefix, name, "index.m3u8"), b, false); err != nil {
			return err
		}
	}
	tmp := &state{StreamID: j.streamID, Renditions: map[string]*rendInfo{}}
	for n, r := range j.renditions {
		tmp.Renditions[n] = &r
	}
	master, err := tmp.master()
	if err != nil {
		return err
	}
	if err := s.put(ctx, path.Join(prefix, "master.m3u8"), master, false); err != nil {
		return err
	}
	mpd, err := vodMPD(j, entries)
	if err != nil {
		return err
	}
	if err := s.put(ctx, path.Join(prefix, "manifest.mpd"), mpd, false); err != nil {
		return err
	}
	mp4Key := path.Join(prefix, "recording.mp4")
	size, err := s.buildMP4(ctx, j, entries, mp4Key)
	if err != nil {
		// The playlists still play; the download is what is missing.
		log.Error("building the recording's MP4 failed", "err", err)
		mp4Key = ""
	}
	first, last := entries[0].N, entries[len(entries)-1].N
	var bytes int64
	for _, e := range entries {
		for _, si := range e.Renditions {
			bytes += int64(si.Bytes)
		}
	}
	rec := &streams.Recording{
		StreamID: j.streamID, SessionID: j.session, Duration: total, Bytes: bytes + size,
		HLS: path.Join(prefix, "master.m3u8"), DASH: path.Join(prefix, "manifest.mpd"), MP4: mp4Key,
		MP4Bytes: size, FirstN: first, LastN: last, Renditions: names, StartedAt: j.started, CreatedAt: time.Now().UTC(),
	}
	if s.recs != nil {
		if err := s.recs.PutRecording(ctx, rec); err != nil {
			return err
		}
	}
	if d, ok := s.state.(deleter); ok {
		for p := 0; p < j.pages; p++ {
			_ = d.Delete(ctx, recPageKey(j.streamID, j.session, p))
		}
	}
	if ep, ok := s.q.(EventPublisher); ok {
		_ = ep.PublishEvent(ctx, queue.Event{Kind: queue.EventRecordingReady, StreamID: j.streamID, SessionID: j.session,
			Data: map[string]any{"hls": rec.HLS, "dash": rec.DASH, "mp4": rec.MP4, "duration_s": rec.Duration}})
	}
	log.Info("recording ready", "segments", len(entries), "duration_s", total, "mp4_bytes", size)
	return nil
}

func (s *Service) loadRecording(ctx context.Context, j *recordingJob) ([]entry, error) {
	var out []entry
	for p := 0; p < j.pages; p++ {
		b, _, err := s.state.Get(ctx, recPageKey(j.streamID, j.session, p))
		if err != nil {
			return nil, fmt.Errorf("recording page %d: %w", p, err)
		}
		var page []entry
		if err := json.Unmarshal(b, &page); err != nil {
			return nil, fmt.Errorf("recording page %d: %w", p, err)
		}
		out = append(out, page...)
	}
	return append(out, j.buf...), nil
}

// vodRel is how a recording's rendition playlist (vod/ID/SESSION/REND/index.m3u8) reaches the
// live segments it lists.
func vodRel(streamID, rendition string) string {
	return "../../../../live/" + streamID + "/" + rendition + "/"
}

func vodPlaylist(streamID, name string, entries []entry) ([]byte, error) {
	rel := vodRel(streamID, name)
	p := hls.MediaPlaylist{VOD: true, Ended: true}
	curMap := ""
	for i, e := range entries {
		si, ok := e.Renditions[name]
		seg := hls.Segment{URI: rel + segment.Name(e.N), Duration: e.Duration}
		if ok && !si.Failed && !e.Gap {
			if si.Duration > 0 {
				seg.Duration = si.Duration
			}
			m := si.Map
			if m == "" {
				m = "init.mp4"
			}
			if m != curMap {
				if i == 0 {
					p.MapURI = rel + m
				} else {
					seg.MapURI = rel + m
				}
				curMap = m
			}
		} else {
			seg.Gap = true
		}
		p.Segments = append(p.Segments, seg)
	}
	if p.MapURI == "" {
		p.MapURI = rel + "init.mp4"
	}
	return p.Render()
}

// buildMP4 writes one progressive MP4 of the best video rendition with the audio, remuxed by
// ffmpeg without re-encoding, with the index at the front (faststart) so it plays while it
// downloads. It returns its size.
func (s *Service) buildMP4(ctx context.Context, j *recordingJob, entries []entry, key string) (int64, error) {
	video := bestVideo(j.renditions)
	if video == "" {
		return 0, errors.New("no video rendition")
	}
	dir, err := os.MkdirTemp("", "gopcast-rec-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	inputs := []string{video}
	if _, ok := j.renditions["audio"]; ok {
		inputs = append(inputs, "audio")
	}
	var args []string
	args = append(args, "-hide_banner", "-nostdin", "-loglevel", "error", "-y")
	for _, r := range inputs {
		f := filepath.Join(dir, r+".mp4")
		if err := s.concatRendition(ctx, j.streamID, r, entries, f); err != nil {
			return 0, err
		}
		args = append(args, "-i", f)
	}
	out := filepath.Join(dir, "recording.mp4")
	args = append(args, "-map", "0:v:0")
	if len(inputs) > 1 {
		args = append(args, "-map", "1:a:0")
	}
	args = append(args, "-c", "copy", "-movflags", "+faststart", out)
	if err := ffmpeg.Run(ctx, s.cfg.FFmpeg, args); err != nil {
		return 0, err
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return 0, err
	}
	if err := s.put(ctx, key, data, false); err != nil {
		return 0, err
	}
	return int64(len(data)), nil
}

// concatRendition writes a rendition's init and listed segments, in order, to one fragmented
// MP4 file. A changed init mid-session ends the file there: one MP4 holds one configuration.
func (s *Service) concatRendition(ctx context.Context, streamID, rendition string, entries []entry, file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	curMap := ""
	for _, e := range entries {
		si, ok := e.Renditions[rendition]
		if !ok || si.Failed || e.Gap {
			continue
		}
		m := si.Map
		if m == "" {
			m = "init.mp4"
		}
		if curMap != "" && m != curMap {
			break
		}
		if curMap == "" {
			init, err := s.store.Get(ctx, path.Join("live", streamID, rendition, m))
			if err != nil {
				return err
			}
			if _, err := f.Write(init); err != nil {
				return err
			}
			curMap = m
		}
		b, err := s.store.Get(ctx, path.Join("live", streamID, rendition, segment.Name(e.N)))
		if err != nil {
			return err
		}
		if _, err := f.Write(b); err != nil {
			return err
		}
	}
	return f.Close()
}

func bestVideo(r map[string]rendInfo) string {
	best, bestH := "", -1
	for n, ri := range r {
		if ri.Kind == "video" && (ri.Height > bestH || (ri.Height == bestH && n == "source")) {
			best, bestH = n, ri.Height
		}
	}
	return best
}

// retire schedules the media segments of an entry that left the live window for deletion
// after the grace period, unless its session is recorded (the entry says so; one saved by an
// earlier release is judged by the current session's flag).
func (st *state) retire(e entry) {
	if e.Recorded || (e.Session == st.Session && st.Record) {
		return
	}
	names := make([]string, 0, len(e.Renditions))
	for n, si := range e.Renditions {
		if !si.Failed {
			names = append(names, n)
		}
	}
	st.Retired = append(st.Retired, retired{N: e.N, Renditions: names, At: time.Now().UTC()})
}

// retireUnlisted schedules for deletion the segments of a record that came too late to be
// listed: its session was replaced, its chunk was listed without it (after the gap timeout), or
// its session had ended. They are in the bucket and no playlist will name them. Renditions the
// window lists under the record's number are left to leave the window as usual: the record is
// a redelivery. A recorded session's segments are kept (its recording's retention deletes
// them). It reports whether it retired anything.
func (st *state) retireUnlisted(seg *queue.Segment) bool {
	if seg.Record {
		return false
	}
	var listed map[string]segmentInfo
	for _, e := range st.Window {
		if e.N == seg.N {
			listed = e.Renditions
		}
	}
	var names []string
	for _, r := range seg.Renditions {
		if si, ok := listed[r.Name]; r.Failed || (ok && !si.Failed) {
			continue
		}
		names = append(names, r.Name)
	}
	if len(names) == 0 {
		return false
	}
	st.Retired = append(st.Retired, retired{N: seg.N, Renditions: names, At: time.Now().UTC()})
	return true
}

// retirePending does the same for a chunk left pending when its session was replaced.
func (st *state) retirePending(p *pending) {
	if st.Record {
		return
	}
	var names []string
	for n, si := range p.Renditions {
		if !si.Failed {
			names = append(names, n)
		}
	}
	if len(names) > 0 {
		st.Retired = append(st.Retired, retired{N: p.N, Renditions: names, At: time.Now().UTC()})
	}
}

type retired struct {
	N          uint64    `json:"n"`
	Renditions []string  `json:"renditions"`
	At         time.Time `json:"at"`
}

// sweep deletes retired segments whose grace period is over. It reports whether it changed
// the state.
func (s *Service) sweep(ctx context.Context, st *state) bool {
	cut := 0
	for _, r := range st.Retired {
		if time.Since(r.At) < s.cfg.DeleteGrace {
			break
		}
		for _, name := range r.Renditions {
			key := st.key(name, segment.Name(r.N))
			if err := s.store.Delete(ctx, key); err != nil && !errors.Is(err, storage.ErrNotFound) {
				s.log.Warn("deleting an expired segment failed; will retry", "key", key, "err", err)
				goto done
			}
		}
		cut++
	}
done:
	if cut == 0 {
		return false
	}
	st.Retired = append([]retired(nil), st.Retired[cut:]...)
	return true
}

// expireRecordings deletes recordings older than the retention: their VOD files and the
// segments they list.
func (s *Service) expireRecordings(ctx context.Context) {
	if s.recs == nil {
		return
	}
	// "*" lists every stream's recordings: any packager may expire any of them, idempotently.
	recs, err := s.recs.ListRecordings(ctx, "*")
	if err != nil {
		s.log.Warn("listing recordings failed", "err", err)
		return
	}
	for _, r := range recs {
		id := r.StreamID
		expired := s.cfg.RecordingRetention > 0 && time.Since(r.CreatedAt) >= s.cfg.RecordingRetention
		if !expired {
			exists, err := s.recs.Exists(ctx, id)
			if err != nil || exists {
				continue
			}
		}
		if err := s.deleteRecording(ctx, r); err != nil {
			s.log.Warn("deleting an expired recording failed; will retry", "stream_id", id, "session_id", r.SessionID, "err", err)
			continue
		}
		s.log.Info("recording deleted", "stream_id", id, "session_id", r.SessionID, "expired", expired)
	}
}

func (s *Service) deleteRecording(ctx context.Context, r *streams.Recording) error {
	keys, err := s.store.List(ctx, path.Join("vod", r.StreamID, r.SessionID)+"/")
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := s.store.Delete(ctx, k); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
	}
	for n := r.FirstN; n <= r.LastN; n++ {
		for _, name := range r.Renditions {
			key := path.Join("live", r.StreamID, name, segment.Name(n))
			if err := s.store.Delete(ctx, key); err != nil && !errors.Is(err, storage.ErrNotFound) {
				return err
			}
		}
	}
	return s.recs.DeleteRecording(ctx, r.StreamID, r.SessionID)
}
