package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"sync"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/message"
)

// publisher sends a clip over RTMP in real time, as a live encoder would, and remembers when it
// sent each video frame, so a media time can be turned into the wall-clock instant the
// publisher reached it.
//
// Pacing: a sample with media time t (decode time for video, presentation time for audio; the
// clip's first keyframe is t = 0, loop k adds k × the clip length) is written when the wall
// clock reaches start + t, where start is the instant the first sample was written. RTMP
// timestamps are t in milliseconds, so the ingest's session timeline is this same t.
type publisher struct {
	clip   *clip
	dur    time.Duration // media to send: every sample with t < dur
	target time.Duration // the server's chunk duration, to count the chunks expected
	// ackWindow is the window acknowledgement size announced to the server (0: none).
	ackWindow uint32

	mu          sync.Mutex
	start       time.Time
	frames      []sentFrame     // video frames sent, in decode order
	chunkStarts []time.Duration // decode times where the ingest will cut a chunk
	end         time.Duration   // media end of the session: last video DTS + one frame
	ended       time.Time       // when the connection was closed
	maxLag      time.Duration   // worst lateness of a write against its schedule
	sumLag      time.Duration
	videoSent   int
	audioSent   int
	bytesSent   uint64
}

// sentFrame is one video frame as written.
type sentFrame struct {
	DTS  time.Duration
	Wall time.Time // when the write returned
}

func newPublisher(c *clip, dur, target time.Duration, ackWindow uint32) *publisher {
	return &publisher{clip: c, dur: dur, target: target, ackWindow: ackWindow}
}

// publish connects to rtmpURL (the application URL, e.g. rtmp://host:1935/live), publishes
// with key, sends the clip in real time until dur, and closes the connection once the media
// clock has reached the end of the last frame.
func (p *publisher) publish(ctx context.Context, rtmpURL, key string) error {
	u, err := url.Parse(rtmpURL)
	if err != nil {
		return err
	}
	// gortmplib takes the stream key from the fragment: rtmp://host/app#key.
	u.Fragment = key
	cl := &gortmplib.Client{URL: u, Publish: true}
	ictx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err = cl.Initialize(ictx)
	cancel()
	if err != nil {
		return fmt.Errorf("RTMP connect/publish: %w", err)
	}
	defer func() {
		p.mu.Lock()
		p.bytesSent = cl.BytesSent()
		p.ended = time.Now()
		p.mu.Unlock()
		cl.Close()
	}()
	nc := cl.NetConn()
	// gortmplib's client announces a 2.5 MB window acknowledgement size, which makes the server
	// send an Acknowledge every 2.5 MB received. ffmpeg's publisher announces none. Announce
	// ackWindow instead (0: none, like ffmpeg).
	_ = nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := cl.Write(&message.SetWindowAckSize{Value: p.ackWindow}); err != nil {
		return fmt.Errorf("RTMP: %w", err)
	}

	vt := &gortmplib.Track{Codec: &codecs.H264{SPS: p.clip.SPS, PPS: p.clip.PPS}}
	tracks := []*gortmplib.Track{vt}
	var at *gortmplib.Track
	if p.clip.AAC != nil {
		at = &gortmplib.Track{Codec: &codecs.MPEG4Audio{Config: p.clip.AAC}}
		tracks = append(tracks, at)
	}
	w := &gortmplib.Writer{Conn: cl, Tracks: tracks}
	_ = nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := w.Initialize(); err != nil {
		return fmt.Errorf("RTMP tracks: %w", err)
	}

	timer := time.NewTimer(0)
	<-timer.C
	waitUntil := func(at time.Time) error {
		d := time.Until(at)
		if d <= 0 {
			return nil
		}
		timer.Reset(d)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
			return nil
		}
	}

	loopLen := p.clip.LoopDuration
	start := time.Now()
	p.mu.Lock()
	p.start = start
	p.mu.Unlock()
	var lastVideo, lastAudio time.Duration = -1, -1
	defer func() {
		// Whatever happened, the session's media ended one frame after the last frame sent.
		p.mu.Lock()
		if p.end == 0 && lastVideo >= 0 {
			p.end = lastVideo + p.clip.FrameDuration
		}
		p.mu.Unlock()
	}()
	for k := 0; ; k++ {
		off := time.Duration(k) * loopLen
		if off >= p.dur {
			break
		}
		for _, s := range p.clip.Samples {
			t := s.DTS + off
			if t >= p.dur {
				break
			}
			// Keep each track's timestamps increasing across a loop point.
			if s.Video && t <= lastVideo || !s.Video && t <= lastAudio {
				continue
			}
			sched := start.Add(t)
			if err := waitUntil(sched); err != nil {
				return err
			}
			_ = nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if s.Video {
				err = w.WriteH264(vt, s.PTS+off, t, s.AU)
			} else {
				err = w.WriteMPEG4Audio(at, t, s.Data)
			}
			now := time.Now()
			if err != nil {
				return fmt.Errorf("RTMP write at media time %s: %w", t, err)
			}
			lag := now.Sub(sched)
			p.mu.Lock()
			p.maxLag = max(p.maxLag, lag)
			p.sumLag += lag
			if s.Video {
				lastVideo = t
				p.videoSent++
				p.frames = append(p.frames, sentFrame{DTS: t, Wall: now})
				// The ingest's rule: a chunk starts at the first keyframe, then at the first
				// keyframe at least the target after the current chunk's start.
				if s.Key && (len(p.chunkStarts) == 0 || t-p.chunkStarts[len(p.chunkStarts)-1] >= p.target) {
					p.chunkStarts = append(p.chunkStarts, t)
				}
			} else {
				lastAudio = t
				p.audioSent++
			}
			p.mu.Unlock()
		}
	}
	if lastVideo < 0 {
		return errors.New("nothing was sent")
	}
	// Stop like a live encoder: once the last frame's time has passed.
	end := lastVideo + p.clip.FrameDuration
	p.mu.Lock()
	p.end = end
	p.mu.Unlock()
	return waitUntil(start.Add(end))
}

// mediaWall is the wall-clock instant at which the publisher's media clock reached media time
// t: the send time of the last video frame with a decode time before t, plus the time from
// that frame's decode time to t. For a segment whose media ends at t (the decode time at which
// the next segment starts), that is the instant the segment's last frame was sent plus that
// frame's duration: the moment a live source would have finished producing the segment.
// Before the first frame it extrapolates from the start. ok is false if nothing was sent.
func (p *publisher) mediaWall(t time.Duration) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.start.IsZero() {
		return time.Time{}, false
	}
	i := sort.Search(len(p.frames), func(i int) bool { return p.frames[i].DTS >= t }) - 1
	if i < 0 {
		return p.start.Add(t), true
	}
	f := p.frames[i]
	return f.Wall.Add(t - f.DTS), true
}

// pubStats is what the publisher did.
type pubStats struct {
	Start        time.Time     `json:"start"`
	MediaEnd     time.Duration `json:"-"`
	MediaSeconds float64       `json:"media_seconds"`
	VideoFrames  int           `json:"video_frames"`
	AudioFrames  int           `json:"audio_frames"`
	Chunks       int           `json:"chunks_expected"`
	ChunkStarts  []float64     `json:"-"`
	MaxLagMS     float64       `json:"max_write_lag_ms"`
	MeanLagMS    float64       `json:"mean_write_lag_ms"`
	Bytes        uint64        `json:"bytes_sent"`
	Mbps         float64       `json:"mbit_per_s"`
	chunkStartsD []time.Duration
}

func (p *publisher) stats() pubStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := pubStats{Start: p.start, MediaEnd: p.end, MediaSeconds: p.end.Seconds(), VideoFrames: p.videoSent,
		AudioFrames: p.audioSent, Chunks: len(p.chunkStarts), MaxLagMS: ms(p.maxLag), Bytes: p.bytesSent}
	for _, c := range p.chunkStarts {
		s.ChunkStarts = append(s.ChunkStarts, c.Seconds())
	}
	s.chunkStartsD = append([]time.Duration(nil), p.chunkStarts...)
	if n := p.videoSent + p.audioSent; n > 0 {
		s.MeanLagMS = ms(p.sumLag / time.Duration(n))
	}
	if p.end > 0 {
		s.Mbps = float64(p.bytesSent) * 8 / p.end.Seconds() / 1e6
	}
	return s
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
