package ingest

import (
	"fmt"
	"sync"
	"time"

	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/streams"
)

// healthWindow is the span the live rates are measured over.
const healthWindow = 5 * time.Second

// meter measures a session's incoming media for its live health: rates over the last five
// seconds of wall-clock time, frame rate and keyframe interval from the media's own timestamps.
type meter struct {
	mu        sync.Mutex
	started   time.Time
	base      streams.Health // codecs and resolution
	hasAudio  bool
	samples   []sample // last healthWindow of frames
	keyDTS    []int64  // decode times of recent keyframes
	lastAudio time.Time
	peakKbps  float64
}

type sample struct {
	at    time.Time
	dts   int64
	bytes int
	video bool
}

func newMeter(base streams.Health, hasAudio bool) *meter {
	return &meter{started: time.Now(), base: base, hasAudio: hasAudio}
}

func (m *meter) video(f media.VideoFrame) {
	n := 0
	for _, u := range f.NALUs {
		n += len(u) + 4
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.add(sample{at: time.Now(), dts: f.DTS, bytes: n, video: true})
	if f.Key {
		m.keyDTS = append(m.keyDTS, f.DTS)
		if len(m.keyDTS) > 4 {
			m.keyDTS = m.keyDTS[1:]
		}
	}
}

func (m *meter) audio(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	m.lastAudio = now
	m.add(sample{at: now, bytes: n})
}

func (m *meter) add(s sample) {
	m.samples = append(m.samples, s)
	cut := 0
	for cut < len(m.samples) && s.at.Sub(m.samples[cut].at) > healthWindow {
		cut++
	}
	if cut > 0 {
		m.samples = append(m.samples[:0], m.samples[cut:]...)
	}
}

// health reports the figures now; bytesIn is the connection's byte count.
func (m *meter) health(bytesIn uint64) streams.Health {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	h := m.base
	h.BytesIn = bytesIn
	h.Warnings = []string{}
	var vBytes, aBytes, frames int
	var firstDTS, lastDTS int64
	for _, s := range m.samples {
		if now.Sub(s.at) > healthWindow {
			continue
		}
		if s.video {
			if frames == 0 {
				firstDTS = s.dts
			}
			lastDTS = s.dts
			frames++
			vBytes += s.bytes
		} else {
			aBytes += s.bytes
		}
	}
	window := min(now.Sub(m.started), healthWindow).Seconds()
	if window > 0 {
		h.VideoBitrateKbps = round1(float64(vBytes*8) / window / 1000)
		h.AudioBitrateKbps = round1(float64(aBytes*8) / window / 1000)
		h.BitrateKbps = round1(h.VideoBitrateKbps + h.AudioBitrateKbps)
	}
	if frames > 1 && lastDTS > firstDTS {
		h.FrameRate = round1(float64(frames-1) * media.Timescale / float64(lastDTS-firstDTS))
	}
	if n := len(m.keyDTS); n > 1 {
		h.KeyframeInterval = round1(float64(m.keyDTS[n-1]-m.keyDTS[0]) / float64(n-1) / media.Timescale)
	}
	// Keyframes that have stopped coming count too: the interval is at least the time since.
	if n := len(m.keyDTS); n > 0 && frames > 0 {
		if since := float64(lastDTS-m.keyDTS[n-1]) / media.Timescale; since > h.KeyframeInterval && since > 4 {
			h.KeyframeInterval = round1(since)
		}
	}

	running := now.Sub(m.started)
	if h.KeyframeInterval > 4 {
		h.Warnings = append(h.Warnings, fmt.Sprintf("keyframe interval %.1f s is over 4 s: set the encoder's keyframe interval to 2 s", h.KeyframeInterval))
	}
	if running >= 10*time.Second {
		if h.BitrateKbps < 0.2*m.peakKbps {
			h.Warnings = append(h.Warnings, fmt.Sprintf("bitrate collapsed to %.0f kbps from %.0f kbps: check the encoder's upload bandwidth and CPU", h.BitrateKbps, m.peakKbps))
		}
		m.peakKbps = max(m.peakKbps, h.BitrateKbps)
	}
	switch {
	case !m.hasAudio:
		h.Warnings = append(h.Warnings, "no audio track: viewers will hear nothing")
	case running >= healthWindow && now.Sub(m.lastAudio) > healthWindow:
		h.Warnings = append(h.Warnings, "audio stopped: no audio received for over 5 s")
	}
	return h
}

func round1(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }
