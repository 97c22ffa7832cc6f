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
	"net/http"
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

// Register adds the API's routes to mux.
func (s *Service) Register(mux *http.ServeMux) {
	mux.Handle("POST /v1/streams", s.auth(http.HandlerFunc(s.createStream)))
	mux.Handle("GET /v1/streams/{id}", s.auth(http.HandlerFunc(s.getStream)))
}

// StreamView is a stream as the API shows it. StreamKey is set only on create and rotate.
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
	CreatedAt  time.Time `json:"created_at"`
}

// Playback are the player URLs of a stream.
type Playback struct {
	HLS  string `json:"hls"`
	DASH string `json:"dash"`
}

func (s *Service) view(st *streams.Stream, key string) StreamView {
	v := StreamView{
		ID: st.ID, Name: st.Name, Profile: st.Profile, Record: st.Record, RTMPURL: s.cfg.RTMPURL,
		Playback: Playback{
			HLS:  s.cfg.PublicBaseURL + "/live/" + st.ID + "/master.m3u8",
			DASH: s.cfg.PublicBaseURL + "/live/" + st.ID + "/manifest.mpd",
		},
		Status:    "idle",
		CreatedAt: st.CreatedAt,
	}
	if key != "" {
		v.StreamKey = key
		v.PublishURL = s.cfg.RTMPURL + "/" + key
	}
	return v
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
	writeJSON(w, http.StatusCreated, s.view(st, key))
}

func (s *Service) getStream(w http.ResponseWriter, r *http.Request) {
	st, err := s.reg.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.view(st, ""))
}

// auth requires one of the configured bearer tokens, compared in constant time.
func (s *Service) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || tok == "" {
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
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return &apiError{http.StatusUnsupportedMediaType, "unsupported_media_type", "send application/json"}
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
	if dec.More() {
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
