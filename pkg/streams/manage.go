package streams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/gopcast/gopcast/pkg/queue"
)

// Patch changes some of a stream's settings; nil fields are left alone.
type Patch struct {
	Name    *string
	Profile *string
	Record  *bool
}

// Update applies p to stream id, retrying on concurrent writers.
func (r *Registry) Update(ctx context.Context, id string, p Patch) (*Stream, error) {
	if p.Name != nil {
		if err := ValidateName(*p.Name); err != nil {
			return nil, err
		}
	}
	return r.modify(ctx, id, func(s *Stream) error {
		if p.Name != nil {
			s.Name = *p.Name
		}
		if p.Profile != nil {
			s.Profile = *p.Profile
		}
		if p.Record != nil {
			s.Record = *p.Record
		}
		return nil
	})
}

// RotateKey gives stream id a new key and revokes the old one. It returns the new key.
func (r *Registry) RotateKey(ctx context.Context, id string) (*Stream, string, error) {
	key, err := NewKey()
	if err != nil {
		return nil, "", err
	}
	h := HashKey(key)
	if _, err := r.kv.Create(ctx, "key."+h, []byte(id)); err != nil {
		return nil, "", err
	}
	var old string
	s, err := r.modify(ctx, id, func(s *Stream) error {
		old = s.KeyHash
		s.KeyHash = h
		return nil
	})
	if err != nil {
		_ = r.kv.Delete(ctx, "key."+h)
		return nil, "", err
	}
	if old != "" && old != h {
		_ = r.kv.Delete(ctx, "key."+old)
	}
	return s, key, nil
}

// Delete removes stream id and revokes its key.
func (r *Registry) Delete(ctx context.Context, id string) error {
	s, _, err := r.get(ctx, id)
	if err != nil {
		return err
	}
	if err := r.kv.Delete(ctx, "stream."+id); err != nil {
		return err
	}
	_ = r.kv.Delete(ctx, "key."+s.KeyHash)
	return nil
}

func (r *Registry) modify(ctx context.Context, id string, fn func(*Stream) error) (*Stream, error) {
	for attempt := 0; attempt < 10; attempt++ {
		s, rev, err := r.get(ctx, id)
		if err != nil {
			return nil, err
		}
		if err := fn(s); err != nil {
			return nil, err
		}
		s.UpdatedAt = time.Now().UTC()
		b, _ := json.Marshal(s)
		_, err = r.kv.Update(ctx, "stream."+id, b, rev)
		if errors.Is(err, queue.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	return nil, fmt.Errorf("streams: %s: %w", id, ErrConflict)
}

// List returns up to limit streams in creation order after cursor (a stream id; "" for the
// start), and the cursor of the next page ("" at the end).
func (r *Registry) List(ctx context.Context, limit int, cursor string) ([]*Stream, string, error) {
	keys, err := r.kv.KeysMatching(ctx, "stream.*")
	if err != nil {
		return nil, "", err
	}
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		id := strings.TrimPrefix(k, "stream.")
		if id > cursor {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids) // UUIDv7: creation order
	var out []*Stream
	for _, id := range ids {
		if len(out) == limit {
			return out, out[len(out)-1].ID, nil
		}
		s, err := r.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, "", err
		}
		out = append(out, s)
	}
	return out, "", nil
}

// Watch reports the stream ids whose record changed (rotated key, deleted, edited) until ctx
// ends.
func (r *Registry) Watch(ctx context.Context) (<-chan string, error) {
	ch, err := r.kv.Watch(ctx, "stream.*")
	if err != nil {
		return nil, err
	}
	out := make(chan string, 16)
	go func() {
		defer close(out)
		for c := range ch {
			select {
			case out <- strings.TrimPrefix(c.Key, "stream."):
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
