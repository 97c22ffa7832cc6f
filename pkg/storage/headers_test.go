package storage_test

import (
	"testing"

	"github.com/gopcast/gopcast/pkg/storage"
)

func TestHeadersFor(t *testing.T) {
	const (
		immutable = "public, max-age=31536000, immutable"
		liveDoc   = "public, max-age=1"
		endedDoc  = "public, max-age=60"
	)
	tests := []struct {
		key          string
		live         bool
		contentType  string
		cacheControl string
	}{
		{"live/s1/master.m3u8", true, "application/vnd.apple.mpegurl", liveDoc},
		{"live/s1/master.m3u8", false, "application/vnd.apple.mpegurl", endedDoc},
		{"live/s1/720p/index.m3u8", true, "application/vnd.apple.mpegurl", liveDoc},
		{"vod/s1/sess/720p/index.m3u8", false, "application/vnd.apple.mpegurl", endedDoc},
		{"live/s1/manifest.mpd", true, "application/dash+xml", liveDoc},
		{"live/s1/manifest.mpd", false, "application/dash+xml", endedDoc},
		{"live/s1/720p/init.mp4", true, "video/mp4", immutable},
		{"live/s1/720p/init.mp4", false, "video/mp4", immutable},
		{"vod/s1/sess/full.mp4", false, "video/mp4", immutable},
		{"live/s1/720p/42.m4s", true, "video/iso.segment", immutable},
		{"live/s1/720p/42.m4s", false, "video/iso.segment", immutable},
		{"live/s1/720p/42.ts", true, "video/mp2t", immutable},
		{"vod/s1/sess/info.json", false, "application/json", endedDoc},
		{"live/s1/status.json", true, "application/json", liveDoc},
		{"live/s1/MASTER.M3U8", true, "application/vnd.apple.mpegurl", liveDoc}, // extension case
		{"live/s1/blob", true, "application/octet-stream", ""},
		{"live/s1/notes.txt", false, "application/octet-stream", ""},
		{"live/s1.m3u8/0.m4s", true, "video/iso.segment", immutable}, // only the last segment's extension counts
	}
	for _, tt := range tests {
		got := storage.HeadersFor(tt.key, tt.live)
		want := storage.PutOptions{ContentType: tt.contentType, CacheControl: tt.cacheControl}
		if got != want {
			t.Errorf("HeadersFor(%q, live=%v) = %+v, want %+v", tt.key, tt.live, got, want)
		}
	}
}
