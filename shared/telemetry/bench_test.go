package telemetry_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/ocm-jobs/ocm-jobs/shared/telemetry"
)

// BenchmarkHotPath measures what the telemetry adds to one handled event without an OTLP
// exporter: its span (carrying the incoming traceparent on), a transition and an answer
// counted, a latency recorded.
func BenchmarkHotPath(b *testing.B) {
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	tel, err := telemetry.New(context.Background(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	ctx := telemetry.WithTraceparent(context.Background(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		sctx, span := tel.Start(ctx, "event eu.icos.job.created.v1", trace.SpanKindConsumer)
		_ = telemetry.Traceparent(sctx)
		tel.Transition(sctx, "CreateDeployment", "", "Progressing", "cluster1")
		tel.EventHandled(sctx, "eu.icos.job.created.v1", telemetry.AnswerDone)
		tel.Applied(sctx, "CreateDeployment", 40*time.Millisecond)
		telemetry.End(span, nil)
	}
}
