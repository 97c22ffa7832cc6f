package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/gopcast/gopcast/internal/testenv"
	"github.com/gopcast/gopcast/pkg/queue"
)

// TestMediaCrossesNATSOnce holds the pipeline to design.md's first decision: media bytes cross
// NATS at most once. A 20 s 720p30 3 Mbit/s FLV is copied over RTMP (ffmpeg -c copy) into
// `gopcast all` pointed at a NATS server of the test's own, once with the default ladder and
// once with passthrough, and every byte the server received from its clients while the stream
// was published and processed is counted (its in_bytes: publishes, requests, acks, KV writes,
// everything) against the FLV's size. The ladder's chunks cross once, to their transcoder; a
// passthrough stream's media does not cross at all (the ingest writes it to the bucket). Before
// this, the ladder sent 3.67 bytes into NATS per byte published and passthrough 2.04.
func TestMediaCrossesNATSOnce(t *testing.T) {
	ffmpeg, _ := testenv.FFmpeg(t)
	flv := filepath.Join(t.TempDir(), "720p30.flv")
	make := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin",
		"-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "20", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
		"-b:v", "3000k", "-maxrate", "3000k", "-bufsize", "6000k", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
		"-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2", "-f", "flv", flv)
	if out, err := make.CombinedOutput(); err != nil {
		t.Fatalf("making the FLV: %v\n%s", err, out)
	}
	fi, err := os.Stat(flv)
	if err != nil {
		t.Fatal(err)
	}
	published := float64(fi.Size())

	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: t.TempDir(), NoSigs: true, NoLog: true, MaxPayload: queue.MaxPayload})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS not ready")
	}
	t.Cleanup(srv.Shutdown)
	g := startAll(t, nil, ffmpeg, "--nats-url", srv.ClientURL())

	for _, profile := range []string{"default", "passthrough"} {
		s := g.createStream(t, fmt.Sprintf(`{"name": "crossing %s", "profile": %q}`, profile, profile))
		w := newWatcher(t, strings.TrimSuffix(s.Playback.HLS, "master.m3u8"))
		before := inBytes(t, srv)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		pub := exec.CommandContext(ctx, ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", flv,
			"-c", "copy", "-f", "flv", g.rtmp+"/"+s.StreamKey)
		out, err := pub.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("%s: publisher: %v\n%s", profile, err, out)
		}
		waitEnded(t, w, 90*time.Second)
		// The ended playlist is written after the last records were taken: what is left to
		// count is the acknowledgements, in flight for a moment.
		waitFor(t, 30*time.Second, "the work streams empty", func() bool { return drained(t, srv) })
		in := inBytes(t, srv) - before
		ratio := float64(in) / published
		renditions := len(w.master.variants)
		t.Logf("FIGURES %s: %d bytes into NATS for %d published (%.1f s of 720p30 3 Mbit/s FLV): %.3f per byte; %d video renditions listed",
			profile, in, int64(published), 20.0, ratio, renditions)
		if ratio > 1.1 {
			t.Errorf("%s: %.3f bytes into NATS per byte published, want at most 1.1", profile, ratio)
		}
		if profile == "default" && renditions < 3 {
			t.Errorf("default ladder: %d video renditions listed, want the source and two rungs at least", renditions)
		}
	}
}

// inBytes is how many bytes the NATS server has received from its clients.
func inBytes(t *testing.T, srv *server.Server) int64 {
	t.Helper()
	v, err := srv.Varz(nil)
	if err != nil {
		t.Fatal(err)
	}
	return v.InBytes
}

// drained reports whether no encode job and no segment record waits in the server's work
// streams (asked of the server itself: a client's questions would be counted).
func drained(t *testing.T, srv *server.Server) bool {
	t.Helper()
	jsz, err := srv.Jsz(&server.JSzOptions{Accounts: true, Streams: true})
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, acc := range jsz.AccountDetails {
		for _, st := range acc.Streams {
			if st.Name == queue.JobsStream || st.Name == queue.SegmentsStream {
				seen++
				if st.State.Msgs > 0 {
					return false
				}
			}
		}
	}
	if seen != 2 {
		t.Fatalf("the server shows %d of gopcast's two work streams", seen)
	}
	return true
}
