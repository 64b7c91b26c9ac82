package telemetry_test

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/ocm-jobs/ocm-jobs/shared/telemetry"
)

const dashboard = "../../k8s/overlays/dev/grafana/ocm-jobs-dashboard.json"

// exported builds the telemetry as a process does, records through every method once and
// returns the names the real Prometheus registry serves (a histogram's as its series:
// _bucket, _sum, _count).
func exported(t *testing.T) map[string]dto.MetricType {
	t.Helper()
	for _, v := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
		"OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"} {
		t.Setenv(v, "")
	}
	ctx := context.Background()
	tel, err := telemetry.New(ctx, "ocm-jobs.test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(ctx) })
	err = tel.ObserveBacklog(func(context.Context) (telemetry.Backlog, error) {
		return telemetry.Backlog{Jobs: map[string]int64{"Created": 2}, OldestCreated: time.Minute, OutboxDepth: 3}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	tel.Transition(ctx, "CreateDeployment", "", "Progressing", "cluster1")
	tel.Degraded(ctx, "WorkNotApplied")
	tel.Applied(ctx, "CreateDeployment", time.Second)
	tel.Available(ctx, "CreateDeployment", time.Second)
	tel.EventHandled(ctx, "eu.icos.job.created.v1", telemetry.AnswerDone)
	tel.Published(ctx, "eu.icos.job.created.v1", telemetry.PathAtOnce, true)
	tel.RESTRequest(ctx, "GET /jobmanager/groups", 200)
	tel.Incompliance(ctx, "scale-out", telemetry.IncomplianceApplied)
	tel.SyncTick(ctx, time.Millisecond, 3)
	tel.SyncWrite(ctx, "state")
	tel.RedisError(ctx, "evalsha")
	tel.HubError(ctx, "get")
	families, err := tel.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]dto.MetricType{}
	for _, f := range families {
		names[f.GetName()] = f.GetType()
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[f.GetName()+s] = f.GetType()
			}
		}
	}
	return names
}

// TestDashboardQueriesNameExportedMetrics: every query of the Grafana dashboard names at least
// one ocmjobs_ metric, and every metric it names is one the real exporter's registry serves.
func TestDashboardQueriesNameExportedMetrics(t *testing.T) {
	names := exported(t)
	raw, err := os.ReadFile(dashboard)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%s is not JSON: %v", dashboard, err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "expr" {
					exprs = append(exprs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	if len(exprs) < 10 {
		t.Fatalf("the dashboard has %d queries; want its panels' (throughput, latency, backlog, failures, clusters)", len(exprs))
	}
	metric := regexp.MustCompile(`\bocmjobs_[a-z0-9_]+`)
	used := map[string]bool{}
	for _, e := range exprs {
		found := metric.FindAllString(e, -1)
		if len(found) == 0 {
			t.Errorf("query %q names no ocmjobs_ metric", e)
		}
		for _, m := range found {
			used[m] = true
			if _, ok := names[m]; !ok {
				t.Errorf("query %q names %s, which the code does not export", e, m)
			}
		}
	}
	var missing []string
	for n := range names {
		if strings.HasPrefix(n, "ocmjobs_") && !strings.HasSuffix(n, "_sum") && !strings.HasSuffix(n, "_count") &&
			names[n] != dto.MetricType_HISTOGRAM && !used[n] {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("exported but on no panel: %v", missing)
	}
}
