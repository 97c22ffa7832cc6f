package queue

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
)

// Media bytes that fit in a message travel in it, raw, after the message's JSON: a chunk's
// MPEG-TS, a segment's fragments. An object costs a put (hashed with SHA-256), a get (a
// consumer made and deleted on the server, the bytes hashed again) and a delete, each its own
// round trip; a 2 s passthrough chunk at 3 Mbit/s (~0.8 MB) fits in NATS's default 1 MB
// max_payload. What does not fit still goes beside the message as an object (the claim check),
// so chunk and segment sizes stay unbounded by the message size.
//
// The bytes are not base64 in the JSON (a third larger, and slower to encode and decode): the
// body is the JSON followed by the bytes, and the hdrJSON header gives the JSON's length. The
// JSON says how long each piece is (Chunk.Size, Rendition.InitLen and MediaLen), so pieces are
// taken back in order.
const hdrJSON = "Gopcast-Json"

// inlineRoom is the part of the server's max_payload kept for a message's JSON and headers
// when bytes go in the message.
const inlineRoom = 64 << 10

// attacher is a message type that carries bytes after its JSON.
type attacher interface {
	// detach returns the value to encode as JSON, without the bytes, and the bytes in order.
	detach() (any, [][]byte)
	// attach gives a decoded message its bytes back, in detach's order.
	attach(b []byte) error
}

// inlineMax is the most bytes a message may carry after its JSON.
func (c *Conn) inlineMax() int {
	mp := int(c.nc.MaxPayload())
	if mp <= 0 {
		mp = 1 << 20 // nats.go's MaxPayload before the connection's INFO: the server default
	}
	return max(0, mp-inlineRoom)
}

// encodeMsg returns a message's body, with its header when it carries bytes. The body of a
// message with bytes is built in dst when dst is not nil (a reused buffer); with a nil dst it
// is its JSON with the bytes appended: for one piece (a chunk), one allocation whose copied
// part is not zeroed first. A message without bytes is its JSON alone.
func encodeMsg(dst []byte, v any) ([]byte, nats.Header, error) {
	a, ok := v.(attacher)
	if !ok {
		j, err := json.Marshal(v)
		return j, nil, err
	}
	jv, parts := a.detach()
	j, err := json.Marshal(jv)
	if err != nil {
		return nil, nil, err
	}
	var h nats.Header
	if len(parts) > 0 {
		h = nats.Header{}
		h.Set(hdrJSON, strconv.Itoa(len(j)))
	}
	body := j
	if dst != nil {
		n := len(j)
		for _, p := range parts {
			n += len(p)
		}
		if cap(dst) < n {
			dst = make([]byte, 0, n+n/4)
		}
		body = append(dst[:0], j...)
	}
	for _, p := range parts {
		body = append(body, p...)
	}
	return body, h, nil
}

// decodeMsg decodes a message's body into v (a pointer), giving it the bytes after the JSON.
// The bytes alias data.
func decodeMsg(h nats.Header, data []byte, v any) error {
	hv := h.Get(hdrJSON)
	if hv == "" {
		return json.Unmarshal(data, v)
	}
	n, err := strconv.Atoi(hv)
	if err != nil || n < 0 || n > len(data) {
		return fmt.Errorf("queue: %s header %q does not fit a %d-byte body", hdrJSON, hv, len(data))
	}
	if err := json.Unmarshal(data[:n], v); err != nil {
		return err
	}
	a, ok := v.(attacher)
	if !ok {
		return fmt.Errorf("queue: %T carries no bytes, but the message has %d", v, len(data)-n)
	}
	return a.attach(data[n:len(data):len(data)])
}

// errAttached says the bytes after a message's JSON do not match what the JSON says of them.
var errAttached = errors.New("queue: the message's bytes do not match its JSON")

// take cuts the next n bytes off *b.
func take(b *[]byte, n int) ([]byte, error) {
	if n < 0 || n > len(*b) {
		return nil, fmt.Errorf("%w: %d bytes where %d remain", errAttached, n, len(*b))
	}
	p := (*b)[:n:n]
	*b = (*b)[n:]
	return p, nil
}

func (c *Chunk) detach() (any, [][]byte) {
	if len(c.Data) == 0 {
		return c, nil
	}
	return c, [][]byte{c.Data}
}

func (c *Chunk) attach(b []byte) error {
	if c.Object != "" || len(b) != c.Size {
		return fmt.Errorf("%w: a chunk of %d bytes (object %q) carries %d", errAttached, c.Size, c.Object, len(b))
	}
	c.Data = b
	return nil
}

func (s *Segment) detach() (any, [][]byte) {
	var parts [][]byte
	out := *s
	out.Renditions = make([]Rendition, len(s.Renditions))
	for i, r := range s.Renditions {
		if len(r.InitData) > 0 {
			parts = append(parts, r.InitData)
			r.InitLen, r.InitData = len(r.InitData), nil
		}
		if len(r.MediaData) > 0 {
			parts = append(parts, r.MediaData)
			r.MediaLen, r.MediaData = len(r.MediaData), nil
		}
		out.Renditions[i] = r
	}
	return &out, parts
}

func (s *Segment) attach(b []byte) error {
	for i := range s.Renditions {
		r := &s.Renditions[i]
		var err error
		if r.InitLen > 0 {
			if r.InitData, err = take(&b, r.InitLen); err != nil {
				return err
			}
		}
		if r.MediaLen > 0 {
			if r.MediaData, err = take(&b, r.MediaLen); err != nil {
				return err
			}
		}
	}
	if len(b) > 0 {
		return fmt.Errorf("%w: %d bytes left over", errAttached, len(b))
	}
	return nil
}
