package queue

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

func connect(t *testing.T, cfg Config) *Conn {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Connect(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// A chunk's parts and its end are read back in order from the session's subject, with the
// takeover marks among them; a purge below a stream sequence leaves only what follows it.
func TestChunkPartsReadInOrder(t *testing.T) {
	c := connect(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	data := make([]byte, 3*MaxPart/2)
	_, _ = rand.Read(data)
	send := func(seq uint64) {
		parts := [][]byte{data[:MaxPart], data[MaxPart:]}
		for i, p := range parts {
			if err := c.PublishPart(ctx, Part{StreamID: "s1", SessionID: "sess", Seq: seq, Index: i, Start: 90000 * int64(seq+1), Data: p}); err != nil {
				t.Fatal(err)
			}
		}
		end := &Chunk{StreamID: "s1", SessionID: "sess", Seq: seq, N: 40 + seq, Size: len(data), CRC: crc32.Checksum(data, ChunkCRC)}
		if err := c.PublishChunk(ctx, end); err != nil {
			t.Fatal(err)
		}
	}
	send(0)
	if err := c.MarkTakeover(ctx, "s1", "sess", 2); err != nil {
		t.Fatal(err)
	}
	send(1)
	if err := c.PublishPart(ctx, Part{StreamID: "s1", SessionID: "sess", Data: make([]byte, MaxPart+1)}); err == nil {
		t.Error("a part over MaxPart was published")
	}
	if err := c.PublishPart(ctx, Part{StreamID: "s.1", SessionID: "sess", Data: []byte{1}}); !errors.Is(err, ErrBadID) {
		t.Errorf("a stream id with a dot: %v", err)
	}

	read := func() []*ChunkMsg {
		r, err := c.ReadChunks(ctx, "s1", "sess")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var out []*ChunkMsg
		for {
			nctx, ncancel := context.WithTimeout(ctx, time.Second)
			m, err := r.Next(nctx)
			ncancel()
			if err != nil {
				return out
			}
			out = append(out, m)
		}
	}
	msgs := read()
	kinds := ""
	for _, m := range msgs {
		kinds += map[ChunkMsgKind]string{PartMsg: "p", EndMsg: "e", TakeoverMsg: "t"}[m.Kind]
	}
	if kinds != "ppetppe" {
		t.Fatalf("read %q, want ppetppe", kinds)
	}
	got := append(append([]byte(nil), msgs[0].Data...), msgs[1].Data...)
	if !bytes.Equal(got, data) || msgs[0].Start != 90000 || msgs[4].Start != 180000 || msgs[3].Delivery != 2 {
		t.Fatalf("parts or starts differ (start %d, %d, delivery %d)", msgs[0].Start, msgs[4].Start, msgs[3].Delivery)
	}
	if e := msgs[6].End; e.Seq != 1 || e.N != 41 || e.Size != len(data) || e.CRC != crc32.Checksum(data, ChunkCRC) {
		t.Fatalf("end: %+v", e)
	}
	// Chunk 0 done: purge it and the takeover mark.
	if err := c.PurgeChunks(ctx, "s1", "sess", msgs[4].StreamSeq); err != nil {
		t.Fatal(err)
	}
	if rest := read(); len(rest) != 3 || rest[0].Seq != 1 || rest[0].Part != 0 {
		t.Fatalf("after the purge: %d messages, first %+v", len(rest), rest[0])
	}
	if err := c.PurgeChunks(ctx, "s1", "sess", 0); err != nil {
		t.Fatal(err)
	}
	if rest := read(); len(rest) != 0 {
		t.Fatalf("after purging the session: %d messages", len(rest))
	}
}

// A job handed back with Retry comes again, counted; one not acknowledged before AckWait is
// redelivered.
func TestRetryRedelivers(t *testing.T) {
	c := connect(t, Config{SegmentAckWait: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seg := &Segment{StreamID: "s1", SessionID: "a", Seq: 1, From: FromIngest}
	if err := c.PublishSegment(ctx, seg); err != nil {
		t.Fatal(err)
	}
	deliveries := make(chan uint64, 10)
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.ConsumeSegments(cctx, 1, func(ctx context.Context, j *Job[Segment]) {
			deliveries <- j.Delivered
			switch j.Delivered {
			case 1:
				_ = j.Retry(10 * time.Millisecond)
			case 2:
				// dropped on the floor: AckWait brings it back
			default:
				_ = j.Ack(ctx)
			}
		})
	}()
	for want := uint64(1); want <= 3; want++ {
		select {
		case d := <-deliveries:
			if d != want {
				t.Fatalf("delivery count %d, want %d", d, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("delivery %d never came", want)
		}
	}
	ccancel()
	<-done
}

func TestKVCompareAndSwap(t *testing.T) {
	c := connect(t, Config{})
	ctx := context.Background()
	kv, err := c.KV(ctx, "test-kv")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := kv.Get(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	rev, err := kv.Create(ctx, "a", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "a", []byte("x")); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	rev2, err := kv.Update(ctx, "a", []byte("2"), rev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, "a", []byte("3"), rev); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale update: %v", err)
	}
	v, r, err := kv.Get(ctx, "a")
	if err != nil || string(v) != "2" || r != rev2 {
		t.Fatalf("get: %q %d %v", v, r, err)
	}
	keys, err := kv.Keys(ctx)
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys %v %v", keys, err)
	}
	if err := kv.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
}

// State survives a restart of the embedded server on the same data dir.
func TestEmbeddedServerPersists(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	c1 := connect(t, Config{DataDir: dir})
	kv, err := c1.KV(ctx, "persist")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	c1.Close()
	c2 := connect(t, Config{DataDir: dir})
	kv2, err := c2.KV(ctx, "persist")
	if err != nil {
		t.Fatal(err)
	}
	if v, _, err := kv2.Get(ctx, "k"); err != nil || string(v) != "v" {
		t.Fatalf("after restart: %q %v", v, err)
	}
}

func TestBadURL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Connect(ctx, Config{URL: "nats://user:secret@127.0.0.1:1"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		t.Fatal("connected to a closed port")
	}
	if bytes.Contains([]byte(err.Error()), []byte("secret")) {
		t.Fatalf("error leaks the password: %v", err)
	}
}

// With shards, each stream id's jobs land on one shard stream, and one consumer call drains
// them all.
func TestShardedStreams(t *testing.T) {
	c := connect(t, Config{Shards: 4})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 40
	for i := 0; i < n; i++ {
		job := &EncodeJob{StreamID: fmt.Sprintf("stream-%d", i), SessionID: "s", Profile: "default"}
		if err := c.PublishJob(ctx, job); err != nil {
			t.Fatal(err)
		}
	}
	used := 0
	for k := 0; k < 4; k++ {
		st, err := c.js.Stream(ctx, ShardStream(JobsStream, k, 4))
		if err != nil {
			t.Fatal(err)
		}
		info, _ := st.Info(ctx)
		if info.State.Msgs > 0 {
			used++
		}
	}
	if used < 3 {
		t.Errorf("only %d of 4 shards carry jobs", used)
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.ConsumeJobs(cctx, 3, func(ctx context.Context, j *Job[EncodeJob]) {
			_ = j.Ack(ctx)
			mu.Lock()
			seen[j.Body.StreamID] = true
			if len(seen) == n {
				ccancel()
			}
			mu.Unlock()
		})
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		ccancel()
		<-done
	}
	if len(seen) != n {
		t.Fatalf("consumed %d of %d", len(seen), n)
	}
}
