package events_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// testFunction is a function whose behaviour is chosen by the event type.
type testFunction struct {
	mu    sync.Mutex
	calls map[string]int
	gate  chan struct{} // test.slow waits on it
}

func (f *testFunction) Handle(_ context.Context, e event.Event) (*event.Event, protocol.Result) {
	f.mu.Lock()
	f.calls[e.ID()]++
	f.mu.Unlock()
	switch e.Type() {
	case "test.ok":
		reply := event.New()
		reply.SetID("reply-" + e.ID())
		reply.SetSource("/test")
		reply.SetType("test.reply")
		_ = reply.SetData(cloudevents.ApplicationJSON, map[string]string{"echo": string(e.Data())})
		return &reply, events.Done("handled")
	case "test.unprocessable":
		return nil, events.Unprocessable("component %q references manifest %q that does not exist", "web", "nginx")
	case "test.unavailable":
		return nil, events.Unavailable("redis unreachable")
	case "test.panic":
		var m map[string]int
		m["boom"]++ // nil map write: a real panic
		return nil, nil
	case "test.slow":
		<-f.gate
		return nil, events.Done("slow done")
	}
	return nil, events.Invalid("unknown type %s", e.Type())
}

func (f *testFunction) count(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[id]
}

type stack struct {
	url   string
	fn    *testFunction
	redis redis.UniversalClient
	logs  *observer.ObservedLogs
}

// storeOn is a store on rdb, under a prefix of the test's own.
func storeOn(t *testing.T, rdb redis.UniversalClient) *store.Store {
	t.Helper()
	st, err := store.New(rdb, store.Options{Prefix: "events-test"})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func newStack(t *testing.T, maxBody int64) *stack {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: redisServer.Addr})
	t.Cleanup(func() { rdb.Close() })
	fn := &testFunction{calls: map[string]int{}, gate: make(chan struct{})}
	core, logs := observer.New(zap.DebugLevel)
	s := &events.Server{
		Handler:      (&events.Deduper{Store: storeOn(t, rdb), TTL: time.Hour, Pending: time.Minute, Scope: t.Name()}).Wrap(fn),
		MaxBodyBytes: maxBody,
		Logger:       zap.New(core).Sugar(),
		Routes: map[string]http.Handler{"/jobmanager/healthz": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, `{"status":"ok"}`)
		})},
	}
	h, err := s.HTTPHandler(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &stack{url: srv.URL, fn: fn, redis: rdb, logs: logs}
}

type request struct {
	method  string
	path    string
	headers map[string]string
	body    string
}

func binary(typ, id, body string) request {
	return request{method: http.MethodPost, path: "/", body: body, headers: map[string]string{
		"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Source": "/tests", "Ce-Type": typ, "Content-Type": "application/json",
	}}
}

func structured(typ, id, body string) request {
	return request{method: http.MethodPost, path: "/", headers: map[string]string{"Content-Type": "application/cloudevents+json"},
		body: `{"specversion":"1.0","id":"` + id + `","source":"/tests","type":"` + typ + `","datacontenttype":"application/json","data":` + body + `}`}
}

type response struct {
	status int
	body   string
	header http.Header
}

func (s *stack) do(t *testing.T, r request) response {
	t.Helper()
	req, err := http.NewRequest(r.method, s.url+r.path, strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range r.headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, body: string(b), header: resp.Header}
}

func TestAnswerContract(t *testing.T) {
	tests := map[string]struct {
		req        request
		wantStatus int
		wantBody   string // substring
		wantCalls  int    // handler calls for the request's event id (binary/structured only)
	}{
		"valid binary event": {
			req: binary("test.ok", "ok-1", `{"a":1}`), wantStatus: 200, wantCalls: 1,
		},
		"valid structured event": {
			req: structured("test.ok", "ok-2", `{"a":1}`), wantStatus: 200, wantCalls: 1,
		},
		"unprocessable content is 422 with the reason": {
			req: binary("test.unprocessable", "bad-1", `{}`), wantStatus: 422, wantBody: `references manifest "nginx"`, wantCalls: 1,
		},
		"transient failure is 503": {
			req: binary("test.unavailable", "down-1", `{}`), wantStatus: 503, wantBody: "redis unreachable", wantCalls: 1,
		},
		"panicking handler is 500 and the process lives": {
			req: binary("test.panic", "panic-1", `{}`), wantStatus: 500, wantBody: "panicked", wantCalls: 1,
		},
		"binary event missing id and type is 400": {
			req: request{method: "POST", path: "/", body: "{}", headers: map[string]string{
				"Ce-Specversion": "1.0", "Ce-Source": "/tests", "Content-Type": "application/json"}},
			wantStatus: 400, wantBody: "ce-id, ce-type",
		},
		"structured event that is not JSON is 400": {
			req: request{method: "POST", path: "/", body: `{"specversion":"1.0",`, headers: map[string]string{
				"Content-Type": "application/cloudevents+json"}},
			wantStatus: 400, wantBody: "not a valid CloudEvent",
		},
		"structured event without source is 400": {
			req: request{method: "POST", path: "/", body: `{"specversion":"1.0","id":"x","type":"test.ok"}`, headers: map[string]string{
				"Content-Type": "application/cloudevents+json"}},
			wantStatus: 400, wantBody: "source",
		},
		"bad time attribute is 400": {
			req: request{method: "POST", path: "/", body: "{}", headers: map[string]string{
				"Ce-Specversion": "1.0", "Ce-Id": "t", "Ce-Source": "/tests", "Ce-Type": "test.ok", "Ce-Time": "yesterday"}},
			wantStatus: 400, wantBody: "not a valid CloudEvent",
		},
		"plain JSON is 415 saying what is missing": {
			req:        request{method: "POST", path: "/", body: `{"name":"app"}`, headers: map[string]string{"Content-Type": "application/json"}},
			wantStatus: 415, wantBody: "ce-specversion",
		},
		"batch mode is 415": {
			req:        request{method: "POST", path: "/", body: `[]`, headers: map[string]string{"Content-Type": "application/cloudevents-batch+json"}},
			wantStatus: 415, wantBody: "one event per request",
		},
		"GET is 405": {
			req: request{method: "GET", path: "/"}, wantStatus: 405, wantBody: "POSTed",
		},
		"oversized body is 413 pointing at dataref": {
			req: binary("test.ok", "big-1", `"`+strings.Repeat("x", 5000)+`"`), wantStatus: 413, wantBody: "dataref",
		},
		"readiness": {req: request{method: "GET", path: events.ReadinessPath}, wantStatus: 200, wantBody: "ready"},
		"liveness":  {req: request{method: "GET", path: events.LivenessPath}, wantStatus: 200, wantBody: "alive"},
		"extra route": {
			req: request{method: "GET", path: "/jobmanager/healthz"}, wantStatus: 200, wantBody: `"ok"`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s := newStack(t, 4096)
			got := s.do(t, tc.req)
			if got.status != tc.wantStatus {
				t.Fatalf("status = %d, want %d; body %q", got.status, tc.wantStatus, got.body)
			}
			if !strings.Contains(got.body, tc.wantBody) {
				t.Errorf("body %q does not contain %q", got.body, tc.wantBody)
			}
			if id := tc.req.headers["Ce-Id"]; id != "" || tc.wantCalls > 0 {
				if id == "" {
					id = map[string]string{"valid structured event": "ok-2"}[name]
				}
				if n := s.fn.count(id); n != tc.wantCalls {
					t.Errorf("handler called %d times for %s, want %d", n, id, tc.wantCalls)
				}
			}
		})
	}
}

func TestPanicIsLoggedWithStack(t *testing.T) {
	s := newStack(t, 4096)
	if got := s.do(t, binary("test.panic", "panic-log", `{}`)); got.status != 500 {
		t.Fatalf("status %d", got.status)
	}
	entries := s.logs.FilterMessage("handler panicked").All()
	if len(entries) != 1 {
		t.Fatalf("want one panic log entry, got %d", len(entries))
	}
	stack, _ := entries[0].ContextMap()["stack"].(string)
	if !strings.Contains(stack, "testFunction).Handle") {
		t.Errorf("panic log has no stack naming the handler: %q", stack)
	}
	// The process is still serving.
	if got := s.do(t, binary("test.ok", "after-panic", `{}`)); got.status != 200 {
		t.Errorf("after a panic: status %d", got.status)
	}
}

func TestDuplicateDeliveryAnswersAsTheFirst(t *testing.T) {
	for name, req := range map[string]request{
		"success with reply": binary("test.ok", "dup-ok", `{"n":1}`),
		"422":                binary("test.unprocessable", "dup-422", `{}`),
		"structured":         structured("test.ok", "dup-structured", `{"n":2}`),
	} {
		t.Run(name, func(t *testing.T) {
			s := newStack(t, 4096)
			first := s.do(t, req)
			second := s.do(t, req)
			if first.status != second.status || first.body != second.body {
				t.Errorf("redelivery answered %d %q, first delivery %d %q", second.status, second.body, first.status, first.body)
			}
			for _, h := range []string{"Ce-Id", "Ce-Type", "Ce-Source"} {
				if first.header.Get(h) != second.header.Get(h) {
					t.Errorf("reply header %s: %q then %q", h, first.header.Get(h), second.header.Get(h))
				}
			}
			var id string
			if v, ok := req.headers["Ce-Id"]; ok {
				id = v
			} else {
				id = "dup-structured"
			}
			if n := s.fn.count(id); n != 1 {
				t.Errorf("handler ran %d times for one event delivered twice", n)
			}
		})
	}
}

func TestTransientFailureIsRetriedNotRemembered(t *testing.T) {
	s := newStack(t, 4096)
	req := binary("test.unavailable", "retry-1", `{}`)
	for i := 0; i < 3; i++ {
		if got := s.do(t, req); got.status != 503 {
			t.Fatalf("attempt %d: status %d", i, got.status)
		}
	}
	if n := s.fn.count("retry-1"); n != 3 {
		t.Errorf("a 503 must let the retry run the handler again: ran %d times for 3 deliveries", n)
	}
}

func TestConcurrentDuplicateIsAskedToRetry(t *testing.T) {
	s := newStack(t, 4096)
	req := binary("test.slow", "slow-1", `{}`)
	firstDone := make(chan response)
	go func() { firstDone <- s.do(t, req) }()
	// Wait until the first delivery is inside the handler.
	for s.fn.count("slow-1") == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	dup := s.do(t, req)
	if dup.status != 503 || !strings.Contains(dup.body, "being handled") {
		t.Errorf("duplicate during the first delivery: %d %q, want 503 being handled", dup.status, dup.body)
	}
	close(s.fn.gate)
	first := <-firstDone
	if first.status != 200 {
		t.Fatalf("first delivery: %d %q", first.status, first.body)
	}
	retry := s.do(t, req)
	if retry.status != 200 || retry.body != first.body {
		t.Errorf("retry after the first finished: %d %q, want %d %q", retry.status, retry.body, first.status, first.body)
	}
	if n := s.fn.count("slow-1"); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
}

func TestSameIDFromAnotherSourceIsANewEvent(t *testing.T) {
	s := newStack(t, 4096)
	a := binary("test.ok", "same-id", `{}`)
	b := binary("test.ok", "same-id", `{}`)
	b.headers = map[string]string{}
	for k, v := range a.headers {
		b.headers[k] = v
	}
	b.headers["Ce-Source"] = "/other"
	s.do(t, a)
	s.do(t, b)
	if n := s.fn.count("same-id"); n != 2 {
		t.Errorf("events with the same id from two sources: handler ran %d times, want 2", n)
	}
}

func TestRedisDownIs503(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	fn := &testFunction{calls: map[string]int{}}
	s := &events.Server{Handler: (&events.Deduper{Store: storeOn(t, rdb), Scope: "down"}).Wrap(fn), Logger: zap.NewNop().Sugar()}
	h, err := s.HTTPHandler(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	st := &stack{url: srv.URL, fn: fn}
	got := st.do(t, binary("test.ok", "nodb", `{}`))
	if got.status != 503 || !strings.Contains(got.body, "redis unreachable") {
		t.Errorf("Redis down: %d %q, want 503", got.status, got.body)
	}
	if fn.count("nodb") != 0 {
		t.Error("handler ran although idempotency could not be checked")
	}
}

func TestPublisherRetriesTransientFailures(t *testing.T) {
	var attempts atomic.Int32
	var got []byte
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := attempts.Add(1)
		if n <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		got, _ = io.ReadAll(r.Body)
		if r.Header.Get("Ce-Type") != events.JobCreated {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer sink.Close()
	p, err := events.NewSinkPublisher(sink.URL, 5, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	e := event.New()
	e.SetID("pub-1")
	e.SetSource(events.Source("hub-a", "executor"))
	e.SetType(events.JobCreated)
	_ = e.SetData(cloudevents.ApplicationJSON, map[string]string{"id": "job-1"})
	if err := p.Publish(context.Background(), e); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if attempts.Load() != 3 {
		t.Errorf("attempts = %d, want 3 (two 503s then success)", attempts.Load())
	}
	var data map[string]string
	if err := json.Unmarshal(got, &data); err != nil || data["id"] != "job-1" {
		t.Errorf("sink got %q", got)
	}
}

func TestPublisherDoesNotRetryARefusal(t *testing.T) {
	var attempts atomic.Int32
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		attempts.Add(1)
		w.WriteHeader(http.StatusBadRequest)
	}))
	defer sink.Close()
	p, _ := events.NewSinkPublisher(sink.URL, 5, time.Millisecond)
	e := event.New()
	e.SetID("pub-2")
	e.SetSource("/tests")
	e.SetType(events.JobCreated)
	err := p.Publish(context.Background(), e)
	if err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("publish to a refusing sink: %v, want an error naming 400", err)
	}
	if attempts.Load() != 1 {
		t.Errorf("a 400 was retried: %d attempts", attempts.Load())
	}
}

func TestPublisherGivesUp(t *testing.T) {
	var attempts atomic.Int32
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		attempts.Add(1)
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer sink.Close()
	p, _ := events.NewSinkPublisher(sink.URL, 3, time.Millisecond)
	e := event.New()
	e.SetID("pub-3")
	e.SetSource("/tests")
	e.SetType(events.JobCreated)
	if err := p.Publish(context.Background(), e); err == nil {
		t.Error("publish to a failing sink succeeded")
	}
	if diff := cmp.Diff(int32(4), attempts.Load()); diff != "" {
		t.Errorf("attempts (-want +got): %s", diff)
	}
}

// TestRESTErrorsAreJSON: under /jobmanager/, a path no route serves is a JSON 404 and a
// method a route does not take a JSON 405 with Allow — never the CloudEvents endpoint's
// answer; elsewhere the CloudEvents endpoint answers, its failures JSON too.
func TestRESTErrorsAreJSON(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	srv := &events.Server{Handler: &testFunction{calls: map[string]int{}}, Routes: map[string]http.Handler{
		"GET /jobmanager/groups/{id}":        ok,
		"DELETE /jobmanager/groups/{id}":     ok,
		"PUT /jobmanager/groups/stop/{id}":   ok,
		"POST /jobmanager/policies/incompli": ok,
	}, Logger: zap.NewNop().Sugar()}
	h, err := srv.HTTPHandler(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path string
		status       int
		allow        string
	}{
		{http.MethodGet, "/jobmanager/groups/x", http.StatusOK, ""},
		{http.MethodPatch, "/jobmanager/groups/x", http.StatusMethodNotAllowed, "GET, DELETE"},
		{http.MethodPost, "/jobmanager/groups/stop/x", http.StatusMethodNotAllowed, "PUT"},
		{http.MethodPost, "/jobmanager/policies/incompliance/create", http.StatusNotFound, ""},
		{http.MethodGet, "/jobmanager/nothing", http.StatusNotFound, ""},
		{http.MethodGet, "/", http.StatusMethodNotAllowed, "POST"},
		{http.MethodPost, "/", http.StatusUnsupportedMediaType, ""},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		if rec.Code != tc.status || rec.Header().Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d Allow %q, want %d Allow %q (%s)", tc.method, tc.path, rec.Code, rec.Header().Get("Allow"), tc.status, tc.allow, rec.Body)
			continue
		}
		if tc.status >= 400 {
			var e struct{ Error string }
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
				t.Errorf("%s %s: %q %s is not a JSON error", tc.method, tc.path, rec.Header().Get("Content-Type"), rec.Body)
			}
		}
	}
}

// TestReplyDeliveryGetsNoTextBody: Knative's broker filter asks for a reply (`Prefer: reply`)
// and reads any non-empty body of a 2xx as the reply event; a text body it cannot parse is a
// failed delivery (502) that the channel retries. A success without a reply event must
// therefore answer an empty body, while a reply event and every failure keep theirs.
func TestReplyDeliveryGetsNoTextBody(t *testing.T) {
	s := newStack(t, 1<<20)
	s.fn.gate = make(chan struct{})
	close(s.fn.gate)
	withPrefer := func(r request) request { r.headers["Prefer"] = "reply"; return r }

	got := s.do(t, withPrefer(binary("test.slow", "prefer-1", `{}`)))
	if got.status != http.StatusOK || got.body != "" {
		t.Errorf("success without a reply, Prefer: reply: %d %q, want 200 and an empty body", got.status, got.body)
	}
	got = s.do(t, binary("test.slow", "plain-1", `{}`))
	if got.status != http.StatusOK || !strings.Contains(got.body, "slow done") {
		t.Errorf("success without Prefer: %d %q, want 200 with the message", got.status, got.body)
	}
	got = s.do(t, withPrefer(binary("test.ok", "prefer-2", `{"a":1}`)))
	if got.status != http.StatusOK || got.header.Get("Ce-Type") != "test.reply" || !strings.Contains(got.body, "echo") {
		t.Errorf("reply event, Prefer: reply: %d %q %v, want the reply event", got.status, got.body, got.header)
	}
	got = s.do(t, withPrefer(binary("test.unprocessable", "prefer-3", `{}`)))
	if got.status != http.StatusUnprocessableEntity || !strings.Contains(got.body, "does not exist") {
		t.Errorf("failure, Prefer: reply: %d %q, want 422 with its message", got.status, got.body)
	}
}

// TestPublisherPresentsTheSinkBindingToken: with Knative's OIDC sender identity on, the broker
// ingress refuses an event without a token; the SinkBinding mounts one for the broker's
// audience (/oidc/token), renewed in place. The publisher presents the file's token, reads it
// again once the file changes, and sends none while there is no file (OIDC off).
func TestPublisherPresentsTheSinkBindingToken(t *testing.T) {
	var mu sync.Mutex
	var got []string
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Authorization"))
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer sink.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	p, err := events.NewSinkPublisher(sink.URL, 0, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	p.TokenFile = tokenFile
	publish := func(id string) {
		t.Helper()
		e := event.New()
		e.SetID(id)
		e.SetSource("/tests")
		e.SetType(events.JobCreated)
		if err := p.Publish(context.Background(), e); err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
	}
	publish("no-file")
	if err := os.WriteFile(tokenFile, []byte("tok-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	publish("first")
	publish("first-again")
	// The kubelet renews a projected token by swapping the file: new content, new mtime.
	if err := os.WriteFile(tokenFile, []byte("tok-2"), 0o600); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(tokenFile, later, later); err != nil {
		t.Fatal(err)
	}
	publish("renewed")
	want := []string{"", "Bearer tok-1", "Bearer tok-1", "Bearer tok-2"}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Authorization the sink got (-want +got):\n%s", diff)
	}
}

// TestPublisherBoundsAnAttempt: a sink that never answers (a broker ingress stuck behind a
// synchronous channel) must not hold a publish forever: the attempt ends after AttemptTimeout
// and the event is sent again.
func TestPublisherBoundsAnAttempt(t *testing.T) {
	var attempts atomic.Int32
	release := make(chan struct{})
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if attempts.Add(1) == 1 {
			select { // the first attempt hangs until the sender gives up on it
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer sink.Close()
	defer close(release)
	p, err := events.NewSinkPublisher(sink.URL, 3, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	p.AttemptTimeout = 200 * time.Millisecond
	e := event.New()
	e.SetID("pub-hang")
	e.SetSource("/tests")
	e.SetType(events.JobCreated)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Publish(ctx, e); err != nil {
		t.Fatalf("publish with a hanging first attempt: %v (want the second attempt accepted)", err)
	}
	if got := attempts.Load(); got != 2 {
		t.Errorf("attempts = %d, want 2 (the hanging one, then the accepted one)", got)
	}
}
