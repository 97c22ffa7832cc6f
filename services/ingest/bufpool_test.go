package ingest

import "testing"

// However the pool's buffers come and go (sync.Pool may drop any of them, and under the race
// detector does so at random), a chunk's buffer is empty and has the room asked for: a
// recycled buffer's bytes never show in the next chunk, and a recycled buffer too small for
// the next chunk is not handed out for it.
func TestChunkBufferEmptyWithRoom(t *testing.T) {
	for round := range 50 {
		recycle(append(chunkBuffer(100), make([]byte, 100)...))
		recycle(append(chunkBuffer(10000), make([]byte, 10000)...))
		recycle(nil) // an empty chunk's buffer: nothing to give back
		for _, n := range []int{5000, 20000, 100, 0} {
			b := chunkBuffer(n)
			if len(b) != 0 || cap(b) < n {
				t.Fatalf("round %d: chunkBuffer(%d) has len %d cap %d", round, n, len(b), cap(b))
			}
			recycle(append(b, 1, 2, 3))
		}
	}
}
