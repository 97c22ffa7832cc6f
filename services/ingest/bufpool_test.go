package ingest

import "testing"

func TestSharedChunkReleasedByLastHolder(t *testing.T) {
	data := chunkBuffer(1000)
	if len(data) != 0 || cap(data) < 1000 {
		t.Fatalf("chunkBuffer(1000): len %d cap %d", len(data), cap(data))
	}
	data = append(data, "chunk"...)
	sc := newSharedChunk(data, 1)
	sc.hold() // a live feed holds it too
	sc.release()
	if string(sc.bytes()) != "chunk" {
		t.Fatalf("bytes %q after the first of two holders let go", sc.bytes())
	}
	sc.release()
	if sc.bytes() != nil {
		t.Fatalf("bytes %q after the last holder let go", sc.bytes())
	}
	defer func() {
		if recover() == nil {
			t.Error("a third release did not panic")
		}
	}()
	sc.release()
}

func TestNilSharedChunk(t *testing.T) {
	var sc *sharedChunk // an empty last chunk
	if sc.bytes() != nil {
		t.Error("nil chunk has bytes")
	}
	sc.release()
}
