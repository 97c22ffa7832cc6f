package queue

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// KV is a JetStream key-value bucket with compare-and-swap updates: the shared state of
// streams, key hashes and packager progress.
type KV struct {
	name string
	kv   jetstream.KeyValue
}

// KV opens (creating if needed) the key-value bucket name.
func (c *Conn) KV(ctx context.Context, name string) (*KV, error) {
	kv, err := c.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:  name,
		History: 1,
		Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("queue: kv %s: %w", name, err)
	}
	return &KV{name: name, kv: kv}, nil
}

// Get returns the value and revision of key, or ErrNotFound.
func (k *KV) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	e, err := k.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, fmt.Errorf("queue: %s/%s: %w", k.name, key, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("queue: get %s/%s: %w", k.name, key, err)
	}
	return e.Value(), e.Revision(), nil
}

// Create stores key only if it does not exist (ErrExists otherwise).
func (k *KV) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	rev, err := k.kv.Create(ctx, key, value)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("queue: %s/%s: %w", k.name, key, ErrExists)
	}
	if err != nil {
		return 0, fmt.Errorf("queue: create %s/%s: %w", k.name, key, err)
	}
	return rev, nil
}

// Update stores key only if its revision is still rev (ErrConflict otherwise).
func (k *KV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	nrev, err := k.kv.Update(ctx, key, value, rev)
	if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
		return 0, fmt.Errorf("queue: %s/%s: %w", k.name, key, ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("queue: update %s/%s: %w", k.name, key, err)
	}
	return nrev, nil
}

// Put stores key unconditionally.
func (k *KV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	rev, err := k.kv.Put(ctx, key, value)
	if err != nil {
		return 0, fmt.Errorf("queue: put %s/%s: %w", k.name, key, err)
	}
	return rev, nil
}

// Delete removes key; a missing key is not an error.
func (k *KV) Delete(ctx context.Context, key string) error {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	err := k.kv.Delete(ctx, key)
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("queue: delete %s/%s: %w", k.name, key, err)
	}
	return nil
}

// Keys lists every key in the bucket.
func (k *KV) Keys(ctx context.Context) ([]string, error) {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	keys, err := k.kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("queue: keys %s: %w", k.name, err)
	}
	return keys, nil
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// KeysMatching lists the keys matching a NATS subject filter such as "stream.>".
func (k *KV) KeysMatching(ctx context.Context, filter string) ([]string, error) {
	ctx, cancel := callCtx(ctx)
	defer cancel()
	l, err := k.kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("queue: keys %s/%s: %w", k.name, filter, err)
	}
	var keys []string
	for key := range l.Keys() {
		keys = append(keys, key)
	}
	return keys, nil
}

// Change is one update seen by Watch.
type Change struct {
	Key     string
	Value   []byte
	Deleted bool
}

// Watch streams changes to keys matching filter, from now on, until ctx ends. The channel is
// closed when the watch ends.
func (k *KV) Watch(ctx context.Context, filter string) (<-chan Change, error) {
	w, err := k.kv.Watch(ctx, filter, jetstream.UpdatesOnly())
	if err != nil {
		return nil, fmt.Errorf("queue: watch %s/%s: %w", k.name, filter, err)
	}
	out := make(chan Change, 64)
	go func() {
		defer close(out)
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					continue
				}
				c := Change{Key: e.Key(), Value: e.Value(), Deleted: e.Operation() != jetstream.KeyValuePut}
				select {
				case out <- c:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}
