// Package segment makes a chunk's CMAF renditions and puts their media segments in the bucket:
// the one code path by which media reaches storage, for the ingest (the source video and the
// audio, repackaged) and for the transcoders (the ladder's rungs). A rendition's segment is
// written at its final key, live/{stream}/{rendition}/{n}.m4s, before the record that lists it
// is published; a chunk made again (a redelivered job) writes the same key.
package segment

import (
	"context"
	"fmt"
	"path"
	"strconv"
	"sync"

	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/cmaf"
	"github.com/gopcast/gopcast/pkg/media/codec"
	"github.com/gopcast/gopcast/pkg/queue"
	"github.com/gopcast/gopcast/pkg/storage"
)

// Key is where segment n of a live stream's rendition lives in the bucket.
func Key(streamID, rendition string, n uint64) string {
	return path.Join("live", streamID, rendition, Name(n))
}

// Name is segment n's file name, as the playlists list it beside their rendition.
func Name(n uint64) string { return strconv.FormatUint(n, 10) + ".m4s" }

// Fragment is one rendition of a chunk: its description for the segment record (with the
// init segment) and its media segment's bytes.
type Fragment struct {
	queue.Rendition
	Media []byte
}

// Video packages a rendition's frames as the chunk's CMAF fragment number seq, ending at end
// (the decode time of the next chunk's first frame).
func Video(name string, seq uint32, cfg media.H264Config, frames []media.VideoFrame, end int64) (*Fragment, error) {
	if len(frames) == 0 {
		return nil, fmt.Errorf("%s: no frames", name)
	}
	init, err := cmaf.VideoInit(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s init: %w", name, err)
	}
	frag, err := cmaf.AppendVideoFragment(buffer(&videoBuffers), seq, frames, end)
	if err != nil {
		return nil, fmt.Errorf("%s fragment: %w", name, err)
	}
	cs, err := codec.H264Codec(cfg.SPS)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	w, h, fps, _ := codec.H264Info(cfg.SPS)
	if fps == 0 {
		fps = EstimateFPS(frames)
	}
	return &Fragment{Media: frag, Rendition: queue.Rendition{Name: name, Kind: "video", Codec: cs, Width: w, Height: h, FPS: fps,
		Init: init, Bytes: len(frag), Start: MinPTS(frames), Duration: end - frames[0].DTS, Timescale: media.Timescale}}, nil
}

// Audio packages the chunk's AAC frames as its CMAF fragment number seq, on the sample grid
// pinned by origin (the presentation time of the session's first audio frame), so fragments
// made by different processes line up exactly.
func Audio(seq uint32, cfg media.AACConfig, frames []media.AudioFrame, origin int64) (*Fragment, error) {
	init, err := cmaf.AudioInit(cfg)
	if err != nil {
		return nil, fmt.Errorf("audio init: %w", err)
	}
	frag, err := cmaf.AppendAudioFragment(buffer(&audioBuffers), seq, frames, cfg, origin)
	if err != nil {
		return nil, fmt.Errorf("audio fragment: %w", err)
	}
	cs, err := codec.AACCodec(cfg.ASC)
	if err != nil {
		return nil, err
	}
	_, ch, _ := codec.AACInfo(cfg.ASC)
	start, dur, ts, err := cmaf.AudioTiming(frames, cfg, origin)
	if err != nil {
		return nil, err
	}
	return &Fragment{Media: frag, Rendition: queue.Rendition{Name: "audio", Kind: "audio", Codec: cs, Channels: ch, SampleRate: int(ts),
		Init: init, Bytes: len(frag), Start: start, Duration: dur, Timescale: ts,
		Bandwidth: int(float64(len(frag)*8) / (float64(dur) / float64(ts)))}}, nil
}

// Put writes the fragment's media segment as segment n of streamID. Once it is written, its
// memory goes back for the next fragment (Media is then nil): only the description stays.
func (f *Fragment) Put(ctx context.Context, w *storage.Writer, streamID string, n uint64) error {
	if err := w.Put(ctx, Key(streamID, f.Name, n), f.Media, true); err != nil {
		return err
	}
	f.Release()
	return nil
}

// Release gives the fragment's media memory back without writing it.
func (f *Fragment) Release() {
	if cap(f.Media) == 0 {
		return
	}
	b := f.Media[:0]
	if f.Kind == "audio" {
		audioBuffers.Put(&b)
	} else {
		videoBuffers.Put(&b)
	}
	f.Media = nil
}

// videoBuffers and audioBuffers recycle the memory fragments are written to: a chunk's are a
// few MB, and fresh memory for each was zeroed, faulted in and scavenged back to the OS again
// (memclr and madvise were a fifth of a passthrough worker's CPU). Video and audio apart, so a
// buffer is reused for fragments of about its size.
var videoBuffers, audioBuffers sync.Pool

// buffer is an empty buffer from pool, or nil (the fragment then allocates).
func buffer(pool *sync.Pool) []byte {
	if b, ok := pool.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return nil
}

// MinPTS is the earliest presentation time of frames (not empty).
func MinPTS(frames []media.VideoFrame) int64 {
	m := frames[0].PTS
	for _, f := range frames {
		m = min(m, f.PTS)
	}
	return m
}

// EstimateFPS is the frame rate the frames' decode times show (30 when they cannot tell).
func EstimateFPS(frames []media.VideoFrame) float64 {
	if len(frames) < 2 {
		return 30
	}
	span := frames[len(frames)-1].DTS - frames[0].DTS
	if span <= 0 {
		return 30
	}
	return float64(len(frames)-1) * media.Timescale / float64(span)
}
