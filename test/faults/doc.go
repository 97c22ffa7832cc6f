// Package faults proves gopcast's failure model (design.md) the hard way: every role runs as its
// own `gopcast ROLE` process on loopback, wired to a standalone `gopcast nats` JetStream server
// and a MinIO bucket, and the tests kill them (SIGKILL, as a dying pod), stop them (SIGTERM),
// cut storage and the queue, and drop publishers, while a watcher plays the part of a player:
// it polls the playlists in the bucket over HTTP, downloads every segment as it is listed, and
// at the end checks that every segment number was listed once, in order, with none missing,
// that media sequence numbers never went backwards, and that the timelines decode continuously
// (ffprobe).
//
// The gopcast binary is built once per run (TestMain); MinIO and ffmpeg come from
// internal/testenv. The package holds only tests (this file is its documentation).
//
// Environment:
//
//	GOPCAST_FAULT_LOGS=1            show every process's log, also when a test passes
//	GOPCAST_FAULT_TRACE=1           log every playlist change the watcher sees (and, in
//	                                TestLoad, the JetStream consumers every 10 s)
//	GOPCAST_FAULT_LOAD_STREAMS=50   TestLoad: concurrent publishers
//	GOPCAST_FAULT_LOAD_SECONDS=60   TestLoad: media each publishes
//	GOPCAST_FAULT_LOAD_WORKERS=2    TestLoad: transcoders and packagers
//	GOPCAST_FAULT_LOAD_PUBLISHER=ffmpeg  TestLoad: ffmpeg -c copy publishers, not cmd/loadgen
package faults
