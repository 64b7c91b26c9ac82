package statussync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/apimachinery/pkg/util/wait"
	"knative.dev/pkg/logging"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/shared/telemetry"
)

// Report says what one sync did.
type Report struct {
	// Jobs is how many jobs the sync looked after; Works how many ManifestWorks it read.
	Jobs, Works int
	// APICalls is how many calls it made to the hub's API server.
	APICalls int
	// ResourceWrites, Finished and Degraded count the writes that changed something.
	ResourceWrites, Finished, Degraded int
	// Skipped counts jobs whose write was refused because the job changed meanwhile (promoted
	// again, re-opened): the next sync sees them as they are now.
	Skipped int
	// Took is the sync's wall time; ReadJobs and ListWorks the time it waited for the jobs
	// and for the ManifestWorks (read concurrently).
	Took, ReadJobs, ListWorks time.Duration
}

func (r Report) String() string {
	s := fmt.Sprintf("%d jobs, %d ManifestWorks, %d API calls: %d resources written, %d finished, %d degraded, %d skipped, in %s",
		r.Jobs, r.Works, r.APICalls, r.ResourceWrites, r.Finished, r.Degraded, r.Skipped, r.Took.Round(time.Millisecond))
	if r.ListWorks > 0 {
		s += fmt.Sprintf(" (jobs read in %s, works listed in %s)", r.ReadJobs.Round(time.Millisecond), r.ListWorks.Round(time.Millisecond))
	}
	return s
}

// counters are a Report filled concurrently.
type counters struct {
	resources, finished, degraded, skipped atomic.Int64
}

// plan is what a sync writes for one job, and what it was derived from (to derive it again
// when the job's resource changed meanwhile).
type plan struct {
	job  *model.Job
	work *ocm.Work
	now  time.Time
	// resource is the resource to store; nil when it is what is stored.
	resource *model.Resource
	// to is the state to move the job to; 0 for none.
	to  model.JobState
	why string
	// again: this plan was derived a second time after a concurrent resource write.
	again bool
}

func (f *Function) policy() policy {
	return policy{grace: f.cfg.SyncGrace, deadline: f.cfg.ProgressDeadline}
}

// Tick syncs every job this hub owns with its ManifestWork: the jobs in two Redis round
// trips, the works in one LIST (or its pages), then only the writes that change something.
func (f *Function) Tick(ctx context.Context) (Report, error) {
	start := time.Now()
	var (
		rep            Report
		now            time.Time
		jobs           []model.Job
		works          map[ocm.Key]*ocm.Work
		jobErr, hubErr error
		wg             sync.WaitGroup
	)
	// Redis and the API server answer independently: ask both at once.
	wg.Add(2)
	go func() {
		defer wg.Done()
		if now, jobErr = f.store.Now(ctx); jobErr == nil {
			jobs, jobErr = f.store.JobStatusOfOwner(ctx, f.hubID)
		}
		rep.ReadJobs = time.Since(start)
	}()
	go func() {
		defer wg.Done()
		works, rep.APICalls, hubErr = f.works.List(ctx)
		rep.ListWorks = time.Since(start)
	}()
	wg.Wait()
	if err := errors.Join(jobErr, hubErr); err != nil {
		return rep, err
	}
	rep.Works = len(works)
	pol := f.policy()
	var plans []plan
	listed := map[string][]*ocm.Work{}
	for i := range jobs {
		j := &jobs[i]
		if !eligible(j, f.hubID) {
			continue
		}
		rep.Jobs++
		k := ocm.Key{Namespace: j.Targets.ClusterName, Name: ocm.WorkName(j.ID)}
		if reported(j) {
			w, err := f.reportedWork(ctx, j, listed)
			rep.APICalls++
			if err != nil {
				return rep, err
			}
			if p, ok := planOf(j, decide(j, w, now, pol)); ok {
				p.work, p.now = w, now
				plans = append(plans, p)
			}
			continue
		}
		v := decide(j, works[k], now, pol)
		if v.missing {
			// The LIST came from the watch cache: confirm with a quorum read that the work is
			// really gone before the job is degraded for it.
			w, err := f.works.Get(ctx, k.Namespace, k.Name)
			rep.APICalls++
			if err != nil {
				return rep, err
			}
			if w != nil {
				works[k] = w
				v = decide(j, w, now, pol)
			}
		}
		if p, ok := planOf(j, v); ok {
			p.work, p.now = works[k], now
			plans = append(plans, p)
		}
	}
	err := f.apply(ctx, plans, &rep)
	rep.Took = time.Since(start)
	f.tel.SyncTick(ctx, rep.Took, rep.Works)
	return rep, err
}

// SyncJob syncs one job with its ManifestWork, as a job.progressing event asks: a GET now and
// again with backoff (0.1 s, 0.2 s, … then every second) until the work has a verdict on the
// job or PROGRESS_WAIT passes, then the writes that change something.
func (f *Function) SyncJob(ctx context.Context, jobID string) (Report, error) {
	return f.syncJob(ctx, jobID, math.MaxInt32)
}

// SyncWork syncs one job with its ManifestWork once, as an ApiServerSource's change of the
// work asks: one GET, the verdict, the writes that change something.
func (f *Function) SyncWork(ctx context.Context, jobID string) (Report, error) {
	return f.syncJob(ctx, jobID, 1)
}

// syncJob reads the job's work up to reads times (with backoff) until it has a verdict.
func (f *Function) syncJob(ctx context.Context, jobID string, reads int) (Report, error) {
	start := time.Now()
	var rep Report
	j, err := f.store.GetJobStatus(ctx, jobID)
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalid) {
		return rep, nil
	}
	if err != nil {
		return rep, err
	}
	if !eligible(j, f.hubID) {
		return rep, nil
	}
	rep.Jobs = 1
	var (
		w   *ocm.Work
		v   verdict
		now time.Time
	)
	waitCtx, cancel := context.WithTimeout(ctx, f.cfg.ProgressWait)
	defer cancel()
	backoff := wait.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Cap: time.Second, Steps: reads}
	err = wait.ExponentialBackoffWithContext(waitCtx, backoff, func(wctx context.Context) (bool, error) {
		var err error
		if now, err = f.store.Now(wctx); err != nil {
			return false, err
		}
		if reported(j) {
			w, err = f.reportedWork(wctx, j, map[string][]*ocm.Work{})
		} else {
			w, err = f.works.Get(wctx, j.Targets.ClusterName, ocm.WorkName(j.ID))
		}
		rep.APICalls++
		if err != nil {
			return false, err
		}
		v = decide(j, w, now, f.policy())
		return v.outcome != 0 || reported(j), nil
	})
	switch {
	case ctx.Err() != nil:
		return rep, ctx.Err()
	case err != nil && !wait.Interrupted(err) && waitCtx.Err() == nil:
		return rep, err
	case now.IsZero():
		return rep, fmt.Errorf("no verdict read within PROGRESS_WAIT (%s): %w", f.cfg.ProgressWait, err)
	}
	if w != nil {
		rep.Works = 1
	}
	var plans []plan
	if p, ok := planOf(j, v); ok {
		p.work, p.now = w, now
		plans = append(plans, p)
	}
	err = f.apply(ctx, plans, &rep)
	rep.Took = time.Since(start)
	return rep, err
}

// reportedWork is the ManifestWork of a job a deployment manager executed: the one its
// resource names, else the one it created from the resource's name (generateName), if that
// is one work; nil when there is none. listed holds the cluster namespaces listed so far in
// this sync, so that one sync lists each at most once however many such jobs it has.
func (f *Function) reportedWork(ctx context.Context, j *model.Job, listed map[string][]*ocm.Work) (*ocm.Work, error) {
	cluster := j.Targets.ClusterName
	if r := j.Resource; r.ManifestWorkName != "" && (r.ClusterName == "" || r.ClusterName == cluster) {
		return f.works.GetAny(ctx, cluster, r.ManifestWorkName)
	}
	name := j.Resource.ResourceName
	if name == "" {
		name = j.Component
	}
	ws, ok := listed[cluster]
	if !ok {
		var err error
		if ws, err = f.works.Namespace(ctx, cluster); err != nil {
			return nil, err
		}
		listed[cluster] = ws
	}
	return ocm.Generated(ws, name), nil
}

// planOf is what must be written for a verdict; false when nothing changes.
func planOf(j *model.Job, v verdict) (plan, bool) {
	p := plan{job: j}
	if !sameResource(j, &v.resource) {
		r := v.resource
		p.resource = &r
	}
	if v.outcome != 0 && v.outcome != j.State {
		p.to, p.why = v.outcome, v.why()
	}
	return p, p.resource != nil || p.to != 0
}

// sameResource compares resources as the store does: by their JSON. A job without a stored
// resource equals an empty one, so a job whose work has not appeared yet costs no write.
func sameResource(j *model.Job, next *model.Resource) bool {
	stored := j.Resource
	if stored == nil {
		empty := resourceOf(j)
		stored = &empty
	}
	// Equal values are the common case of a steady tick, and cheaper to see than to marshal;
	// values that differ only in representation (a time's location) fall through to JSON.
	if reflect.DeepEqual(stored, next) {
		return true
	}
	a, errA := json.Marshal(stored)
	b, errB := json.Marshal(next)
	return errA == nil && errB == nil && string(a) == string(b)
}

// apply runs the plans, WriteConcurrency at a time. Every write carries the owner's fencing
// token; a write refused because the job changed meanwhile is skipped, not an error. A change
// of state is announced through the store's outbox, in the same step as the write.
func (f *Function) apply(ctx context.Context, plans []plan, rep *Report) error {
	var (
		c    counters
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		next atomic.Int64
	)
	workers := min(f.cfg.WriteConcurrency, len(plans))
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(plans) {
					return
				}
				if err := f.applyOne(ctx, plans[i], &c); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	rep.ResourceWrites += int(c.resources.Load())
	rep.Finished += int(c.finished.Load())
	rep.Degraded += int(c.degraded.Load())
	rep.Skipped += int(c.skipped.Load())
	if len(errs) > 0 {
		return fmt.Errorf("%d of %d jobs not synced: %w", len(errs), len(plans), errors.Join(errs[:min(len(errs), 3)]...))
	}
	return nil
}

// applyOne writes one job's plan — its resource and its state together, in one step — while
// the stored resource is still the one the plan was derived from. When another writer changed
// it meanwhile, the job is read again and the plan derived again from the same work.
func (f *Function) applyOne(ctx context.Context, p plan, c *counters) (err error) {
	ctx, span := f.tel.Start(ctx, "statussync write", trace.SpanKindInternal, attribute.String("ocmjobs.job_id", p.job.ID),
		attribute.String("ocmjobs.to", p.to.String()))
	defer func() { telemetry.End(span, err) }()
	log := logging.FromContext(ctx)
	var changed store.Changed
	err = store.RetryOnResourceChange(func() error {
		if p.again {
			j, err := f.store.GetJobStatus(ctx, p.job.ID)
			if err != nil {
				return err
			}
			next, ok := plan{}, false
			if eligible(j, f.hubID) {
				next, ok = planOf(j, decide(j, p.work, p.now, f.policy()))
			}
			if !ok {
				changed = store.Changed{}
				return nil // nothing to write any more
			}
			next.work, next.now = p.work, p.now
			p = next
		}
		p.again = true
		var err error
		changed, err = f.store.Apply(ctx, store.ClaimOf(p.job), store.Change{To: p.to, Why: p.why,
			Resource: p.resource, Read: p.job.Resource, IfUnchanged: true})
		return err
	})
	if refused(err) {
		c.skipped.Add(1)
		log.Debugw("write refused: the job changed meanwhile", "job", p.job.ID, "to", p.to, "error", err)
		return nil
	}
	if err != nil {
		return err
	}
	if changed.Resource {
		c.resources.Add(1)
		f.tel.SyncWrite(ctx, "resource")
	}
	if changed.State {
		f.tel.SyncWrite(ctx, "state")
		if p.to == model.Finished {
			c.finished.Add(1)
			if p.job.Type == model.CreateDeployment && p.job.Fence == 1 {
				// A first deployment: from the job's creation (its job.created) to Available.
				f.tel.Available(ctx, p.job.Type.String(), p.now.Sub(p.job.CreatedAt))
			}
		} else {
			c.degraded.Add(1)
		}
		log.Infow("job state synced from its ManifestWork", "job", p.job.ID, "from", p.job.State, "to", p.to, "why", p.why)
	}
	return nil
}

// refused says a write was refused by a guard: the job is not as it was read.
func refused(err error) bool {
	var g *store.GuardError
	return errors.As(err, &g)
}
