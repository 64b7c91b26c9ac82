package telemetry_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/telemetry"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// counter is the value of family{label=value} in what tel's registry serves.
func counter(t *testing.T, tel *telemetry.Telemetry, family, label, value string) float64 {
	t.Helper()
	mfs, err := tel.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// TestClientErrors: a real redis-server's refusals are counted by command (a missing key and
// go-redis's handshake are not failures), and hub requests that fail — a 5xx, no answer — by
// verb, a 404 not.
func TestClientErrors(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	ctx := context.Background()
	tel, err := telemetry.New(ctx, "ocm-jobs.test")
	if err != nil {
		t.Fatal(err)
	}
	r, err := servers.StartRedis(servers.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { rdb.Close() })
	rdb.AddHook(telemetry.RedisErrors(tel))
	if err := rdb.Set(ctx, "k", "not a number", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Get(ctx, "missing").Err(); err != redis.Nil {
		t.Fatalf("GET missing: %v", err)
	}
	if err := rdb.Incr(ctx, "k").Err(); err == nil {
		t.Fatal("INCR of a string succeeded")
	}
	pipe := rdb.Pipeline()
	pipe.Incr(ctx, "k")
	pipe.Get(ctx, "k")
	_, _ = pipe.Exec(ctx)
	if n := counter(t, tel, "ocmjobs_redis_errors_total", "command", "incr"); n != 2 {
		t.Errorf("incr errors %v, want 2 (one alone, one in a pipeline)", n)
	}
	for _, cmd := range []string{"get", "set", "client", "hello"} {
		if n := counter(t, tel, "ocmjobs_redis_errors_total", "command", cmd); n != 0 {
			t.Errorf("%s counted %v errors, want none", cmd, n)
		}
	}

	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/broken":
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	client := &http.Client{Transport: telemetry.HubErrors(tel)(http.DefaultTransport)}
	for _, req := range []struct{ method, url string }{
		{http.MethodGet, hub.URL + "/broken"}, {http.MethodGet, hub.URL + "/missing"}, {http.MethodPatch, hub.URL + "/broken"},
	} {
		rq, _ := http.NewRequest(req.method, req.url, nil)
		if resp, err := client.Do(rq); err == nil {
			resp.Body.Close()
		}
	}
	hub.Close()
	if resp, err := client.Get(hub.URL + "/gone"); err == nil {
		resp.Body.Close()
	}
	for verb, want := range map[string]float64{"get": 2, "patch": 1} {
		if n := counter(t, tel, "ocmjobs_hub_errors_total", "verb", verb); n != want {
			t.Errorf("hub %s errors %v, want %v", verb, n, want)
		}
	}
}
