package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.uber.org/zap"

	"github.com/ocm-jobs/ocm-jobs/shared/events"
)

// Broker delivers events to Trigger subscribers.
type Broker struct {
	Triggers []Trigger
	// Resolve maps a subscriber (a Service name, or a URI) to a URL.
	Resolve func(subscriber string) (string, bool)
	// DeadLetters is the file (JSON lines) failed deliveries are appended to.
	DeadLetters string
	Log         *zap.SugaredLogger
	// Faults, when set, are injected into publishes and deliveries (chaos runs).
	Faults *Faults
	// OnDelivery, when set, is told the outcome of every delivery to a subscriber: its last
	// status (0: dropped, unreachable or not running) and the subscriber's reply, if any.
	OnDelivery func(t Trigger, e event.Event, status int, reply *event.Event)
	// Identity, when set, is the bearer token every delivery presents, as Knative Eventing's
	// sender identity (OIDC) does: the broker's service-account token for the subscriber's
	// audience (the Trigger's subscriber.audience).
	Identity func(ctx context.Context, audience string) (string, error)

	mu       sync.Mutex
	inflight sync.WaitGroup
	client   cloudevents.Client
	stats    Stats
}

// Stats counts what the broker did.
type Stats struct {
	Accepted, Delivered, Retried, DeadLettered, Unrouted int
}

// Delivery is the record of one failed delivery kept in the dead-letter file.
type deadLetter struct {
	Time       time.Time    `json:"time"`
	Trigger    string       `json:"trigger"`
	Subscriber string       `json:"subscriber"`
	Status     int          `json:"status"`
	Error      string       `json:"error"`
	Event      *event.Event `json:"event"`
}

func (b *Broker) init() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.client != nil {
		return nil
	}
	if b.Log == nil {
		b.Log = zap.NewNop().Sugar()
	}
	c, err := cloudevents.NewClientHTTP(cehttp.WithClient(http.Client{Timeout: 30 * time.Second}))
	if err != nil {
		return err
	}
	b.client = c
	return nil
}

// Handler is the broker's ingress: it accepts a CloudEvent with 202 and delivers it
// asynchronously, as the Knative Broker does.
func (b *Broker) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST CloudEvents to the broker", http.StatusMethodNotAllowed)
			return
		}
		e, err := binding.ToEvent(r.Context(), cehttp.NewMessageFromHttpRequest(r))
		if err != nil {
			http.Error(w, "not a CloudEvent: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := e.Validate(); err != nil {
			http.Error(w, "not a valid CloudEvent: "+err.Error(), http.StatusBadRequest)
			return
		}
		if b.Faults.refused() {
			http.Error(w, "broker refusing events (injected fault)", http.StatusServiceUnavailable)
			return
		}
		if err := b.Publish(context.WithoutCancel(r.Context()), *e); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
}

// Publish routes e to every matching Trigger's subscriber, in the background.
func (b *Broker) Publish(ctx context.Context, e event.Event) error {
	if err := b.init(); err != nil {
		return err
	}
	attr := Attributes(e)
	var matched []Trigger
	for _, t := range b.Triggers {
		if t.Matches(attr) {
			matched = append(matched, t)
		}
	}
	b.count(func(s *Stats) {
		s.Accepted++
		if len(matched) == 0 {
			s.Unrouted++
		}
	})
	if len(matched) == 0 {
		b.Log.Infow("no trigger matches; event dropped", "type", e.Type(), "source", e.Source(), "id", e.ID())
	}
	for _, t := range matched {
		copies := 1
		if b.Faults.duplicated() {
			copies = 2
		}
		for range copies {
			b.inflight.Add(1)
			go func(t Trigger, delay time.Duration) {
				defer b.inflight.Done()
				if delay > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(delay):
					}
				}
				b.deliver(ctx, t, e.Clone())
			}(t, b.Faults.delay())
		}
	}
	return nil
}

// deliver sends e to t's subscriber, retrying 404, 429, 5xx and network failures per the
// Trigger's delivery spec; when retries run out, or the subscriber refuses the event for good
// (other 4xx), it goes to the dead-letter sink. Each attempt resolves the subscriber again, as
// Knative routes each attempt to any ready replica.
func (b *Broker) deliver(ctx context.Context, t Trigger, e event.Event) {
	if b.Faults.dropped() {
		b.Log.Infow("dropped (injected fault)", "trigger", t.Name, "type", e.Type(), "id", e.ID())
		b.observe(t, e, 0, nil)
		return
	}
	if _, ok := b.Resolve(t.Subscriber); !ok {
		b.deadLetter(t, e, 0, "subscriber "+t.Subscriber+" is not running")
		b.observe(t, e, 0, nil)
		return
	}
	delay := t.Delivery.Delay
	if delay <= 0 {
		delay = 200 * time.Millisecond
	}
	var status int
	var lastErr string
	for attempt := 0; attempt <= t.Delivery.Retry; attempt++ {
		if attempt > 0 {
			wait := delay * time.Duration(attempt)
			if t.Delivery.Exponential {
				wait = delay * time.Duration(1<<(attempt-1))
			}
			b.count(func(s *Stats) { s.Retried++ })
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		url, ok := b.Resolve(t.Subscriber)
		var reply *event.Event
		switch {
		case !ok:
			status, lastErr = 0, "subscriber "+t.Subscriber+" is not running"
		case b.Faults.refused():
			status, lastErr = http.StatusServiceUnavailable, "broker refusing deliveries (injected fault)"
		default:
			var res protocol.Result
			dctx := cloudevents.ContextWithTarget(ctx, url)
			if b.Identity != nil {
				tok, err := b.Identity(ctx, t.Audience)
				if err != nil {
					status, lastErr = 0, "no sender identity: "+err.Error()
					break
				}
				dctx = cehttp.WithCustomHeader(dctx, http.Header{"Authorization": {"Bearer " + tok}})
			}
			reply, res = b.client.Request(dctx, e)
			status, lastErr = statusOf(res)
		}
		b.Log.Infow("delivered", "trigger", t.Name, "subscriber", t.Subscriber, "type", e.Type(), "id", e.ID(),
			"status", status, "attempt", attempt+1, "answer", lastErr)
		if status >= 200 && status < 300 {
			b.count(func(s *Stats) { s.Delivered++ })
			b.observe(t, e, status, reply)
			if reply != nil {
				// Knative feeds a subscriber's reply back into the broker.
				_ = b.Publish(ctx, *reply)
			}
			return
		}
		if !retryable(status) {
			break
		}
	}
	b.deadLetter(t, e, status, lastErr)
	b.observe(t, e, status, nil)
}

func (b *Broker) observe(t Trigger, e event.Event, status int, reply *event.Event) {
	if b.OnDelivery != nil {
		b.OnDelivery(t, e, status, reply)
	}
}

func statusOf(res protocol.Result) (int, string) {
	var hr *cehttp.Result
	if protocol.ResultAs(res, &hr) {
		return hr.StatusCode, events.MessageOf(res)
	}
	if protocol.IsACK(res) {
		return http.StatusOK, ""
	}
	return 0, res.Error()
}

// retryable is Knative's rule: network errors (0), 404, 409, 429 and 5xx are retried.
func retryable(status int) bool {
	return status == 0 || status == http.StatusNotFound || status == http.StatusConflict ||
		status == http.StatusTooManyRequests || status >= 500
}

func (b *Broker) deadLetter(t Trigger, e event.Event, status int, why string) {
	b.count(func(s *Stats) { s.DeadLettered++ })
	b.Log.Warnw("dead-lettered", "trigger", t.Name, "subscriber", t.Subscriber, "type", e.Type(), "id", e.ID(), "status", status, "error", why)
	if b.DeadLetters == "" {
		return
	}
	rec, _ := json.Marshal(deadLetter{Time: time.Now().UTC(), Trigger: t.Name, Subscriber: t.Subscriber, Status: status, Error: why, Event: &e})
	b.mu.Lock()
	defer b.mu.Unlock()
	f, err := os.OpenFile(b.DeadLetters, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		b.Log.Errorw("writing dead letter", "error", err)
		return
	}
	defer f.Close()
	_, _ = f.Write(append(rec, '\n'))
}

func (b *Broker) count(f func(*Stats)) {
	b.mu.Lock()
	f(&b.stats)
	b.mu.Unlock()
}

// Stats returns what the broker has done so far.
func (b *Broker) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// Wait waits until every delivery in flight has ended.
func (b *Broker) Wait() { b.inflight.Wait() }

// Attributes returns a lookup of an event's context attributes and extensions by name, as a
// Trigger filter reads them.
func Attributes(e event.Event) func(string) string {
	return func(name string) string {
		switch name {
		case "type":
			return e.Type()
		case "source":
			return e.Source()
		case "id":
			return e.ID()
		case "subject":
			return e.Subject()
		case "specversion":
			return e.SpecVersion()
		case "datacontenttype":
			return e.DataContentType()
		case "dataschema":
			return e.DataSchema()
		}
		if v, ok := e.Extensions()[name]; ok {
			return fmt.Sprint(v)
		}
		return ""
	}
}
