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

	"github.com/nats-io/nats.go"
)

// The work messages are decoded by the consumers exactly as consume does it: json.Unmarshal
// of the body into a zero value; a decode error Terms the message (ErrUndecodable). Chunk
// messages are decoded by decodeChunkMsg from their headers and body. These fuzz targets hold
// decoding to what the transcoder and packager then rely on.
//
// Seeds in testdata/fuzz are segment records and encode jobs as the ingest and the transcoders
// write them, with the ids and the init segments of a session ffmpeg published.
//
// Some hazards are not enforced anywhere yet (a decodable message whose stream id or rendition
// name walks out of live/{id}/, or whose seq overflows the packager's numbering); they are
// reported by GOPCAST_FUZZ_STRICT=1 and otherwise only counted, so the targets keep exploring.

func decodeLikeConsumer[T any](data []byte) (*T, error) {
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
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

// FuzzChunkMessage: whatever headers and body a chunk message has, decodeChunkMsg does not
// panic, and what it accepts is one of the three kinds with the fields that kind needs.
func FuzzChunkMessage(f *testing.F) {
	f.Add("3", "0", "900000", "", "", []byte("\x47\x40\x00\x10"))
	f.Add("3", "", "", "1", "", []byte(`{"stream_id":"s","session_id":"x","seq":3,"n":3,"start":900000,"duration":180000,"size":4,"crc":1}`))
	f.Add("", "", "", "", "2", []byte(nil))
	f.Add("18446744073709551615", "-1", "x", "", "", []byte("x"))
	f.Add("1", "", "", "1", "", []byte(`{"seq":2}`))
	f.Fuzz(func(t *testing.T, seq, part, start, end, takeover string, body []byte) {
		h := nats.Header{}
		for k, v := range map[string]string{hdrSeq: seq, hdrPart: part, hdrStart: start, hdrEnd: end, hdrTakeover: takeover} {
			if v != "" {
				h.Set(k, v)
			}
		}
		m, err := decodeChunkMsg(h, body)
		if err != nil {
			return // skipped by the reader: fine
		}
		switch m.Kind {
		case TakeoverMsg:
		case EndMsg:
			if m.End == nil || m.End.Seq != m.Seq || m.End.Size < 0 {
				t.Fatalf("end message %+v", m.End)
			}
			roundTrip(t, m.End)
		case PartMsg:
			if m.Part < 0 || len(m.Data) == 0 {
				t.Fatalf("part %d with %d bytes", m.Part, len(m.Data))
			}
		default:
			t.Fatalf("kind %d", m.Kind)
		}
	})
}

// FuzzJobMessage: an encode job the transcoder can take at all has ids it can read chunks by,
// and the records it publishes for the session encode.
func FuzzJobMessage(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"stream_id":"s","session_id":"x","profile":"default","video":{"codec":"avc1.64001f","width":-1,"height":1e9}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := decodeLikeConsumer[EncodeJob](data)
		if err != nil {
			return
		}
		roundTrip(t, j)
		seg := &Segment{StreamID: j.StreamID, SessionID: j.SessionID, Record: j.Record, From: FromTranscoder, Failed: true, Error: "poison"}
		if _, err := json.Marshal(seg); err != nil {
			t.Fatalf("the transcoder's record for this job does not encode: %v", err)
		}
		if strings.Contains(j.StreamID, "/") || strings.Contains(j.SessionID, "/") {
			hazard(t, "ids with '/' make ID() ambiguous: %q", j.ID())
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
		if seg.ID() != seg.StreamID+"/"+seg.SessionID+"/"+strconv.FormatUint(seg.Seq, 10)+"/"+seg.From {
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
		// The packager numbers entries Base+Seq and lists them in order from 0: a seq near
		// the top wraps the media sequence number.
		if seg.Seq > math.MaxUint64/2 || seg.N > math.MaxUint64/2 {
			hazard(t, "seq %d, n %d: numbering wraps, media sequence numbers go backwards", seg.Seq, seg.N)
		}
	})
}

// TestMessageSeedsAreReal checks the committed seeds decode as what they claim to be, so the
// fuzz targets start from messages the pipeline really sends.
func TestMessageSeedsAreReal(t *testing.T) {
	for _, tc := range []struct {
		dir    string
		decode func([]byte) error
	}{
		{"FuzzJobMessage", func(b []byte) error {
			j, err := decodeLikeConsumer[EncodeJob](b)
			if err == nil && (j.StreamID == "" || j.SessionID == "" || j.Profile == "" || j.Created.IsZero()) {
				err = fmt.Errorf("not a real encode job: %+v", j)
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
