package app

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/gopcast/gopcast/pkg/ffmpeg"
)

// welcome prints what to do next once `all` is up, and with --demo starts a test-pattern
// publisher so there is something to watch at once.
func (a *App) welcome(ctx context.Context, out io.Writer) {
	select {
	case <-ctx.Done():
		return
	case <-a.started:
	}
	_, httpPort, _ := net.SplitHostPort(a.HTTPAddr())
	api := "http://localhost:" + httpPort
	token := a.cfg.APITokens[0]
	rtmp := a.cfg.rtmpURL()
	fmt.Fprintf(out, `
gopcast is running (all roles in one process).
  API           %[1]s/v1/streams   (bearer token: %[2]s)
  RTMP ingest   %[3]s
  Media         %[4]s/

Create a stream:
  curl -s -H 'Authorization: Bearer %[2]s' -H 'Content-Type: application/json' -d '{"name":"my stream"}' %[1]s/v1/streams
Publish to its publish_url with OBS, or with ffmpeg:
  ffmpeg -re -i input.mp4 -c:v libx264 -g 60 -c:a aac -f flv %[3]s/STREAM_KEY
Watch its playback.hls URL:
  ffplay %[4]s/live/STREAM_ID/master.m3u8
`, api, token, rtmp, a.cfg.PublicBaseURL)
	if !a.cfg.Demo {
		return
	}
	st, key, err := a.reg.Create(ctx, "demo", a.cfg.Profile, false)
	if err != nil {
		a.log.Error("demo: creating the stream failed", "err", err)
		return
	}
	_, rtmpPort, _ := net.SplitHostPort(a.RTMPAddr())
	target := "rtmp://127.0.0.1:" + rtmpPort + "/live/" + key
	fmt.Fprintf(out, "\nDemo stream %s is publishing a test pattern. Watch it (give it ~6 s to start):\n  ffplay %s/live/%s/master.m3u8\n\n",
		st.ID, a.cfg.PublicBaseURL, st.ID)
	for ctx.Err() == nil {
		if err := ffmpeg.Run(ctx, a.cfg.FFmpeg, DemoPublishArgs(target, 0)); err != nil && ctx.Err() == nil {
			a.log.Warn("demo publisher stopped; restarting", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}
}

// DemoPublishArgs are ffmpeg arguments that publish a 1280x720 30 fps test pattern with a tone
// (2 s GOP, H.264 + AAC) to an RTMP URL in real time, for seconds (0: until stopped).
func DemoPublishArgs(rtmpURL string, seconds int) []string {
	args := []string{"-hide_banner", "-loglevel", "error", "-nostdin", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"}
	if seconds > 0 {
		args = append(args, "-t", fmt.Sprint(seconds))
	}
	return append(args,
		"-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
		"-b:v", "2500k", "-maxrate", "2500k", "-bufsize", "5000k",
		"-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
		"-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2",
		"-f", "flv", rtmpURL)
}
