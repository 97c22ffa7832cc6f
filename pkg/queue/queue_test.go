package queue

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
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

// A chunk far above NATS's 1 MB max payload (a 2 s chunk of a 20 Mbit/s source is 5 MB)
// travels whole, and a retried publish of the same chunk is delivered once.
func TestLargeChunkDeliveredOnce(t *testing.T) {
	c := connect(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	data := make([]byte, 5<<20)
	_, _ = rand.Read(data)
	job := &Chunk{StreamID: "s1", SessionID: "sess", Seq: 7, Start: 90000, Duration: 180000, TSBase: 900000}
	for i := 0; i < 2; i++ { // the second publish is a retry
		if err := c.PublishChunk(ctx, job, data); err != nil {
			t.Fatal(err)
		}
	}

	var mu sync.Mutex
	var got []*Chunk
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.ConsumeChunks(cctx, 2, func(ctx context.Context, j *Job[Chunk]) {
			b, err := c.ChunkBytes(ctx, &j.Body)
			if err != nil {
				t.Error(err)
				return
			}
			if !bytes.Equal(b, data) {
				t.Error("chunk bytes differ")
			}
			if err := j.Ack(ctx); err != nil {
				t.Error(err)
			}
			mu.Lock()
			got = append(got, &j.Body)
			mu.Unlock()
		})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Give a duplicate every chance to show up before stopping.
	time.Sleep(2500 * time.Millisecond)
	ccancel()
	<-done
	if len(got) != 1 {
		t.Fatalf("delivered %d times, want once", len(got))
	}
	if got[0].ID() != "s1/sess/7" || got[0].Size != len(data) || got[0].TSBase != 900000 {
		t.Fatalf("job = %+v", got[0])
	}
}

// A job handed back with Retry comes again, counted; one not acknowledged before AckWait is
// redelivered.
func TestRetryRedelivers(t *testing.T) {
	c := connect(t, Config{AckWait: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seg := &Segment{StreamID: "s1", SessionID: "a", Seq: 1}
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
		job := &Chunk{StreamID: fmt.Sprintf("stream-%d", i), SessionID: "s", Seq: 0}
		if err := c.PublishChunk(ctx, job, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	used := 0
	for k := 0; k < 4; k++ {
		st, err := c.js.Stream(ctx, ShardStream(ChunksStream, k, 4))
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
		_ = c.ConsumeChunks(cctx, 3, func(ctx context.Context, j *Job[Chunk]) {
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

// A worker with one slot runs one job at a time; jobs that Release their slot (passthrough:
// no encoder) run side by side, while an unreleased job still holds its slot alone.
func TestReleasedJobsFreeTheirSlot(t *testing.T) {
	c := connect(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 6 {
		job := &Chunk{StreamID: "s1", SessionID: "sess", Seq: uint64(i), Profile: map[bool]string{true: "light", false: "heavy"}[i < 4]}
		if err := c.PublishChunk(ctx, job, nil); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	running, heavy, peakLight, peakHeavy, done := 0, 0, 0, 0, 0
	release := make(chan struct{})
	cctx, ccancel := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		_ = c.ConsumeChunks(cctx, 1, func(ctx context.Context, j *Job[Chunk]) {
			light := j.Body.Profile == "light"
			if light {
				j.Release()
			}
			mu.Lock()
			if light {
				running++
				peakLight = max(peakLight, running)
			} else {
				heavy++
				peakHeavy = max(peakHeavy, heavy)
			}
			mu.Unlock()
			if light {
				<-release // held until every light job runs at once
			} else {
				time.Sleep(100 * time.Millisecond)
			}
			mu.Lock()
			if light {
				running--
			} else {
				heavy--
			}
			done++
			mu.Unlock()
			_ = j.Ack(ctx)
		})
	}()
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			ok := cond()
			mu.Unlock()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (running %d, done %d)", what, running, done)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitUntil("four light jobs at once on one slot", func() bool { return peakLight >= 4 })
	close(release)
	waitUntil("all six jobs", func() bool { return done == 6 })
	ccancel()
	<-stopped
	if peakHeavy != 1 {
		t.Errorf("heavy jobs ran %d at once on one slot", peakHeavy)
	}
}
