// Package executor is the deployment execution function: it promotes jobs of the clusters
// this hub manages to this hub (atomic, fenced), executes them as ManifestWorks, and records
// what it did.
//
// Who owns what: the executor alone promotes jobs and writes ManifestWorks (through
// shared/ocm's Works); it records on the job what an execution decided (a remediation's
// result, a reallocation's progress) and that it was applied, and it degrades a job it cannot
// execute. Status sync alone reads the works' status back into the jobs. Every state change is
// announced through the store's outbox, never published by hand.
package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/api/resource"
	"knative.dev/pkg/logging"

	"github.com/ocm-jobs/ocm-jobs/functions/executor/remediation"
	"github.com/ocm-jobs/ocm-jobs/shared/config"
	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/shared/faults"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/shared/platform"
	"github.com/ocm-jobs/ocm-jobs/shared/policy"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/shared/telemetry"
)

// Name is the function's name (FUNCTION, Knative Service suffix).
const Name = config.Executor

// Config is the executor's configuration, from the environment.
type Config struct {
	config.Runtime
	config.Store
	config.Verdict
	MinReplicas         int32         `envconfig:"REMEDIATION_MIN_REPLICAS" default:"1" desc:"scale-in never goes below this many replicas"`
	MaxReplicas         int32         `envconfig:"REMEDIATION_MAX_REPLICAS" default:"100" desc:"scale-out never goes above this many replicas"`
	CPUStep             string        `envconfig:"REMEDIATION_CPU_STEP" default:"100m" desc:"CPU added (scale-up) or removed (scale-down) per container, on requests and limits"`
	MemoryStep          string        `envconfig:"REMEDIATION_MEMORY_STEP" default:"100Mi" desc:"memory added or removed per container by scale-up/scale-down"`
	CPUFloor            string        `envconfig:"REMEDIATION_CPU_FLOOR" default:"100m" desc:"scale-down never takes a container's CPU below this"`
	MemoryFloor         string        `envconfig:"REMEDIATION_MEMORY_FLOOR" default:"64Mi" desc:"scale-down never takes a container's memory below this"`
	DeleteWait          time.Duration `envconfig:"DELETE_WAIT" default:"20s" desc:"how long a DeleteDeployment waits for its ManifestWork to be gone before leaving it to status sync"`
	ReallocationTimeout time.Duration `envconfig:"REALLOCATION_TIMEOUT" default:"2m" desc:"how long a reallocation waits, across deliveries and ticks, for the new cluster's ManifestWork to be Available before it rolls back (the old one is kept)"`
	StepWait            time.Duration `envconfig:"REALLOCATION_STEP_WAIT" default:"10s" desc:"how long one delivery waits on a step of a reallocation (new work Available, old work gone) before leaving the rest to the next tick; keep it well under the Knative request timeout"`
	config.Placement
	config.Policy
	ExecutorSubject bool          `envconfig:"EXECUTOR_SUBJECT" default:"true" desc:"the work agent applies a job's objects as the deployer service account of the job's namespace, which holds only what the manifest policy allows there (an access ManifestWork per namespace and cluster creates it), so the spoke's RBAC enforces the policy at apply time too; false: the agent applies with its own rights (needed for a policy that allows cluster-scoped kinds or other namespaces)"`
	AccessWait      time.Duration `envconfig:"ACCESS_WAIT" default:"20s" desc:"how long a delivery waits for a namespace's access ManifestWork to be applied on its cluster before the job's own work is applied (the first job of a namespace on a cluster only); the job is retried after that"`
	SweepMax        int           `envconfig:"SWEEP_MAX" default:"500" desc:"most jobs one cron tick's sweep executes"`
	ClusterCacheTTL time.Duration `envconfig:"CLUSTER_CACHE_TTL" default:"10s" desc:"how long the set of ManagedClusters this hub manages is cached"`
	HubRegistration time.Duration `envconfig:"HUB_REGISTRATION_TTL" default:"2m" desc:"how long this hub's entry in the hub registry (the clusters it manages) lasts; renewed on every cron tick. A Created job whose cluster no registered hub manages is marked NoManagingHub"`
	// The fault tests' hooks (tests/chaos, FAULT_KILL_AFTER_APPLY); off unless configured.
	faults.Config
}

// Types are the event types the executor handles: new jobs, and the cron tick that sweeps
// for jobs whose events were lost, executions that died, reallocations in progress, and jobs
// to take over.
var Types = []string{events.JobCreated, events.Ping}

// Function is the executor.
type Function struct {
	cfg      Config
	store    *store.Store
	works    *ocm.Works
	clusters *ocm.Clusters
	hub      *ocm.Hub
	hubID    string
	opts     remediation.Options
	policy   policy.Policy
	faults   *faults.Injector
	tel      *telemetry.Telemetry
	// opened remembers, by cluster/namespace, what this process last saw of the namespace's
	// access work (see ensureAccess).
	opened sync.Map
}

// New builds the executor on the platform's store and hub.
func New(ctx context.Context, cfg Config, p platform.Platform) (*Function, error) {
	if p.Hub == nil {
		return nil, fmt.Errorf("the executor needs a hub API server: %v", p.NoHub)
	}
	opts := remediation.DefaultOptions()
	opts.MinReplicas, opts.MaxReplicas = cfg.MinReplicas, cfg.MaxReplicas
	for _, q := range []struct {
		dst *resource.Quantity
		env string
		val string
	}{{&opts.CPUStep, "REMEDIATION_CPU_STEP", cfg.CPUStep}, {&opts.MemoryStep, "REMEDIATION_MEMORY_STEP", cfg.MemoryStep},
		{&opts.CPUFloor, "REMEDIATION_CPU_FLOOR", cfg.CPUFloor}, {&opts.MemoryFloor, "REMEDIATION_MEMORY_FLOOR", cfg.MemoryFloor}} {
		v, err := resource.ParseQuantity(q.val)
		if err != nil {
			return nil, fmt.Errorf("%s=%q: %w", q.env, q.val, err)
		}
		*q.dst = v
	}
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("remediation settings: %w", err)
	}
	works, err := ocm.NewWorks(p.Hub, p.HubID, ocm.WorksOptions{})
	if err != nil {
		return nil, err
	}
	inj, err := faults.New(cfg.Config)
	if err != nil {
		return nil, err
	}
	pol, err := policy.Load(cfg.ManifestPolicy)
	if err != nil {
		return nil, err
	}
	logging.FromContext(ctx).Infow("executor ready", "hubID", p.HubID)
	return &Function{cfg: cfg, store: p.Store.As(events.Source(p.HubID, Name)), works: works, hub: p.Hub, hubID: p.HubID,
		clusters: &ocm.Clusters{Hub: p.Hub, TTL: cfg.ClusterCacheTTL}, opts: opts, policy: pol, faults: inj, tel: p.Telemetry}, nil
}

// Routes: the executor has no REST routes.
func (f *Function) Routes() map[string]http.Handler { return nil }

// Handle executes the job of a job.created event, or sweeps on the cron tick.
func (f *Function) Handle(ctx context.Context, e event.Event) (*event.Event, protocol.Result) {
	switch e.Type() {
	case events.Ping:
		if err := f.sweep(ctx); err != nil {
			return nil, events.Unavailable("%v", err)
		}
		return nil, events.Done("swept")
	case events.JobCreated:
		id, _ := e.Extensions()[events.ExtJobID].(string)
		// The event's data is the job as it was announced (ocm-jobs' own events carry it).
		var seen model.Job
		dataErr := json.Unmarshal(e.Data(), &seen)
		if id == "" {
			if dataErr != nil || seen.ID == "" {
				return nil, events.Unprocessable("job.created names no job: no jobid extension and no job in the data (%v)", dataErr)
			}
			id = seen.ID
		}
		if dataErr != nil || seen.ID != id {
			return nil, f.handleJob(ctx, id, nil)
		}
		return nil, f.handleJob(ctx, id, &seen)
	}
	return nil, events.Invalid("the executor does not handle %s", e.Type())
}

// handleJob decides what to do with one job, from its stored state (the event may be stale).
// A job the event saw Created, for a cluster this hub manages, is promoted straight away on
// the condition that it still is Created with that target (one round trip to Redis, not two);
// any other answer of that promote sends the job down the path that reads it first.
func (f *Function) handleJob(ctx context.Context, id string, seen *model.Job) protocol.Result {
	if seen != nil && f.createdForUs(seen) && seen.Targets != nil && seen.Targets.ClusterName != "" &&
		seen.Targets.Orchestrator == model.OCM {
		if mine, err := f.clusters.Manages(ctx, seen.Targets.ClusterName); err == nil && mine {
			if result := f.execute(ctx, seen, false, seen.Targets); result != errStaleTarget {
				return result
			}
		}
	}
	// Deciding needs no manifests; execute reads the job whole once it is promoted.
	j, err := f.store.GetJobStatus(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid):
		return events.Done("job %s does not exist (any more): nothing to do", id)
	case err != nil:
		return events.Unavailable("state store: %v", err)
	}
	if orchestrator(j) != model.OCM {
		return events.Done("job %s is for orchestrator %q, not ocm: left to its deployment manager", id, orchestrator(j))
	}
	if j.Targets == nil || j.Targets.ClusterName == "" {
		return events.Done("job %s has no target yet", id)
	}
	mine, err := f.clusters.Manages(ctx, j.Targets.ClusterName)
	if err != nil {
		return events.Unavailable("hub: %v", err)
	}
	if !mine {
		return events.Done("job %s is for cluster %s, which this hub does not manage: left to the hub that does", id, j.Targets.ClusterName)
	}
	switch {
	case f.createdForUs(j):
		return f.execute(ctx, j, false, nil)
	case f.resumable(j):
		return f.execute(ctx, j, true, nil)
	case f.takeover(j):
		return f.execute(ctx, j, false, nil)
	case j.State == model.Created:
		return events.Done("job %s is owned by hub %s: not ours to execute", id, j.OwnerID)
	}
	return events.Done("job %s is %s (%s): nothing to do", id, j.State, j.Type)
}

// createdForUs: a Created job that no hub owns yet, or this one does.
func (f *Function) createdForUs(j *model.Job) bool {
	return j.State == model.Created && (j.OwnerID == "" || j.OwnerID == f.hubID)
}

func orchestrator(j *model.Job) model.Orchestrator {
	if j.Targets != nil && j.Targets.Orchestrator != "" {
		return j.Targets.Orchestrator
	}
	return j.Orchestrator
}

// resumable: a job of this hub in Progressing whose execution is over (its lease lapsed or was
// released) without having recorded that it was applied: it died half-way, failed
// transiently, or is a reallocation waiting for its next step.
func (f *Function) resumable(j *model.Job) bool {
	return j.State == model.Progressing && j.OwnerID == f.hubID && !time.Now().Before(j.LeaseUntil) && j.Applied != j.Fence
}

// takeover: a CreateDeployment of another hub (which also manages the cluster) stuck in
// Progressing whose lease lapsed longer than the takeover TTL ago. The promote decides by the
// Redis clock; this only saves asking too early.
func (f *Function) takeover(j *model.Job) bool {
	return j.State == model.Progressing && j.Type == model.CreateDeployment && j.OwnerID != f.hubID &&
		time.Since(j.LeaseUntil) > f.store.Options().TakeoverTTL
}

// errStaleTarget is execute's answer when the job is not the Created job with the expected
// target it was promoted on the condition of: the caller reads the job and decides again.
var errStaleTarget = events.Done("the job is not as its event said")

// execute promotes (or resumes) a job and runs it, renewing the lease while it works. It is
// one span; a job executed from Created records its latency from job.created to applied.
// With expect, the job is promoted only if it is still Created with that target (errStaleTarget
// otherwise).
func (f *Function) execute(ctx context.Context, j *model.Job, resume bool, expect *model.Target) (result protocol.Result) {
	ctx, span := f.tel.Start(ctx, "execute", trace.SpanKindInternal, attribute.String("ocmjobs.job_id", j.ID),
		attribute.String("ocmjobs.job_type", j.Type.String()), attribute.Bool("ocmjobs.resume", resume))
	defer func() {
		var failed error
		if events.StatusOf(result) >= 400 {
			failed = errors.New(events.MessageOf(result))
		}
		telemetry.End(span, failed)
	}()
	createdAt := time.Time{}
	if j.State == model.Created {
		createdAt = j.UpdatedAt
	}
	holder := f.hubID + "/" + uuid.NewString()
	var (
		c   store.Claim
		cur *model.Job
		err error
	)
	if resume {
		c, err = f.store.RenewLease(ctx, store.Claim{JobID: j.ID, Owner: f.hubID, Fence: j.Fence, Holder: holder})
	} else {
		// The promote hands back the job as promoted: no read of its own.
		c, cur, err = f.store.PromoteJob(ctx, j.ID, f.hubID, holder, expect)
	}
	if err != nil {
		var ge *store.GuardError
		switch {
		case errors.As(err, &ge) && expect != nil:
			return errStaleTarget
		case errors.As(err, &ge):
			return events.Done("job %s not executed here: %v", j.ID, err)
		}
		return events.Unavailable("state store: %v", err)
	}
	log := logging.FromContext(ctx).With("job", j.ID, "fence", c.Fence, "resume", resume)
	ctx = logging.WithLogger(ctx, log)
	bg := context.WithoutCancel(ctx)
	if cur == nil {
		if cur, err = f.store.GetJob(ctx, j.ID); err != nil {
			_ = f.store.ReleaseLease(bg, c)
			return events.Unavailable("state store: %v", err)
		}
	}
	if resume && cur.Move == nil {
		// The execution that died may have done its part on the hub: the work says.
		done, err := f.appliedOnHub(ctx, cur)
		if err != nil {
			_ = f.store.ReleaseLease(bg, c)
			return events.Unavailable("hub: %v", err)
		}
		if done {
			if err := f.store.MarkApplied(bg, c); err != nil {
				return events.Unavailable("state store: %v", err)
			}
			return events.Done("job %s: execution %d was applied before it died; recorded", j.ID, c.Fence)
		}
	}
	runCtx, h := holding(ctx, c)
	renewCtx, stop := context.WithCancel(runCtx)
	go f.keepLease(renewCtx, h, log)
	out, fl := f.run(runCtx, c, cur)
	stop()
	if fl != nil && superseded(runCtx) {
		// Stopped because the claim is another's now: nothing to release, record or degrade.
		// (A claim lost after the run did its part goes on below: its record is refused or
		// harmless.)
		return events.Done("job %s: execution %d stopped: %v", j.ID, c.Fence, context.Cause(runCtx))
	}
	h.end(nil)
	switch {
	case fl != nil && fl.Transient:
		// Nothing is half-written: the lease is released so the retry (or the sweep)
		// resumes this execution with the same fence.
		_ = f.store.ReleaseLease(bg, c)
		log.Warnw("execution failed, will be retried", "error", fl)
		return events.Unavailable("job %s: %s", j.ID, fl.Message)
	case fl != nil:
		return f.degrade(bg, c, fl, log)
	case out == moving:
		_ = f.store.ReleaseLease(bg, c)
		return events.Done("job %s: reallocation in progress; the next tick goes on", j.ID)
	}
	// The fault tests' crash: the hub has the work, nothing is recorded yet.
	f.faults.AfterApply(ctx, cur.Type != model.DeleteDeployment)
	// Recording the execution is off the answer's path: the answer does not depend on it (a
	// record that fails answers 2xx too), and an execution applied but not recorded — the
	// process died, Redis did not answer — is what the sweep already finds: the lease lapses,
	// the work on the hub carries the fence, the sweep records it.
	events.AfterAnswer(ctx, func() {
		if err := f.store.MarkApplied(bg, c); err != nil {
			log.Warnw("recording the execution", "error", err)
		} else if !createdAt.IsZero() {
			f.tel.Applied(bg, cur.Type.String(), time.Since(createdAt))
		}
	})
	return events.Done("job %s executed (%s)", j.ID, cur.Type)
}

// appliedOnHub says whether the job's current execution did its part on the hub: the work
// carries the execution's fence (or, for a delete, is gone or going).
func (f *Function) appliedOnHub(ctx context.Context, j *model.Job) (bool, error) {
	w, err := f.works.Get(ctx, j.Targets.ClusterName, ocm.WorkName(j.ID))
	if err != nil {
		return false, err
	}
	if j.Type == model.DeleteDeployment {
		return w == nil || w.Deleting(), nil
	}
	return w != nil && !w.Deleting() && w.Fence() == j.Fence, nil
}

// degrade records why a job cannot be executed: a Degraded condition on its resource and the
// Degraded state, in one step (announced through the outbox). The event is answered 2xx:
// retrying cannot help.
func (f *Function) degrade(ctx context.Context, c store.Claim, fl *failure, log *zap.SugaredLogger) protocol.Result {
	err := store.RetryOnResourceChange(func() error {
		j, err := f.store.GetJobStatus(ctx, c.JobID)
		if err != nil {
			return err
		}
		r := model.Resource{ID: j.ID, JobID: j.ID}
		if j.Resource != nil {
			r = *j.Resource
			r.Conditions = append([]model.Condition(nil), j.Resource.Conditions...)
		}
		r.SetCondition(condition(model.ConditionDegraded, true, fl.Reason, fl.Message, c.Fence))
		_, err = f.store.Apply(ctx, c, store.Change{To: model.Degraded, Why: fl.Reason + ": " + fl.Message,
			Resource: &r, Read: j.Resource, IfUnchanged: true})
		return err
	})
	if err != nil {
		var ge *store.GuardError
		if errors.As(err, &ge) && !errors.Is(err, store.ErrResourceChanged) {
			return events.Done("job %s changed meanwhile, not degraded here: %v", c.JobID, err)
		}
		return events.Unavailable("recording job %s Degraded: %v", c.JobID, err)
	}
	log.Infow("job degraded", "reason", fl.Reason, "message", fl.Message)
	return events.Done("job %s Degraded: %s: %s", c.JobID, fl.Reason, fl.Message)
}
