package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopcast/gopcast/internal/testenv"
	"github.com/gopcast/gopcast/pkg/storage"
)

// backend is one Store implementation under the acceptance suite, with what the suite needs
// to look at it from outside.
type backend struct {
	store storage.Store
	// publicURL is where an anonymous HTTP client reads key (only keys under live/ and vod/
	// are public on S3).
	publicURL func(key string) string
	// missing returns a store of the same kind whose bucket or directory does not exist, and
	// the name its error must mention.
	missing func(t *testing.T) (storage.Store, string)
}

// forEachBackend runs fn against every backend, in parallel, as thanos-io/objstore's
// objtesting.ForeachStore does: one suite holds every backend to the same contract.
func forEachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	t.Run("local", func(t *testing.T) {
		t.Parallel()
		fn(t, newLocalBackend(t))
	})
	t.Run("minio", func(t *testing.T) {
		t.Parallel()
		fn(t, newMinIOBackend(t))
	})
}

func newLocalBackend(t *testing.T) backend {
	store, err := storage.NewLocal(filepath.Join(t.TempDir(), "media"))
	if err != nil {
		t.Fatal(err)
	}
	// Mounted the way the app mounts it.
	mux := http.NewServeMux()
	mux.Handle("/media/", http.StripPrefix("/media/", store.Handler()))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return backend{
		store:     store,
		publicURL: func(key string) string { return srv.URL + "/media/" + key },
		missing: func(t *testing.T) (storage.Store, string) {
			dir := filepath.Join(t.TempDir(), "gone")
			s, err := storage.NewLocal(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(dir); err != nil {
				t.Fatal(err)
			}
			return s, dir
		},
	}
}

func newMinIOBackend(t *testing.T) backend {
	m := testenv.MinIO(t)
	cfg := storage.S3Config{Endpoint: m.Endpoint, Bucket: m.Bucket, Region: m.Region, AccessKey: m.AccessKey, SecretKey: m.SecretKey}
	store, err := storage.NewS3(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return backend{
		store:     store,
		publicURL: func(key string) string { return m.PublicBaseURL() + "/" + key },
		missing: func(t *testing.T) (storage.Store, string) {
			cfg := cfg
			cfg.Bucket = "no-such-bucket-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
			if len(cfg.Bucket) > 63 {
				cfg.Bucket = cfg.Bucket[:63]
			}
			cfg.Bucket = strings.TrimRight(cfg.Bucket, "-")
			s, err := storage.NewS3(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			return s, cfg.Bucket
		},
	}
}

// prefix gives each subtest its own corner of the shared bucket, under live/ so it is public.
func prefix(t *testing.T) string {
	return "live/" + strings.ReplaceAll(t.Name(), "/", "_") + "/"
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustPut(t *testing.T, s storage.Store, key string, data []byte, opts storage.PutOptions) {
	t.Helper()
	if err := s.Put(ctxT(t), key, data, opts); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func mustGet(t *testing.T, s storage.Store, key string) []byte {
	t.Helper()
	data, err := s.Get(ctxT(t), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return data
}

func mustList(t *testing.T, s storage.Store, prefix string) []string {
	t.Helper()
	keys, err := s.List(ctxT(t), prefix)
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return keys
}

func TestAcceptance(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		s := b.store

		t.Run("Check", func(t *testing.T) {
			t.Parallel()
			if err := s.Check(ctxT(t)); err != nil {
				t.Fatalf("Check: %v", err)
			}
		})

		t.Run("CheckMissingBucket", func(t *testing.T) {
			t.Parallel()
			missing, name := b.missing(t)
			err := missing.Check(ctxT(t))
			if !errors.Is(err, storage.ErrBucketMissing) {
				t.Fatalf("Check of a missing bucket = %v, want ErrBucketMissing", err)
			}
			if !strings.Contains(err.Error(), name) {
				t.Errorf("error %q does not name %q", err, name)
			}
			// Writing to it fails too, and says why.
			err = missing.Put(ctxT(t), "live/x/0.m4s", []byte("x"), storage.PutOptions{})
			if !errors.Is(err, storage.ErrBucketMissing) {
				t.Errorf("Put into a missing bucket = %v, want ErrBucketMissing", err)
			}
		})

		t.Run("PutGetOverwrite", func(t *testing.T) {
			t.Parallel()
			key := prefix(t) + "720p/0.m4s"
			mustPut(t, s, key, []byte("first"), storage.HeadersFor(key, true))
			if got := mustGet(t, s, key); string(got) != "first" {
				t.Fatalf("Get = %q, want %q", got, "first")
			}
			mustPut(t, s, key, []byte("second, longer"), storage.HeadersFor(key, true))
			if got := mustGet(t, s, key); string(got) != "second, longer" {
				t.Fatalf("Get after overwrite = %q, want %q", got, "second, longer")
			}
			mustPut(t, s, key, []byte("3"), storage.HeadersFor(key, true))
			if got := mustGet(t, s, key); string(got) != "3" {
				t.Fatalf("Get after shorter overwrite = %q, want %q", got, "3")
			}
			if keys := mustList(t, s, prefix(t)); !slices.Equal(keys, []string{key}) {
				t.Fatalf("List after overwrites = %q, want just %q", keys, key)
			}
		})

		t.Run("EmptyAndBinaryObjects", func(t *testing.T) {
			t.Parallel()
			empty := prefix(t) + "empty.m3u8"
			mustPut(t, s, empty, nil, storage.HeadersFor(empty, true))
			if got := mustGet(t, s, empty); len(got) != 0 {
				t.Fatalf("Get of empty object = %d bytes", len(got))
			}
			bin := prefix(t) + "all-bytes.m4s"
			data := make([]byte, 3<<20+17) // several MiB, every byte value
			for i := range data {
				data[i] = byte(i * 7)
			}
			mustPut(t, s, bin, data, storage.HeadersFor(bin, true))
			if got := mustGet(t, s, bin); !bytes.Equal(got, data) {
				t.Fatalf("Get of %d-byte object returned %d different bytes", len(data), len(got))
			}
		})

		t.Run("NotFoundAndDelete", func(t *testing.T) {
			t.Parallel()
			p := prefix(t)
			if _, err := s.Get(ctxT(t), p+"never.m4s"); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("Get of missing key = %v, want ErrNotFound", err)
			}
			if err := s.Delete(ctxT(t), p+"never.m4s"); err != nil {
				t.Fatalf("Delete of missing key = %v, want nil", err)
			}
			mustPut(t, s, p+"a/1.m4s", []byte("1"), storage.PutOptions{})
			mustPut(t, s, p+"a/2.m4s", []byte("2"), storage.PutOptions{})
			if err := s.Delete(ctxT(t), p+"a/1.m4s"); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if _, err := s.Get(ctxT(t), p+"a/1.m4s"); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("Get after Delete = %v, want ErrNotFound", err)
			}
			if err := s.Delete(ctxT(t), p+"a/1.m4s"); err != nil {
				t.Fatalf("second Delete = %v, want nil", err)
			}
			// A prefix of keys is not an object.
			if _, err := s.Get(ctxT(t), p+"a"); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("Get of a key prefix = %v, want ErrNotFound", err)
			}
			if err := s.Delete(ctxT(t), p+"a"); err != nil {
				t.Fatalf("Delete of a key prefix = %v, want nil", err)
			}
			if keys := mustList(t, s, p); !slices.Equal(keys, []string{p + "a/2.m4s"}) {
				t.Fatalf("List after Delete = %q, want [%s]", keys, p+"a/2.m4s")
			}
			if got := mustGet(t, s, p+"a/2.m4s"); string(got) != "2" {
				t.Fatalf("sibling of deleted key = %q", got)
			}
		})

		t.Run("ListPrefix", func(t *testing.T) {
			t.Parallel()
			p := prefix(t)
			for _, k := range []string{"a/1.m4s", "a/2.m4s", "ab/x.m3u8", "b.mpd", "c.d", "c/x", "c-d"} {
				mustPut(t, s, p+k, []byte(k), storage.PutOptions{})
			}
			tests := []struct {
				prefix string
				want   []string
			}{
				// Byte order, as S3 lists: '-' < '.' < '/'.
				{"", []string{"a/1.m4s", "a/2.m4s", "ab/x.m3u8", "b.mpd", "c-d", "c.d", "c/x"}},
				{"a", []string{"a/1.m4s", "a/2.m4s", "ab/x.m3u8"}}, // a string prefix, not a directory
				{"a/", []string{"a/1.m4s", "a/2.m4s"}},
				{"a/1", []string{"a/1.m4s"}},
				{"a/1.m4s", []string{"a/1.m4s"}},
				{"c", []string{"c-d", "c.d", "c/x"}},
				{"zz", nil},
				{"zz/", nil},
				{"a/1.m4s/", nil},
			}
			for _, tt := range tests {
				got := mustList(t, s, p+tt.prefix)
				var want []string
				for _, k := range tt.want {
					want = append(want, p+k)
				}
				if !slices.Equal(got, want) {
					t.Errorf("List(%q) = %q, want %q", p+tt.prefix, got, want)
				}
			}
			// The whole store includes our keys (other subtests write there too).
			all := mustList(t, s, "")
			if !slices.Contains(all, p+"c/x") {
				t.Errorf("List(\"\") lacks %q", p+"c/x")
			}
		})

		t.Run("ListPaginates", func(t *testing.T) {
			t.Parallel()
			p := prefix(t)
			const n = 1010 // S3 returns at most 1000 keys a page
			var want []string
			for i := range n {
				want = append(want, fmt.Sprintf("%s%05d.m4s", p, i))
			}
			putAll(t, s, want, 16)
			if got := mustList(t, s, p); !slices.Equal(got, want) {
				t.Fatalf("List returned %d keys, want %d in order", len(got), len(want))
			}
		})

		t.Run("HeadersOverHTTP", func(t *testing.T) {
			t.Parallel()
			p := prefix(t)
			vod := "vod/" + strings.TrimPrefix(p, "live/")
			tests := []struct {
				key  string
				opts storage.PutOptions
				want storage.PutOptions
			}{
				{p + "master.m3u8", storage.HeadersFor("master.m3u8", true), storage.HeadersFor("master.m3u8", true)},
				{p + "manifest.mpd", storage.HeadersFor("manifest.mpd", true), storage.HeadersFor("manifest.mpd", true)},
				{p + "720p/init.mp4", storage.HeadersFor("init.mp4", true), storage.HeadersFor("init.mp4", true)},
				{p + "720p/7.m4s", storage.HeadersFor("7.m4s", true), storage.HeadersFor("7.m4s", true)},
				{vod + "s/index.m3u8", storage.HeadersFor("index.m3u8", false), storage.HeadersFor("index.m3u8", false)},
				{vod + "s/manifest.mpd", storage.HeadersFor("manifest.mpd", false), storage.HeadersFor("manifest.mpd", false)},
				// Explicit headers are stored as given.
				{p + "custom.txt", storage.PutOptions{ContentType: "text/plain; charset=utf-8", CacheControl: "no-cache"},
					storage.PutOptions{ContentType: "text/plain; charset=utf-8", CacheControl: "no-cache"}},
				// Empty options: Content-Type from the extension, no Cache-Control.
				{p + "defaults.m4s", storage.PutOptions{}, storage.PutOptions{ContentType: "video/iso.segment"}},
				{p + "blob", storage.PutOptions{}, storage.PutOptions{ContentType: "application/octet-stream"}},
			}
			for _, tt := range tests {
				body := []byte("body of " + tt.key)
				mustPut(t, s, tt.key, body, tt.opts)
				for _, method := range []string{http.MethodGet, http.MethodHead} {
					resp := httpDo(t, method, b.publicURL(tt.key))
					if resp.StatusCode != http.StatusOK {
						t.Errorf("%s %s: status %d", method, tt.key, resp.StatusCode)
						continue
					}
					if got := resp.Header.Get("Content-Type"); got != tt.want.ContentType {
						t.Errorf("%s %s: Content-Type %q, want %q", method, tt.key, got, tt.want.ContentType)
					}
					if got := resp.Header.Get("Cache-Control"); got != tt.want.CacheControl {
						t.Errorf("%s %s: Cache-Control %q, want %q", method, tt.key, got, tt.want.CacheControl)
					}
					if got := resp.Header.Get("Content-Length"); got != fmt.Sprint(len(body)) {
						t.Errorf("%s %s: Content-Length %q, want %d", method, tt.key, got, len(body))
					}
					if method == http.MethodGet && !bytes.Equal(resp.body, body) {
						t.Errorf("GET %s: body %q, want %q", tt.key, resp.body, body)
					}
				}
			}
			// Missing objects are not served: AWS answers 403 to anonymous clients without
			// list permission, MinIO and the local handler 404.
			if resp := httpDo(t, http.MethodGet, b.publicURL(p+"missing.m4s")); resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusForbidden {
				t.Errorf("GET of missing object: status %d, want 404 or 403", resp.StatusCode)
			}
		})

		t.Run("ConcurrentPuts", func(t *testing.T) {
			t.Parallel()
			p := prefix(t)
			const writers, each = 16, 8
			shared := p + "shared.m3u8"
			var wg sync.WaitGroup
			errs := make(chan error, writers*(each+1))
			var want []string
			for w := range writers {
				for i := range each {
					want = append(want, fmt.Sprintf("%sw%02d/%d.m4s", p, w, i))
				}
				wg.Go(func() {
					for i := range each {
						key := fmt.Sprintf("%sw%02d/%d.m4s", p, w, i)
						if err := s.Put(ctxT(t), key, []byte(key), storage.HeadersFor(key, true)); err != nil {
							errs <- err
						}
					}
					// Everyone overwrites the same key with a same-length body of their own.
					if err := s.Put(ctxT(t), shared, []byte(fmt.Sprintf("writer %02d", w)), storage.HeadersFor(shared, true)); err != nil {
						errs <- err
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Errorf("concurrent Put: %v", err)
			}
			want = append(want, shared)
			slices.Sort(want)
			if got := mustList(t, s, p); !slices.Equal(got, want) {
				t.Fatalf("List after concurrent puts: %d keys, want %d", len(got), len(want))
			}
			for _, key := range want[:len(want)-1] {
				if key == shared {
					continue
				}
				if got := mustGet(t, s, key); string(got) != key {
					t.Errorf("Get(%q) = %q", key, got)
				}
			}
			if got := string(mustGet(t, s, shared)); !strings.HasPrefix(got, "writer ") || len(got) != len("writer 00") {
				t.Errorf("shared key holds %q, want one writer's whole body", got)
			}
		})

		t.Run("ReadersNeverSeePartialObjects", func(t *testing.T) {
			t.Parallel()
			key := prefix(t) + "index.m3u8"
			const size = 512 << 10
			a, bb := bytes.Repeat([]byte("a"), size), bytes.Repeat([]byte("b"), size/2)
			mustPut(t, s, key, a, storage.HeadersFor(key, true))
			ctx, cancel := context.WithCancel(ctxT(t))
			var wg sync.WaitGroup
			var writes int
			wg.Go(func() {
				defer cancel()
				for i := range 20 {
					body := a
					if i%2 == 0 {
						body = bb
					}
					if err := s.Put(ctx, key, body, storage.HeadersFor(key, true)); err != nil {
						t.Errorf("Put: %v", err)
						return
					}
					writes++
				}
			})
			var reads int
			for ctx.Err() == nil {
				got, err := s.Get(ctx, key)
				if ctx.Err() != nil {
					break
				}
				if err != nil {
					t.Fatalf("Get during overwrites: %v", err)
				}
				reads++
				if !bytes.Equal(got, a) && !bytes.Equal(got, bb) {
					t.Fatalf("Get during overwrites returned %d bytes that are neither version", len(got))
				}
			}
			wg.Wait()
			t.Logf("%d reads during %d overwrites", reads, writes)
		})

		t.Run("InvalidKeysRefused", func(t *testing.T) {
			t.Parallel()
			bad := []string{
				"", "/abs/0.m4s", "../escape.m4s", "live/../../escape.m4s", "live/./x.m4s",
				"live//x.m4s", "live/x/", "live/.hidden", "live/x/.0.m4s.hdr", `live\x.m4s`,
				"live/x\x00.m4s", "live/x\n.m4s", "live/\xff.m4s", "live/" + strings.Repeat("k", 1100),
			}
			for _, key := range bad {
				if err := s.Put(ctxT(t), key, []byte("x"), storage.PutOptions{}); !errors.Is(err, storage.ErrInvalidKey) {
					t.Errorf("Put(%q) = %v, want ErrInvalidKey", key, err)
				}
				if _, err := s.Get(ctxT(t), key); !errors.Is(err, storage.ErrInvalidKey) {
					t.Errorf("Get(%q) = %v, want ErrInvalidKey", key, err)
				}
				if err := s.Delete(ctxT(t), key); !errors.Is(err, storage.ErrInvalidKey) {
					t.Errorf("Delete(%q) = %v, want ErrInvalidKey", key, err)
				}
			}
			for _, p := range []string{"/", "../", "live/..", "live/.", "live//"} {
				if _, err := s.List(ctxT(t), p); !errors.Is(err, storage.ErrInvalidKey) {
					t.Errorf("List(%q) = %v, want ErrInvalidKey", p, err)
				}
			}
		})

		t.Run("CanceledContext", func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			key := prefix(t) + "0.m4s"
			if err := s.Put(ctx, key, []byte("x"), storage.PutOptions{}); !errors.Is(err, context.Canceled) {
				t.Errorf("Put with canceled context = %v, want context.Canceled", err)
			}
			if _, err := s.Get(ctx, key); !errors.Is(err, context.Canceled) {
				t.Errorf("Get with canceled context = %v, want context.Canceled", err)
			}
			if _, err := s.List(ctx, prefix(t)); !errors.Is(err, context.Canceled) {
				t.Errorf("List with canceled context = %v, want context.Canceled", err)
			}
		})
	})
}

// putAll writes each key (its own name as body) with the given parallelism.
func putAll(t *testing.T, s storage.Store, keys []string, parallel int) {
	t.Helper()
	work := make(chan string)
	var wg sync.WaitGroup
	for range parallel {
		wg.Go(func() {
			for key := range work {
				if err := s.Put(ctxT(t), key, []byte(key), storage.PutOptions{}); err != nil {
					t.Errorf("Put(%q): %v", key, err)
				}
			}
		})
	}
	for _, k := range keys {
		work <- k
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

type httpResponse struct {
	*http.Response
	body []byte
}

// httpDo makes an anonymous request, as a player would.
func httpDo(t *testing.T, method, url string) httpResponse {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return httpResponse{Response: resp, body: body}
}
