// Package telemetry is what ocm-jobs tells an operator besides its logs: OpenTelemetry metrics,
// exported in Prometheus format on /metrics (and pushed with OTLP when the standard OTEL_*
// variables ask for it), and traces — a span per handled event, REST request, execution,
// status-sync write and publish — exported with OTLP when configured and not recorded
// otherwise. The W3C trace context travels in the CloudEvents `traceparent` extension, so one
// trace follows a group through every function.
//
// One Telemetry is built per process (New) and shared by its functions. Every method is safe
// on a nil *Telemetry, which records nothing: tools and tests that build parts without it need
// no stand-in.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Scope is the instrumentation scope of every instrument and span of ocm-jobs.
const Scope = "github.com/ocm-jobs/ocm-jobs"

// MetricsPath is where every function process serves its metrics.
const MetricsPath = "/metrics"

// Telemetry is one process's meter and tracer.
type Telemetry struct {
	registry *prometheus.Registry
	meters   *sdkmetric.MeterProvider
	tracers  *sdktrace.TracerProvider // nil when traces are off
	tracer   trace.Tracer
	inst     instruments
}

// New builds the telemetry of a process serving service (e.g. "ocm-jobs.executor"; the
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES variables override it). Metrics are always
// kept for /metrics; OTLP export of metrics and traces follows the standard variables (see
// OTLPTraces, OTLPMetrics).
func New(ctx context.Context, service string) (*Telemetry, error) {
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(attribute.String("service.name", service)),
		resource.WithFromEnv())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	t := &Telemetry{registry: prometheus.NewRegistry()}
	t.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	prom, err := otelprom.New(otelprom.WithRegisterer(t.registry), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	opts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(prom)}
	if on, err := OTLPMetrics(); err != nil {
		return nil, err
	} else if on {
		exp, err := otlpmetrichttp.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("OTLP metric exporter: %w", err)
		}
		opts = append(opts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)))
	}
	t.meters = sdkmetric.NewMeterProvider(opts...)
	if t.inst, err = newInstruments(t.meters.Meter(Scope)); err != nil {
		return nil, err
	}
	t.tracer = noop.NewTracerProvider().Tracer(Scope)
	if on, err := OTLPTraces(); err != nil {
		return nil, err
	} else if on {
		exp, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("OTLP trace exporter: %w", err)
		}
		// The sampler follows OTEL_TRACES_SAMPLER, the batcher OTEL_BSP_*.
		t.tracers = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
		t.tracer = t.tracers.Tracer(Scope)
	}
	return t, nil
}

// OTLPTraces reports whether the standard variables ask for traces to be exported with OTLP:
// an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or
// OTEL_TRACES_EXPORTER=otlp, and neither OTEL_TRACES_EXPORTER=none nor OTEL_SDK_DISABLED=true.
// Only the http/protobuf protocol is built in: asking for grpc is an error, not a silent no.
func OTLPTraces() (bool, error) { return otlpWanted("TRACES") }

// OTLPMetrics is OTLPTraces for metrics (OTEL_METRICS_EXPORTER, …_METRICS_ENDPOINT).
func OTLPMetrics() (bool, error) { return otlpWanted("METRICS") }

func otlpWanted(signal string) (bool, error) {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return false, nil
	}
	exporter := strings.ToLower(os.Getenv("OTEL_" + signal + "_EXPORTER"))
	switch exporter {
	case "none":
		return false, nil
	case "", "otlp":
	default:
		return false, fmt.Errorf("OTEL_%s_EXPORTER=%s: only otlp (http/protobuf) or none is supported", signal, exporter)
	}
	on := exporter == "otlp" || os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" ||
		os.Getenv("OTEL_EXPORTER_OTLP_"+signal+"_ENDPOINT") != ""
	if !on {
		return false, nil
	}
	for _, v := range []string{"OTEL_EXPORTER_OTLP_" + signal + "_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := os.Getenv(v); p != "" {
			if p != "http/protobuf" {
				return false, fmt.Errorf("%s=%s: only http/protobuf is supported", v, p)
			}
			break
		}
	}
	return true, nil
}

// Handler serves the metrics in Prometheus' text format (nil: 404).
func (t *Telemetry) Handler() http.Handler {
	if t == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{})
}

// Gatherer is the registry /metrics serves.
func (t *Telemetry) Gatherer() prometheus.Gatherer { return t.registry }

// Shutdown flushes and stops the exporters.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	var errs []error
	if t.tracers != nil {
		errs = append(errs, t.tracers.Shutdown(ctx))
	}
	errs = append(errs, t.meters.Shutdown(ctx))
	return errors.Join(errs...)
}
