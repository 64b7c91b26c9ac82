package telemetry

import (
	"context"
	"errors"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// The families below are what /metrics shows (the Prometheus exporter adds _total to counters
// and the unit to histograms: ocmjobs_execution_applied_seconds_bucket, …). Hot paths only add
// to counters and histograms; the backlog is read from the store when a scrape asks for it.

// latencyBuckets suit job latencies: tens of milliseconds (an apply on a near hub) to minutes
// (an image pull before Available).
var latencyBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// tickBuckets suit a status-sync tick: a few milliseconds to tens of seconds.
var tickBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

type instruments struct {
	transitions      metric.Int64Counter
	degraded         metric.Int64Counter
	applied          metric.Float64Histogram
	available        metric.Float64Histogram
	eventsHandled    metric.Int64Counter
	published        metric.Int64Counter
	restRequests     metric.Int64Counter
	incompliances    metric.Int64Counter
	tick             metric.Float64Histogram
	worksListed      metric.Int64Counter
	syncWrites       metric.Int64Counter
	redisErrors      metric.Int64Counter
	hubErrors        metric.Int64Counter
	jobs             metric.Int64ObservableGauge
	oldestCreatedAge metric.Float64ObservableGauge
	outboxDepth      metric.Int64ObservableGauge
}

func newInstruments(m metric.Meter) (instruments, error) {
	var (
		in   instruments
		errs []error
	)
	counter := func(name, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	histogram := func(name, desc string, buckets []float64) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithDescription(desc), metric.WithUnit("s"),
			metric.WithExplicitBucketBoundaries(buckets...))
		errs = append(errs, err)
		return h
	}
	in.transitions = counter("ocmjobs_job_transitions", "Jobs' committed changes of state, by job type, sub-type, new state and target cluster.")
	in.degraded = counter("ocmjobs_jobs_degraded", "Jobs that became Degraded, by the reason of their condition.")
	in.applied = histogram("ocmjobs_execution_applied", "From job.created to its ManifestWork applied on the hub (executor), by job type.", latencyBuckets)
	in.available = histogram("ocmjobs_execution_available", "From job.created to the job Finished with its work Available (status sync), by job type.", latencyBuckets)
	in.eventsHandled = counter("ocmjobs_events_handled", "CloudEvents handled, by type and answer class (done, refused, retry).")
	in.published = counter("ocmjobs_events_published", "Events published from the outbox, by type, outcome (ok, failed) and path (at_once, on_tick).")
	in.restRequests = counter("ocmjobs_rest_requests", "REST requests, by route and status class.")
	in.incompliances = counter("ocmjobs_incompliances", "Incompliances, by remediation and outcome (applied, cooled_down, rejected).")
	in.tick = histogram("ocmjobs_statussync_tick_duration", "Duration of a status-sync pass over this hub's works.", tickBuckets)
	in.worksListed = counter("ocmjobs_statussync_works_listed", "ManifestWorks status sync listed from the hub.")
	in.syncWrites = counter("ocmjobs_statussync_writes", "Job changes status sync wrote, by kind (resource, state).")
	in.redisErrors = counter("ocmjobs_redis_errors", "Redis commands that failed, by command.")
	in.hubErrors = counter("ocmjobs_hub_errors", "Hub API requests that failed (no answer or 5xx), by verb.")
	var err error
	in.jobs, err = m.Int64ObservableGauge("ocmjobs_jobs", metric.WithDescription("Jobs by state, read from the store at scrape time."))
	errs = append(errs, err)
	in.oldestCreatedAge, err = m.Float64ObservableGauge("ocmjobs_oldest_created_job_age", metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest job waiting in Created (0 when none waits)."))
	errs = append(errs, err)
	in.outboxDepth, err = m.Int64ObservableGauge("ocmjobs_outbox_depth", metric.WithDescription("Events waiting in the outboxes."))
	errs = append(errs, err)
	return in, errors.Join(errs...)
}

// Backlog is what the store holds that waits: jobs by state (names as the API shows them),
// the oldest Created job's age, the outbox's depth.
type Backlog struct {
	Jobs          map[string]int64
	OldestCreated time.Duration
	OutboxDepth   int64
}

// ObserveBacklog reads the backlog with read whenever metrics are collected (a scrape, an
// OTLP push): one read per collection, nothing on the hot path.
func (t *Telemetry) ObserveBacklog(read func(ctx context.Context) (Backlog, error)) error {
	if t == nil {
		return nil
	}
	m := t.meters.Meter(Scope)
	_, err := m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		b, err := read(ctx)
		if err != nil {
			return err
		}
		for state, n := range b.Jobs {
			o.ObserveInt64(t.inst.jobs, n, metric.WithAttributes(attribute.String("state", state)))
		}
		o.ObserveFloat64(t.inst.oldestCreatedAge, b.OldestCreated.Seconds())
		o.ObserveInt64(t.inst.outboxDepth, b.OutboxDepth)
		return nil
	}, t.inst.jobs, t.inst.oldestCreatedAge, t.inst.outboxDepth)
	return err
}

// Transition counts one committed change of a job's state (cluster: its target, or "").
func (t *Telemetry) Transition(ctx context.Context, jobType, subType, state, cluster string) {
	if t == nil {
		return
	}
	t.inst.transitions.Add(ctx, 1, metric.WithAttributes(attribute.String("type", jobType),
		attribute.String("sub_type", subType), attribute.String("state", state), attribute.String("cluster", cluster)))
}

// Degraded counts a job that became Degraded for reason.
func (t *Telemetry) Degraded(ctx context.Context, reason string) {
	if t == nil {
		return
	}
	t.inst.degraded.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
}

// Applied records the time from job.created to the job's ManifestWork applied.
func (t *Telemetry) Applied(ctx context.Context, jobType string, d time.Duration) {
	if t == nil || d < 0 {
		return
	}
	t.inst.applied.Record(ctx, d.Seconds(), metric.WithAttributes(attribute.String("type", jobType)))
}

// Available records the time from job.created to the job Finished with its work Available.
func (t *Telemetry) Available(ctx context.Context, jobType string, d time.Duration) {
	if t == nil || d < 0 {
		return
	}
	t.inst.available.Record(ctx, d.Seconds(), metric.WithAttributes(attribute.String("type", jobType)))
}

// Answer classes of a handled event: what its sender does next.
const (
	AnswerDone    = "done"    // 2xx: handled
	AnswerRefused = "refused" // 4xx: never retried
	AnswerRetry   = "retry"   // transient: the broker retries
)

// EventHandled counts a handled event by type and answer class.
func (t *Telemetry) EventHandled(ctx context.Context, eventType, answer string) {
	if t == nil {
		return
	}
	t.inst.eventsHandled.Add(ctx, 1, metric.WithAttributes(attribute.String("type", eventType), attribute.String("answer", answer)))
}

// Publish paths: right after the change (the handler's own entries) or by the tick's drain.
const (
	PathAtOnce = "at_once"
	PathOnTick = "on_tick"
)

// Published counts a publish of an outbox entry (ok false: the broker did not take it).
func (t *Telemetry) Published(ctx context.Context, eventType, path string, ok bool) {
	if t == nil {
		return
	}
	outcome := "ok"
	if !ok {
		outcome = "failed"
	}
	t.inst.published.Add(ctx, 1, metric.WithAttributes(attribute.String("type", eventType),
		attribute.String("outcome", outcome), attribute.String("path", path)))
}

// RESTRequest counts a REST request by route pattern and status.
func (t *Telemetry) RESTRequest(ctx context.Context, route string, status int) {
	if t == nil {
		return
	}
	t.inst.restRequests.Add(ctx, 1, metric.WithAttributes(attribute.String("route", route),
		attribute.String("status", strconv.Itoa(status/100)+"xx")))
}

// Incompliance outcomes as the metric names them.
const (
	IncomplianceApplied    = "applied"
	IncomplianceCooledDown = "cooled_down"
	IncomplianceRejected   = "rejected"
)

// Incompliance counts an incompliance settled with outcome; remediation is the action it
// asked for ("" when it named none).
func (t *Telemetry) Incompliance(ctx context.Context, remediation, outcome string) {
	if t == nil {
		return
	}
	t.inst.incompliances.Add(ctx, 1, metric.WithAttributes(attribute.String("remediation", remediation), attribute.String("outcome", outcome)))
}

// SyncTick records one status-sync pass: its duration and how many works it listed.
func (t *Telemetry) SyncTick(ctx context.Context, d time.Duration, worksListed int) {
	if t == nil {
		return
	}
	t.inst.tick.Record(ctx, d.Seconds())
	t.inst.worksListed.Add(ctx, int64(worksListed))
}

// SyncWrite counts a change status sync wrote to a job (kind: resource, state).
func (t *Telemetry) SyncWrite(ctx context.Context, kind string) {
	if t == nil {
		return
	}
	t.inst.syncWrites.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", kind)))
}

// RedisError counts a failed Redis command.
func (t *Telemetry) RedisError(ctx context.Context, command string) {
	if t == nil {
		return
	}
	t.inst.redisErrors.Add(ctx, 1, metric.WithAttributes(attribute.String("command", command)))
}

// HubError counts a failed hub API request.
func (t *Telemetry) HubError(ctx context.Context, verb string) {
	if t == nil {
		return
	}
	t.inst.hubErrors.Add(ctx, 1, metric.WithAttributes(attribute.String("verb", verb)))
}
