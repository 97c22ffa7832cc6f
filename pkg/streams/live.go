package streams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/gopcast/gopcast/pkg/queue"
)

// LiveTimeout is how old a live claim's heartbeat may be before the stream counts as idle:
// an ingest that died without a goodbye frees its streams after this.
const LiveTimeout = 10 * time.Second

// ErrBusy means the stream already has a publisher.
var ErrBusy = errors.New("stream already has a publisher")

// Health is what ingest measures of a live session's incoming media.
type Health struct {
	VideoCodec       string   `json:"video_codec"`
	AudioCodec       string   `json:"audio_codec,omitempty"`
	Width            int      `json:"width"`
	Height           int      `json:"height"`
	FrameRate        float64  `json:"frame_rate"`
	BitrateKbps      float64  `json:"bitrate_kbps"`       // all media, over the last 5 s
	VideoBitrateKbps float64  `json:"video_bitrate_kbps"` // over the last 5 s
	AudioBitrateKbps float64  `json:"audio_bitrate_kbps"` // over the last 5 s
	KeyframeInterval float64  `json:"keyframe_interval_s"`
	BytesIn          uint64   `json:"bytes_in"`
	Warnings         []string `json:"warnings"`
}

// Session is one publish of a stream.
type Session struct {
	ID        string     `json:"id"`
	StreamID  string     `json:"stream_id"`
	StartedAt time.Time  `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
	BytesIn   uint64     `json:"bytes_in"`
	EndReason string     `json:"end_reason,omitempty"`
	Remote    string     `json:"-"`
	// UpdatedAt is the last heartbeat of a live session.
	UpdatedAt time.Time `json:"updated_at"`
	Health    *Health   `json:"health,omitempty"`
}

// Live reports whether the session is still being published.
func (s *Session) Live(now time.Time) bool {
	return s.EndedAt == nil && now.Sub(s.UpdatedAt) < LiveTimeout
}

// Claim is a live publish lease on a stream, held by one ingest. It also holds the session's
// segment numbers: chunk seq of the session is segment Base()+seq, and the stream's numbers run
// on across sessions (a player's media sequence never goes back, a URL never names two
// segments). Numbers are reserved in blocks before use (Reserve), so a session whose ingest
// dies leaves at most a block unused and never a number the next session could reuse.
type Claim struct {
	reg  *Registry
	key  string
	rev  uint64
	sess Session

	nmu  sync.Mutex
	nrev uint64 // revision of the stream's numbers record
	base uint64
	next uint64 // numbers below this are reserved for the session (or taken before it)
}

// numbers is a stream's numbering record: numbers below Next are used or reserved, Session's
// from Base.
type numbers struct {
	Session string `json:"session"`
	Base    uint64 `json:"base"`
	Next    uint64 `json:"next"`
}

// reserveAhead is how many numbers a session reserves at a time: a reservation every minute
// or so at 2 s chunks, and what a crashed session can leave unused.
const reserveAhead = 32

func numbersKey(streamID string) string { return "numbers." + streamID }

// Claim takes the stream's live lease for a new session, or fails with ErrBusy while another
// publisher's lease is fresh.
func (r *Registry) Claim(ctx context.Context, streamID, sessionID string) (*Claim, error) {
	now := time.Now().UTC()
	c := &Claim{reg: r, key: "live." + streamID, sess: Session{ID: sessionID, StreamID: streamID, StartedAt: now, UpdatedAt: now}}
	b, _ := json.Marshal(c.sess)
	rev, err := r.kv.Create(ctx, c.key, b)
	if errors.Is(err, queue.ErrExists) {
		old, oldRev, gerr := r.kv.Get(ctx, c.key)
		if gerr != nil {
			return nil, gerr
		}
		var cur Session
		if json.Unmarshal(old, &cur) == nil && cur.Live(now) {
			return nil, ErrBusy
		}
		// A stale lease: its ingest died. Close its session record and take over.
		if cur.ID != "" {
			end := cur.UpdatedAt
			cur.EndedAt, cur.EndReason, cur.Health = &end, "ingest lost", nil
			_ = r.putSession(ctx, &cur)
		}
		rev, err = r.kv.Update(ctx, c.key, b, oldRev)
		if errors.Is(err, queue.ErrConflict) {
			return nil, ErrBusy
		}
	}
	if err != nil {
		return nil, err
	}
	c.rev = rev
	if err := r.putSession(ctx, &c.sess); err != nil {
		return nil, err
	}
	if err := c.startNumbers(ctx); err != nil {
		return nil, fmt.Errorf("streams: segment numbers of %s: %w", streamID, err)
	}
	return c, nil
}

// startNumbers begins the session's numbers where the stream's last session's end (or its
// reservation) left them.
func (c *Claim) startNumbers(ctx context.Context) error {
	key := numbersKey(c.sess.StreamID)
	for attempt := 0; attempt < 5; attempt++ {
		var cur numbers
		b, rev, err := c.reg.kv.Get(ctx, key)
		switch {
		case errors.Is(err, queue.ErrNotFound):
			rev = 0
		case err != nil:
			return err
		default:
			if err := json.Unmarshal(b, &cur); err != nil {
				return fmt.Errorf("corrupt numbers record: %w", err)
			}
		}
		n := numbers{Session: c.sess.ID, Base: cur.Next, Next: cur.Next + reserveAhead}
		nb, _ := json.Marshal(n)
		if rev == 0 {
			rev, err = c.reg.kv.Create(ctx, key, nb)
		} else {
			rev, err = c.reg.kv.Update(ctx, key, nb, rev)
		}
		if errors.Is(err, queue.ErrExists) || errors.Is(err, queue.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		c.nrev, c.base, c.next = rev, n.Base, n.Next
		return nil
	}
	return ErrConflict
}

// Base is the segment number of the session's chunk 0.
func (c *Claim) Base() uint64 { return c.base }

// Reserve makes sure the session's chunk seq has its number reserved, extending the
// reservation when it does not (one write per reserveAhead chunks). ErrBusy means another
// session took the stream's numbers over: this one must not use them.
func (c *Claim) Reserve(ctx context.Context, seq uint64) error {
	c.nmu.Lock()
	defer c.nmu.Unlock()
	if c.base+seq < c.next {
		return nil
	}
	return c.setNext(ctx, c.base+seq+reserveAhead)
}

// setNext moves the stream's next free number to next while the record is still this
// session's; c.nmu is held.
func (c *Claim) setNext(ctx context.Context, next uint64) error {
	key := numbersKey(c.sess.StreamID)
	n := numbers{Session: c.sess.ID, Base: c.base, Next: next}
	nb, _ := json.Marshal(n)
	rev, err := c.reg.kv.Update(ctx, key, nb, c.nrev)
	if errors.Is(err, queue.ErrConflict) {
		// A write that timed out may have been applied: the record is read back.
		b, curRev, gerr := c.reg.kv.Get(ctx, key)
		if gerr != nil {
			return gerr
		}
		var cur numbers
		if json.Unmarshal(b, &cur) != nil || cur.Session != c.sess.ID {
			return ErrBusy
		}
		rev, err = c.reg.kv.Update(ctx, key, nb, curRev)
	}
	if errors.Is(err, queue.ErrConflict) || errors.Is(err, queue.ErrNotFound) {
		return ErrBusy
	}
	if err != nil {
		return err
	}
	c.nrev, c.next = rev, next
	return nil
}

// Heartbeat refreshes the lease with current figures. ErrBusy means the lease was lost. The
// session record is written when the session starts and ends; while it is live, Sessions reads
// its figures from the lease (one write per heartbeat instead of two).
//
// A heartbeat that timed out during a NATS outage may still be applied later (nats.go sends
// what it buffered once reconnected), moving the lease to a revision this claim never saw. So a
// revision conflict is not proof of loss: the lease is read back, and if it still names this
// session its revision is adopted and the update tried again.
func (c *Claim) Heartbeat(ctx context.Context, h Health) error {
	c.sess.UpdatedAt = time.Now().UTC()
	c.sess.BytesIn = h.BytesIn
	c.sess.Health = &h
	b, _ := json.Marshal(c.sess)
	rev, err := c.reg.kv.Update(ctx, c.key, b, c.rev)
	if errors.Is(err, queue.ErrConflict) {
		cur, curRev, gerr := c.reg.kv.Get(ctx, c.key)
		if gerr != nil {
			if errors.Is(gerr, queue.ErrNotFound) {
				return ErrBusy
			}
			return gerr
		}
		var s Session
		if json.Unmarshal(cur, &s) != nil || s.ID != c.sess.ID {
			return ErrBusy
		}
		rev, err = c.reg.kv.Update(ctx, c.key, b, curRev)
	}
	if errors.Is(err, queue.ErrConflict) || errors.Is(err, queue.ErrNotFound) {
		return ErrBusy
	}
	if err != nil {
		return err
	}
	c.rev = rev
	return nil
}

// Release ends the session and frees the lease. chunks is how many segment numbers the
// session used (its chunks' seqs are below it): the rest of its reservation goes back, so the
// next session's numbers follow on without a jump.
func (c *Claim) Release(ctx context.Context, bytesIn, chunks uint64, reason string) error {
	c.nmu.Lock()
	var errN error
	if c.base+chunks < c.next {
		errN = c.setNext(ctx, c.base+chunks)
	}
	c.nmu.Unlock()
	if errors.Is(errN, ErrBusy) {
		errN = nil // the numbers are another session's now; nothing of ours to give back
	}
	now := time.Now().UTC()
	c.sess.EndedAt, c.sess.UpdatedAt, c.sess.BytesIn, c.sess.EndReason, c.sess.Health = &now, now, bytesIn, reason, nil
	err1 := c.reg.putSession(ctx, &c.sess)
	// Only delete our own lease; a newer one stays.
	cur, _, err := c.reg.kv.Get(ctx, c.key)
	if err == nil {
		var s Session
		if json.Unmarshal(cur, &s) == nil && s.ID == c.sess.ID {
			err = c.reg.kv.Delete(ctx, c.key)
		}
	} else if errors.Is(err, queue.ErrNotFound) {
		err = nil
	}
	return errors.Join(err1, err, errN)
}

// Session is the claim's session record.
func (c *Claim) Session() Session { return c.sess }

func (r *Registry) putSession(ctx context.Context, s *Session) error {
	b, _ := json.Marshal(s)
	_, err := r.kv.Put(ctx, "session."+s.StreamID+"."+s.ID, b)
	return err
}

// Live returns the stream's live session, or nil when it is idle.
func (r *Registry) Live(ctx context.Context, streamID string) (*Session, error) {
	s, err := r.leaseOf(ctx, streamID)
	if s == nil || err != nil {
		return nil, err
	}
	if !s.Live(time.Now()) {
		return nil, nil
	}
	return s, nil
}

// leaseOf returns the session the stream's live lease names, fresh or stale, or nil.
func (r *Registry) leaseOf(ctx context.Context, streamID string) (*Session, error) {
	b, _, err := r.kv.Get(ctx, "live."+streamID)
	if errors.Is(err, queue.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s Session
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("streams: corrupt live record of %s: %w", streamID, err)
	}
	return &s, nil
}

// Sessions lists a stream's publish sessions, newest first, at most limit.
func (r *Registry) Sessions(ctx context.Context, streamID string, limit int) ([]*Session, error) {
	keys, err := r.kv.KeysMatching(ctx, "session."+streamID+".*")
	if err != nil {
		return nil, err
	}
	sort.Sort(sort.Reverse(sort.StringSlice(keys))) // session ids are UUIDv7: newest last
	now := time.Now()
	var out []*Session
	var lease *Session // the stream's live lease, read once if a session is not ended
	leaseRead := false
	for _, k := range keys {
		if len(out) == limit {
			break
		}
		b, _, err := r.kv.Get(ctx, k)
		if errors.Is(err, queue.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var s Session
		if err := json.Unmarshal(b, &s); err != nil {
			continue
		}
		if s.EndedAt == nil && !leaseRead {
			leaseRead = true
			if lease, err = r.leaseOf(ctx, streamID); err != nil {
				return nil, err
			}
		}
		if s.EndedAt == nil && lease != nil && lease.ID == s.ID {
			s = *lease // its heartbeats: figures and last beat
		}
		if s.EndedAt == nil && !s.Live(now) {
			end := s.UpdatedAt
			s.EndedAt, s.EndReason = &end, "ingest lost"
		}
		out = append(out, &s)
	}
	return out, nil
}

// DeleteSessions removes a deleted stream's session and live records.
func (r *Registry) DeleteSessions(ctx context.Context, streamID string) error {
	keys, err := r.kv.KeysMatching(ctx, "session."+streamID+".*")
	if err != nil {
		return err
	}
	for _, k := range keys {
		_ = r.kv.Delete(ctx, k)
	}
	return errors.Join(r.kv.Delete(ctx, "live."+streamID), r.kv.Delete(ctx, numbersKey(streamID)))
}
