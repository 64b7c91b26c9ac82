package events_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"

	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/shared/telemetry"
)

// TestServerTelemetry: /metrics is served (Prometheus text, the ocmjobs_ families of what was
// handled), except on the public REST-only entry; a handler runs in the trace of the event's
// traceparent extension, else of the request's traceparent header, and passes it on even
// with no exporter configured.
func TestServerTelemetry(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	tel, err := telemetry.New(context.Background(), "ocm-jobs.test")
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 4)
	handler := events.HandlerFunc(func(ctx context.Context, e event.Event) (*event.Event, protocol.Result) {
		seen <- telemetry.Traceparent(ctx)
		if e.Type() == "test.refused" {
			return nil, events.Invalid("no")
		}
		return nil, events.Done("ok")
	})
	serve := func(noEvents bool) *httptest.Server {
		s := &events.Server{Handler: handler, Telemetry: tel, NoEvents: noEvents,
			Routes: map[string]http.Handler{"GET /jobmanager/groups": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})}}
		h, err := s.HTTPHandler(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv
	}
	srv := serve(false)
	const (
		trace  = "4bf92f3577b34da6a3ce929d0e0e4736"
		header = "0af7651916cd43dd8448eb211c80319c"
	)
	send := func(typ string, headers map[string]string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("{}"))
		for k, v := range map[string]string{"Ce-Specversion": "1.0", "Ce-Id": typ + "-1", "Ce-Source": "/test", "Ce-Type": typ, "Content-Type": "application/json"} {
			req.Header.Set(k, v)
		}
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	cases := []struct {
		name    string
		typ     string
		headers map[string]string
		trace   string
	}{
		{"the extension", "test.ok", map[string]string{"Ce-Traceparent": "00-" + trace + "-00f067aa0ba902b7-01", "Traceparent": "00-" + header + "-00f067aa0ba902b7-01"}, trace},
		{"the header", "test.refused", map[string]string{"Traceparent": "00-" + header + "-00f067aa0ba902b7-01"}, header},
		{"none", "test.ok", nil, ""},
	}
	for _, c := range cases {
		send(c.typ, c.headers)
		got := <-seen
		if c.trace == "" && got != "" || c.trace != "" && !strings.HasPrefix(got, "00-"+c.trace+"-") {
			t.Errorf("%s: the handler ran in trace %q, want %q", c.name, got, c.trace)
		}
	}
	if resp, err := http.Get(srv.URL + "/jobmanager/groups"); err == nil {
		resp.Body.Close()
	}
	metrics := get(t, srv.URL+"/metrics", http.StatusOK)
	for _, want := range []string{
		`ocmjobs_events_handled_total{answer="done",type="test.ok"} 2`,
		`ocmjobs_events_handled_total{answer="refused",type="test.refused"} 1`,
		`ocmjobs_rest_requests_total{route="GET /jobmanager/groups",status="2xx"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, metrics)
		}
	}
	get(t, serve(true).URL+"/metrics", http.StatusNotFound)
}

func get(t *testing.T, url string, want int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Errorf("GET %s: %d, want %d: %s", url, resp.StatusCode, want, raw)
	}
	return string(raw)
}
