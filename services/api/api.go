// Package api is the management API: operators create streams and get their stream keys and
// playback URLs. It speaks JSON over HTTP behind a bearer token, with errors shaped
// {"error": {"code", "message"}}.
package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gopcast/gopcast/pkg/media/ladder"
	"github.com/gopcast/gopcast/pkg/streams"
)

// Config tunes the API.
type Config struct {
	// Tokens are the accepted bearer tokens (several, so a token can be rotated).
	Tokens []string
	// RTMPURL is what publishers connect to, e.g. rtmp://live.example.com:1935/live.
	RTMPURL string
	// PublicBaseURL is where players fetch media (the CDN or bucket URL).
	PublicBaseURL string
	// DefaultProfile is the ladder a stream gets when it names none.
	DefaultProfile string
}

// Registry is what the API needs from the stream registry.
type Registry interface {
	Create(ctx context.Context, name, profile string, record bool) (*streams.Stream, string, error)
	Get(ctx context.Context, id string) (*streams.Stream, error)
	List(ctx context.Context, limit int, cursor string) ([]*streams.Stream, string, error)
	Update(ctx context.Context, id string, p streams.Patch) (*streams.Stream, error)
	RotateKey(ctx context.Context, id string) (*streams.Stream, string, error)
	Delete(ctx context.Context, id string) error
	DeleteSessions(ctx context.Context, id string) error
	Live(ctx context.Context, id string) (*streams.Session, error)
	Sessions(ctx context.Context, id string, limit int) ([]*streams.Session, error)
	ListRecordings(ctx context.Context, id string) ([]*streams.Recording, error)
}

// Service serves the API.
type Service struct {
	cfg Config
	log *slog.Logger
	reg Registry
}

// New returns the API service.
func New(cfg Config, log *slog.Logger, reg Registry) *Service {
	if cfg.DefaultProfile == "" {
		cfg.DefaultProfile = "default"
	}
	cfg.PublicBaseURL = strings.TrimRight(cfg.PublicBaseURL, "/")
	return &Service{cfg: cfg, log: log, reg: reg}
}

// Routes are the API's routes, as registered; the OpenAPI document must describe each.
var Routes = []string{
	"POST /v1/streams",
	"GET /v1/streams",
	"GET /v1/streams/{id}",
	"PATCH /v1/streams/{id}",
	"DELETE /v1/streams/{id}",
	"POST /v1/streams/{id}/rotate-key",
	"GET /v1/streams/{id}/sessions",
	"GET /v1/streams/{id}/recordings",
	"GET /v1/openapi.yaml",
}

// Register adds the API's routes to mux.
func (s *Service) Register(mux *http.ServeMux) {
	handlers := map[string]http.HandlerFunc{
		"POST /v1/streams":                 s.createStream,
		"GET /v1/streams":                  s.listStreams,
		"GET /v1/streams/{id}":             s.getStream,
		"PATCH /v1/streams/{id}":           s.updateStream,
		"DELETE /v1/streams/{id}":          s.deleteStream,
		"POST /v1/streams/{id}/rotate-key": s.rotateKey,
		"GET /v1/streams/{id}/sessions":    s.listSessions,
		"GET /v1/streams/{id}/recordings":  s.listRecordings,
	}
	for _, r := range Routes {
		if h, ok := handlers[r]; ok {
			mux.Handle(r, s.auth(h))
		}
	}
	mux.HandleFunc("GET /v1/openapi.yaml", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(OpenAPI)
	})
	// Anything else under /v1/ gets the API's error shape rather than the mux's plain text:
	// 405 with Allow for a known path and another method, 404 otherwise.
	mux.Handle("/v1/", s.auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if allow := allowedMethods(r.URL.Path); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			s.writeError(w, &apiError{http.StatusMethodNotAllowed, "method_not_allowed", r.Method + " is not allowed on " + r.URL.Path})
			return
		}
		s.writeError(w, &apiError{http.StatusNotFound, "not_found", "no such route: " + r.Method + " " + r.URL.Path})
	})))
}

// allowedMethods lists the methods the routes accept for path.
func allowedMethods(path string) []string {
	var out []string
	for _, r := range Routes {
		method, pattern, _ := strings.Cut(r, " ")
		if matchPattern(pattern, path) {
			out = append(out, method)
		}
	}
	return out
}

func matchPattern(pattern, path string) bool {
	ps, xs := strings.Split(pattern, "/"), strings.Split(path, "/")
	if len(ps) != len(xs) {
		return false
	}
	for i := range ps {
		if strings.HasPrefix(ps[i], "{") {
			if xs[i] == "" {
				return false
			}
			continue
		}
		if ps[i] != xs[i] {
			return false
		}
	}
	return true
}

// StreamView is a stream as the API shows it. StreamKey and PublishURL are set only on create
// and rotate.
type StreamView struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Profile    string    `json:"profile"`
	Record     bool      `json:"record"`
	StreamKey  string    `json:"stream_key,omitempty"`
	RTMPURL    string    `json:"rtmp_url"`
	PublishURL string    `json:"publish_url,omitempty"`
	Playback   Playback  `json:"playback"`
	Status     string    `json:"status"`
	Live       *LiveView `json:"live,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// Playback are the player URLs of a stream.
type Playback struct {
	HLS  string `json:"hls"`
	DASH string `json:"dash"`
}

// LiveView is the current session of a live stream and the health of its incoming media.
type LiveView struct {
	SessionID string          `json:"session_id"`
	StartedAt time.Time       `json:"started_at"`
	Ingest    *streams.Health `json:"ingest,omitempty"`
}

// SessionView is one publish session.
type SessionView struct {
	ID        string     `json:"id"`
	Status    string     `json:"status"` // live or ended
	StartedAt time.Time  `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at"`
	Duration  float64    `json:"duration_s"`
	BytesIn   uint64     `json:"bytes_in"`
	EndReason string     `json:"end_reason,omitempty"`
}

func (s *Service) view(ctx context.Context, st *streams.Stream, key string) (StreamView, error) {
	v := StreamView{
		ID: st.ID, Name: st.Name, Profile: st.Profile, Record: st.Record, RTMPURL: s.cfg.RTMPURL,
		Playback: Playback{
			HLS:  s.cfg.PublicBaseURL + "/live/" + st.ID + "/master.m3u8",
			DASH: s.cfg.PublicBaseURL + "/live/" + st.ID + "/manifest.mpd",
		},
		Status:    "idle",
		CreatedAt: st.CreatedAt,
		UpdatedAt: st.UpdatedAt,
	}
	if key != "" {
		v.StreamKey = key
		v.PublishURL = s.cfg.RTMPURL + "/" + key
	}
	if key != "" && st.CreatedAt.Equal(st.UpdatedAt) {
		return v, nil // a stream just created is idle, and its key must reach the caller
	}
	live, err := s.reg.Live(ctx, st.ID)
	if err != nil {
		// Status is secondary; the stream (and a key just rotated) must still be shown.
		s.log.Warn("reading live status failed; showing the stream as idle", "stream_id", st.ID, "err", err)
		return v, nil
	}
	if live != nil {
		v.Status = "live"
		v.Live = &LiveView{SessionID: live.ID, StartedAt: live.StartedAt, Ingest: live.Health}
	}
	return v, nil
}

func (s *Service) respondStream(w http.ResponseWriter, r *http.Request, status int, st *streams.Stream, key string) {
	v, err := s.view(r.Context(), st, key)
	if err != nil {
		s.writeError(w, err)
		return
	}
	writeJSON(w, status, v)
}

type createRequest struct {
	Name    string `json:"name"`
	Profile string `json:"profile"`
	Record  *bool  `json:"record"`
}

const maxBody = 64 << 10

func (s *Service) createStream(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	if err := decodeJSON(w, r, &req); err != nil {
		s.writeError(w, err)
		return
	}
	if req.Profile == "" {
		req.Profile = s.cfg.DefaultProfile
	}
	if _, err := ladder.Lookup(req.Profile); err != nil {
		s.writeError(w, &apiError{http.StatusBadRequest, "invalid_profile", err.Error()})
		return
	}
	record := req.Record != nil && *req.Record
	st, key, err := s.reg.Create(r.Context(), req.Name, req.Profile, record)
	if err != nil {
		s.writeError(w, err)
		return
	}
	s.log.Info("stream created", "stream_id", st.ID, "profile", st.Profile)
	s.respondStream(w, r, http.StatusCreated, st, key)
}

func (s *Service) getStream(w http.ResponseWriter, r *http.Request) {
	st, err := s.reg.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, err)
		return
	}
	s.respondStream(w, r, http.StatusOK, st, "")
}

// listStreams pages through streams in creation order: ?limit=1..100 (default 20)&cursor=.
func (s *Service) listStreams(w http.ResponseWriter, r *http.Request) {
	limit, err := intParam(r, "limit", 20, 1, 100)
	if err != nil {
		s.writeError(w, err)
		return
	}
	list, next, err := s.reg.List(r.Context(), limit, r.URL.Query().Get("cursor"))
	if err != nil {
		s.writeError(w, err)
		return
	}
	out := struct {
		Streams    []StreamView `json:"streams"`
		NextCursor string       `json:"next_cursor,omitempty"`
	}{Streams: []StreamView{}, NextCursor: next}
	for _, st := range list {
		v, err := s.view(r.Context(), st, "")
		if err != nil {
			s.writeError(w, err)
			return
		}
		out.Streams = append(out.Streams, v)
	}
	writeJSON(w, http.StatusOK, out)
}

type updateRequest struct {
	Name    *string `json:"name"`
	Profile *string `json:"profile"`
	Record  *bool   `json:"record"`
}

func (s *Service) updateStream(w http.ResponseWriter, r *http.Request) {
	var req updateRequest
	if err := decodeJSON(w, r, &req); err != nil {
		s.writeError(w, err)
		return
	}
	if req.Name == nil && req.Profile == nil && req.Record == nil {
		s.writeError(w, &apiError{http.StatusBadRequest, "invalid_request", "nothing to update: give name, profile or record"})
		return
	}
	if req.Profile != nil {
		if _, err := ladder.Lookup(*req.Profile); err != nil {
			s.writeError(w, &apiError{http.StatusBadRequest, "invalid_profile", err.Error()})
			return
		}
	}
	st, err := s.reg.Update(r.Context(), r.PathValue("id"), streams.Patch{Name: req.Name, Profile: req.Profile, Record: req.Record})
	if err != nil {
		s.writeError(w, err)
		return
	}
	s.log.Info("stream updated", "stream_id", st.ID)
	s.respondStream(w, r, http.StatusOK, st, "")
}

func (s *Service) deleteStream(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.reg.Delete(r.Context(), id); err != nil {
		s.writeError(w, err)
		return
	}
	// The ingest sees the record go and cuts a live publisher; the history goes with it.
	if err := s.reg.DeleteSessions(r.Context(), id); err != nil {
		s.log.Warn("deleting session history failed", "stream_id", id, "err", err)
	}
	s.log.Info("stream deleted", "stream_id", id)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) rotateKey(w http.ResponseWriter, r *http.Request) {
	st, key, err := s.reg.RotateKey(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, err)
		return
	}
	s.log.Info("stream key rotated", "stream_id", st.ID)
	s.respondStream(w, r, http.StatusOK, st, key)
}

func (s *Service) listSessions(w http.ResponseWriter, r *http.Request) {
	limit, err := intParam(r, "limit", 50, 1, 500)
	if err != nil {
		s.writeError(w, err)
		return
	}
	id := r.PathValue("id")
	if _, err := s.reg.Get(r.Context(), id); err != nil {
		s.writeError(w, err)
		return
	}
	list, err := s.reg.Sessions(r.Context(), id, limit)
	if err != nil {
		s.writeError(w, err)
		return
	}
	now := time.Now()
	out := struct {
		Sessions []SessionView `json:"sessions"`
	}{Sessions: []SessionView{}}
	for _, se := range list {
		v := SessionView{ID: se.ID, Status: "ended", StartedAt: se.StartedAt, EndedAt: se.EndedAt, BytesIn: se.BytesIn, EndReason: se.EndReason}
		end := now
		if se.EndedAt != nil {
			end = *se.EndedAt
		} else {
			v.Status = "live"
		}
		v.Duration = end.Sub(se.StartedAt).Round(time.Millisecond).Seconds()
		out.Sessions = append(out.Sessions, v)
	}
	writeJSON(w, http.StatusOK, out)
}

// RecordingView is one recorded session with the URLs to play or download it.
type RecordingView struct {
	SessionID string    `json:"session_id"`
	HLS       string    `json:"hls"`
	DASH      string    `json:"dash"`
	MP4       string    `json:"mp4,omitempty"`
	Duration  float64   `json:"duration_s"`
	Bytes     int64     `json:"bytes"`
	MP4Bytes  int64     `json:"mp4_bytes"`
	StartedAt time.Time `json:"started_at"`
	CreatedAt time.Time `json:"created_at"`
}

func (s *Service) listRecordings(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := s.reg.Get(r.Context(), id); err != nil {
		s.writeError(w, err)
		return
	}
	list, err := s.reg.ListRecordings(r.Context(), id)
	if err != nil {
		s.writeError(w, err)
		return
	}
	out := struct {
		Recordings []RecordingView `json:"recordings"`
	}{Recordings: []RecordingView{}}
	url := func(key string) string {
		if key == "" {
			return ""
		}
		return s.cfg.PublicBaseURL + "/" + key
	}
	for _, rec := range list {
		out.Recordings = append(out.Recordings, RecordingView{SessionID: rec.SessionID, HLS: url(rec.HLS), DASH: url(rec.DASH),
			MP4: url(rec.MP4), Duration: rec.Duration, Bytes: rec.Bytes, MP4Bytes: rec.MP4Bytes, StartedAt: rec.StartedAt, CreatedAt: rec.CreatedAt})
	}
	writeJSON(w, http.StatusOK, out)
}

func intParam(r *http.Request, name string, def, lo, hi int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, &apiError{http.StatusBadRequest, "invalid_request", fmt.Sprintf("%s must be an integer from %d to %d", name, lo, hi)}
	}
	return n, nil
}

// auth requires one of the configured bearer tokens, compared in constant time.
func (s *Service) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The scheme is case-insensitive (RFC 9110); the token is not.
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		tok = strings.TrimSpace(tok)
		if !strings.EqualFold(scheme, "Bearer") || tok == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="gopcast"`)
			s.writeError(w, &apiError{http.StatusUnauthorized, "unauthorized", "missing bearer token"})
			return
		}
		match := 0
		for _, t := range s.cfg.Tokens {
			match |= subtle.ConstantTimeCompare([]byte(tok), []byte(t))
		}
		if match != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="gopcast", error="invalid_token"`)
			s.writeError(w, &apiError{http.StatusUnauthorized, "unauthorized", "invalid bearer token"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.message }

// decodeJSON reads a JSON body strictly: right content type, bounded size, no unknown fields,
// nothing after the object.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !(r.Method == http.MethodPatch && mt == "application/merge-patch+json")) {
			return &apiError{http.StatusUnsupportedMediaType, "unsupported_media_type", "send application/json"}
		}
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &apiError{http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("body over %d bytes", maxBody)}
		}
		if errors.Is(err, io.EOF) {
			return &apiError{http.StatusBadRequest, "invalid_json", "empty body"}
		}
		return &apiError{http.StatusBadRequest, "invalid_json", "invalid JSON: " + err.Error()}
	}
	// Anything after the object but white space is refused (More alone misses a stray ] or }).
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &apiError{http.StatusBadRequest, "invalid_json", "unexpected data after the JSON object"}
	}
	return nil
}

// writeError is the one place errors become statuses; internal details stay in the log.
func (s *Service) writeError(w http.ResponseWriter, err error) {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
	case errors.Is(err, streams.ErrNotFound):
		ae = &apiError{http.StatusNotFound, "not_found", "stream not found"}
	case errors.Is(err, streams.ErrInvalid):
		ae = &apiError{http.StatusBadRequest, "invalid_request", err.Error()}
	case errors.Is(err, streams.ErrConflict):
		ae = &apiError{http.StatusConflict, "conflict", "the stream was changed concurrently; retry"}
	default:
		s.log.Error("API request failed", "err", err)
		ae = &apiError{http.StatusInternalServerError, "internal", "internal error"}
	}
	writeJSON(w, ae.status, map[string]any{"error": map[string]string{"code": ae.code, "message": ae.message}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
