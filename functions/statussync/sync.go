package statussync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"knative.dev/pkg/logging"

	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
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
	work *work
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
func (f *Function) Tick(ctx context.Context, hubID string) (Report, error) {
	start := time.Now()
	var (
		rep            Report
		now            time.Time
		jobs           []model.Job
		works          map[key]*work
		jobErr, hubErr error
		wg             sync.WaitGroup
	)
	// Redis and the API server answer independently: ask both at once.
	wg.Add(2)
	go func() {
		defer wg.Done()
		if now, jobErr = f.now(ctx); jobErr == nil {
			jobs, jobErr = f.store.JobStatusOfOwner(ctx, hubID)
		}
		rep.ReadJobs = time.Since(start)
	}()
	go func() {
		defer wg.Done()
		works, rep.APICalls, hubErr = f.listWorks(ctx, hubID)
		rep.ListWorks = time.Since(start)
	}()
	wg.Wait()
	if err := errors.Join(jobErr, hubErr); err != nil {
		return rep, err
	}
	rep.Works = len(works)
	pol := f.policy()
	var plans []plan
	for i := range jobs {
		j := &jobs[i]
		if !eligible(j, hubID) {
			continue
		}
		rep.Jobs++
		ns, name := j.Targets.ClusterName, ocm.WorkName(j.ID)
		v := decide(j, works[key{ns, name}], now, pol)
		if v.missing {
			// The LIST came from the watch cache: confirm with a quorum read that the work is
			// really gone before the job is degraded for it.
			w, err := f.getWork(ctx, hubID, ns, name)
			rep.APICalls++
			if err != nil {
				return rep, err
			}
			if w != nil {
				works[key{ns, name}] = w
				v = decide(j, w, now, pol)
			}
		}
		if p, ok := planOf(j, v); ok {
			p.work, p.now = works[key{ns, name}], now
			plans = append(plans, p)
		}
	}
	err := f.apply(ctx, hubID, plans, &rep)
	rep.Took = time.Since(start)
	return rep, err
}

// SyncJob syncs one job with its ManifestWork, as a job.progressing event asks: a GET now and
// again with backoff until the work has a verdict on the job or PROGRESS_WAIT passes, then
// the writes that change something.
func (f *Function) SyncJob(ctx context.Context, hubID, jobID string) (Report, error) {
	start := time.Now()
	var rep Report
	j, err := f.store.GetJob(ctx, jobID)
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalid) {
		return rep, nil
	}
	if err != nil {
		return rep, err
	}
	if !eligible(j, hubID) {
		return rep, nil
	}
	rep.Jobs = 1
	until, delay := start.Add(f.cfg.ProgressWait), 100*time.Millisecond
	for {
		now, err := f.now(ctx)
		if err != nil {
			return rep, err
		}
		w, err := f.getWork(ctx, hubID, j.Targets.ClusterName, ocm.WorkName(j.ID))
		rep.APICalls++
		if err != nil {
			return rep, err
		}
		v := decide(j, w, now, f.policy())
		if v.outcome != 0 || !time.Now().Add(delay).Before(until) {
			if w != nil {
				rep.Works = 1
			}
			var plans []plan
			if p, ok := planOf(j, v); ok {
				p.work, p.now = w, now
				plans = append(plans, p)
			}
			err = f.apply(ctx, hubID, plans, &rep)
			rep.Took = time.Since(start)
			return rep, err
		}
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
	}
}

// now is Redis' clock, the one every job timestamp was written with.
func (f *Function) now(ctx context.Context) (time.Time, error) {
	t, err := f.redis.Time(ctx).Result()
	if err != nil {
		return time.Time{}, fmt.Errorf("reading the Redis clock: %w", err)
	}
	return t, nil
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

// apply runs the plans, WriteConcurrency at a time, and publishes an event for every job
// whose state it changed. Every write carries the owner's fencing token; a write refused
// because the job changed meanwhile is skipped, not an error.
func (f *Function) apply(ctx context.Context, hubID string, plans []plan, rep *Report) error {
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
				if err := f.applyOne(ctx, hubID, plans[i], &c); err != nil {
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

// applyOne writes one job's plan: its resource first, so that whoever sees the new state
// also finds its reason in the resource conditions, then its state.
func (f *Function) applyOne(ctx context.Context, hubID string, p plan, c *counters) error {
	log := logging.FromContext(ctx)
	claim := store.ClaimOf(p.job)
	if p.resource != nil {
		// Written only while the stored resource is the one read: the executor writes the
		// same resource (its Dispatched condition), and neither write may swallow the other.
		wrote, err := f.store.WriteResourceStatusIf(ctx, claim, p.job.Resource, *p.resource)
		if errors.Is(err, store.ErrResourceChanged) && !p.again {
			j, gerr := f.store.GetJob(ctx, p.job.ID)
			if gerr != nil {
				return gerr
			}
			if !eligible(j, hubID) {
				c.skipped.Add(1)
				return nil
			}
			next, ok := planOf(j, decide(j, p.work, p.now, f.policy()))
			if !ok {
				return nil
			}
			next.work, next.now, next.again = p.work, p.now, true
			return f.applyOne(ctx, hubID, next, c)
		}
		if refused(err) {
			c.skipped.Add(1)
			log.Debugw("resource write refused: the job changed meanwhile", "job", p.job.ID, "error", err)
			return nil
		}
		if err != nil {
			return err
		}
		if wrote {
			c.resources.Add(1)
		}
	}
	if p.to == 0 {
		return nil
	}
	var (
		changed bool
		err     error
		typ     string
	)
	switch p.to {
	case model.Finished:
		changed, err = f.store.Finish(ctx, claim, p.why)
		typ = events.JobFinished
	case model.Degraded:
		changed, err = f.store.Degrade(ctx, claim, p.why)
		typ = events.JobDegraded
	default:
		return fmt.Errorf("job %s: status sync does not move jobs to %s", p.job.ID, p.to)
	}
	if refused(err) {
		c.skipped.Add(1)
		log.Debugw("state change refused: the job changed meanwhile", "job", p.job.ID, "to", p.to, "error", err)
		return nil
	}
	if err != nil {
		return err
	}
	if !changed {
		return nil
	}
	if p.to == model.Finished {
		c.finished.Add(1)
	} else {
		c.degraded.Add(1)
	}
	log.Infow("job state synced from its ManifestWork", "job", p.job.ID, "from", p.job.State, "to", p.to, "why", p.why)
	// The event carries the job as it is now (its id derives from the new state and time).
	j, err := f.store.GetJob(ctx, p.job.ID)
	if err != nil {
		return fmt.Errorf("job %s changed to %s, reading it for the event: %w", p.job.ID, p.to, err)
	}
	if err := events.PublishJobs(ctx, f.publisher, typ, hubID, Name, []model.Job{*j}); err != nil {
		return fmt.Errorf("job %s changed to %s, publishing %s: %w", p.job.ID, p.to, typ, err)
	}
	return nil
}

// refused says a write was refused by a guard: the job is not as it was read.
func refused(err error) bool {
	var g *store.GuardError
	return errors.As(err, &g)
}
