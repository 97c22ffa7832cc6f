package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gopcast/gopcast/internal/testenv"
	"github.com/gopcast/gopcast/pkg/storage"
)

// TestBucketGrowth: a 3-minute stream without recording leaves only its live window (plus the
// grace period players need) in the bucket; a recorded one keeps every segment and its MP4.
func TestBucketGrowth(t *testing.T) {
	ffmpeg, _ := testenv.FFmpeg(t)
	minio := testenv.MinIO(t)
	const grace = 10 * time.Second
	g := startAll(t, minio, ffmpeg, "--profile", "passthrough", "--segment-grace", grace.String())
	live := g.createStream(t, `{"name": "ephemeral"}`)
	kept := g.createStream(t, `{"name": "kept", "record": true}`)

	const seconds = 180
	var pubs []*exec.Cmd
	for _, s := range []createdStream{live, kept} {
		// A small picture: two real-time encoders share this machine's two cores with gopcast.
		cmd := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
			"-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
			"-t", fmt.Sprint(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "800k", "-g", "60", "-keyint_min", "60",
			"-sc_threshold", "0", "-c:a", "aac", "-b:a", "64k", "-f", "flv", g.rtmp+"/"+s.StreamKey)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pubs = append(pubs, cmd)
	}
	for _, c := range pubs {
		if err := c.Wait(); err != nil {
			t.Fatalf("publisher: %v", err)
		}
	}
	rec := waitRecording(t, g.api, kept.ID)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, err := storage.NewS3(ctx, storage.S3Config{Endpoint: minio.Endpoint, Bucket: minio.Bucket, Region: minio.Region,
		AccessKey: minio.AccessKey, SecretKey: minio.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	count := func(prefix string) (segments, other int) {
		keys, err := store.List(ctx, prefix)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if strings.HasSuffix(k, ".m4s") {
				segments++
			} else {
				other++
			}
		}
		return
	}
	// Unrecorded: after the grace period only the final window (6 per rendition) remains.
	var segs int
	waitFor(t, grace+30*time.Second, "expired segments deleted", func() bool {
		segs, _ = count("live/" + live.ID + "/")
		return segs <= 2*6
	})
	t.Logf("unrecorded stream: %d segments left of %d published", segs, 2*seconds/2)

	segs, _ = count("live/" + kept.ID + "/")
	if want := 2 * seconds / 2; segs < want-2 {
		t.Errorf("recorded stream keeps %d segments, want all ~%d", segs, want)
	}
	_, vod := count("vod/" + kept.ID + "/" + rec.SessionID + "/")
	if vod < 5 { // master, 2 media playlists, MPD, MP4
		t.Errorf("recording has %d files", vod)
	}
	if _, err := store.Get(ctx, "vod/"+kept.ID+"/"+rec.SessionID+"/recording.mp4"); err != nil {
		t.Errorf("recording MP4: %v", err)
	}
	if n, _ := count("vod/" + live.ID + "/"); n != 0 {
		t.Errorf("an unrecorded stream has %d recording files", n)
	}
}
