// Package storage is where gopcast's media objects live: the S3-compatible bucket players fetch
// from (through a CDN) in production, or a local directory served over HTTP on a laptop. It is
// the only package that imports S3 clients; everything else sees the small Store interface, so
// the same packager code writes to either backend.
//
// Keys are the bucket layout of the design ("live/{id}/master.m3u8", "vod/{id}/{session}/...").
// Both backends accept the same keys and refuse the same bad ones (ErrInvalidKey), so code that
// works against the local store on a laptop behaves the same against S3.
package storage

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"unicode/utf8"
)

// Store holds media objects by key. Implementations are safe for concurrent use.
//
// Every method takes the caller's context: timeouts and cancellation come from the caller.
type Store interface {
	// Put writes data under key, replacing any existing object. A reader sees either the old
	// object or the new one in full, never a mix or a partial write. Empty PutOptions fields
	// are defaulted as described on PutOptions.
	Put(ctx context.Context, key string, data []byte, opts PutOptions) error
	// Get returns the whole object; an error wrapping ErrNotFound when there is none.
	Get(ctx context.Context, key string) ([]byte, error)
	// Delete removes the object. Deleting a missing key returns nil on every backend: S3
	// cannot tell without an extra request, and a retried delete must not fail.
	Delete(ctx context.Context, key string) error
	// List returns every key starting with prefix (a plain string prefix, not a directory:
	// "live/ab" matches "live/abc/x"), recursively, in lexicographic byte order.
	List(ctx context.Context, prefix string) ([]string, error)
	// Check verifies that the bucket or directory exists and is usable; a missing one gives an
	// error wrapping ErrBucketMissing. Roles call it at start so a misconfiguration fails
	// loudly before the first segment.
	Check(ctx context.Context) error
}

// PutOptions are the HTTP headers stored with an object and returned to players.
// HeadersFor gives the right ones for every key in the layout.
type PutOptions struct {
	// ContentType is the object's Content-Type. Empty: derived from the key's extension as
	// HeadersFor does, or application/octet-stream for an unknown extension.
	ContentType string
	// CacheControl is the object's Cache-Control. Empty: none is stored.
	CacheControl string
}

var (
	// ErrNotFound means the object does not exist (Get).
	ErrNotFound = errors.New("object not found")
	// ErrBucketMissing means the bucket (or the local store's directory) does not exist.
	// gopcast never creates buckets: that, and their public-read policy, is the deployment's job.
	ErrBucketMissing = errors.New("bucket missing")
	// ErrInvalidKey means a key or prefix is not a valid object key: empty, absolute, with
	// empty, "." or ".." segments, hidden segments (a leading "." is reserved for the local
	// store's own files), backslashes, control characters, invalid UTF-8, or over 1024 bytes.
	ErrInvalidKey = errors.New("invalid key")
)

// maxKeyLen is S3's limit on key length in bytes.
const maxKeyLen = 1024

// Content types of the objects in the layout.
const (
	TypeHLS          = "application/vnd.apple.mpegurl"
	TypeDASH         = "application/dash+xml"
	TypeMP4          = "video/mp4"
	TypeCMAFSegment  = "video/iso.segment"
	TypeMPEGTS       = "video/mp2t"
	TypeJSON         = "application/json"
	typeOctetStream  = "application/octet-stream"
	cacheImmutable   = "public, max-age=31536000, immutable"
	cacheLiveDoc     = "public, max-age=1"
	cacheFinishedDoc = "public, max-age=60"
)

// HeadersFor returns the Content-Type and Cache-Control for key. live says whether the object
// belongs to a session still being published: its manifests change every segment, so players
// and the CDN may keep them for one second only; once a session has ended they may keep them
// for a minute. Segments (media and init) never change once written, so they are immutable for
// a year. JSON documents are treated like manifests. An unknown extension gets
// application/octet-stream and no Cache-Control.
func HeadersFor(key string, live bool) PutOptions {
	doc := cacheFinishedDoc
	if live {
		doc = cacheLiveDoc
	}
	switch strings.ToLower(path.Ext(key)) {
	case ".m3u8":
		return PutOptions{ContentType: TypeHLS, CacheControl: doc}
	case ".mpd":
		return PutOptions{ContentType: TypeDASH, CacheControl: doc}
	case ".mp4": // init.mp4 and whole-file MP4s alike
		return PutOptions{ContentType: TypeMP4, CacheControl: cacheImmutable}
	case ".m4s":
		return PutOptions{ContentType: TypeCMAFSegment, CacheControl: cacheImmutable}
	case ".ts":
		return PutOptions{ContentType: TypeMPEGTS, CacheControl: cacheImmutable}
	case ".json":
		return PutOptions{ContentType: TypeJSON, CacheControl: doc}
	default:
		return PutOptions{ContentType: typeOctetStream}
	}
}

// withDefaults fills an empty ContentType from the key's extension, so both backends store the
// same headers for the same Put.
func withDefaults(key string, opts PutOptions) PutOptions {
	if opts.ContentType == "" {
		opts.ContentType = HeadersFor(key, false).ContentType
	}
	return opts
}

// validateKey refuses keys that are not plain relative slash-separated paths. Both backends
// apply it: on the local store it is what keeps keys inside the directory, and on S3 it keeps
// the bucket free of keys the local store (and most CDN path normalisers) would mangle.
func validateKey(key string) error {
	if reason := keyProblem(key); reason != "" {
		return fmt.Errorf("%w %q: %s", ErrInvalidKey, key, reason)
	}
	return nil
}

// validatePrefix accepts "" (everything) and any prefix of a valid key, including ones ending
// in "/".
func validatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	// A prefix is fine when completing it gives a valid key: "live/" → "live/x",
	// "live/a" → "live/ax", while "live/.." → "live/..x" is refused as a hidden name.
	if reason := keyProblem(prefix + "x"); reason != "" {
		return fmt.Errorf("%w prefix %q: %s", ErrInvalidKey, prefix, reason)
	}
	return nil
}

func keyProblem(key string) string {
	switch {
	case key == "":
		return "empty"
	case len(key) > maxKeyLen:
		return fmt.Sprintf("longer than %d bytes", maxKeyLen)
	case !utf8.ValidString(key):
		return "not valid UTF-8"
	case strings.HasPrefix(key, "/"):
		return "absolute"
	case strings.Contains(key, `\`):
		return "contains a backslash"
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f {
			return "contains a control character"
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch {
		case seg == "":
			return "empty path segment"
		case seg == "." || seg == "..":
			return "contains a . or .. segment"
		case strings.HasPrefix(seg, "."):
			return "segment starts with . (reserved)"
		}
	}
	return ""
}
