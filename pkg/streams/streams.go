// Package streams is the registry of live streams and their stream keys, kept in a JetStream
// key-value bucket so every api and ingest instance sees the same state. A stream key is a
// secret: only its SHA-256 is stored, it is compared in constant time, and it is returned only
// by Create and RotateKey.
package streams

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/gopcast/gopcast/pkg/queue"
)

// Bucket is the key-value bucket holding streams ("stream.ID") and key hashes ("key.HASH").
const Bucket = "gopcast-streams"

// Errors returned by the registry.
var (
	ErrNotFound   = errors.New("stream not found")
	ErrUnknownKey = errors.New("unknown or revoked stream key")
	ErrInvalid    = errors.New("invalid stream")
	// ErrConflict means concurrent writers kept changing the stream; the caller may retry.
	ErrConflict = errors.New("stream changed concurrently")
)

// Stream is a stream's stored record. It never holds the key itself.
type Stream struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Profile   string    `json:"profile"`
	Record    bool      `json:"record"`
	KeyHash   string    `json:"key_hash"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Registry reads and writes streams.
type Registry struct {
	kv *queue.KV
}

// Open opens the registry on conn.
func Open(ctx context.Context, conn *queue.Conn) (*Registry, error) {
	kv, err := conn.KV(ctx, Bucket)
	if err != nil {
		return nil, err
	}
	return &Registry{kv: kv}, nil
}

var nameRE = regexp.MustCompile(`^[\p{L}\p{N} _.:()'&,+-]{1,128}$`)

// ValidateName reports whether name is acceptable for a stream.
func ValidateName(name string) error {
	if strings.TrimSpace(name) == "" || !nameRE.MatchString(name) {
		return fmt.Errorf("%w: name must be 1-128 letters, digits, spaces or _.:()'&,+-", ErrInvalid)
	}
	return nil
}

// NewKey returns a fresh stream key: 160 bits from crypto/rand, hex-encoded.
func NewKey() (string, error) {
	var b [20]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "sk_" + hex.EncodeToString(b[:]), nil
}

// HashKey is the stored form of a key.
func HashKey(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])
}

// Create registers a stream and returns it with its key.
func (r *Registry) Create(ctx context.Context, name, profile string, record bool) (*Stream, string, error) {
	if err := ValidateName(name); err != nil {
		return nil, "", err
	}
	key, err := NewKey()
	if err != nil {
		return nil, "", err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, "", err
	}
	now := time.Now().UTC()
	s := &Stream{ID: id.String(), Name: name, Profile: profile, Record: record, KeyHash: HashKey(key), CreatedAt: now, UpdatedAt: now}
	// Key index first: a stream record never points at a key nobody can resolve.
	if _, err := r.kv.Create(ctx, "key."+s.KeyHash, []byte(s.ID)); err != nil {
		return nil, "", err
	}
	b, _ := json.Marshal(s)
	if _, err := r.kv.Create(ctx, "stream."+s.ID, b); err != nil {
		_ = r.kv.Delete(ctx, "key."+s.KeyHash)
		return nil, "", err
	}
	return s, key, nil
}

// Get returns a stream by id.
func (r *Registry) Get(ctx context.Context, id string) (*Stream, error) {
	s, _, err := r.get(ctx, id)
	return s, err
}

func (r *Registry) get(ctx context.Context, id string) (*Stream, uint64, error) {
	if _, err := uuid.Parse(id); err != nil {
		return nil, 0, ErrNotFound
	}
	b, rev, err := r.kv.Get(ctx, "stream."+id)
	if errors.Is(err, queue.ErrNotFound) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	var s Stream
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, 0, fmt.Errorf("streams: corrupt record %s: %w", id, err)
	}
	return &s, rev, nil
}

// Authorize resolves a stream key to its stream, or ErrUnknownKey.
func (r *Registry) Authorize(ctx context.Context, key string) (*Stream, error) {
	if key == "" || len(key) > 256 {
		return nil, ErrUnknownKey
	}
	h := HashKey(key)
	id, _, err := r.kv.Get(ctx, "key."+h)
	if errors.Is(err, queue.ErrNotFound) {
		return nil, ErrUnknownKey
	}
	if err != nil {
		return nil, err
	}
	s, err := r.Get(ctx, string(id))
	if errors.Is(err, ErrNotFound) {
		return nil, ErrUnknownKey
	}
	if err != nil {
		return nil, err
	}
	// The index could be stale after a rotation race; the record's hash is the truth.
	if subtle.ConstantTimeCompare([]byte(s.KeyHash), []byte(h)) != 1 {
		return nil, ErrUnknownKey
	}
	return s, nil
}
