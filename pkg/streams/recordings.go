package streams

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"time"

	"github.com/gopcast/gopcast/pkg/queue"
)

// Recording is one session kept whole. Paths are object keys relative to the public base URL.
type Recording struct {
	StreamID   string    `json:"stream_id"`
	SessionID  string    `json:"session_id"`
	HLS        string    `json:"hls"`
	DASH       string    `json:"dash"`
	MP4        string    `json:"mp4,omitempty"`
	Duration   float64   `json:"duration_s"`
	Bytes      int64     `json:"bytes"` // segments of every rendition plus the MP4
	MP4Bytes   int64     `json:"mp4_bytes"`
	FirstN     uint64    `json:"first_n"`
	LastN      uint64    `json:"last_n"`
	Renditions []string  `json:"renditions"`
	StartedAt  time.Time `json:"started_at"`
	CreatedAt  time.Time `json:"created_at"`
}

// PutRecording registers a finished recording.
func (r *Registry) PutRecording(ctx context.Context, rec *Recording) error {
	b, _ := json.Marshal(rec)
	_, err := r.kv.Put(ctx, "recording."+rec.StreamID+"."+rec.SessionID, b)
	return err
}

// ListRecordings lists a stream's recordings, newest first.
func (r *Registry) ListRecordings(ctx context.Context, streamID string) ([]*Recording, error) {
	keys, err := r.kv.KeysMatching(ctx, "recording."+streamID+".*")
	if err != nil {
		return nil, err
	}
	sort.Sort(sort.Reverse(sort.StringSlice(keys)))
	out := []*Recording{}
	for _, k := range keys {
		b, _, err := r.kv.Get(ctx, k)
		if errors.Is(err, queue.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var rec Recording
		if json.Unmarshal(b, &rec) == nil {
			out = append(out, &rec)
		}
	}
	return out, nil
}

// DeleteRecording forgets a recording (its files are the caller's to delete).
func (r *Registry) DeleteRecording(ctx context.Context, streamID, sessionID string) error {
	return r.kv.Delete(ctx, "recording."+streamID+"."+sessionID)
}

// Exists reports whether stream id exists.
func (r *Registry) Exists(ctx context.Context, id string) (bool, error) {
	_, err := r.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
