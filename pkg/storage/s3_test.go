package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopcast/gopcast/internal/testenv"
	"github.com/gopcast/gopcast/pkg/storage"
)

func TestNewS3RefusesBadConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     storage.S3Config
		setting string // the setting the error must name
	}{
		{"no bucket", storage.S3Config{Endpoint: "http://127.0.0.1:9000"}, "s3-bucket"},
		{"endpoint without scheme", storage.S3Config{Endpoint: "127.0.0.1:9000", Bucket: "b"}, "s3-endpoint"},
		{"endpoint with other scheme", storage.S3Config{Endpoint: "ftp://minio:9000", Bucket: "b"}, "s3-endpoint"},
		{"endpoint without host", storage.S3Config{Endpoint: "http://", Bucket: "b"}, "s3-endpoint"},
		{"endpoint with credentials", storage.S3Config{Endpoint: "http://user:pw@minio:9000", Bucket: "b"}, "s3-endpoint"},
		{"access key alone", storage.S3Config{Bucket: "b", AccessKey: "ak"}, "s3-secret-key"},
		{"secret key alone", storage.S3Config{Bucket: "b", SecretKey: "sk"}, "s3-access-key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := storage.NewS3(t.Context(), tt.cfg)
			if err == nil {
				t.Fatal("NewS3 accepted a bad configuration")
			}
			if !strings.Contains(err.Error(), tt.setting) {
				t.Errorf("error %q does not name %s", err, tt.setting)
			}
			if strings.Contains(err.Error(), "pw") {
				t.Errorf("error %q repeats the password", err)
			}
		})
	}
}

func TestS3ConfigNeverPrintsSecret(t *testing.T) {
	const secret = "s3cr3t-v4lue"
	cfg := storage.S3Config{Endpoint: "http://minio:9000", Bucket: "media", AccessKey: "AKIA123", SecretKey: secret}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("starting", "s3", cfg)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("starting", "s3", cfg)
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%v", &cfg), logged.String()} {
		if strings.Contains(s, secret) {
			t.Errorf("secret key printed: %s", s)
		}
		if !strings.Contains(s, "AKIA123") || !strings.Contains(s, "media") {
			t.Errorf("configuration not printed: %s", s)
		}
	}
}

// A server that is not there gives a clear error, within the caller's deadline.
func TestS3DeadEndpoint(t *testing.T) {
	t.Parallel()
	port := testenv.FreePort(t) // nothing listens here
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", port)
	s, err := storage.NewS3(t.Context(), storage.S3Config{Endpoint: endpoint, Bucket: "media", AccessKey: "ak", SecretKey: "sk"})
	if err != nil {
		t.Fatal(err)
	}
	const timeout = 3 * time.Second
	for name, op := range map[string]func(context.Context) error{
		"Check": s.Check,
		"Put":   func(ctx context.Context) error { return s.Put(ctx, "live/x/0.m4s", []byte("x"), storage.PutOptions{}) },
		"Get":   func(ctx context.Context) error { _, err := s.Get(ctx, "live/x/0.m4s"); return err },
		"List":  func(ctx context.Context) error { _, err := s.List(ctx, "live/"); return err },
	} {
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		start := time.Now()
		err := op(ctx)
		elapsed := time.Since(start)
		cancel()
		if err == nil {
			t.Fatalf("%s against a closed port succeeded", name)
		}
		if elapsed > timeout+time.Second {
			t.Errorf("%s took %s, longer than the %s deadline", name, elapsed, timeout)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("127.0.0.1:%d", port)) || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("%s error does not say the endpoint refused connections: %v", name, err)
		}
		if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrBucketMissing) {
			t.Errorf("%s error claims a missing object or bucket: %v", name, err)
		}
		t.Logf("%s: %s: %v", name, elapsed.Round(time.Millisecond), err)
	}
}

// A server that accepts connections and never answers holds a call only as long as the
// caller's deadline.
func TestS3HangingEndpoint(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conns []net.Conn // held open, never answered
		for {
			c, err := l.Accept()
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	s, err := storage.NewS3(t.Context(), storage.S3Config{Endpoint: "http://" + l.Addr().String(), Bucket: "media", AccessKey: "ak", SecretKey: "sk"})
	if err != nil {
		t.Fatal(err)
	}
	const timeout = time.Second
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	start := time.Now()
	err = s.Put(ctx, "live/x/0.m4s", []byte("x"), storage.PutOptions{})
	if elapsed := time.Since(start); elapsed > timeout+time.Second {
		t.Errorf("Put took %s, longer than the %s deadline", elapsed, timeout)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Put to a hanging server = %v, want context.DeadlineExceeded", err)
	}
}

func TestS3WrongCredentials(t *testing.T) {
	t.Parallel()
	m := testenv.MinIO(t)
	s, err := storage.NewS3(t.Context(), storage.S3Config{Endpoint: m.Endpoint, Bucket: m.Bucket, AccessKey: m.AccessKey, SecretKey: "wrong-" + m.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Check(t.Context())
	if err == nil || errors.Is(err, storage.ErrBucketMissing) || !strings.Contains(err.Error(), "access denied") {
		t.Fatalf("Check with a wrong secret = %v, want an access-denied error", err)
	}
	if strings.Contains(err.Error(), m.SecretKey) {
		t.Errorf("error repeats the secret key: %v", err)
	}
}

// flakyProxy fronts an S3 server and answers the first fail requests with 503, as an
// overloaded S3 does.
type flakyProxy struct {
	*httptest.Server
	fail     atomic.Int32 // requests still to fail; negative: fail all
	requests atomic.Int32
}

func newFlakyProxy(t *testing.T, target string) *flakyProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &flakyProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		if n := p.fail.Load(); n != 0 {
			p.fail.Add(-1)
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

func TestS3RetriesServerErrors(t *testing.T) {
	t.Parallel()
	m := testenv.MinIO(t)
	proxy := newFlakyProxy(t, m.Endpoint)
	s, err := storage.NewS3(t.Context(), storage.S3Config{Endpoint: proxy.URL, Bucket: m.Bucket, AccessKey: m.AccessKey, SecretKey: m.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	// Four failures in a row are ridden out: the object lands on the fifth attempt.
	proxy.fail.Store(4)
	proxy.requests.Store(0)
	key := "live/retry/0.m4s"
	if err := s.Put(ctx, key, []byte("segment"), storage.HeadersFor(key, true)); err != nil {
		t.Fatalf("Put through four 503s: %v", err)
	}
	if got := proxy.requests.Load(); got != 5 {
		t.Errorf("Put made %d requests, want 5", got)
	}
	proxy.fail.Store(4)
	if data, err := s.Get(ctx, key); err != nil || string(data) != "segment" {
		t.Fatalf("Get through four 503s = %q, %v", data, err)
	}

	// A fifth failure is one too many: the error names the key and the status.
	proxy.fail.Store(-1)
	proxy.requests.Store(0)
	err = s.Put(ctx, key, []byte("segment"), storage.HeadersFor(key, true))
	if err == nil {
		t.Fatal("Put succeeded while every request failed")
	}
	if got := proxy.requests.Load(); got != 5 {
		t.Errorf("failing Put made %d requests, want 5", got)
	}
	if !strings.Contains(err.Error(), "storage: put "+key) || !strings.Contains(err.Error(), "503") {
		t.Errorf("error does not name the key and the status: %v", err)
	}
	t.Logf("after 5 attempts: %v", err)
}

// A client survives the server restarting: requests fail while it is down and work again
// without a new client once it is back, with the data still there.
func TestS3ServerRestart(t *testing.T) {
	t.Parallel()
	m := testenv.MinIO(t)
	s, err := storage.NewS3(t.Context(), storage.S3Config{Endpoint: m.Endpoint, Bucket: m.Bucket, Region: m.Region, AccessKey: m.AccessKey, SecretKey: m.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "live/r/0.m4s", []byte("before"), storage.PutOptions{})

	m.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	err = s.Put(ctx, "live/r/1.m4s", []byte("during"), storage.PutOptions{})
	cancel()
	if err == nil {
		t.Fatal("Put succeeded while MinIO was stopped")
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "live/r/1.m4s", []byte("after"), storage.PutOptions{})
	if got := mustGet(t, s, "live/r/0.m4s"); string(got) != "before" {
		t.Fatalf("object written before the restart = %q", got)
	}
	if err := s.Check(t.Context()); err != nil {
		t.Fatalf("Check after restart: %v", err)
	}
}

// Check's errors say what to do about the usual misconfigurations.
func TestS3CheckExplainsMisconfiguration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		header map[string]string
		want   []string
		is     error
	}{
		{"missing bucket", http.StatusNotFound, nil, []string{`"media"`, "does not exist", "deployment's job"}, storage.ErrBucketMissing},
		{"wrong region", http.StatusMovedPermanently, map[string]string{"X-Amz-Bucket-Region": "eu-west-3"}, []string{"eu-west-3", "s3-region"}, nil},
		{"forbidden", http.StatusForbidden, nil, []string{"access denied", "s3-access-key"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodHead || r.URL.Path != "/media" {
					t.Errorf("unexpected request %s %s", r.Method, r.URL)
				}
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
			}))
			defer srv.Close()
			s, err := storage.NewS3(t.Context(), storage.S3Config{Endpoint: srv.URL, Bucket: "media", AccessKey: "ak", SecretKey: "sk"})
			if err != nil {
				t.Fatal(err)
			}
			err = s.Check(t.Context())
			if err == nil {
				t.Fatal("Check succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q is not %v", err, tt.is)
			}
			if tt.is == nil && errors.Is(err, storage.ErrBucketMissing) {
				t.Errorf("error %q claims the bucket is missing", err)
			}
			t.Log(err)
		})
	}
}

// The request on the wire is one every S3-compatible server takes: path-style, plain body with
// its length, headers as given, no CRC32 checksum trailers.
func TestS3PutRequest(t *testing.T) {
	t.Parallel()
	var got *http.Request
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(context.Background())
		body, _ = io.ReadAll(r.Body)
	}))
	defer srv.Close()
	s, err := storage.NewS3(t.Context(), storage.S3Config{Endpoint: srv.URL, Bucket: "media", AccessKey: "ak", SecretKey: "very-secret"})
	if err != nil {
		t.Fatal(err)
	}
	key := "live/s1/720p/5.m4s"
	data := []byte("segment bytes")
	if err := s.Put(t.Context(), key, data, storage.HeadersFor(key, true)); err != nil {
		t.Fatal(err)
	}
	if got.Method != http.MethodPut || got.URL.Path != "/media/"+key || got.Host != strings.TrimPrefix(srv.URL, "http://") {
		t.Errorf("request %s %s (Host %s), want path-style PUT /media/%s", got.Method, got.URL.Path, got.Host, key)
	}
	if string(body) != string(data) || got.ContentLength != int64(len(data)) {
		t.Errorf("body %q with Content-Length %d, want %q", body, got.ContentLength, data)
	}
	if ct, cc := got.Header.Get("Content-Type"), got.Header.Get("Cache-Control"); ct != "video/iso.segment" || cc != "public, max-age=31536000, immutable" {
		t.Errorf("Content-Type %q, Cache-Control %q", ct, cc)
	}
	for name, values := range got.Header {
		lower := strings.ToLower(name)
		if strings.HasPrefix(lower, "x-amz-checksum-") || lower == "x-amz-sdk-checksum-algorithm" || lower == "x-amz-trailer" {
			t.Errorf("checksum header %s: %q", name, values)
		}
		for _, v := range values {
			if strings.Contains(v, "very-secret") {
				t.Errorf("secret key sent in header %s", name)
			}
		}
	}
	if enc := got.Header.Get("Content-Encoding"); strings.Contains(enc, "aws-chunked") {
		t.Errorf("Content-Encoding %q: chunked upload with trailers", enc)
	}
	if !strings.Contains(got.Header.Get("Authorization"), "Credential=ak/") {
		t.Errorf("request not signed with the static access key: %q", got.Header.Get("Authorization"))
	}
}
