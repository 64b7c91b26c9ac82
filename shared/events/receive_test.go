package events_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	"go.uber.org/zap"

	"github.com/ocm-jobs/ocm-jobs/shared/events"
)

// A sender that gives up (its request's context ends) must not cost a later request its
// answer, and every event is handled in its own request's context. sdk-go's receive handler
// pairs requests with handler goroutines through one shared channel: a reader whose request
// ended before it read left the next request's event without one, and that request waited
// forever (a function hung in CI this way).
func TestGivenUpRequestsDoNotStallLaterOnes(t *testing.T) {
	var handled, foreign atomic.Int32
	s := &events.Server{
		Logger: zap.NewNop().Sugar(),
		Handler: events.HandlerFunc(func(ctx context.Context, e event.Event) (*event.Event, protocol.Result) {
			handled.Add(1)
			if id, _ := ctx.Value(requestID{}).(string); id != e.ID() {
				foreign.Add(1)
			}
			return nil, events.Done("handled %s", e.ID())
		}),
	}
	h, err := s.HTTPHandler(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Each request's context says which event it carries, so a handler run in another
	// request's context is seen.
	tagged := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestID{}, r.Header.Get("Ce-Id"))))
	})

	const givenUp = 50
	var wg sync.WaitGroup
	for i := range givenUp {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		r := binary("test.ok", fmt.Sprintf("gone-%d", i), `{}`)
		req := httptest.NewRequestWithContext(ctx, r.method, "/", strings.NewReader(r.body))
		for k, v := range r.headers {
			req.Header.Set(k, v)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			tagged.ServeHTTP(httptest.NewRecorder(), req)
		}()
	}
	returned := make(chan struct{})
	go func() { wg.Wait(); close(returned) }()
	select {
	case <-returned:
	case <-time.After(30 * time.Second):
		t.Fatalf("the serving of requests whose senders gave up has not returned after 30 s")
	}

	srv := httptest.NewServer(tagged)
	t.Cleanup(srv.Close)
	client := &http.Client{Timeout: 30 * time.Second}
	for i := range 5 {
		r := binary("test.ok", fmt.Sprintf("live-%d", i), `{}`)
		req, _ := http.NewRequest(r.method, srv.URL, strings.NewReader(r.body))
		for k, v := range r.headers {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("request %d after %d given-up ones: %v", i, givenUp, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status %d, want 200", i, resp.StatusCode)
		}
	}
	if n := foreign.Load(); n > 0 {
		t.Errorf("%d events were handled in another request's context", n)
	}
	if n := handled.Load(); n < 5 {
		t.Errorf("handler ran %d times, want at least the 5 live events", n)
	}
}

type requestID struct{}
