// Package executor is the deployment execution function: it promotes jobs to this hub
// (atomic, fenced), executes them as ManifestWorks on the OCM hub, and records the result.
package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/api/resource"
	"knative.dev/pkg/logging"

	"github.com/ocm-jobs/ocm-jobs/shared/config"
	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/shared/faults"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// Name is the function's name (FUNCTION, Knative Service suffix).
const Name = config.Executor

// Config is the executor's configuration, from the environment.
type Config struct {
	config.Runtime
	config.Store
	MinReplicas         int32         `envconfig:"REMEDIATION_MIN_REPLICAS" default:"1" desc:"scale-in never goes below this many replicas"`
	MaxReplicas         int32         `envconfig:"REMEDIATION_MAX_REPLICAS" default:"100" desc:"scale-out never goes above this many replicas"`
	CPUStep             string        `envconfig:"REMEDIATION_CPU_STEP" default:"100m" desc:"CPU added (scale-up) or removed (scale-down) per container, on requests and limits"`
	MemoryStep          string        `envconfig:"REMEDIATION_MEMORY_STEP" default:"100Mi" desc:"memory added or removed per container by scale-up/scale-down"`
	CPUFloor            string        `envconfig:"REMEDIATION_CPU_FLOOR" default:"100m" desc:"scale-down never takes a container's CPU below this"`
	MemoryFloor         string        `envconfig:"REMEDIATION_MEMORY_FLOOR" default:"64Mi" desc:"scale-down never takes a container's memory below this"`
	DeleteWait          time.Duration `envconfig:"DELETE_WAIT" default:"20s" desc:"how long a DeleteDeployment waits for its ManifestWork to be gone before leaving it to status sync"`
	ReallocationTimeout time.Duration `envconfig:"REALLOCATION_TIMEOUT" default:"2m" desc:"how long a reallocation waits for the new cluster's ManifestWork to be Available before giving up (the old one is kept)"`
	config.Placement
	SweepMax int `envconfig:"SWEEP_MAX" default:"500" desc:"most jobs one cron tick's sweep executes"`
	// The fault tests' hooks (tests/chaos); off unless configured.
	faults.Config
}

// Types are the event types the executor handles: new jobs, and the cron tick that sweeps
// for jobs whose events were lost, executions that died, and jobs to take over.
var Types = []string{events.JobCreated, events.Ping}

// Function is the executor.
type Function struct {
	cfg       Config
	store     *store.Store
	hub       *ocm.Hub
	hubID     string
	publisher events.Publisher
	opts      RemediationOptions
	clusters  clusterCache
	faults    *faults.Injector
}

// New builds the executor: the store, the hub (KUBECONFIG or in-cluster) and this hub's id.
func New(ctx context.Context, cfg Config, rdb redis.UniversalClient, pub events.Publisher) (*Function, error) {
	st, err := cfg.Store.Open(ctx, rdb)
	if err != nil {
		return nil, err
	}
	rc, err := ocm.RestConfig()
	if err != nil {
		return nil, err
	}
	hub, err := ocm.NewHub(rc)
	if err != nil {
		return nil, err
	}
	hubID, err := hub.HubID(ctx, cfg.HubID)
	if err != nil {
		return nil, err
	}
	opts := DefaultRemediationOptions()
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
	inj, err := faults.New(cfg.Config)
	if err != nil {
		return nil, err
	}
	logging.FromContext(ctx).Infow("executor ready", "hubID", hubID)
	return &Function{cfg: cfg, store: st, hub: hub, hubID: hubID, publisher: pub, opts: opts, faults: inj}, nil
}

// HubID is the owner id this executor promotes jobs to.
func (f *Function) HubID() string { return f.hubID }

// Routes: the executor has no REST routes.
func (f *Function) Routes() map[string]http.Handler { return nil }

// Handle executes the job of a job.created event, or sweeps on the cron tick.
func (f *Function) Handle(ctx context.Context, e event.Event) (*event.Event, protocol.Result) {
	switch e.Type() {
	case events.Ping:
		return nil, f.sweep(ctx)
	case events.JobCreated:
		id, _ := e.Extensions()[events.ExtJobID].(string)
		if id == "" {
			var j model.Job
			if err := json.Unmarshal(e.Data(), &j); err != nil || j.ID == "" {
				return nil, events.Unprocessable("job.created names no job: no jobid extension and no job in the data (%v)", err)
			}
			id = j.ID
		}
		return nil, f.handleJob(ctx, id)
	}
	return nil, events.Invalid("the executor does not handle %s", e.Type())
}

// handleJob decides what to do with one job, from its stored state (the event may be stale).
func (f *Function) handleJob(ctx context.Context, id string) protocol.Result {
	// Deciding needs no manifests; execute reads the job whole once it is promoted.
	j, err := f.store.GetJobStatus(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid):
		return events.Done("job %s does not exist (any more): nothing to do", id)
	case err != nil:
		return events.Unavailable("state store: %v", err)
	}
	switch {
	case orchestrator(j) != model.OCM:
		return events.Done("job %s is for orchestrator %q, not ocm: left to its deployment manager", id, orchestrator(j))
	case j.OwnerID != "" && j.OwnerID != f.hubID && j.State != model.Progressing && j.State != model.Degraded:
		return events.Done("job %s is owned by hub %s: not ours to execute", id, j.OwnerID)
	case j.State == model.Created:
		return f.execute(ctx, j, false)
	case f.resumable(j):
		return f.execute(ctx, j, true)
	}
	return events.Done("job %s is %s (%s): nothing to do", id, j.State, j.Type)
}

func orchestrator(j *model.Job) model.Orchestrator {
	if j.Targets != nil && j.Targets.Orchestrator != "" {
		return j.Targets.Orchestrator
	}
	return j.Orchestrator
}

// resumable: a job of this hub in Progressing whose execution died before it applied the
// ManifestWork (no Dispatched condition at this fence) and whose lease has lapsed.
func (f *Function) resumable(j *model.Job) bool {
	if j.State != model.Progressing || j.OwnerID != f.hubID || time.Now().Before(j.LeaseUntil) {
		return false
	}
	if j.Resource != nil {
		if c := j.Resource.Condition(model.ConditionDispatched); c != nil && c.ObservedGeneration == int64(j.Fence) {
			return false
		}
	}
	return true
}

// sweep executes what job.created events did not reach: executable jobs (lost events, jobs
// given a target late, takeovers of jobs whose owner's lease lapsed past the takeover TTL)
// and this hub's executions that died before dispatching.
func (f *Function) sweep(ctx context.Context) protocol.Result {
	// Status reads (no manifests) are enough to choose; execute reads each job whole once it
	// is promoted.
	ready, err := f.store.ExecutableJobStatus(ctx, model.OCM, f.hubID)
	if err != nil {
		return events.Unavailable("state store: %v", err)
	}
	mine, err := f.store.JobStatusOfOwner(ctx, f.hubID)
	if err != nil {
		return events.Unavailable("state store: %v", err)
	}
	var todo []*model.Job
	for i := range ready {
		todo = append(todo, &ready[i])
	}
	for i := range mine {
		if f.resumable(&mine[i]) {
			todo = append(todo, &mine[i])
		}
	}
	done, failed := 0, 0
	for _, j := range todo {
		if done >= f.cfg.SweepMax {
			break
		}
		res := f.execute(ctx, j, j.State == model.Progressing && j.OwnerID == f.hubID)
		if events.IsTransient(events.StatusOf(res)) {
			failed++
		}
		done++
	}
	if failed > 0 {
		return events.Unavailable("sweep: %d of %d jobs failed transiently", failed, done)
	}
	return events.Done("sweep: %d jobs executed", done)
}

// execute promotes (or resumes) a job and runs it, renewing the lease while it works.
func (f *Function) execute(ctx context.Context, j *model.Job, resume bool) protocol.Result {
	holder := f.hubID + "/" + uuid.NewString()
	var c store.Claim
	var err error
	if resume {
		c, err = f.store.RenewLease(ctx, store.Claim{JobID: j.ID, Owner: f.hubID, Fence: j.Fence, Holder: holder})
	} else {
		c, err = f.store.Promote(ctx, j.ID, f.hubID, holder)
	}
	if err != nil {
		var ge *store.GuardError
		if errors.As(err, &ge) {
			return events.Done("job %s not executed here: %v", j.ID, err)
		}
		return events.Unavailable("state store: %v", err)
	}
	log := logging.FromContext(ctx).With("job", j.ID, "fence", c.Fence, "resume", resume)
	ctx = logging.WithLogger(ctx, log)
	cur, err := f.store.GetJob(ctx, j.ID)
	if err != nil {
		_ = f.store.ReleaseLease(context.WithoutCancel(ctx), c)
		return events.Unavailable("state store: %v", err)
	}
	renewCtx, stop := context.WithCancel(ctx)
	go f.keepLease(renewCtx, c, log)
	work, fl := f.run(ctx, c, cur)
	stop()
	bg := context.WithoutCancel(ctx)
	switch {
	case fl != nil && fl.Transient:
		// Nothing is half-written: the lease is released so the retry (or the sweep)
		// resumes this execution with the same fence.
		_ = f.store.ReleaseLease(bg, c)
		log.Warnw("execution failed, will be retried", "error", fl)
		return events.Unavailable("job %s: %s", j.ID, fl.Message)
	case fl != nil:
		return f.degrade(bg, c, cur, fl, log)
	}
	f.faults.AfterApply(ctx, work != nil)
	after := cur
	if cur.Type == model.DeleteDeployment || cur.Type == model.UpdateDeployment {
		// These changed the job on their way (finished it, recorded new manifests or a new
		// target): read it again.
		if got, err := f.store.GetJob(bg, j.ID); err == nil {
			after = got
		}
	}
	if work != nil {
		// Only this execution writes the job while it holds the lease, so the job read
		// after the promote is still current.
		r, err := f.markDispatched(bg, c, after, work)
		if err != nil {
			log.Warnw("recording the dispatch", "error", err)
		} else {
			after.Resource = r
		}
	}
	_ = f.store.ReleaseLease(bg, c)
	typ := events.JobProgressing
	if after.State == model.Finished {
		typ = events.JobFinished
	}
	if err := events.PublishJobs(bg, f.publisher, typ, f.hubID, Name, []model.Job{*after}); err != nil {
		log.Warnw("publishing the job's progress", "error", err)
	}
	return events.Done("job %s executed (%s)", j.ID, cur.Type)
}

// keepLease renews the execution's lease every third of its TTL until ctx ends.
func (f *Function) keepLease(ctx context.Context, c store.Claim, log *zap.SugaredLogger) {
	every := f.store.Options().LeaseTTL / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := f.store.RenewLease(ctx, c); err != nil && ctx.Err() == nil {
				log.Warnw("renewing the lease", "error", err)
			}
		}
	}
}

// degrade records why a job cannot be executed: a Degraded condition on its resource, the
// Degraded state, and job.degraded. The event is answered 2xx: retrying cannot help.
func (f *Function) degrade(ctx context.Context, c store.Claim, j *model.Job, fl *failure, log *zap.SugaredLogger) protocol.Result {
	r := model.Resource{ID: j.ID, JobID: j.ID}
	if j.Resource != nil {
		r = *j.Resource
	}
	r.SetCondition(condition(model.ConditionDegraded, true, fl.Reason, fl.Message, c.Fence))
	if _, err := f.store.WriteResourceStatus(ctx, c, r); err != nil {
		log.Warnw("recording the degraded condition", "error", err)
	}
	if _, err := f.store.Degrade(ctx, c, fl.Reason+": "+fl.Message); err != nil {
		return events.Unavailable("recording job %s Degraded: %v", j.ID, err)
	}
	_ = f.store.ReleaseLease(ctx, c)
	log.Infow("job degraded", "reason", fl.Reason, "message", fl.Message)
	if after, err := f.store.GetJob(ctx, j.ID); err == nil {
		if err := events.PublishJobs(ctx, f.publisher, events.JobDegraded, f.hubID, Name, []model.Job{*after}); err != nil {
			log.Warnw("publishing job.degraded", "error", err)
		}
	}
	return events.Done("job %s Degraded: %s: %s", j.ID, fl.Reason, fl.Message)
}
