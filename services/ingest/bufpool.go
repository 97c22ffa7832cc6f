package ingest

import (
	"sync"
	"sync/atomic"
)

// chunkBuffers recycles the memory chunks are written to. A 3 Mbit/s stream writes a fresh
// 0.75 MB chunk every 2 s; allocating each anew had the runtime zero it and the kernel fault
// its pages in, about a twentieth of the ingest's CPU. Every session of the process shares it.
var chunkBuffers sync.Pool

// chunkBuffer returns an empty buffer with room for at least n bytes.
func chunkBuffer(n int) []byte {
	if p, ok := chunkBuffers.Get().(*[]byte); ok {
		if cap(*p) >= n {
			return (*p)[:0]
		}
		// Too small for this stream: dropped, so the pool drifts to the sizes in use.
	}
	return make([]byte, 0, n)
}

// sharedChunk is a finished chunk's bytes, held by the outbox and by the live chunk's
// feed; the last holder to let go gives the memory back to chunkBuffers. Nothing may keep
// the bytes after letting go (queue.Conn copies them into its messages).
type sharedChunk struct {
	data    []byte
	holders atomic.Int32
}

func newSharedChunk(data []byte, holders int32) *sharedChunk {
	c := &sharedChunk{data: data}
	c.holders.Store(holders)
	return c
}

// bytes is the chunk's bytes; a nil sharedChunk is an empty chunk.
func (c *sharedChunk) bytes() []byte {
	if c == nil {
		return nil
	}
	return c.data
}

// hold adds a holder, who lets go with release.
func (c *sharedChunk) hold() { c.holders.Add(1) }

// release lets go of the bytes.
func (c *sharedChunk) release() {
	if c == nil {
		return
	}
	switch n := c.holders.Add(-1); {
	case n == 0:
		b := c.data[:0]
		c.data = nil
		chunkBuffers.Put(&b)
	case n < 0:
		panic("ingest: chunk bytes released more times than held")
	}
}
