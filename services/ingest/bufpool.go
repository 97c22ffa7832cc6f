package ingest

import "sync"

// chunkBuffers recycles the memory chunks are written to (their frames' bytes, and the MPEG-TS
// for the encoder). A 3 Mbit/s stream fills 0.75 MB every 2 s; allocating each anew had the
// runtime zero it and the kernel fault its pages in, about a twentieth of the ingest's CPU.
// Every session of the process shares it.
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

// recycle gives a chunk's buffer back once nothing refers to it any more (the queue and
// storage have copied what they were given by the time their calls return).
func recycle(b []byte) {
	if cap(b) == 0 {
		return
	}
	b = b[:0]
	chunkBuffers.Put(&b)
}
