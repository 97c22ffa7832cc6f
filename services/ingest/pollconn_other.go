//go:build !linux

package ingest

import "net"

// detach is Linux-only: elsewhere a publisher's connection stays in Go's poller.
func detach(net.Conn) (int, error) { return -1, errPollUnsupported }

func readSocket(int, []byte) (int, error)  { return 0, errPollUnsupported }
func writeSocket(int, []byte) (int, error) { return 0, errPollUnsupported }

func shutdownSocket(int) error { return errPollUnsupported }
func closeSocket(int) error    { return errPollUnsupported }
