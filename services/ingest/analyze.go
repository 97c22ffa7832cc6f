package ingest

import (
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/message"
)

// announcedConn ends gortmplib's track analysis as soon as the publisher's tracks are known,
// instead of after two seconds of media.
//
// gortmplib.Reader.Initialize reads (and later replays) messages until their timestamps span
// two seconds, so tracks that announce themselves late are found. Nothing reaches the chunker
// meanwhile, and the stream's first two seconds then arrive in one burst: the first chunk is
// two seconds late and its encode starts with the whole chunk at once. But a publisher that
// sends onMetaData (ffmpeg, OBS, gortmplib's own client) says which tracks come. When it
// announces H.264 video and either AAC audio or explicitly none (audiocodecid 0), and the
// announced sequence headers have arrived, announcedConn hands the Reader one more message: a
// copy of the video sequence header stamped past the analysis period, which ends the analysis.
// The Reader replays it with the rest; to the data callbacks it is a repeated sequence header,
// which they ignore as such.
//
// Anything else leaves the analysis as it was: no metadata, an announcement without
// audiocodecid (ffmpeg with -an), other codecs, several tracks, or enhanced-RTMP messages.
type announcedConn struct {
	gortmplib.Conn

	// What the metadata announced; decided is set once it was read.
	decided, wantAudio, ok bool
	// What has arrived.
	started    bool
	first      time.Duration
	videoCfg   *message.Video
	audioCfg   bool
	done       bool // the analysis was ended (or can no longer be)
	endedEarly bool
}

// analysisCutoff is how far past the first timestamp the closing message is stamped: well over
// gortmplib's analysis period (2 s in v1.0.1), so a longer one would be ended too.
const analysisCutoff = time.Hour

func (c *announcedConn) Read() (message.Message, error) {
	if !c.done && c.ok && c.videoCfg != nil && (c.audioCfg || !c.wantAudio) {
		c.done, c.endedEarly = true, true
		closing := *c.videoCfg
		closing.DTS = c.first + analysisCutoff
		closing.PTSDelta = 0
		return &closing, nil
	}
	msg, err := c.Conn.Read()
	if err != nil || c.done {
		return msg, err
	}
	switch m := msg.(type) {
	case *message.DataAMF0:
		if !c.decided {
			c.decided = true
			c.wantAudio, c.ok = announced(m.Payload)
		}
	case *message.Video:
		if !c.started {
			c.started, c.first = true, m.DTS
		}
		if m.Type == message.VideoTypeConfig && m.Codec == message.CodecH264 && c.videoCfg == nil {
			c.videoCfg = m
		}
	case *message.Audio:
		if !c.started {
			c.started, c.first = true, m.DTS
		}
		if m.Codec == message.CodecMPEG4Audio && m.AACType == message.AudioAACTypeConfig && m.AACConfig != nil {
			c.audioCfg = true
		}
	default:
		switch msg.(type) {
		case *message.VideoExSequenceStart, *message.VideoExCodedFrames, *message.VideoExFramesX,
			*message.VideoExMultitrack, *message.AudioExSequenceStart, *message.AudioExCodedFrames,
			*message.AudioExMultitrack:
			c.done = true // enhanced RTMP: leave the analysis to gortmplib
		}
	}
	return msg, err
}

// announced reads an onMetaData payload ("@setDataFrame", "onMetaData", {...} or "onMetaData",
// {...}). ok is whether it announces exactly one H.264 video track and says whether audio comes
// (audiocodecid 10, AAC, or 0, none); wantAudio is whether it does.
func announced(payload amf0.Data) (wantAudio, ok bool) {
	var meta amf0.Object
	for i, v := range payload {
		if s, isStr := v.(string); !isStr || s != "onMetaData" || i+1 >= len(payload) {
			continue
		}
		switch o := payload[i+1].(type) {
		case amf0.Object:
			meta = o
		case amf0.ECMAArray:
			meta = amf0.Object(o)
		}
	}
	if meta == nil {
		return false, false
	}
	if _, multi := meta.Get("videoTrackIdInfoMap"); multi {
		return false, false
	}
	if _, multi := meta.Get("audioTrackIdInfoMap"); multi {
		return false, false
	}
	if !codecIs(meta, "videocodecid", float64(message.CodecH264), "avc1") {
		return false, false
	}
	if _, has := meta.Get("audiocodecid"); !has {
		return false, false
	}
	if codecIs(meta, "audiocodecid", float64(message.CodecMPEG4Audio), "mp4a") {
		return true, true
	}
	if codecIs(meta, "audiocodecid", 0, "") {
		return false, true
	}
	return false, false
}

// codecIs reports whether meta's key holds the number num or the string str.
func codecIs(meta amf0.Object, key string, num float64, str string) bool {
	v, has := meta.Get(key)
	if !has {
		return false
	}
	switch v := v.(type) {
	case float64:
		return v == num
	case string:
		return str != "" && v == str
	}
	return false
}
