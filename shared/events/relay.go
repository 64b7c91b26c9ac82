package events

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"knative.dev/pkg/logging"

	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/shared/telemetry"
)

// Relay publishes what the stores' outboxes hold: at once, the events a handler's changes
// appended (Flush), and on every cron tick whatever no handler published — its process died,
// the broker refused — (Drain). An entry leaves its outbox only once the broker accepted its
// event; receivers de-duplicate on source+id, so publishing one twice is harmless.
type Relay struct {
	Store     *store.Store
	Publisher Publisher
	// Age is how long an entry waits before a drain publishes it: a handler publishes its own
	// entries right after its change, and a drain should not race it.
	Age time.Duration
	// Batch is the most entries a drain takes from each bucket.
	Batch int64
	// Telemetry counts the publishes and traces each (nil: none).
	Telemetry *telemetry.Telemetry
}

// Flush publishes entries and deletes from the outbox those the broker accepted. It returns
// how many it published and the first error.
func (r *Relay) Flush(ctx context.Context, entries []store.OutboxEntry) (int, error) {
	return r.flush(ctx, entries, telemetry.PathAtOnce)
}

// flush is Flush on a path (at once, on the tick). Each publish is a span in the trace its
// entry carries, and the event carries that span on as its traceparent.
func (r *Relay) flush(ctx context.Context, entries []store.OutboxEntry, path string) (int, error) {
	var (
		done  []store.OutboxEntry
		first error
	)
	for _, e := range entries {
		if e.Type == "" {
			// Unreadable: it can never be published; drop it rather than keep it forever.
			logging.FromContext(ctx).Errorw("dropping an unreadable outbox entry", "entry", e.ID, "stream", e.Stream)
			done = append(done, e)
			continue
		}
		ev, err := JobEvent(e)
		if err == nil {
			pctx, span := r.Telemetry.Start(telemetry.WithTraceparent(ctx, e.Traceparent), "publish "+e.Type, trace.SpanKindProducer,
				attribute.String("cloudevents.event_type", e.Type), attribute.String("cloudevents.event_id", ev.ID()),
				attribute.String("ocmjobs.job_id", e.Job.ID), attribute.String("ocmjobs.publish_path", path))
			if tp := telemetry.Traceparent(pctx); tp != "" {
				ev.SetExtension(telemetry.ExtTraceparent, tp)
			}
			err = r.Publisher.Publish(pctx, ev)
			telemetry.End(span, err)
			r.Telemetry.Published(ctx, e.Type, path, err == nil)
		}
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		done = append(done, e)
	}
	if err := r.Store.AckOutbox(context.WithoutCancel(ctx), done); err != nil && first == nil {
		first = err
	}
	published := len(done)
	if first != nil {
		return published, fmt.Errorf("%d of %d events not published (kept in the outbox): %w", len(entries)-published, len(entries), first)
	}
	return published, nil
}

// Drain publishes the entries that waited longer than Age. One process drains at a time (a
// lock with a TTL, so a drainer that dies does not block the next tick).
func (r *Relay) Drain(ctx context.Context) (int, error) {
	ok, unlock, err := r.Store.TryLock(ctx, "outbox-drain", time.Minute)
	if err != nil || !ok {
		return 0, err
	}
	defer unlock()
	batch := r.Batch
	if batch <= 0 {
		batch = 500
	}
	entries, err := r.Store.OutboxDue(ctx, r.Age, batch)
	if err != nil || len(entries) == 0 {
		return 0, err
	}
	n, err := r.flush(ctx, entries, telemetry.PathOnTick)
	logging.FromContext(ctx).Infow("outbox drained", "published", n, "due", len(entries), "error", err)
	return n, err
}
