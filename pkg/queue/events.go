package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// EventsStream keeps lifecycle events for a day, so a subscriber that was away can catch up.
const EventsStream = "GOPCAST_EVENTS"

// Event kinds published on gopcast.events.KIND.STREAM_ID.
const (
	EventStreamLive     = "stream.live"
	EventStreamIdle     = "stream.idle"
	EventSegment        = "segment"
	EventRecordingReady = "recording.ready"
)

// Event is a lifecycle event.
type Event struct {
	Kind      string         `json:"kind"`
	StreamID  string         `json:"stream_id"`
	SessionID string         `json:"session_id,omitempty"`
	Time      time.Time      `json:"time"`
	Data      map[string]any `json:"data,omitempty"`
}

// EventSubject is the subject an event of kind for streamID is published on; subscribe to
// "gopcast.events.>" for all of them.
func EventSubject(kind, streamID string) string {
	return eventSubject + kind + "." + streamID
}

func (c *Conn) setupEvents(ctx context.Context) error {
	_, err := c.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        EventsStream,
		Description: "stream lifecycle events",
		Subjects:    []string{eventSubject + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      24 * time.Hour,
		MaxBytes:    256 << 20,
		Discard:     jetstream.DiscardOld,
	})
	if err != nil {
		return fmt.Errorf("queue: stream %s: %w", EventsStream, err)
	}
	return nil
}

// PublishEvent publishes a lifecycle event and waits for JetStream to keep it.
func (c *Conn) PublishEvent(ctx context.Context, ev Event) error {
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	ctx, cancel := callCtx(ctx)
	defer cancel()
	if _, err := c.js.Publish(ctx, EventSubject(ev.Kind, ev.StreamID), b); err != nil {
		return fmt.Errorf("queue: publish event %s: %w", ev.Kind, err)
	}
	return nil
}

// SubscribeEvents delivers events matching kind ("" for all) published from now on to fn until
// ctx ends.
func (c *Conn) SubscribeEvents(ctx context.Context, kind string, fn func(Event)) error {
	filter := eventSubject + ">"
	if kind != "" {
		filter = eventSubject + kind + ".*"
	}
	cons, err := c.js.OrderedConsumer(ctx, EventsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return fmt.Errorf("queue: subscribe events: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var ev Event
		if json.Unmarshal(m.Data(), &ev) == nil {
			fn(ev)
		}
	})
	if err != nil {
		return fmt.Errorf("queue: subscribe events: %w", err)
	}
	go func() { <-ctx.Done(); cc.Stop() }()
	return nil
}
