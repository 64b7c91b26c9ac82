// Package statussync is the status sync function: it reads the status of this hub's
// ManifestWorks and brings it back into resource conditions and job state.
//
// A tick (the cron PingSource) reads the jobs this hub owns from the store (without their
// manifests: three Redis round trips with the clock) and, at the same time, this hub's
// ManifestWorks from the hub: one cluster-wide LIST with the owner's label selector, served
// from the API server's watch cache and decoded as it streams in — never one GET per job (a
// paginated LIST from etcd measured 3–4x slower). For every job it derives the resource (the
// work's conditions, its name, UID and cluster, the workloads' replica counts from status
// feedback) and the job's verdict, and writes only what changed: the resource first, then the
// state, each write carrying the owner's fencing token, and the resource only while it is
// still the one read (the executor writes it too). A job.progressing event checks its job at
// once, with a GET, and again with backoff until the agent has a verdict (the agent needs a
// moment to apply a fresh work) or PROGRESS_WAIT passes: a fresh job finishes within a second
// of being dispatched rather than a tick later.
//
// A work's status is a verdict on a job only when the job's current execution wrote it (the
// executor's Dispatched condition at the job's fence, or the work's fence annotation), so a
// tick between a promote and the executor's write of the new spec cannot finish the job on
// the old one. A work the LIST does not show is confirmed gone with a GET before its job is
// degraded.
//
// Status sync does not renew execution leases: a lease belongs to an execution of the
// executor (its holder), and a live status sync renewing the lease of a dead executor would
// hide it from the takeover rule; renewing would also make every tick one write per
// Progressing job. A job whose work makes no progress is bounded by PROGRESS_DEADLINE instead
// (Degraded, reason Timeout), counted from the job's last write.
package statussync

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	"knative.dev/pkg/logging"

	"github.com/ocm-jobs/ocm-jobs/shared/config"
	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/shared/platform"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/shared/telemetry"
)

// Name is the function's name (FUNCTION, Knative Service suffix).
const Name = config.StatusSync

// Config is the statussync function's configuration, from the environment.
type Config struct {
	config.Runtime
	config.Store
	config.Verdict
	ProgressDeadline time.Duration `envconfig:"PROGRESS_DEADLINE" default:"5m" desc:"how long a job may stay Progressing without a verdict from the work agent before it goes Degraded with reason Timeout"`
	ProgressWait     time.Duration `envconfig:"PROGRESS_WAIT" default:"15s" desc:"how long a job.progressing event waits for the work agent's verdict on the job's ManifestWork (one GET at 0.1 s, 0.2 s, … then every second) before leaving the job to the cron tick"`
	ListPageSize     int64         `envconfig:"LIST_PAGE_SIZE" default:"0" desc:"ManifestWorks per page of the tick's LIST; 0 lists them in one call served from the API server's watch cache (resourceVersion=0), which is the fastest"`
	WriteConcurrency int           `envconfig:"WRITE_CONCURRENCY" default:"16" desc:"jobs whose state or resource a tick writes concurrently (each write is one Redis round trip)"`
	HubCompression   bool          `envconfig:"HUB_COMPRESSION" default:"false" desc:"let the API server gzip its answers to status sync; off by default: gzipping a 10,000-ManifestWork LIST costs the API server more CPU than carrying it uncompressed costs the cluster network"`
}

// Validate checks what envconfig cannot.
func (c Config) Validate() error {
	switch {
	case c.SyncGrace < 0:
		return fmt.Errorf("SYNC_GRACE=%s: must not be negative", c.SyncGrace)
	case c.ProgressDeadline <= 0:
		return fmt.Errorf("PROGRESS_DEADLINE=%s: must be positive", c.ProgressDeadline)
	case c.ProgressWait < 0:
		return fmt.Errorf("PROGRESS_WAIT=%s: must not be negative", c.ProgressWait)
	case c.ListPageSize < 0:
		return fmt.Errorf("LIST_PAGE_SIZE=%d: must not be negative", c.ListPageSize)
	case c.WriteConcurrency <= 0:
		return fmt.Errorf("WRITE_CONCURRENCY=%d: must be positive", c.WriteConcurrency)
	}
	return nil
}

// Types are the event types the statussync function handles.
var Types = []string{events.JobProgressing, events.Ping, events.APIServerAdd, events.APIServerUpdate, events.APIServerDelete}

// Function is the statussync function.
type Function struct {
	cfg   Config
	store *store.Store
	hubID string
	works *ocm.Works
	// hub reads the PlacementDecisions of the Placements groups follow (placement.go).
	hub *ocm.Hub
	// noHub says why there is no hub (no kubeconfig, not in a cluster): every event is
	// answered 503 until the function is deployed where a hub is.
	noHub error
	tel   *telemetry.Telemetry
}

// New builds the function on the platform's store and hub.
func New(ctx context.Context, cfg Config, p platform.Platform) (*Function, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f := &Function{cfg: cfg, store: p.Store.As(events.Source(p.HubID, Name)), hubID: p.HubID, tel: p.Telemetry}
	if p.Hub == nil {
		f.noHub = p.NoHub
		if f.noHub == nil {
			f.noHub = fmt.Errorf("no hub clients")
		}
		logging.FromContext(ctx).Warnw("no hub API server: status sync answers 503 until it has one", "error", f.noHub)
		return f, nil
	}
	f.hub = p.Hub
	var err error
	f.works, err = ocm.NewWorks(p.Hub, p.HubID, ocm.WorksOptions{PageSize: cfg.ListPageSize, Compress: cfg.HubCompression})
	if err != nil {
		return nil, err
	}
	return f, nil
}

// Routes are the function's HTTP routes besides CloudEvents: none, the jobs function serves
// the resource status it writes.
func (f *Function) Routes() map[string]http.Handler { return nil }

// Handle handles the cron tick (sync every job of this hub), job.progressing (sync that job
// now, not a tick later) and an ApiServerSource's change of a ManifestWork (sync its job once,
// at once: the work's agent wrote its status, or someone deleted it).
func (f *Function) Handle(ctx context.Context, e event.Event) (*event.Event, protocol.Result) {
	if f.noHub != nil {
		return nil, events.Unavailable("status sync has no hub: %v", f.noHub)
	}
	switch e.Type() {
	case events.Ping:
		r, err := f.Tick(ctx)
		if err != nil {
			return nil, events.Unavailable("status sync: %v", err)
		}
		// Then the rollouts, on the states the sync just wrote.
		if _, err := f.Rollouts(ctx); err != nil {
			return nil, events.Unavailable("rollouts: %v", err)
		}
		// Then the Placements components follow (a cluster decided or no longer decided).
		if _, err := f.Placements(ctx); err != nil {
			return nil, events.Unavailable("placements: %v", err)
		}
		return nil, events.Done("%s", r)
	case events.JobProgressing:
		jobID, err := jobIDOf(e)
		if err != nil {
			return nil, events.Unprocessable("%v", err)
		}
		r, err := f.SyncJob(ctx, jobID)
		if err != nil {
			return nil, events.Unavailable("status sync of job %s: %v", jobID, err)
		}
		return nil, events.Done("%s", r)
	case events.APIServerAdd, events.APIServerUpdate, events.APIServerDelete:
		jobID, ok, err := jobOfWork(e)
		if err != nil {
			return nil, events.Unprocessable("%v", err)
		}
		if !ok {
			return nil, events.Done("not a job's ManifestWork")
		}
		r, err := f.SyncWork(ctx, jobID)
		if err != nil {
			return nil, events.Unavailable("status sync of job %s: %v", jobID, err)
		}
		return nil, events.Done("%s", r)
	default:
		return nil, events.Invalid("the statussync function does not handle %s", e.Type())
	}
}

// jobIDOf reads the job id of a job event: the jobid extension, else the subject, else the
// data's id.
func jobIDOf(e event.Event) (string, error) {
	if v, ok := e.Extensions()[events.ExtJobID]; ok {
		if s, ok := v.(string); ok && s != "" {
			return s, nil
		}
	}
	if e.Subject() != "" {
		return e.Subject(), nil
	}
	var j struct {
		ID  string `json:"id"`
		ID2 string `json:"ID"`
	}
	if err := e.DataAs(&j); err == nil {
		if j.ID != "" {
			return j.ID, nil
		}
		if j.ID2 != "" {
			return j.ID2, nil
		}
	}
	return "", fmt.Errorf("the event names no job (no jobid extension, subject or data id)")
}

// jobOfWork reads the job of an ApiServerSource event in Reference mode ({"apiVersion",
// "kind", "namespace", "name"}): ok is false for an object that is not a job's ManifestWork.
func jobOfWork(e event.Event) (jobID string, ok bool, err error) {
	var ref struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Namespace  string `json:"namespace"`
		Name       string `json:"name"`
	}
	if err := e.DataAs(&ref); err != nil {
		return "", false, fmt.Errorf("the ApiServerSource event's data is no object reference: %v", err)
	}
	if ref.Kind != "ManifestWork" || !strings.HasPrefix(ref.APIVersion, "work.open-cluster-management.io/") {
		return "", false, nil
	}
	jobID, ok = strings.CutPrefix(ref.Name, ocm.WorkName(""))
	return jobID, ok && jobID != "", nil
}
