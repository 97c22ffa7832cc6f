package chunker

import (
	"bytes"
	"errors"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"

	"github.com/gopcast/gopcast/pkg/media"
)

// A real 64x64 x264 SPS/PPS pair, and slice NAL units that only need the right type.
var (
	sps = []byte{0x67, 0x64, 0x00, 0x0a, 0xac, 0xd9, 0x44, 0x26, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x48, 0x99, 0x60}
	pps = []byte{0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0}
	cfg = media.H264Config{SPS: sps, PPS: pps}
)

const frame = media.Timescale / 30 // 3000 ticks

func videoFrame(i int, key bool) media.VideoFrame {
	n := []byte{0x41, 0x9a, byte(i)} // non-IDR slice
	if key {
		n = []byte{0x65, 0x88, byte(i)} // IDR slice
	}
	// Two B-frames of reorder: PTS runs two frames ahead of DTS.
	return media.VideoFrame{DTS: int64(i) * frame, PTS: int64(i+2) * frame, Key: key, NALUs: [][]byte{n}}
}

func aacConfig(t *testing.T) *media.AACConfig {
	t.Helper()
	asc, err := (&mpeg4audio.AudioSpecificConfig{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelCount: 2}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return &media.AACConfig{ASC: asc}
}

// feed sends n video frames with a keyframe every gop frames (and two audio frames per video
// frame), returning the chunks that came out.
func feed(t *testing.T, c *Chunker, n, gop int, skipLeading int, audio bool) []*Chunk {
	t.Helper()
	var out []*Chunk
	for i := 0; i < n; i++ {
		key := (i-skipLeading)%gop == 0 && i >= skipLeading
		ch, err := c.WriteVideo(videoFrame(i, key))
		if err != nil {
			t.Fatal(err)
		}
		if ch != nil {
			out = append(out, ch)
		}
		if !audio {
			continue
		}
		for k := 0; k < 2; k++ {
			pts := int64(i)*frame + int64(k)*frame/2
			ch, err := c.WriteAudio(media.AudioFrame{PTS: pts, Data: []byte{0x21, 0x10, byte(i)}})
			if err != nil {
				t.Fatal(err)
			}
			if ch != nil {
				out = append(out, ch)
			}
		}
	}
	return append(out, c.Flush()...)
}

type demuxed struct {
	video []media.VideoFrame
	audio []int64
}

func demux(t *testing.T, data []byte) demuxed {
	t.Helper()
	r := &mpegts.Reader{R: bytes.NewReader(data)}
	if err := r.Initialize(); err != nil {
		t.Fatal(err)
	}
	var d demuxed
	for _, tr := range r.Tracks() {
		if tr.Codec.IsVideo() {
			r.OnDataH264(tr, func(pts, dts int64, au [][]byte) error {
				key := false
				for _, n := range au {
					key = key || n[0]&0x1f == 5
				}
				d.video = append(d.video, media.VideoFrame{PTS: pts, DTS: dts, Key: key, NALUs: au})
				return nil
			})
		} else {
			r.OnDataMPEG4Audio(tr, func(pts int64, aus [][]byte) error {
				for range aus {
					d.audio = append(d.audio, pts)
				}
				return nil
			})
		}
	}
	for {
		if err := r.Read(); err != nil {
			break
		}
	}
	return d
}

func TestCutsAtFirstKeyframeAfterTarget(t *testing.T) {
	c, err := New(Config{Target: 2 * media.Timescale, TS: true}, cfg, aacConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	// 10 s at 30 fps with a 1 s GOP: chunks of exactly 2 s (60 frames), cut on keyframes.
	chunks := feed(t, c, 300, 30, 0, true)
	if len(chunks) != 5 {
		t.Fatalf("got %d chunks, want 5", len(chunks))
	}
	for i, ch := range chunks {
		if ch.Seq != uint64(i) {
			t.Errorf("chunk %d has seq %d", i, ch.Seq)
		}
		if ch.Start != int64(i)*60*frame || ch.Duration != 60*frame {
			t.Errorf("chunk %d: start %d duration %d", i, ch.Start, ch.Duration)
		}
		// Audio is cut at the next keyframe's presentation time, two frames after its decode
		// time: the first chunk has two frames' audio more, the last two frames' less.
		wantAudio := 120
		switch i {
		case 0:
			wantAudio = 124
		case 4:
			wantAudio = 116
		}
		if len(ch.Video) != 60 || ch.Keyframes != 2 || len(ch.Audio) != wantAudio {
			t.Errorf("chunk %d: %d frames, %d keyframes, %d audio", i, len(ch.Video), ch.Keyframes, len(ch.Audio))
		}
		// The frames as they came, on the session timeline, and their bytes.
		for j, f := range ch.Video {
			want := videoFrame(i*60+j, j%30 == 0)
			if f.DTS != want.DTS || f.PTS != want.PTS || f.Key != want.Key || len(f.NALUs) != 1 || !bytes.Equal(f.NALUs[0], want.NALUs[0]) {
				t.Fatalf("chunk %d frame %d: %+v, want %+v", i, j, f, want)
			}
		}
		wantFirst := ch.Start + 2*frame // the chunk's presentation start
		if i == 0 {
			wantFirst = 0
		}
		if len(ch.Audio) > 0 && (ch.Audio[0].PTS != wantFirst || len(ch.Audio[0].Data) != 3) {
			t.Errorf("chunk %d: audio from %d (%d bytes), want from %d", i, ch.Audio[0].PTS, len(ch.Audio[0].Data), wantFirst)
		}
		if ch.Last != (i == 4) {
			t.Errorf("chunk %d: Last=%v", i, ch.Last)
		}
		d := demux(t, ch.TS)
		if len(d.video) != 60 || !d.video[0].Key {
			t.Fatalf("chunk %d: demuxed %d frames, first key %v", i, len(d.video), len(d.video) > 0 && d.video[0].Key)
		}
		// Timestamps survive, shifted so the chunk starts at TSBase; SPS and PPS are in band.
		for j, f := range d.video {
			want := videoFrame(i*60+j, false)
			if f.DTS != TSBase+want.DTS-ch.Start || f.PTS != TSBase+want.PTS-ch.Start {
				t.Fatalf("chunk %d frame %d: pts/dts %d/%d", i, j, f.PTS, f.DTS)
			}
		}
		if !bytes.Equal(d.video[0].NALUs[0], sps) && !bytes.Equal(d.video[0].NALUs[1], sps) {
			t.Errorf("chunk %d: keyframe lacks the SPS in band: %x", i, d.video[0].NALUs)
		}
		if len(d.audio) != 0 {
			t.Errorf("chunk %d: %d audio frames in the MPEG-TS, which is the encoder's: video only", i, len(d.audio))
		}
	}
}

func TestLongGOP(t *testing.T) {
	c, err := New(Config{Target: 2 * media.Timescale}, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A 5 s GOP: every chunk runs to the next keyframe, 5 s, never cut mid-GOP.
	chunks := feed(t, c, 450, 150, 0, false)
	if len(chunks) != 3 {
		t.Fatalf("got %d chunks, want 3", len(chunks))
	}
	for i, ch := range chunks {
		if ch.Duration != 150*frame || ch.Keyframes != 1 {
			t.Errorf("chunk %d: duration %d keyframes %d", i, ch.Duration, ch.Keyframes)
		}
	}
}

func TestDropsFramesBeforeFirstKeyframe(t *testing.T) {
	c, err := New(Config{Target: 2 * media.Timescale}, cfg, aacConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	chunks := feed(t, c, 130, 60, 10, true)
	if len(chunks) != 2 {
		t.Fatalf("got %d chunks", len(chunks))
	}
	if chunks[0].Start != 10*frame {
		t.Errorf("first chunk starts at %d, want the first keyframe %d", chunks[0].Start, 10*frame)
	}
	if origin, ok := c.AudioOrigin(); !ok || origin != 10*frame {
		t.Errorf("audio origin %d %v", origin, ok)
	}
	// The last chunk ends one frame after its last frame.
	last := chunks[1]
	if !last.Last || last.Start+last.Duration != 130*frame {
		t.Errorf("last chunk: %+v", last)
	}
}

func TestNoKeyframeNoChunk(t *testing.T) {
	c, _ := New(Config{}, cfg, nil)
	for i := 0; i < 10; i++ {
		if ch, err := c.WriteVideo(videoFrame(i, false)); ch != nil || err != nil {
			t.Fatal(ch, err)
		}
	}
	if len(c.Flush()) != 0 {
		t.Fatal("flush without a keyframe made a chunk")
	}
}

func TestChunkSizeBounded(t *testing.T) {
	c, _ := New(Config{Target: 2 * media.Timescale, MaxBytes: 64 << 10}, cfg, nil)
	big := make([]byte, 8<<10)
	big[0] = 0x41
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		f := videoFrame(i, i == 0)
		if i > 0 {
			f.NALUs = [][]byte{big}
		}
		_, err = c.WriteVideo(f)
	}
	if !errors.Is(err, ErrChunkTooLarge) {
		t.Fatalf("err = %v, want ErrChunkTooLarge", err)
	}
}

func TestNeedsParameterSets(t *testing.T) {
	if _, err := New(Config{}, media.H264Config{}, nil); !errors.Is(err, ErrNoVideoConfig) {
		t.Fatal(err)
	}
}

// A chunk of a session with audio that gets no audio frame (the publisher stops right after a
// keyframe, or its audio stops) has its video and no audio; the chunks before keep theirs.
func TestChunkWithoutAudio(t *testing.T) {
	c, err := New(Config{TS: true}, cfg, aacConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	chunks := feed(t, c, 60, 60, 0, true) // one full 2 s GOP with audio
	if len(chunks) != 1 {
		t.Fatalf("%d chunks after the first GOP, want 1", len(chunks))
	}
	// The next keyframe and one more frame, then the session ends before any audio.
	for i := 60; i < 62; i++ {
		if ch, err := c.WriteVideo(videoFrame(i, i == 60)); err != nil {
			t.Fatal(err)
		} else if ch != nil {
			chunks = append(chunks, ch)
		}
	}
	chunks = append(chunks, c.Flush()...)
	last := chunks[len(chunks)-1]
	if !last.Last || len(last.Audio) != 0 || len(last.Video) != 2 {
		t.Fatalf("last chunk: last=%v audio=%d video=%d", last.Last, len(last.Audio), len(last.Video))
	}
	d := demux(t, last.TS)
	if len(d.video) != 2 || !d.video[0].Key || d.video[0].DTS != TSBase {
		t.Errorf("video frames: %+v", d.video)
	}
	if len(chunks[0].Audio) == 0 {
		t.Error("first chunk lost its audio")
	}
}

// Without Config.TS a chunk has its frames and no MPEG-TS (a session with nothing to encode).
func TestFramesOnly(t *testing.T) {
	c, err := New(Config{}, cfg, aacConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	chunks := feed(t, c, 120, 60, 0, true)
	if len(chunks) != 2 || chunks[0].TS != nil || len(chunks[0].Video) != 60 || len(chunks[1].Video) != 60 {
		t.Fatalf("%d chunks, TS %d bytes", len(chunks), len(chunks[0].TS))
	}
	if p := c.Open(); len(p) != 0 {
		t.Errorf("open after the flush: %d", len(p))
	}
}
