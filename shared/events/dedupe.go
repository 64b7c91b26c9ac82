package events

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/redis/go-redis/v9"
	"knative.dev/pkg/logging"
)

// Deduper makes a handler idempotent on an event's source+id: the first delivery runs the
// handler and its answer is remembered; a redelivery gets the same answer and changes nothing.
//
// A delivery marks the event pending (SET NX with a short TTL) before it runs. A duplicate
// that arrives while it is pending is answered 503, so the broker retries it after the first
// finished — or after the pending mark expired, if the first delivery's process died.
// Transient failures (5xx) are forgotten so that the broker's retry runs the handler again.
type Deduper struct {
	Redis redis.UniversalClient
	// TTL is how long an answer is remembered.
	TTL time.Duration
	// Pending is how long an unfinished delivery blocks its duplicates.
	Pending time.Duration
	// Prefix starts every key (default "ocmjobs:event:").
	Prefix string
}

// answer is what is remembered of a delivery.
type answer struct {
	Status  int          `json:"status"`
	Message string       `json:"message,omitempty"`
	Reply   *event.Event `json:"reply,omitempty"`
}

const pendingMark = "pending"

// Wrap returns next made idempotent.
func (d *Deduper) Wrap(next Handler) Handler {
	return HandlerFunc(func(ctx context.Context, e event.Event) (*event.Event, protocol.Result) {
		key := d.key(e)
		ok, err := d.Redis.SetNX(ctx, key, pendingMark, d.pending()).Result()
		if err != nil {
			return nil, Unavailable("redis unreachable (idempotency check): %v", err)
		}
		if !ok {
			return d.replay(ctx, key, e)
		}
		reply, result := next.Handle(ctx, e)
		status := StatusOf(result)
		if IsTransient(status) {
			// Let the retry run the handler again.
			if err := d.Redis.Del(context.WithoutCancel(ctx), key).Err(); err != nil {
				logging.FromContext(ctx).Warnw("forgetting a failed delivery", "error", err)
			}
			return reply, result
		}
		raw, err := json.Marshal(answer{Status: status, Message: MessageOf(result), Reply: reply})
		if err == nil {
			err = d.Redis.Set(context.WithoutCancel(ctx), key, raw, d.ttl()).Err()
		}
		if err != nil {
			// The work is done; only its memo is lost, and handlers are idempotent underneath.
			logging.FromContext(ctx).Warnw("remembering the answer to an event", "error", err)
		}
		return reply, result
	})
}

func (d *Deduper) replay(ctx context.Context, key string, e event.Event) (*event.Event, protocol.Result) {
	raw, err := d.Redis.Get(ctx, key).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		// Finished with a transient failure between our SET NX and GET: retry.
		return nil, Unavailable("event %s from %s was being handled; retry", e.ID(), e.Source())
	case err != nil:
		return nil, Unavailable("redis unreachable (idempotency check): %v", err)
	case string(raw) == pendingMark:
		return nil, Unavailable("event %s from %s is being handled by another delivery; retry later", e.ID(), e.Source())
	}
	var a answer
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, Internal("remembered answer to event %s is unreadable: %v", e.ID(), err)
	}
	logging.FromContext(ctx).Debugw("duplicate delivery answered from memory", "status", a.Status)
	return a.Reply, cehttp.NewResult(a.Status, "%s", a.Message)
}

func (d *Deduper) key(e event.Event) string {
	sum := sha256.Sum256([]byte(e.Source() + "\x00" + e.ID()))
	prefix := d.Prefix
	if prefix == "" {
		prefix = "ocmjobs:event:"
	}
	return prefix + hex.EncodeToString(sum[:])
}

func (d *Deduper) ttl() time.Duration {
	if d.TTL <= 0 {
		return 24 * time.Hour
	}
	return d.TTL
}

func (d *Deduper) pending() time.Duration {
	if d.Pending <= 0 {
		return 2 * time.Minute
	}
	return d.Pending
}
