package queue

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path"
	"strconv"
	"strings"
	"testing"
)

// The job messages are decoded by the consumers exactly as consume does it: decodeMsg of the
// message into a zero value (json.Unmarshal of the body, or of its first bytes with the rest
// given to the message as its media when the Gopcast-Json header says so); a decode error
// Terms the message (ErrUndecodable). These fuzz targets hold decoding to what the transcoder
// and packager then rely on.
//
// Seeds in testdata/fuzz are real messages: chunk jobs published by the ingest for an
// ffmpeg-made H.264/AAC clip, and segment messages shaped as the transcoder writes them.
//
// Some hazards are not enforced anywhere yet (a decodable message whose stream id or rendition
// name walks out of live/{id}/, or whose seq overflows the packager's numbering); they are
// reported by GOPCAST_FUZZ_STRICT=1 and otherwise only counted, so the targets keep exploring.

func decodeLikeConsumer[T any](data []byte) (*T, error) {
	var v T
	if err := decodeMsg(nil, data, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// roundTrip requires a decoded message to encode, and to encode the same again after another
// decode: a producer copying its fields (the transcoder's Segment from a Chunk, the packager's
// saved state) must be able to publish what it was given.
func roundTrip[T any](t *testing.T, v *T) {
	t.Helper()
	b1, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("decoded message does not encode: %v\n%+v", err, v)
	}
	v2, err := decodeLikeConsumer[T](b1)
	if err != nil {
		t.Fatalf("re-encoded message does not decode: %v\n%s", err, b1)
	}
	b2, err := json.Marshal(v2)
	if err != nil {
		t.Fatalf("second encode failed: %v", err)
	}
	if !bytes.Equal(b1, b2) {
		t.Fatalf("encoding is not stable:\n%s\n%s", b1, b2)
	}
}

func strict() bool { return os.Getenv("GOPCAST_FUZZ_STRICT") != "" }

func hazard(t *testing.T, format string, args ...any) {
	t.Helper()
	if strict() {
		t.Fatalf("hazard: "+format, args...)
	}
}

// underPrefix reports whether the storage key the packager derives for a rendition file stays
// under live/{stream}/ (state.key: path.Join("live", streamID, rendition, file)).
func underPrefix(streamID, rendition, file string) bool {
	key := path.Join("live", streamID, rendition, file)
	return strings.HasPrefix(key, "live/"+streamID+"/") && streamID != "" && !strings.Contains(streamID, "/") &&
		streamID != "." && streamID != ".."
}

func FuzzChunkMessage(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"stream_id":"s","session_id":"x","seq":18446744073709551615,"start":-9223372036854775808,"duration":9223372036854775807,"created":"9999-12-31T23:59:59.999999999-23:59"}`))
	f.Add([]byte(`{"stream_id":"a/b","session_id":"c","seq":1,"last":true}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeLikeConsumer[Chunk](data)
		if err != nil {
			return // Termed as undecodable: fine
		}
		roundTrip(t, c)
		// The identity de-duplicating the job and naming its object is a pure function of
		// (stream, session, seq).
		if id := c.ID(); id != c.StreamID+"/"+c.SessionID+"/"+strconv.FormatUint(c.Seq, 10) {
			t.Fatalf("ID %q", id)
		}
		// The transcoder copies these into the Segment it publishes, success or failure; that
		// message must encode, or the chunk is neither listed nor reported as a gap.
		seg := &Segment{StreamID: c.StreamID, SessionID: c.SessionID, Seq: c.Seq, Start: c.Start, Duration: c.Duration,
			Last: c.Last, Record: c.Record, Failed: true, Error: "poison", Chunk: c.Created}
		if _, err := json.Marshal(seg); err != nil {
			t.Fatalf("the transcoder's segment for this chunk does not encode: %v", err)
		}
		// What the transcoder computes from the job, unchecked: its end and fragment number.
		if c.Duration > 0 && c.Start > math.MaxInt64-c.Duration {
			hazard(t, "start %d + duration %d overflows", c.Start, c.Duration)
		}
		if strings.Contains(c.StreamID, "/") || strings.Contains(c.SessionID, "/") {
			hazard(t, "ids with '/' make ID() ambiguous: %q", c.ID())
		}
	})
}

func FuzzSegmentMessage(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"stream_id":"s","session_id":"x","seq":1,"renditions":[{"name":"../../vod/x","kind":"video","timescale":0}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		seg, err := decodeLikeConsumer[Segment](data)
		if err != nil {
			return
		}
		roundTrip(t, seg)
		if seg.ID() != seg.StreamID+"/"+seg.SessionID+"/"+strconv.FormatUint(seg.Seq, 10) {
			t.Fatalf("ID %q", seg.ID())
		}
		// The packager's first check: a segment without ids is poison (Rejected). Past it,
		// what it does with the message:
		if seg.StreamID == "" || seg.SessionID == "" {
			return
		}
		for _, r := range seg.Renditions {
			// pendingFrom: duration in seconds, timescale 0 read as 90 kHz; never NaN.
			ts := r.Timescale
			if ts == 0 {
				ts = 90000
			}
			if d := float64(r.Duration) / float64(ts); math.IsNaN(d) || math.IsInf(d, 0) {
				t.Fatalf("rendition %q: duration %v s", r.Name, d)
			}
			// Segment and init keys: live/{stream}/{rendition}/{n}.m4s.
			if !r.Failed && !underPrefix(seg.StreamID, r.Name, "0.m4s") {
				hazard(t, "rendition %q of stream %q is stored at %q, outside live/%s/", r.Name, seg.StreamID,
					path.Join("live", seg.StreamID, r.Name, "0.m4s"), seg.StreamID)
			}
		}
		if !underPrefix(seg.StreamID, "x", "master.m3u8") {
			hazard(t, "stream id %q puts its playlists at %q", seg.StreamID, path.Join("live", seg.StreamID, "master.m3u8"))
		}
		// The packager numbers segments Base+Seq and lists them in order from 0: a seq near
		// the top wraps the media sequence number.
		if seg.Seq > math.MaxUint64/2 {
			hazard(t, "seq %d: Base+Seq wraps, media sequence numbers go backwards", seg.Seq)
		}
	})
}

// FuzzAttachedMessage: a message whose body is JSON followed by media, split where its header
// says. Whatever it holds, decoding does not panic, and a decoded message carries exactly the
// bytes its JSON declares, which encode and decode again to the same message.
func FuzzAttachedMessage(f *testing.F) {
	f.Add("47", []byte(`{"stream_id":"s","renditions":[{"media_len":3}]}abc`), false)
	f.Add("62", []byte(`{"stream_id":"s","renditions":[{"init_len":1,"media_len":2}]}iab`), false)
	f.Add("22", []byte(`{"stream_id":"s","size":3}abc`), true)
	f.Add("x", []byte(`{}`), true)
	f.Fuzz(func(t *testing.T, hdr string, body []byte, chunk bool) {
		h := map[string][]string{hdrJSON: {hdr}}
		if chunk {
			var c Chunk
			if decodeMsg(h, body, &c) != nil {
				return
			}
			if c.Object != "" || len(c.Data) != c.Size {
				t.Fatalf("decoded chunk of size %d (object %q) carries %d bytes", c.Size, c.Object, len(c.Data))
			}
			again(t, &c, func(a *Chunk) bool { return bytes.Equal(a.Data, c.Data) && a.ID() == c.ID() })
			return
		}
		var s Segment
		if decodeMsg(h, body, &s) != nil {
			return
		}
		for _, r := range s.Renditions {
			if (r.InitLen > 0 && len(r.InitData) != r.InitLen) || (r.MediaLen > 0 && len(r.MediaData) != r.MediaLen) {
				t.Fatalf("rendition %q declares %d+%d bytes, carries %d+%d", r.Name, r.InitLen, r.MediaLen, len(r.InitData), len(r.MediaData))
			}
		}
		again(t, &s, func(a *Segment) bool {
			if len(a.Renditions) != len(s.Renditions) {
				return false
			}
			for i, r := range a.Renditions {
				if !bytes.Equal(r.InitData, s.Renditions[i].InitData) || !bytes.Equal(r.MediaData, s.Renditions[i].MediaData) {
					return false
				}
			}
			return true
		})
	})
}

// again encodes a decoded message as a producer would and decodes it, requiring same(result).
func again[T any, P interface {
	*T
	attacher
}](t *testing.T, v P, same func(P) bool) {
	t.Helper()
	body, h, err := encodeMsg(nil, v)
	if err != nil {
		t.Fatalf("decoded message does not encode: %v", err)
	}
	var w T
	if err := decodeMsg(h, body, P(&w)); err != nil {
		t.Fatalf("re-encoded message does not decode: %v", err)
	}
	if !same(P(&w)) {
		t.Fatalf("re-encoded message decodes differently")
	}
}

// TestMessageSeedsAreReal checks the committed seeds decode as what they claim to be, so the
// fuzz targets start from messages the pipeline really sends.
func TestMessageSeedsAreReal(t *testing.T) {
	for _, tc := range []struct {
		dir    string
		decode func([]byte) error
	}{
		{"FuzzChunkMessage", func(b []byte) error {
			c, err := decodeLikeConsumer[Chunk](b)
			if err == nil && (c.StreamID == "" || c.SessionID == "" || c.Created.IsZero()) {
				err = fmt.Errorf("not a real chunk job: %+v", c)
			}
			return err
		}},
		{"FuzzSegmentMessage", func(b []byte) error {
			s, err := decodeLikeConsumer[Segment](b)
			if err == nil && (s.StreamID == "" || s.SessionID == "" || (len(s.Renditions) == 0 && !s.Last && !s.Failed)) {
				err = fmt.Errorf("not a real segment message: %+v", s)
			}
			return err
		}},
	} {
		entries, err := os.ReadDir("testdata/fuzz/" + tc.dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) == 0 {
			t.Fatalf("no seeds for %s", tc.dir)
		}
		for _, e := range entries {
			b, err := os.ReadFile("testdata/fuzz/" + tc.dir + "/" + e.Name())
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.SplitN(string(b), "\n", 3)
			if len(lines) < 2 || !strings.HasPrefix(lines[1], "[]byte(") {
				t.Fatalf("%s/%s: not a fuzz corpus file", tc.dir, e.Name())
			}
			lit := strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")")
			s, err := strconv.Unquote(lit)
			if err != nil {
				t.Fatalf("%s/%s: %v", tc.dir, e.Name(), err)
			}
			if err := tc.decode([]byte(s)); err != nil {
				t.Errorf("%s/%s: %v", tc.dir, e.Name(), err)
			}
		}
	}
}
