package storage_test

import (
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopcast/gopcast/pkg/storage"
)

func newLocal(t *testing.T) (*storage.LocalStore, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "media")
	s, err := storage.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

func TestLocalFilesMirrorKeys(t *testing.T) {
	s, dir := newLocal(t)
	key := "live/s1/720p/3.m4s"
	for range 3 {
		mustPut(t, s, key, []byte("segment"), storage.HeadersFor(key, true))
	}
	data, err := os.ReadFile(filepath.Join(dir, "live", "s1", "720p", "3.m4s"))
	if err != nil || string(data) != "segment" {
		t.Fatalf("file for %s = %q, %v", key, data, err)
	}
	files := func() []string {
		var names []string
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				names = append(names, d.Name())
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return names
	}
	// Nothing but the object, whose headers are its key's defaults (no sidecar): no
	// temporary files left behind.
	if names := files(); len(names) != 1 {
		t.Fatalf("files in the store: %q, want the object alone", names)
	}
	// Headers of its own give it a sidecar; the defaults again take it away.
	pl := "live/s1/720p/index.m3u8"
	mustPut(t, s, pl, []byte("#EXTM3U"), storage.HeadersFor(pl, false))
	if names := files(); len(names) != 3 {
		t.Fatalf("files in the store: %q, want two objects and the playlist's sidecar", names)
	}
	mustPut(t, s, pl, []byte("#EXTM3U"), storage.HeadersFor(pl, true))
	if names := files(); len(names) != 2 {
		t.Fatalf("files in the store: %q, want the two objects alone", names)
	}
}

func TestLocalRefusesEscapes(t *testing.T) {
	s, dir := newLocal(t)
	outside := filepath.Dir(dir)
	secret := filepath.Join(outside, "secret.m4s")
	if err := os.WriteFile(secret, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"../secret.m4s", "../escaped.m4s", "/tmp/escaped.m4s", "live/../../escaped.m4s"} {
		if err := s.Put(ctxT(t), key, []byte("x"), storage.PutOptions{}); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Put(%q) = %v, want ErrInvalidKey", key, err)
		}
		if data, err := s.Get(ctxT(t), key); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Get(%q) = %q, %v, want ErrInvalidKey", key, data, err)
		}
	}
	if _, err := os.Stat(filepath.Join(outside, "escaped.m4s")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a file was written outside the store: %v", err)
	}

	// A symlink planted in the directory does not lead out of it either.
	if err := os.MkdirAll(filepath.Join(dir, "live"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(dir, "live", "link.m4s")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "live", "linkdir")); err != nil {
		t.Fatal(err)
	}
	if data, err := s.Get(ctxT(t), "live/link.m4s"); err == nil {
		t.Errorf("Get through a symlink out of the store returned %q", data)
	}
	if err := s.Put(ctxT(t), "live/linkdir/escaped.m4s", []byte("x"), storage.PutOptions{}); err == nil {
		t.Errorf("Put through a symlinked directory out of the store succeeded")
	}
	if _, err := os.Stat(filepath.Join(outside, "escaped.m4s")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a file was written outside the store through a symlink: %v", err)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	if resp := httpDo(t, http.MethodGet, srv.URL+"/live/link.m4s"); resp.StatusCode == http.StatusOK {
		t.Errorf("handler served a symlink out of the store: %q", resp.body)
	}
}

func TestLocalKeyUnderObjectFails(t *testing.T) {
	// The one S3 behaviour a directory cannot copy; the layout never needs it.
	s, _ := newLocal(t)
	mustPut(t, s, "live/a", []byte("x"), storage.PutOptions{})
	if err := s.Put(ctxT(t), "live/a/b", []byte("x"), storage.PutOptions{}); err == nil {
		t.Fatal("Put of a key under an existing object succeeded")
	}
	if _, err := s.Get(ctxT(t), "live/a/b"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Get of a key under an object = %v, want ErrNotFound", err)
	}
}

func TestLocalCheckUnwritable(t *testing.T) {
	s, dir := newLocal(t)
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("a file"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctxT(t)); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("Check of a file = %v, want a not-a-directory error", err)
	}
}

func TestLocalHandler(t *testing.T) {
	s, dir := newLocal(t)
	mux := http.NewServeMux()
	mux.Handle("/media/", http.StripPrefix("/media/", s.Handler()))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	key := "live/s1/720p/0.m4s"
	body := []byte("0123456789")
	mustPut(t, s, key, body, storage.HeadersFor(key, true))
	// A file written by something else: served with the type its extension implies.
	if err := os.WriteFile(filepath.Join(dir, "live", "s1", "foreign.m3u8"), []byte("#EXTM3U\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	do := func(method, path string, header map[string]string) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(ctxT(t), method, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}

	t.Run("GET", func(t *testing.T) {
		resp := httpDo(t, http.MethodGet, srv.URL+"/media/"+key)
		if resp.StatusCode != http.StatusOK || string(resp.body) != string(body) {
			t.Fatalf("GET = %d %q", resp.StatusCode, resp.body)
		}
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "*" {
			t.Errorf("Access-Control-Allow-Origin = %q, want *", got)
		}
		if resp.Header.Get("Last-Modified") == "" {
			t.Error("no Last-Modified")
		}
	})
	t.Run("Range", func(t *testing.T) {
		resp := do(http.MethodGet, "/media/"+key, map[string]string{"Range": "bytes=2-5"})
		if resp.StatusCode != http.StatusPartialContent || resp.Header.Get("Content-Range") != "bytes 2-5/10" {
			t.Fatalf("range GET = %d, Content-Range %q", resp.StatusCode, resp.Header.Get("Content-Range"))
		}
		if got := resp.Header.Get("Content-Type"); got != "video/iso.segment" {
			t.Errorf("range GET Content-Type = %q", got)
		}
	})
	t.Run("Conditional", func(t *testing.T) {
		first := do(http.MethodGet, "/media/"+key, nil)
		resp := do(http.MethodGet, "/media/"+key, map[string]string{"If-Modified-Since": first.Header.Get("Last-Modified")})
		if resp.StatusCode != http.StatusNotModified {
			t.Fatalf("conditional GET = %d, want 304", resp.StatusCode)
		}
	})
	t.Run("ForeignFile", func(t *testing.T) {
		resp := do(http.MethodGet, "/media/live/s1/foreign.m3u8", nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/vnd.apple.mpegurl" {
			t.Fatalf("file without sidecar: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		for _, p := range []string{
			"/media/live/s1/720p/1.m4s", // missing
			"/media/live/s1/720p/",      // directory: no listings
			"/media/live/s1/720p",
			"/media/live/",
			"/media/",
			"/media/live/s1/720p/.0.m4s.hdr", // the store's own files
			"/media/live/s1/720p/%2e0.m4s.hdr",
		} {
			resp := do(http.MethodGet, p, nil)
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("GET %s = %d, want 404", p, resp.StatusCode)
			}
			if got := resp.Header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("GET %s: Cache-Control %q, want no-store (the object may appear any moment)", p, got)
			}
		}
	})
	t.Run("Traversal", func(t *testing.T) {
		// Straight to the handler: a router that does not clean paths passes these through.
		h := s.Handler()
		for _, p := range []string{"../secret", "/../secret", "live/../../secret", `..\secret`, "/", "//etc/passwd"} {
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.URL.Path = p
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusNotFound {
				t.Errorf("GET %q = %d, want 404", p, rec.Code)
			}
		}
	})
	t.Run("Methods", func(t *testing.T) {
		for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
			resp := do(m, "/media/"+key, nil)
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("%s = %d, want 405", m, resp.StatusCode)
			}
			if got := resp.Header.Get("Allow"); got != "GET, HEAD, OPTIONS" {
				t.Errorf("%s: Allow %q", m, got)
			}
		}
		if data := mustGet(t, s, key); string(data) != string(body) {
			t.Errorf("object changed by a refused method: %q", data)
		}
	})
	t.Run("Preflight", func(t *testing.T) {
		resp := do(http.MethodOptions, "/media/"+key, map[string]string{
			"Origin": "https://player.example", "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "range",
		})
		if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
			!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Range") {
			t.Fatalf("preflight = %d %v", resp.StatusCode, resp.Header)
		}
	})
}
