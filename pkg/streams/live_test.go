package streams

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/gopcast/gopcast/pkg/queue"
)

func openRegistry(t *testing.T) *Registry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, err := queue.Connect(ctx, queue.Config{DataDir: t.TempDir()}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	r, err := Open(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// The live lease as the ingest uses it: one publisher at a time, health through heartbeats,
// released on the way out, and a lease whose ingest died (no heartbeat, no release) taken
// over once stale, with its session closed as "ingest lost".
func TestLiveLease(t *testing.T) {
	r := openRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, _, err := r.Create(ctx, "lease", "default", false)
	if err != nil {
		t.Fatal(err)
	}

	a, err := r.Claim(ctx, st.ID, "sess-a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Claim(ctx, st.ID, "sess-b"); !errors.Is(err, ErrBusy) {
		t.Fatalf("second claim on a live stream: %v, want ErrBusy", err)
	}
	h := Health{VideoCodec: "avc1.64001f", Width: 1280, Height: 720, KeyframeInterval: 20,
		Warnings: []string{"keyframe interval 20.0 s is over 4 s"}}
	if err := a.Heartbeat(ctx, h); err != nil {
		t.Fatal(err)
	}
	live, err := r.Live(ctx, st.ID)
	if err != nil || live == nil || live.ID != "sess-a" || live.Health == nil || live.Health.KeyframeInterval != 20 {
		t.Fatalf("live = %+v, %v", live, err)
	}
	if err := a.Release(ctx, 1234, 0, "publisher left"); err != nil {
		t.Fatal(err)
	}
	if live, err := r.Live(ctx, st.ID); err != nil || live != nil {
		t.Fatalf("after release: live = %+v, %v", live, err)
	}
	// Released twice (a retry) is harmless.
	if err := a.Release(ctx, 1234, 0, "publisher left"); err != nil {
		t.Fatal(err)
	}

	// A heartbeat that timed out during a NATS outage and was applied after the reconnect
	// moves the lease to a revision the claim never saw: the claim is still the owner.
	a2, err := r.Claim(ctx, st.ID, "sess-a2")
	if err != nil {
		t.Fatal(err)
	}
	late := a2.Session()
	late.UpdatedAt = time.Now()
	buf, _ := json.Marshal(late)
	if _, err := r.kv.Put(ctx, "live."+st.ID, buf); err != nil {
		t.Fatal(err)
	}
	if err := a2.Heartbeat(ctx, h); err != nil {
		t.Fatalf("heartbeat after a late-applied heartbeat: %v, want the lease kept", err)
	}
	if err := a2.Heartbeat(ctx, h); err != nil {
		t.Fatalf("second heartbeat: %v", err)
	}
	if err := a2.Release(ctx, 1, 0, "publisher left"); err != nil {
		t.Fatal(err)
	}
	if live, err := r.Live(ctx, st.ID); err != nil || live != nil {
		t.Fatalf("after release: live = %+v, %v", live, err)
	}

	// A publisher whose ingest died: its lease stops being refreshed.
	b, err := r.Claim(ctx, st.ID, "sess-b")
	if err != nil {
		t.Fatal(err)
	}
	stale := b.Session()
	stale.UpdatedAt = time.Now().Add(-LiveTimeout - time.Second)
	buf, _ = json.Marshal(stale)
	if _, err := r.kv.Put(ctx, "live."+st.ID, buf); err != nil {
		t.Fatal(err)
	}
	if live, err := r.Live(ctx, st.ID); err != nil || live != nil {
		t.Fatalf("a stale lease still counts as live: %+v, %v", live, err)
	}
	c, err := r.Claim(ctx, st.ID, "sess-c")
	if err != nil {
		t.Fatalf("a stale lease blocks a new publisher: %v", err)
	}
	// The dead ingest's claim, if it ever wakes up, is told it lost the lease and cannot
	// free the new one.
	if err := b.Heartbeat(ctx, h); !errors.Is(err, ErrBusy) {
		t.Fatalf("heartbeat on a lost lease: %v, want ErrBusy", err)
	}
	if err := b.Release(ctx, 0, 0, "late"); err != nil {
		t.Fatal(err)
	}
	if live, err := r.Live(ctx, st.ID); err != nil || live == nil || live.ID != "sess-c" {
		t.Fatalf("the old claim's release freed the new lease: %+v, %v", live, err)
	}
	sessions, err := r.Sessions(ctx, st.ID, 10)
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]string{}
	for _, s := range sessions {
		reasons[s.ID] = s.EndReason
	}
	if reasons["sess-a"] != "publisher left" || reasons["sess-c"] != "" {
		t.Errorf("session end reasons: %v", reasons)
	}
	t.Logf("dead ingest's session ends as %q", reasons["sess-b"])

	// A live session's figures come from its heartbeats (the lease), not its session record,
	// which is written at the start and the end.
	h.BytesIn = 4321
	if err := c.Heartbeat(ctx, h); err != nil {
		t.Fatal(err)
	}
	cs := sessionNamed(t, r, st.ID, "sess-c")
	if cs.EndedAt != nil || cs.Health == nil || cs.Health.BytesIn != 4321 || !cs.UpdatedAt.After(cs.StartedAt) {
		t.Fatalf("live session as listed: %+v", cs)
	}
	// Its ingest dies: the session is listed as lost at its last heartbeat.
	stale = c.Session()
	stale.UpdatedAt = time.Now().Add(-LiveTimeout - time.Second).UTC().Truncate(time.Millisecond)
	buf, _ = json.Marshal(stale)
	if _, err := r.kv.Put(ctx, "live."+st.ID, buf); err != nil {
		t.Fatal(err)
	}
	cs = sessionNamed(t, r, st.ID, "sess-c")
	if cs.EndReason != "ingest lost" || cs.EndedAt == nil || !cs.EndedAt.Equal(stale.UpdatedAt) {
		t.Fatalf("session of a dead ingest as listed: %+v, want ended at its last heartbeat %v", cs, stale.UpdatedAt)
	}
}

func sessionNamed(t *testing.T, r *Registry, streamID, id string) *Session {
	t.Helper()
	sessions, err := r.Sessions(context.Background(), streamID, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sessions {
		if s.ID == id {
			return s
		}
	}
	t.Fatalf("session %s not listed", id)
	return nil
}

// Segment numbers run on across a stream's sessions: a session that ends gives back what it
// did not use, a reservation grows as chunks need it, and a session whose ingest died leaves
// its whole reservation behind, so the next session never reuses a number it may have written.
func TestSegmentNumbers(t *testing.T) {
	r := openRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, _, err := r.Create(ctx, "numbers", "default", false)
	if err != nil {
		t.Fatal(err)
	}
	a, err := r.Claim(ctx, st.ID, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if a.Base() != 0 {
		t.Fatalf("first session's base %d", a.Base())
	}
	for seq := uint64(0); seq < 3*reserveAhead; seq++ {
		if err := a.Reserve(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	const used = 3 * reserveAhead // seqs 0 to used-1
	if err := a.Release(ctx, 0, used, "publisher left"); err != nil {
		t.Fatal(err)
	}
	b, err := r.Claim(ctx, st.ID, "s2")
	if err != nil {
		t.Fatal(err)
	}
	if b.Base() != used {
		t.Fatalf("second session's base %d, want %d (where the first ended)", b.Base(), used)
	}
	if err := b.Reserve(ctx, 5); err != nil {
		t.Fatal(err)
	}
	// s2's ingest dies: its lease goes stale, nothing is released.
	stale, _ := json.Marshal(Session{ID: "s2", StreamID: st.ID, UpdatedAt: time.Now().Add(-2 * LiveTimeout)})
	if _, err := r.kv.Put(ctx, "live."+st.ID, stale); err != nil {
		t.Fatal(err)
	}
	c, err := r.Claim(ctx, st.ID, "s3")
	if err != nil {
		t.Fatal(err)
	}
	if c.Base() < b.Base()+6 || c.Base() != b.next {
		t.Fatalf("third session's base %d: s2 (base %d) reserved below %d", c.Base(), b.Base(), b.next)
	}
	// The dead session's numbers are no longer its own.
	if err := b.Reserve(ctx, 10*reserveAhead); !errors.Is(err, ErrBusy) {
		t.Fatalf("the replaced session reserved more: %v", err)
	}
}
