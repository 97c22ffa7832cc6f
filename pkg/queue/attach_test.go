package queue

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// connectLimited connects to a NATS server of its own whose max_payload is maxPayload, as a
// stock server's 1 MB is smaller than the embedded one's.
func connectLimited(t *testing.T, maxPayload int32) *Conn {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: t.TempDir(), NoSigs: true, NoLog: true, MaxPayload: maxPayload})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(srv.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Connect(ctx, Config{URL: srv.ClientURL()}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// nextJob consumes one message from a work stream.
func nextJob[T any](t *testing.T, consume func(context.Context, int, func(context.Context, *Job[T])) error) *Job[T] {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := make(chan *Job[T], 1)
	go func() {
		_ = consume(ctx, 1, func(ctx context.Context, j *Job[T]) {
			if err := j.Ack(ctx); err != nil {
				t.Error(err)
			}
			select {
			case got <- j:
				cancel()
			default:
			}
		})
	}()
	select {
	case j := <-got:
		return j
	case <-ctx.Done():
		t.Fatal("no message consumed")
		return nil
	}
}

// A chunk that fits in a message travels in it: no object is stored, and the consumer has
// the bytes from the message. One that does not fit is stored as an object, as before.
func TestChunkBytesInTheMessage(t *testing.T) {
	c := connectLimited(t, 1<<20) // a stock server's max_payload
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		size   int
		object bool
	}{{800 << 10, false}, {1 << 20, true}, {0, false}} {
		data := random(t, tc.size)
		job := &Chunk{StreamID: "s1", SessionID: "sess", Seq: uint64(tc.size), Start: 90000, Duration: 180000, Last: tc.size == 0}
		if err := c.PublishChunk(ctx, job, data); err != nil {
			t.Fatalf("%d bytes: %v", tc.size, err)
		}
		j := nextJob(t, c.ConsumeChunks)
		b, err := c.ChunkBytes(ctx, &j.Body)
		if err != nil || !bytes.Equal(b, data) {
			t.Fatalf("%d bytes: got %d bytes (%v), not the chunk's", tc.size, len(b), err)
		}
		if j.Body.Size != tc.size || (j.Body.Object != "") != tc.object || j.Body.HasBytes() != (tc.size > 0) {
			t.Errorf("%d bytes: job %+v, want an object: %v", tc.size, j.Body, tc.object)
		}
		_, err = c.chunks.GetInfo(ctx, job.ID())
		if stored := err == nil; stored != tc.object {
			t.Errorf("%d bytes: chunk object stored: %v (%v), want %v", tc.size, stored, err, tc.object)
		}
		if err := c.DeleteChunk(ctx, &j.Body); err != nil {
			t.Error(err)
		}
	}
}

// A segment's bytes go in its message while they fit; beyond that its largest media segments
// are stored as objects under deterministic names until the rest fits. The consumer gets every
// byte back where the rendition says, and the publisher's segment is left as it was.
func TestSegmentBytesInMessageOrObjects(t *testing.T) {
	c := connectLimited(t, 1<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rend := func(name string, size int) Rendition {
		return Rendition{Name: name, Kind: "video", InitData: random(t, 700), MediaData: random(t, size), Bytes: size}
	}
	for _, tc := range []struct {
		name    string
		rends   []Rendition
		objects []string
	}{
		{"fits", []Rendition{rend("source", 700<<10), rend("480p", 200<<10), rend("audio", 32<<10)}, nil},
		{"source too big", []Rendition{rend("source", 1500<<10), rend("480p", 400<<10), rend("360p", 200<<10), rend("audio", 32<<10)}, []string{"source"}},
		{"two too big", []Rendition{rend("source", 900<<10), rend("720p", 800<<10), rend("360p", 700<<10), rend("audio", 32<<10)}, []string{"source", "720p"}},
		{"a failed rung", []Rendition{rend("source", 100<<10), {Name: "480p", Kind: "video", Failed: true, Error: "boom"}}, nil},
	} {
		seg := &Segment{StreamID: "s1", SessionID: "sess", Seq: uint64(len(tc.rends)*10 + len(tc.objects)), Start: 1, Duration: 180000, Renditions: tc.rends}
		before := make([]Rendition, len(seg.Renditions))
		copy(before, seg.Renditions)
		if err := c.PublishSegment(ctx, seg); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		for i, r := range seg.Renditions {
			if r.Media != "" || !bytes.Equal(r.MediaData, before[i].MediaData) {
				t.Errorf("%s: the publisher's rendition %s was changed", tc.name, r.Name)
			}
		}
		j := nextJob(t, c.ConsumeSegments)
		if len(j.Body.Renditions) != len(tc.rends) {
			t.Fatalf("%s: %d renditions, want %d", tc.name, len(j.Body.Renditions), len(tc.rends))
		}
		var objects []string
		for i, r := range j.Body.Renditions {
			want := tc.rends[i]
			if r.Name != want.Name || r.Failed != want.Failed || r.Error != want.Error || r.Bytes != want.Bytes {
				t.Errorf("%s: rendition %+v, want %+v", tc.name, r, want)
			}
			if !bytes.Equal(r.InitData, want.InitData) {
				t.Errorf("%s: %s: init segment of %d bytes, want %d", tc.name, r.Name, len(r.InitData), len(want.InitData))
			}
			media := r.MediaData
			if r.Media != "" {
				objects = append(objects, r.Name)
				if r.Media != seg.ID()+"/"+r.Name+"/media.m4s" {
					t.Errorf("%s: %s stored as %q, not under the segment's ID", tc.name, r.Name, r.Media)
				}
				var err error
				if media, err = c.RenditionBytes(ctx, r.Media); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(media, want.MediaData) {
				t.Errorf("%s: %s: media of %d bytes, want %d", tc.name, r.Name, len(media), len(want.MediaData))
			}
		}
		if len(objects) != len(tc.objects) || (len(objects) > 0 && !equalSets(objects, tc.objects)) {
			t.Errorf("%s: stored as objects %v, want %v", tc.name, objects, tc.objects)
		}
	}
}

func equalSets(a, b []string) bool {
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		m[s]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return true
}

// Messages whose bytes do not match their JSON are refused by the consumer (Termed), and a
// JSON-only message (as published before bytes travelled in messages) still decodes.
func TestAttachedBytesMustMatch(t *testing.T) {
	for _, tc := range []struct {
		name, json, bytes string
		hdr               int // the header's value minus the JSON's length; -1000: no header
		ok                bool
	}{
		{"json only", `{"stream_id":"s","renditions":[{"name":"audio","media_data":"AAEC"}]}`, "", -1000, true},
		{"bytes as said", `{"stream_id":"s","renditions":[{"init_len":1,"media_len":3}]}`, "iabc", 0, true},
		{"bytes left over", `{"stream_id":"s","renditions":[{"media_len":3}]}`, "abcd", 0, false},
		{"bytes missing", `{"stream_id":"s","renditions":[{"media_len":3}]}`, "ab", 0, false},
		{"header past the body", `{}`, "", 1, false},
		{"header inside the JSON", `{"stream_id":"s"}`, "", -2, false},
		{"negative header", `{}`, "", -3, false},
		{"negative length", `{"stream_id":"s","renditions":[{"media_len":-3}]}`, "abc", 0, false},
	} {
		var seg Segment
		h := map[string][]string{}
		if tc.hdr != -1000 {
			h[hdrJSON] = []string{strconv.Itoa(len(tc.json) + tc.hdr)}
		}
		err := decodeMsg(h, []byte(tc.json+tc.bytes), &seg)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok %v", tc.name, err, tc.ok)
		}
	}
	var c Chunk
	if err := decodeMsg(map[string][]string{hdrJSON: {"10"}}, []byte(`{"size":4}abc`), &c); !errors.Is(err, errAttached) {
		t.Errorf("a chunk of 4 bytes carrying 3: %v", err)
	}
	var o Chunk
	if err := decodeMsg(map[string][]string{hdrJSON: {"27"}}, []byte(`{"size":3,"object":"s/x/1"}abc`), &o); !errors.Is(err, errAttached) {
		t.Errorf("a chunk naming an object and carrying bytes: %v", err)
	}
}
