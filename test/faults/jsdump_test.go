package faults

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// jetStreamState describes every JetStream stream and consumer of the cluster's NATS server:
// what a failure message needs to tell a stuck queue from a stuck worker.
func (c *cluster) jetStreamState() string {
	nc, err := nats.Connect("nats://"+c.natsAddr, nats.Timeout(2*time.Second))
	if err != nil {
		return fmt.Sprintf("(NATS unreachable: %v)", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var b strings.Builder
	names := js.StreamNames(ctx)
	for name := range names.Name() {
		s, err := js.Stream(ctx, name)
		if err != nil {
			fmt.Fprintf(&b, "stream %s: %v\n", name, err)
			continue
		}
		info, err := s.Info(ctx)
		if err != nil {
			fmt.Fprintf(&b, "stream %s: %v\n", name, err)
			continue
		}
		st := info.State
		if strings.HasPrefix(name, "KV_") || strings.HasPrefix(name, "OBJ_") {
			fmt.Fprintf(&b, "stream %s: msgs %d, seq %d..%d\n", name, st.Msgs, st.FirstSeq, st.LastSeq)
			continue
		}
		fmt.Fprintf(&b, "stream %s: msgs %d, seq %d..%d, deleted %d\n", name, st.Msgs, st.FirstSeq, st.LastSeq, st.NumDeleted)
		cons := s.ListConsumers(ctx)
		for ci := range cons.Info() {
			fmt.Fprintf(&b, "  consumer %s: delivered stream seq %d, ack floor stream seq %d, pending %d, ack pending %d, redelivered %d, waiting %d\n",
				ci.Name, ci.Delivered.Stream, ci.AckFloor.Stream, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting)
		}
	}
	return b.String()
}

// ackPending is how many messages the durable consumer of a work stream has handed out and
// not seen acknowledged yet: jobs in flight.
func (c *cluster) ackPending(stream, consumer string) (int, error) {
	nc, err := nats.Connect("nats://"+c.natsAddr, nats.Timeout(2*time.Second))
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := js.Consumer(ctx, stream, consumer)
	if err != nil {
		return 0, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.NumAckPending, nil
}
