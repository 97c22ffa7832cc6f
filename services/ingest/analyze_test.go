package ingest

import (
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
)

// msgConn is a gortmplib.Conn that records what is written to it and reads it back.
type msgConn struct {
	msgs []message.Message
	read int
}

func (c *msgConn) BytesReceived() uint64         { return 0 }
func (c *msgConn) BytesSent() uint64             { return 0 }
func (c *msgConn) Write(m message.Message) error { c.msgs = append(c.msgs, m); return nil }
func (c *msgConn) Read() (message.Message, error) {
	if c.read == len(c.msgs) {
		return nil, io.EOF
	}
	c.read++
	return c.msgs[c.read-1], nil
}

var (
	testSPS = []byte{0x67, 0x64, 0x00, 0x0c, 0xac, 0x3b, 0x50, 0xb0, 0x4b, 0x42, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x3d, 0x08}
	testPPS = []byte{0x68, 0xee, 0x3c, 0x80}
)

// publishedMessages is what gortmplib's client sends for 3 s of 25 fps video (one frame in 25 a
// keyframe) with, if audio, AAC frames between: its metadata and sequence headers first, then
// edited by edit if not nil. The video frames are one-byte slices; frame i has byte i.
func publishedMessages(t *testing.T, audio bool, edit func(*msgConn)) *msgConn {
	t.Helper()
	c := &msgConn{}
	vt := &gortmplib.Track{Codec: &codecs.H264{SPS: testSPS, PPS: testPPS}}
	tracks := []*gortmplib.Track{vt}
	var at *gortmplib.Track
	if audio {
		at = &gortmplib.Track{Codec: &codecs.MPEG4Audio{Config: &mpeg4audio.AudioSpecificConfig{
			Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelCount: 2,
		}}}
		tracks = append(tracks, at)
	}
	w := &gortmplib.Writer{Conn: c, Tracks: tracks}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	for i := range 75 {
		ts := time.Duration(i) * 40 * time.Millisecond
		nalu := []byte{0x01, byte(i)} // non-IDR slice
		if i%25 == 0 {
			nalu = []byte{0x05, byte(i)}
		}
		if err := w.WriteH264(vt, ts, ts, [][]byte{nalu}); err != nil {
			t.Fatal(err)
		}
		if audio {
			if err := w.WriteMPEG4Audio(at, ts, []byte{0x21, byte(i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if edit != nil {
		edit(c)
	}
	return c
}

// readAll initializes a Reader over announcedConn{c} and reads to the end. It returns how many
// messages Initialize took from c, the video frames (their second byte) and audio frames the
// callbacks got, and whether the analysis ended early.
func readAll(t *testing.T, c *msgConn) (analysed int, video, audio []byte, early bool) {
	t.Helper()
	ac := &announcedConn{Conn: c}
	r := &gortmplib.Reader{Conn: ac}
	if err := r.Initialize(); err != nil {
		t.Fatal(err)
	}
	analysed = c.read
	for _, tr := range r.Tracks() {
		switch tr.Codec.(type) {
		case *codecs.H264:
			r.OnDataH264(tr, func(_, dts time.Duration, au [][]byte) {
				if onlyParameterSets(au) {
					return
				}
				if want := time.Duration(len(video)) * 40 * time.Millisecond; dts != want {
					t.Errorf("video frame %d at %v, want %v", len(video), dts, want)
				}
				video = append(video, au[0][1])
			})
		case *codecs.MPEG4Audio:
			r.OnDataMPEG4Audio(tr, func(_ time.Duration, au []byte) { audio = append(audio, au[1]) })
		}
	}
	for {
		if err := r.Read(); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("read: %v", err)
			}
			return analysed, video, audio, ac.endedEarly
		}
	}
}

func TestAnalysisEndsWhenAnnouncedTracksArrive(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		audio bool
		edit  func(*msgConn)
		// Whether the analysis ends after the metadata and sequence headers, or reads on
		// through two seconds of media as gortmplib does by itself.
		early bool
	}{
		{name: "video and AAC announced", audio: true, early: true},
		{name: "video only, audiocodecid 0", audio: false, early: true},
		{name: "no metadata", audio: true, edit: func(c *msgConn) { c.msgs = c.msgs[1:] }},
		{name: "AAC announced, no audio sent", audio: true, edit: func(c *msgConn) {
			c.msgs = slices.DeleteFunc(c.msgs, func(m message.Message) bool { _, a := m.(*message.Audio); return a })
		}},
		{name: "audiocodecid missing", audio: false, edit: func(c *msgConn) {
			m := c.msgs[0].(*message.DataAMF0)
			var o amf0.Object
			for _, e := range m.Payload[2].(amf0.Object) {
				if e.Key != "audiocodecid" {
					o = append(o, e)
				}
			}
			c.msgs[0] = &message.DataAMF0{ChunkStreamID: m.ChunkStreamID, MessageStreamID: m.MessageStreamID,
				Payload: amf0.Data{m.Payload[0], m.Payload[1], o}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := publishedMessages(t, tc.audio, tc.edit)
			headers := 0
			for _, m := range c.msgs {
				if v, ok := m.(*message.Video); ok && v.Type == message.VideoTypeAU {
					break
				}
				headers++
			}
			analysed, video, audio, early := readAll(t, c)
			if early != tc.early {
				t.Errorf("ended early = %v, want %v", early, tc.early)
			}
			if tc.early && analysed != headers {
				t.Errorf("analysis read %d messages, want the %d before the first frame", analysed, headers)
			}
			if !tc.early && analysed <= headers+50 {
				t.Errorf("analysis read only %d messages; without an announcement it should span 2 s", analysed)
			}
			// Nothing is lost or repeated either way.
			if len(video) != 75 {
				t.Fatalf("%d video frames, want 75", len(video))
			}
			for i, b := range video {
				if int(b) != i {
					t.Fatalf("video frame %d is frame %d", i, b)
				}
			}
			wantAudio := 0
			if tc.audio && (tc.edit == nil || tc.name == "no metadata") {
				wantAudio = 75
			}
			if len(audio) != wantAudio {
				t.Fatalf("%d audio frames, want %d", len(audio), wantAudio)
			}
		})
	}
}

func TestAnnounced(t *testing.T) {
	t.Parallel()
	obj := func(kv ...any) amf0.Object {
		var o amf0.Object
		for i := 0; i < len(kv); i += 2 {
			o = append(o, amf0.ObjectEntry{Key: kv[i].(string), Value: kv[i+1]})
		}
		return o
	}
	for _, tc := range []struct {
		name          string
		payload       amf0.Data
		wantAudio, ok bool
	}{
		{"ffmpeg", amf0.Data{"@setDataFrame", "onMetaData", amf0.ECMAArray(obj("videocodecid", 7.0, "audiocodecid", 10.0))}, true, true},
		{"OBS fourcc strings", amf0.Data{"onMetaData", obj("videocodecid", "avc1", "audiocodecid", "mp4a")}, true, true},
		{"no audio", amf0.Data{"@setDataFrame", "onMetaData", obj("videocodecid", 7.0, "audiocodecid", 0.0)}, false, true},
		{"audio unsaid", amf0.Data{"@setDataFrame", "onMetaData", obj("videocodecid", 7.0)}, false, false},
		{"HEVC", amf0.Data{"@setDataFrame", "onMetaData", obj("videocodecid", 12.0, "audiocodecid", 10.0)}, false, false},
		{"MP3", amf0.Data{"@setDataFrame", "onMetaData", obj("videocodecid", 7.0, "audiocodecid", 2.0)}, false, false},
		{"multitrack", amf0.Data{"@setDataFrame", "onMetaData", obj("videocodecid", 7.0, "audiocodecid", 10.0, "videoTrackIdInfoMap", obj())}, false, false},
		{"not metadata", amf0.Data{"@setDataFrame", "onCuePoint", obj("videocodecid", 7.0, "audiocodecid", 10.0)}, false, false},
		{"metadata name last", amf0.Data{"@setDataFrame", "onMetaData"}, false, false},
		{"not an object", amf0.Data{"onMetaData", "videocodecid"}, false, false},
	} {
		wantAudio, ok := announced(tc.payload)
		if wantAudio != tc.wantAudio || ok != tc.ok {
			t.Errorf("%s: announced = (audio %v, ok %v), want (%v, %v)", tc.name, wantAudio, ok, tc.wantAudio, tc.ok)
		}
	}
}
