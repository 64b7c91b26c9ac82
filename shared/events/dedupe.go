package events

import (
	"context"
	"encoding/json"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"knative.dev/pkg/logging"

	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// Deduper makes a handler idempotent on an event's source+id: the first delivery runs the
// handler and its answer is remembered; a redelivery gets the same answer and changes nothing.
//
// A delivery marks the event pending (SET NX with a short TTL) before it runs. A duplicate
// that arrives while it is pending is answered 503, so the broker retries it after the first
// finished — or after the pending mark expired, if the first delivery's process died.
// Transient failures (5xx) are forgotten so that the broker's retry runs the handler again.
// The memos are the store's (under its prefix), per Scope.
type Deduper struct {
	Store *store.Store
	// Scope separates the memos of handlers that each must see an event once (a function,
	// and the hub it acts for).
	Scope string
	// TTL is how long an answer is remembered.
	TTL time.Duration
	// Pending is how long an unfinished delivery blocks its duplicates.
	Pending time.Duration
}

// answer is what is remembered of a delivery.
type answer struct {
	Status  int          `json:"status"`
	Message string       `json:"message,omitempty"`
	Reply   *event.Event `json:"reply,omitempty"`
}

// Wrap returns next made idempotent.
func (d *Deduper) Wrap(next Handler) Handler {
	return HandlerFunc(func(ctx context.Context, e event.Event) (*event.Event, protocol.Result) {
		first, err := d.Store.BeginMemo(ctx, d.Scope, e.Source(), e.ID(), d.pending())
		if err != nil {
			return nil, Unavailable("redis unreachable (idempotency check): %v", err)
		}
		if !first {
			return d.replay(ctx, e)
		}
		reply, result := next.Handle(ctx, e)
		status := StatusOf(result)
		bg := context.WithoutCancel(ctx)
		if IsTransient(status) {
			// Let the retry run the handler again.
			if err := d.Store.ForgetMemo(bg, d.Scope, e.Source(), e.ID()); err != nil {
				logging.FromContext(ctx).Warnw("forgetting a failed delivery", "error", err)
			}
			return reply, result
		}
		remember := func() {
			raw, err := json.Marshal(answer{Status: status, Message: MessageOf(result), Reply: reply})
			if err == nil {
				err = d.Store.PutMemo(bg, d.Scope, e.Source(), e.ID(), string(raw), d.ttl())
			}
			if err != nil {
				// The work is done; only its memo is lost, and handlers are idempotent underneath.
				logging.FromContext(ctx).Warnw("remembering the answer to an event", "error", err)
			}
		}
		// Remembering the answer is off the answer's path when ctx has a runner (AfterAnswer);
		// until it ran, a duplicate finds the delivery pending and is asked to retry.
		AfterAnswer(ctx, remember)
		return reply, result
	})
}

func (d *Deduper) replay(ctx context.Context, e event.Event) (*event.Event, protocol.Result) {
	raw, err := d.Store.Memo(ctx, d.Scope, e.Source(), e.ID())
	switch {
	case err != nil:
		return nil, Unavailable("redis unreachable (idempotency check): %v", err)
	case raw == "":
		// Finished with a transient failure between our SET NX and GET: retry.
		return nil, Unavailable("event %s from %s was being handled; retry", e.ID(), e.Source())
	case raw == store.MemoPending:
		return nil, Unavailable("event %s from %s is being handled by another delivery; retry later", e.ID(), e.Source())
	}
	var a answer
	if err := json.Unmarshal([]byte(raw), &a); err != nil {
		return nil, Internal("remembered answer to event %s is unreadable: %v", e.ID(), err)
	}
	logging.FromContext(ctx).Debugw("duplicate delivery answered from memory", "status", a.Status)
	return a.Reply, cehttp.NewResult(a.Status, "%s", a.Message)
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
