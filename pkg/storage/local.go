package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
)

// LocalStore is a Store on a directory: the object under key "live/a/b.m4s" is the file
// DIR/live/a/b.m4s, so the directory can be served, copied or inspected as is. It is the
// zero-setup backend of `gopcast all`; Handler serves it to players.
//
// An object's headers are those HeadersFor gives its key for a live session, unless a sidecar
// file next to it (".NAME.hdr") says otherwise; the leading dot is why keys may not have hidden
// segments. Most objects (segments, live playlists) need no sidecar: one file write each. A
// file that appears without a sidecar is served with the headers its extension implies.
//
// Writes replace objects atomically (a temporary file renamed into place). Immutable objects
// (segments, MP4s) are synced before the rename, so a crash cannot leave one empty under its
// name; playlists and manifests, rewritten every few seconds, are not.
//
// Unlike S3, a directory cannot also be an object: storing both "a" and "a/b" fails. The
// bucket layout never does that. Delete leaves empty directories behind.
type LocalStore struct {
	dir  string
	dirs sync.Map // directories made by Put: the next Put there skips MkdirAll
}

var _ Store = (*LocalStore)(nil)

// Names of the store's own files; keys cannot start a segment with ".", so they never collide.
const (
	sidecarPrefix = "."
	sidecarSuffix = ".hdr"
	tempPrefix    = ".tmp-"
)

// NewLocal returns a store rooted at dir, creating the directory if needed.
func NewLocal(dir string) (*LocalStore, error) {
	if dir == "" {
		return nil, errors.New("storage: local store directory is empty")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("storage: local store directory %q: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("storage: create local store directory: %w", err)
	}
	return &LocalStore{dir: abs}, nil
}

// Dir is the store's root directory.
func (l *LocalStore) Dir() string { return l.dir }

// open returns the root for one operation. Every file access goes through os.Root, which
// refuses to leave the directory (via "..", absolute names or symlinks) whatever the name; key
// validation comes first and gives the clearer error. Opening it per operation costs one
// syscall and keeps no descriptor to an old directory if the directory is replaced.
func (l *LocalStore) open() (*os.Root, error) {
	root, err := os.OpenRoot(l.dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, l.dirMissing()
		}
		return nil, err
	}
	return root, nil
}

func (l *LocalStore) dirMissing() error {
	return fmt.Errorf("storage: %w: local store directory %q does not exist (NewLocal creates it; was it removed?)", ErrBucketMissing, l.dir)
}

type sidecar struct {
	ContentType  string `json:"content_type,omitempty"`
	CacheControl string `json:"cache_control,omitempty"`
}

func sidecarName(key string) string {
	dir, base := path.Split(key)
	return dir + sidecarPrefix + base + sidecarSuffix
}

// Put writes the object's sidecar when its headers are not the key's defaults (and removes a
// stale one when they are), then the object, each to a temporary file renamed into place, so a
// reader sees the whole old or the whole new object. The sidecar goes first: whoever sees the
// new object also sees its headers.
func (l *LocalStore) Put(ctx context.Context, key string, data []byte, opts PutOptions) error {
	if err := validateKey(key); err != nil {
		return fmt.Errorf("storage: put: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: put %s: %w", key, err)
	}
	opts = withDefaults(key, opts)
	root, err := l.open()
	if err != nil {
		return fmt.Errorf("storage: put %s: %w", key, err)
	}
	defer root.Close()
	if dir := path.Dir(key); dir != "." {
		if _, made := l.dirs.Load(dir); !made {
			if err := root.MkdirAll(filepath.FromSlash(dir), 0o755); err != nil {
				return fmt.Errorf("storage: put %s: %w", key, err)
			}
			l.dirs.Store(dir, true)
		}
	}
	if opts == localDefaults(key) {
		if err := root.Remove(filepath.FromSlash(sidecarName(key))); err != nil && !notExist(err) {
			return fmt.Errorf("storage: put %s: headers: %w", key, err)
		}
	} else {
		meta, err := json.Marshal(sidecar{ContentType: opts.ContentType, CacheControl: opts.CacheControl})
		if err != nil {
			return fmt.Errorf("storage: put %s: %w", key, err)
		}
		if err := writeAtomic(root, sidecarName(key), meta, false); err != nil {
			return l.putFailed(key, "headers", err)
		}
	}
	if err := writeAtomic(root, key, data, opts.CacheControl == cacheImmutable); err != nil {
		return l.putFailed(key, "", err)
	}
	return nil
}

// localDefaults are the headers of an object without a sidecar.
func localDefaults(key string) PutOptions { return HeadersFor(key, true) }

// putFailed wraps a failed write; a directory that went missing under a cached name is made
// again by the next Put.
func (l *LocalStore) putFailed(key, what string, err error) error {
	if notExist(err) {
		l.dirs.Delete(path.Dir(key))
	}
	if what != "" {
		return fmt.Errorf("storage: put %s: %s: %w", key, what, err)
	}
	return fmt.Errorf("storage: put %s: %w", key, err)
}

// writeAtomic writes data to a new temporary file in name's directory, syncs it (when sync is
// set) and renames it over name.
func writeAtomic(root *os.Root, name string, data []byte, sync bool) (err error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:]) // never fails (crypto/rand panics rather)
	tmp := path.Join(path.Dir(name), tempPrefix+hex.EncodeToString(rnd[:]))
	f, err := root.OpenFile(filepath.FromSlash(tmp), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = root.Remove(filepath.FromSlash(tmp))
		}
	}()
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	// Without a sync, a crash soon after the rename can leave an empty file under the name.
	if sync {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	return root.Rename(filepath.FromSlash(tmp), filepath.FromSlash(name))
}

// Get reads the object's file.
func (l *LocalStore) Get(ctx context.Context, key string) ([]byte, error) {
	if err := validateKey(key); err != nil {
		return nil, fmt.Errorf("storage: get: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("storage: get %s: %w", key, err)
	}
	root, err := l.open()
	if err != nil {
		return nil, fmt.Errorf("storage: get %s: %w", key, err)
	}
	defer root.Close()
	f, _, err := openObject(root, key)
	if err != nil {
		return nil, fmt.Errorf("storage: get %s: %w", key, err)
	}
	defer f.Close()
	data, err := readAll(f)
	if err != nil {
		return nil, fmt.Errorf("storage: get %s: %w", key, err)
	}
	return data, nil
}

// openObject opens key's file, answering ErrNotFound for anything that is not a regular file
// (a directory is a key prefix, not an object).
func openObject(root *os.Root, key string) (*os.File, fs.FileInfo, error) {
	f, err := root.Open(filepath.FromSlash(key))
	if err != nil {
		if notExist(err) {
			return nil, nil, ErrNotFound
		}
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, ErrNotFound
	}
	return f, fi, nil
}

func readAll(f *os.File) ([]byte, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	// The file is replaced, never rewritten in place, so its size is final.
	data := make([]byte, fi.Size())
	n, err := f.ReadAt(data, 0)
	if err != nil && n != len(data) {
		return nil, err
	}
	return data, nil
}

// notExist reports a missing file, including "a/b" where "a" is a file.
func notExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// Delete removes the object and its sidecar. A missing key is not an error.
func (l *LocalStore) Delete(ctx context.Context, key string) error {
	if err := validateKey(key); err != nil {
		return fmt.Errorf("storage: delete: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: delete %s: %w", key, err)
	}
	root, err := l.open()
	if err != nil {
		return fmt.Errorf("storage: delete %s: %w", key, err)
	}
	defer root.Close()
	name := filepath.FromSlash(key)
	fi, err := root.Lstat(name)
	switch {
	case err != nil && notExist(err):
		return nil
	case err != nil:
		return fmt.Errorf("storage: delete %s: %w", key, err)
	case fi.IsDir():
		return nil // a prefix of other keys, not an object
	}
	if err := root.Remove(name); err != nil && !notExist(err) {
		return fmt.Errorf("storage: delete %s: %w", key, err)
	}
	if err := root.Remove(filepath.FromSlash(sidecarName(key))); err != nil && !notExist(err) {
		return fmt.Errorf("storage: delete %s: headers: %w", key, err)
	}
	return nil
}

// List walks the directories the prefix can reach, skipping the store's own files.
func (l *LocalStore) List(ctx context.Context, prefix string) ([]string, error) {
	if err := validatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("storage: list: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("storage: list %s: %w", prefix, err)
	}
	root, err := l.open()
	if err != nil {
		return nil, fmt.Errorf("storage: list %s: %w", prefix, err)
	}
	defer root.Close()
	start := "."
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = prefix[:i]
	}
	keys := []string{}
	err = fs.WalkDir(root.FS(), start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == start && notExist(err) {
				return fs.SkipAll // nothing under this prefix
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p != start && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil // sidecar or temporary file
		}
		if d.IsDir() {
			if p != "." && !strings.HasPrefix(p+"/", prefix) && !strings.HasPrefix(prefix, p+"/") {
				return fs.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() && strings.HasPrefix(p, prefix) {
			keys = append(keys, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: list %s: %w", prefix, err)
	}
	// Walking visits "a/x" before "a.b", S3 lists in byte order ("a.b" < "a/x").
	sort.Strings(keys)
	return keys, nil
}

// Check verifies the directory exists and a file can be created in it.
func (l *LocalStore) Check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: check %s: %w", l.dir, err)
	}
	fi, err := os.Stat(l.dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return l.dirMissing()
		}
		return fmt.Errorf("storage: check %s: %w", l.dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("storage: check: local store path %q is not a directory", l.dir)
	}
	root, err := l.open()
	if err != nil {
		return fmt.Errorf("storage: check %s: %w", l.dir, err)
	}
	defer root.Close()
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	probe := tempPrefix + "check-" + hex.EncodeToString(rnd[:])
	f, err := root.OpenFile(probe, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("storage: check: local store directory %q is not writable: %w", l.dir, err)
	}
	f.Close()
	if err := root.Remove(probe); err != nil {
		return fmt.Errorf("storage: check %s: %w", l.dir, err)
	}
	return nil
}

// Handler serves the store's objects over HTTP, as a bucket with public read would: GET and
// HEAD of a key (the request path without its leading slash, so mount it with
// http.StripPrefix) with the object's Content-Type and Cache-Control, range requests and
// conditional GETs, CORS for players on other origins, 404 for anything that is not an object
// (no directory listings), 405 for methods other than GET, HEAD and the CORS preflight OPTIONS.
func (l *LocalStore) Handler() http.Handler {
	return http.HandlerFunc(l.serveHTTP)
}

func (l *LocalStore) serveHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodOptions:
		// A player asking for a byte range from another origin sends a preflight first.
		h.Set("Access-Control-Allow-Methods", "GET, HEAD")
		h.Set("Access-Control-Allow-Headers", "Range")
		h.Set("Access-Control-Max-Age", "86400")
		w.WriteHeader(http.StatusNoContent)
		return
	default:
		h.Set("Allow", "GET, HEAD, OPTIONS")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	key := strings.TrimPrefix(r.URL.Path, "/")
	if validateKey(key) != nil {
		notFound(w)
		return
	}
	root, err := l.open()
	if err != nil {
		http.Error(w, "storage unavailable", http.StatusServiceUnavailable)
		return
	}
	defer root.Close()
	f, fi, err := openObject(root, key)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			notFound(w)
			return
		}
		http.Error(w, "storage unavailable", http.StatusServiceUnavailable)
		return
	}
	defer f.Close()
	opts := readSidecar(root, key)
	h.Set("Content-Type", opts.ContentType)
	if opts.CacheControl != "" {
		h.Set("Cache-Control", opts.CacheControl)
	}
	h.Set("Access-Control-Expose-Headers", "Content-Length, Content-Range")
	http.ServeContent(w, r, "", fi.ModTime(), f)
}

// notFound answers 404 without letting a CDN or player cache it: the object may be a segment
// or playlist about to be written.
func notFound(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, "not found", http.StatusNotFound)
}

// readSidecar returns the stored headers, or the key's defaults when the sidecar is missing
// or unreadable.
func readSidecar(root *os.Root, key string) PutOptions {
	opts := localDefaults(key)
	data, err := root.ReadFile(filepath.FromSlash(sidecarName(key)))
	if err != nil {
		return opts
	}
	var sc sidecar
	if json.Unmarshal(data, &sc) != nil {
		return opts
	}
	if sc.ContentType != "" {
		opts.ContentType = sc.ContentType
	}
	opts.CacheControl = sc.CacheControl
	return opts
}
