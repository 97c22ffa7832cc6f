package app

import (
	"io"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestDefaultsWorkOnALaptop(t *testing.T) {
	c, err := Parse("all", nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.RTMPAddr != ":1935" || c.HTTPAddr != ":8080" || c.Profile != "default" || c.ChunkDuration != 2*time.Second ||
		c.NATSURL != "" || c.S3Endpoint != "" || c.Window != 6 {
		t.Fatalf("defaults: %+v", c)
	}
	if got := c.rtmpURL(); got != "rtmp://localhost:1935/live" {
		t.Errorf("rtmp url %q", got)
	}
}

func TestEnvironmentAndFlags(t *testing.T) {
	e := env(map[string]string{
		"GOPCAST_RTMP_ADDR":      "127.0.0.1:1936",
		"GOPCAST_API_TOKEN":      "a, b",
		"GOPCAST_CHUNK_DURATION": "4s",
		"GOPCAST_S3_ENDPOINT":    "http://127.0.0.1:9000",
		"GOPCAST_S3_BUCKET":      "media",
	})
	c, err := Parse("all", []string{"--rtmp-addr", "127.0.0.1:1937"}, e, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.RTMPAddr != "127.0.0.1:1937" {
		t.Errorf("a flag must win over the environment: %s", c.RTMPAddr)
	}
	if len(c.APITokens) != 2 || c.APITokens[1] != "b" || c.ChunkDuration != 4*time.Second || c.S3Bucket != "media" {
		t.Errorf("from the environment: %+v", c)
	}
}

func TestBadValuesNameTheSetting(t *testing.T) {
	cases := []struct {
		role string
		args []string
		env  map[string]string
		want string
	}{
		{"all", []string{"--rtmp-addr", "nonsense"}, nil, "--rtmp-addr (GOPCAST_RTMP_ADDR)"},
		{"all", []string{"--http-addr", "8080"}, nil, "--http-addr"},
		{"all", []string{"--profile", "4k"}, nil, "--profile"},
		{"all", []string{"--s3-endpoint", "ftp://x"}, nil, "--s3-endpoint"},
		{"all", []string{"--s3-endpoint", "http://127.0.0.1:9000"}, nil, "--s3-bucket"},
		{"all", []string{"--s3-endpoint", "http://h:9000", "--s3-bucket", "b", "--s3-access-key", "k"}, nil, "--s3-access-key"},
		{"all", []string{"--chunk-duration", "100ms"}, nil, "--chunk-duration"},
		{"all", []string{"--x264-threads", "-1"}, nil, "--x264-threads"},
		{"all", []string{"--nats-url", "::nonsense"}, nil, "--nats-url"},
		{"all", []string{"--public-base-url", "cdn.example.com"}, nil, "--public-base-url"},
		{"all", []string{"--log-format", "xml"}, nil, "--log-format"},
		{"all", nil, map[string]string{"GOPCAST_HLS_WINDOW": "many"}, "GOPCAST_HLS_WINDOW"},
		{"api", nil, nil, "--api-token"},
		{"packager", []string{"--nats-url", "nats://127.0.0.1:4222"}, nil, "--s3-endpoint"},
		{"ingest", []string{"--demo"}, nil, "--demo"},
		{"all", []string{"stray"}, nil, "unexpected arguments"},
	}
	for _, tc := range cases {
		_, err := Parse(tc.role, tc.args, env(tc.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %v %v: err %v, want it to name %q", tc.role, tc.args, tc.env, err, tc.want)
		}
	}
}

func TestEnvNames(t *testing.T) {
	if EnvName("s3-secret-key") != "GOPCAST_S3_SECRET_KEY" {
		t.Fatal(EnvName("s3-secret-key"))
	}
}
