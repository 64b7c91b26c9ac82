package events

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
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
// convention). The CloudEvents SDK retries with exponential backoff while the sink answers
// 404, 429 or 5xx or cannot be reached. Replies are not used for fan-out: every emitted event
// goes through the broker.
//
// With Knative's OIDC sender identity on, the broker's ingress refuses an event without a
// token for its audience; the SinkBinding mounts one at /oidc/token (SINK_TOKEN_FILE) and the
// kubelet renews it in place. TokenFile names that file: its token is sent as a bearer token,
// read again whenever the file changes; while there is no such file no token is sent.
//
// An attempt that gets no answer within AttemptTimeout (a broker's ingress stuck behind a
// synchronous channel, say) is abandoned and retried like a transient failure, so a publish
// never hangs for good; the receivers deduplicate by event id, so a late first copy is harmless.
type SinkPublisher struct {
	Sink           string
	Retries        int
	Backoff        time.Duration
	TokenFile      string
	AttemptTimeout time.Duration
	client         cloudevents.Client

	mu    sync.Mutex
	token sinkToken
}

// sinkToken is the token last read from TokenFile and the file's state when it was read.
type sinkToken struct {
	value   string
	modTime time.Time
	size    int64
}

// NewSinkPublisher returns a publisher to sink.
func NewSinkPublisher(sink string, retries int, backoff time.Duration) (*SinkPublisher, error) {
	if backoff <= 0 {
		backoff = 100 * time.Millisecond
	}
	sp := &SinkPublisher{Sink: sink, Retries: retries, Backoff: backoff, AttemptTimeout: DefaultAttemptTimeout}
	p, err := cloudevents.NewHTTP(cloudevents.WithTarget(sink),
		cehttp.WithRoundTripper(boundedAttempts{p: sp, next: http.DefaultTransport}),
		cehttp.WithIsRetriableFunc(func(status int) bool { return IsTransient(status) || status == http.StatusNotFound }))
	if err != nil {
		return nil, fmt.Errorf("sink %q: %w", sink, err)
	}
	if sp.client, err = cloudevents.NewClient(p, cloudevents.WithTimeNow()); err != nil {
		return nil, err
	}
	return sp, nil
}

// DefaultAttemptTimeout is how long one publish attempt waits for the sink's answer.
const DefaultAttemptTimeout = 30 * time.Second

// boundedAttempts ends an attempt whose answer has not begun within the publisher's
// AttemptTimeout; the error is a transport error, which the SDK retries.
type boundedAttempts struct {
	p    *SinkPublisher
	next http.RoundTripper
}

func (b boundedAttempts) RoundTrip(req *http.Request) (*http.Response, error) {
	if b.p.AttemptTimeout <= 0 {
		return b.next.RoundTrip(req)
	}
	ctx, cancel := context.WithCancel(req.Context())
	timer := time.AfterFunc(b.p.AttemptTimeout, cancel)
	resp, err := b.next.RoundTrip(req.WithContext(ctx))
	timer.Stop()
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelOnClose releases an attempt's context once its answer has been read.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// Publish sends e, the SDK retrying transient failures; it returns the last error when retries
// run out or the sink refuses the event for good (4xx).
func (p *SinkPublisher) Publish(ctx context.Context, e event.Event) error {
	if p.Retries > 0 {
		ctx = cloudevents.ContextWithRetriesExponentialBackoff(ctx, p.Backoff, p.Retries)
	}
	tok, err := p.bearer()
	if err != nil {
		return fmt.Errorf("publishing %s %s to %s: %w", e.Type(), e.ID(), p.Sink, err)
	}
	if tok != "" {
		ctx = cehttp.WithCustomHeader(ctx, http.Header{"Authorization": {"Bearer " + tok}})
	}
	res := p.client.Send(ctx, e)
	if protocol.IsACK(res) {
		return nil
	}
	logging.FromContext(ctx).Debugw("publish failed", "type", e.Type(), "id", e.ID(), "error", res)
	return fmt.Errorf("publishing %s %s to %s: %w", e.Type(), e.ID(), p.Sink, res)
}

// bearer returns the token of TokenFile ("" without a file), read again when the file's
// modification time or size changed since the last read.
func (p *SinkPublisher) bearer() (string, error) {
	if p.TokenFile == "" {
		return "", nil
	}
	fi, err := os.Stat(p.TokenFile)
	if os.IsNotExist(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("sink token: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.token.value != "" && fi.ModTime().Equal(p.token.modTime) && fi.Size() == p.token.size {
		return p.token.value, nil
	}
	raw, err := os.ReadFile(p.TokenFile)
	if err != nil {
		return "", fmt.Errorf("sink token: %w", err)
	}
	p.token = sinkToken{value: strings.TrimSpace(string(raw)), modTime: fi.ModTime(), size: fi.Size()}
	return p.token.value, nil
}

// Discard drops every event; it stands in when no sink is configured.
type Discard struct{}

// Publish logs and drops e.
func (Discard) Publish(ctx context.Context, e event.Event) error {
	logging.FromContext(ctx).Debugw("no K_SINK: event not published", "type", e.Type(), "id", e.ID())
	return nil
}
