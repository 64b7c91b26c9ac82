package events

import (
	"context"
	"fmt"
	"net/http"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"knative.dev/pkg/logging"
)

// Publisher sends the events a function emits.
type Publisher interface {
	Publish(ctx context.Context, e event.Event) error
}

// SinkPublisher sends events to the broker named by K_SINK (Knative's SinkBinding
// convention), retrying with exponential backoff while the sink answers 429/5xx or cannot
// be reached. Replies are not used for fan-out: every emitted event goes through the broker.
type SinkPublisher struct {
	Sink    string
	Retries int
	Backoff time.Duration
	client  cloudevents.Client
}

// NewSinkPublisher returns a publisher to sink.
func NewSinkPublisher(sink string, retries int, backoff time.Duration) (*SinkPublisher, error) {
	p, err := cloudevents.NewHTTP(cloudevents.WithTarget(sink))
	if err != nil {
		return nil, fmt.Errorf("sink %q: %w", sink, err)
	}
	c, err := cloudevents.NewClient(p, cloudevents.WithTimeNow(), cloudevents.WithUUIDs())
	if err != nil {
		return nil, err
	}
	return &SinkPublisher{Sink: sink, Retries: retries, Backoff: backoff, client: c}, nil
}

// Publish sends e, retrying transient failures; it returns the last error when retries run out
// or the sink refuses the event for good (4xx).
func (p *SinkPublisher) Publish(ctx context.Context, e event.Event) error {
	delay := p.Backoff
	if delay <= 0 {
		delay = 100 * time.Millisecond
	}
	var last error
	for attempt := 0; attempt <= p.Retries; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("publishing %s %s: %w (last: %v)", e.Type(), e.ID(), ctx.Err(), last)
			case <-time.After(delay):
			}
			delay *= 2
		}
		res := p.client.Send(ctx, e)
		if protocol.IsACK(res) {
			return nil
		}
		last = res
		var hr *cehttp.Result
		if protocol.ResultAs(res, &hr) && !IsTransient(hr.StatusCode) && hr.StatusCode != http.StatusNotFound {
			return fmt.Errorf("publishing %s %s to %s: refused with %d: %w", e.Type(), e.ID(), p.Sink, hr.StatusCode, res)
		}
		logging.FromContext(ctx).Debugw("publish failed, retrying", "type", e.Type(), "id", e.ID(), "attempt", attempt+1, "error", res)
	}
	return fmt.Errorf("publishing %s %s to %s after %d retries: %w", e.Type(), e.ID(), p.Sink, p.Retries, last)
}

// Discard drops every event; it stands in when no sink is configured.
type Discard struct{}

// Publish logs and drops e.
func (Discard) Publish(ctx context.Context, e event.Event) error {
	logging.FromContext(ctx).Debugw("no K_SINK: event not published", "type", e.Type(), "id", e.ID())
	return nil
}
