// Package chunker cuts one publish session into GOP-aligned chunks that start on a keyframe and
// keep the encoder's timestamps. A chunk holds its frames (for the source and audio
// renditions, repackaged as they are) and, when the session has rungs to encode, the video as a
// self-contained MPEG-TS for the encoder, with the codec configuration in band and timestamps
// shifted by a fixed base (TSBase). The MPEG-TS is written as frames come, so the encoder can
// start on a chunk before it ends (Open).
package chunker

import (
	"errors"
	"fmt"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/gopcast/gopcast/pkg/media"
	"github.com/gopcast/gopcast/pkg/media/tsmux"
)

// TSBase is where a chunk's first decode time lands in its MPEG-TS file. Ten seconds leaves
// room for B-frame decode times before the keyframe and for audio that starts a little early,
// and keeps every value far from the 33-bit wrap.
const TSBase = 10 * media.Timescale

// Errors returned by the chunker.
var (
	// ErrChunkTooLarge means the source sent more than MaxBytes without a keyframe to cut at.
	ErrChunkTooLarge = errors.New("chunker: no keyframe within the chunk size limit")
	// ErrNoVideoConfig means a chunker was made without H.264 parameters.
	ErrNoVideoConfig = errors.New("chunker: H.264 SPS and PPS are required")
)

// Config tunes the cutting.
type Config struct {
	// Target is the chunk duration in media.Timescale units: a chunk is cut at the first
	// keyframe at or after it.
	Target int64
	// MaxBytes bounds one chunk's size (memory per publisher) when keyframes are rare.
	MaxBytes int
	// TS makes each chunk's video MPEG-TS too (Chunk.TS), for the ladder's encoder.
	TS bool
	// Buffer, when set, gives the empty buffers a chunk is written to, with room for at least
	// n bytes: a caller that recycles finished chunks' TS and Mem saves allocating (and the
	// kernel faulting in) fresh memory for every chunk. Nil allocates.
	Buffer func(n int) []byte
}

// Chunk is one finished chunk.
type Chunk struct {
	Seq uint64
	// Start is the decode time of the first frame in the session timeline; Duration runs to
	// the first frame of the next chunk (for the last chunk: its last frame's end, estimated).
	Start    int64
	Duration int64
	// Video and Audio are the chunk's frames on the session timeline; their bytes are in Mem.
	Video []media.VideoFrame
	Audio []media.AudioFrame
	Mem   []byte
	// TS is the video as MPEG-TS (Config.TS): a time t of the session timeline is written as
	// TSBase+t-Start.
	TS         []byte
	VideoBytes int // of the video access units, without framing
	Keyframes  int
	Last       bool
}

// Chunker accumulates frames of one session. It is not safe for concurrent use.
//
// Video is cut on decode time (a chunk starts with its keyframe), but audio is cut on
// presentation time: audio before the keyframe's presentation time belongs to the chunk that
// ends there, so every rendition's n-th segment starts at the same instant. Audio frames for that
// span arrive after the keyframe, so a finished chunk stays open for its audio until audio
// reaches the cut (or, if audio lags or stops, until video is a second past it).
type Chunker struct {
	cfg   Config
	video media.H264Config
	asc   *mpeg4audio.AudioSpecificConfig // nil for a video-only session

	seq         uint64
	cur         *builder
	closing     *builder // cut on video, waiting for audio up to its cut
	lastDTS     int64
	frameDur    int64 // last observed decode-time step, for the final chunk's length
	audioOrigin int64
	haveAudio   bool
	lastSize    int // bytes of the last chunk, to size the next one's buffer
}

// builder is one chunk being written.
type builder struct {
	seq    uint64
	start  int64 // decode time of the first frame
	end    int64 // decode time of the next chunk's first frame, once cut
	cutPTS int64 // presentation time of the next chunk's keyframe, once cut
	ts     []byte
	mux    *tsmux.Muxer // nil without Config.TS
	// mem holds the frames' bytes; the frames point into it by offset until the chunk is
	// done (it may move as it grows).
	mem    []byte
	video  []frameAt
	nalus  [][2]int // offset and length in mem
	audio  []audioAt
	nk     int
	vbytes int
}

type frameAt struct {
	pts, dts  int64
	key       bool
	first, nn int // the frame's NAL units: nalus[first : first+nn]
}

type audioAt struct {
	pts      int64
	off, len int
}

// New returns a Chunker for a session with the given codec configuration; audio may be nil
// for a video-only source.
func New(cfg Config, video media.H264Config, audio *media.AACConfig) (*Chunker, error) {
	if len(video.SPS) == 0 || len(video.PPS) == 0 {
		return nil, ErrNoVideoConfig
	}
	if cfg.Target <= 0 {
		cfg.Target = 2 * media.Timescale
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 64 << 20
	}
	c := &Chunker{cfg: cfg, video: video}
	if audio != nil {
		c.asc = new(mpeg4audio.AudioSpecificConfig)
		if err := c.asc.Unmarshal(audio.ASC); err != nil {
			return nil, fmt.Errorf("chunker: AAC config: %w", err)
		}
	}
	return c, nil
}

// AudioOrigin is the presentation time of the session's first audio frame kept, and whether
// there has been one.
func (c *Chunker) AudioOrigin() (int64, bool) { return c.audioOrigin, c.haveAudio }

// Seq is the sequence number the next chunk will carry.
func (c *Chunker) Seq() uint64 { return c.seq }

// Partial is a chunk still being written.
type Partial struct {
	Seq   uint64
	Start int64
	// TS is the chunk's MPEG-TS bytes so far (Config.TS). The chunker only appends to them,
	// so the slice stays valid and unchanged.
	TS []byte
	// Cut is set once the chunk's video is complete (the next keyframe came): it waits only
	// for its audio. Duration and VideoBytes are then final.
	Cut        bool
	Duration   int64
	VideoBytes int
	Frames     int // video frames so far
}

// Open returns the chunks being written, oldest first: at most one cut on video and waiting
// for its audio, and the current one.
func (c *Chunker) Open() []Partial {
	var out []Partial
	for _, b := range []*builder{c.closing, c.cur} {
		if b != nil {
			p := Partial{Seq: b.seq, Start: b.start, TS: b.ts, VideoBytes: b.vbytes, Frames: len(b.video)}
			if b == c.closing {
				p.Cut, p.Duration = true, b.end-b.start
			}
			out = append(out, p)
		}
	}
	return out
}

// audioGrace is how far video may run past a cut while the closing chunk waits for its audio.
const audioGrace = media.Timescale

// WriteVideo adds a video frame and returns a chunk if one is finished. Frames before the
// session's first keyframe cannot be decoded and are dropped.
func (c *Chunker) WriteVideo(f media.VideoFrame) (*Chunk, error) {
	var done *Chunk
	if c.cur == nil {
		if !f.Key {
			return nil, nil
		}
		c.cur = c.open(f.DTS)
	} else {
		if d := f.DTS - c.lastDTS; d > 0 {
			c.frameDur = d
		}
		if c.closing != nil && (f.DTS >= c.closing.cutPTS+audioGrace || c.asc == nil || !c.haveAudio) {
			done = c.finish(c.closing, false)
			c.closing = nil
		}
		if f.Key && f.DTS-c.cur.start >= c.cfg.Target {
			if c.closing != nil {
				// A GOP shorter than the audio grace: the older chunk has waited long enough.
				done = c.finish(c.closing, false)
			}
			c.cur.end, c.cur.cutPTS = f.DTS, f.PTS
			c.closing = c.cur
			c.cur = c.open(f.DTS)
			if c.asc == nil || !c.haveAudio {
				done = c.finish(c.closing, false)
				c.closing = nil
			}
		}
	}
	c.writeVideo(c.cur, f)
	if len(c.cur.mem) > c.cfg.MaxBytes {
		return done, fmt.Errorf("%w (%d bytes over %.1f s)", ErrChunkTooLarge, len(c.cur.mem), float64(f.DTS-c.cur.start)/media.Timescale)
	}
	return done, nil
}

// WriteAudio adds an audio frame and returns a chunk if it completes one. Audio before the
// first keyframe is dropped with the video it belongs to.
func (c *Chunker) WriteAudio(f media.AudioFrame) (*Chunk, error) {
	if c.cur == nil || c.asc == nil {
		return nil, nil
	}
	if !c.haveAudio {
		c.haveAudio = true
		c.audioOrigin = f.PTS
	}
	b := c.cur
	var done *Chunk
	if c.closing != nil {
		if f.PTS < c.closing.cutPTS {
			b = c.closing
		} else {
			done = c.finish(c.closing, false)
			c.closing = nil
		}
	}
	b.audio = append(b.audio, audioAt{pts: f.PTS, off: len(b.mem), len: len(f.Data)})
	b.mem = append(b.mem, f.Data...)
	return done, nil
}

// Flush ends the session and returns its remaining chunks, the last one flagged Last; none if
// no keyframe ever came.
func (c *Chunker) Flush() []*Chunk {
	var out []*Chunk
	if c.closing != nil {
		out = append(out, c.finish(c.closing, false))
		c.closing = nil
	}
	if c.cur != nil {
		dur := c.frameDur
		if dur <= 0 {
			dur = media.Timescale / 30
		}
		c.cur.end = c.lastDTS + dur
		out = append(out, c.finish(c.cur, true))
		c.cur = nil
	}
	return out
}

func (c *Chunker) open(dts int64) *builder {
	b := &builder{seq: c.seq, start: dts, mem: c.buffer()}
	c.seq++
	if c.cfg.TS {
		b.ts = c.buffer()
		b.mux, _ = tsmux.New(nil) // the encoder takes the video only: New(nil) cannot fail
	}
	return b
}

// buffer is an empty buffer for a new chunk: chunks of a stream are about the same size, so
// one allocation instead of a dozen doublings (and their copies) per chunk.
func (c *Chunker) buffer() []byte {
	n := c.lastSize + c.lastSize/4
	if c.cfg.Buffer != nil {
		return c.cfg.Buffer(n)[:0]
	}
	return make([]byte, 0, n)
}

func (c *Chunker) finish(b *builder, last bool) *Chunk {
	c.lastSize = len(b.mem)
	ch := &Chunk{Seq: b.seq, Start: b.start, Duration: b.end - b.start, Mem: b.mem, TS: b.ts,
		VideoBytes: b.vbytes, Keyframes: b.nk, Last: last}
	nalus := make([][]byte, len(b.nalus))
	for i, n := range b.nalus {
		nalus[i] = b.mem[n[0] : n[0]+n[1] : n[0]+n[1]]
	}
	ch.Video = make([]media.VideoFrame, len(b.video))
	for i, f := range b.video {
		ch.Video[i] = media.VideoFrame{PTS: f.pts, DTS: f.dts, Key: f.key, NALUs: nalus[f.first : f.first+f.nn : f.first+f.nn]}
	}
	ch.Audio = make([]media.AudioFrame, len(b.audio))
	for i, a := range b.audio {
		ch.Audio[i] = media.AudioFrame{PTS: a.pts, Data: b.mem[a.off : a.off+a.len : a.off+a.len]}
	}
	return ch
}

func (c *Chunker) writeVideo(b *builder, f media.VideoFrame) {
	if f.Key {
		b.nk++
	}
	fa := frameAt{pts: f.PTS, dts: f.DTS, key: f.Key, first: len(b.nalus), nn: len(f.NALUs)}
	for _, n := range f.NALUs {
		b.nalus = append(b.nalus, [2]int{len(b.mem), len(n)})
		b.mem = append(b.mem, n...)
		b.vbytes += len(n)
	}
	b.video = append(b.video, fa)
	c.lastDTS = f.DTS
	if b.mux != nil {
		au := f.NALUs
		if f.Key {
			au = withParameterSets(au, c.video)
		}
		b.ts = b.mux.WriteH264(b.ts, TSBase+f.PTS-b.start, TSBase+f.DTS-b.start, f.Key, au)
	}
}

// withParameterSets puts SPS and PPS in front of a keyframe that lacks them, so every chunk
// decodes on its own (RTMP sends them once, out of band).
func withParameterSets(au [][]byte, cfg media.H264Config) [][]byte {
	for _, n := range au {
		if len(n) > 0 && h264.NALUType(n[0]&0x1f) == h264.NALUTypeSPS {
			return au
		}
	}
	out := make([][]byte, 0, len(au)+2)
	i := 0
	// Keep an access unit delimiter first if there is one.
	if len(au) > 0 && len(au[0]) > 0 && h264.NALUType(au[0][0]&0x1f) == h264.NALUTypeAccessUnitDelimiter {
		out = append(out, au[0])
		i = 1
	}
	out = append(out, cfg.SPS, cfg.PPS)
	return append(out, au[i:]...)
}
