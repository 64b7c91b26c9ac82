package statussync

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"knative.dev/pkg/logging"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// rolloutStep is what the tick does to a rollout: the rollout to write, the jobs of the wave
// that starts (to release), and the jobs of the clusters done to roll back.
type rolloutStep struct {
	next     *model.Rollout
	release  []string
	rollback []string
	changed  bool
}

// stepRollout decides the next step of a rolling rollout from its jobs as they are (by id)
// at time now. It is pure: the tick writes what it says. A job counts for the change once it
// was promoted since the change started (its fence grew): Finished means its work is
// Available, Degraded halts the rollout. The next wave starts when every job of the current
// one has been Finished for MinSuccessTime (counted from the first tick that saw them all).
func stepRollout(r *model.Rollout, jobs map[string]*model.Job, now time.Time) rolloutStep {
	if !r.Active() {
		return rolloutStep{next: r}
	}
	n := *r
	n.Done = append([]string{}, r.Done...)
	step := rolloutStep{next: &n}
	if r.Phase == model.RolloutRollingBack {
		// Every tick re-opens the jobs to roll back until the driver records they all took
		// the order (it is named: a job takes it once).
		step.rollback = jobsOn(r, r.RolledBack, jobs)
		return step
	}
	wave := r.Waves[r.Wave]
	finished, failed := map[string]bool{}, map[string]string{}
	for _, c := range wave.Clusters {
		finished[c] = true
	}
	for _, id := range wave.Jobs {
		j, ok := jobs[id]
		if !ok {
			continue // deleted since: nothing left to wait for
		}
		c := clusterOf(j)
		current := j.Fence > r.Fences[id]
		switch {
		case current && j.State == model.Degraded:
			failed[c] = fmt.Sprintf("job %s (%s) on %s degraded", id, j.Component, c)
			finished[c] = false
		case !current || j.State != model.Finished:
			finished[c] = false
		}
	}
	if len(failed) > 0 {
		var fcs, whys []string
		for c, why := range failed {
			fcs = append(fcs, c)
			whys = append(whys, why)
		}
		sort.Strings(fcs)
		sort.Strings(whys)
		for _, c := range wave.Clusters {
			if finished[c] {
				n.Done = append(n.Done, c)
			}
		}
		n.Failed, n.Pending = fcs, without(r.Pending, append(append([]string{}, n.Done...), fcs...))
		n.Phase, n.Why, n.UpdatedAt, n.AvailableSince = model.RolloutHalted, whys[0], now, nil
		if r.Strategy.RollbackOnFailure && len(n.Done) > 0 {
			n.Phase, n.RolledBack = model.RolloutRollingBack, append([]string{}, n.Done...)
			step.rollback = jobsOn(r, n.RolledBack, jobs)
		}
		step.changed = true
		return step
	}
	for _, ok := range finished {
		if !ok {
			if r.AvailableSince != nil {
				n.AvailableSince, n.UpdatedAt, step.changed = nil, now, true
			}
			return step
		}
	}
	if r.AvailableSince == nil {
		t := now
		n.AvailableSince, n.UpdatedAt, step.changed = &t, now, true
	}
	if now.Sub(*n.AvailableSince) < r.Strategy.SuccessTime() {
		return step
	}
	n.Done = append(n.Done, wave.Clusters...)
	n.Pending = without(r.Pending, wave.Clusters)
	n.AvailableSince, n.UpdatedAt, step.changed = nil, now, true
	if r.Wave+1 >= len(r.Waves) {
		n.Phase = model.RolloutComplete
		return step
	}
	n.Wave = r.Wave + 1
	step.release = r.Waves[n.Wave].Jobs
	return step
}

func clusterOf(j *model.Job) string {
	if j.Targets == nil {
		return ""
	}
	return j.Targets.ClusterName
}

// jobsOn lists the rollout's jobs that run on the clusters named.
func jobsOn(r *model.Rollout, clusters []string, jobs map[string]*model.Job) []string {
	want := map[string]bool{}
	for _, c := range clusters {
		want[c] = true
	}
	var out []string
	for _, w := range r.Waves {
		for _, id := range w.Jobs {
			if j, ok := jobs[id]; ok && want[clusterOf(j)] {
				out = append(out, id)
			}
		}
	}
	return out
}

func without(list, drop []string) []string {
	d := map[string]bool{}
	for _, x := range drop {
		d[x] = true
	}
	out := []string{}
	for _, x := range list {
		if !d[x] {
			out = append(out, x)
		}
	}
	return out
}

// Rollouts drives every rolling rollout one step (the tick): a wave Available long enough
// releases the next; a degraded wave halts the rollout and, if asked, rolls the clusters done
// back. Nothing waits: a rollout that is not ready is looked at again on the next tick.
func (f *Function) Rollouts(ctx context.Context) (int, error) {
	ids, err := f.store.RollingGroups(ctx)
	if err != nil {
		return 0, err
	}
	now, err := f.store.Now(ctx)
	if err != nil {
		return 0, err
	}
	stepped := 0
	var errs []error
	for _, id := range ids {
		ok, err := f.stepGroup(ctx, id, now)
		if err != nil {
			errs = append(errs, err)
		}
		if ok {
			stepped++
		}
	}
	return stepped, errors.Join(errs...)
}

func (f *Function) stepGroup(ctx context.Context, groupID string, now time.Time) (bool, error) {
	read, err := f.store.GetRollout(ctx, groupID)
	if err != nil || !read.Rollout.Active() {
		return false, err
	}
	g, err := f.store.GetGroup(ctx, groupID)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	jobs := map[string]*model.Job{}
	for i := range g.Jobs {
		jobs[g.Jobs[i].ID] = &g.Jobs[i]
	}
	step := stepRollout(read.Rollout, jobs, now)
	if len(step.rollback) > 0 {
		if err := f.rollBack(ctx, read.Rollout, step.rollback, jobs); err != nil {
			// The halt is written; the next tick goes on with the rollback.
			if step.changed {
				_, _ = f.store.AdvanceRollout(ctx, read, step.next, nil)
			}
			return true, err
		}
		if step.next.Phase == model.RolloutRollingBack {
			step.next.Phase, step.next.UpdatedAt, step.changed = model.RolloutRolledBack, now, true
		}
	}
	if !step.changed {
		return false, nil
	}
	n, err := f.store.AdvanceRollout(ctx, read, step.next, step.release)
	if errors.Is(err, store.ErrRolloutChanged) {
		return false, nil // another tick stepped it: the next tick reads it again
	}
	if err != nil {
		return false, err
	}
	logging.FromContext(ctx).Infow("rollout stepped", "group", groupID, "phase", step.next.Phase, "wave", step.next.Wave, "released", n)
	return true, nil
}

// rollBack gives the jobs of the clusters done their previous manifests (a ReplaceDeployment),
// or undeploys them when the change created them. The order is named after the rollout, so a
// job takes it once however many ticks repeat it.
func (f *Function) rollBack(ctx context.Context, r *model.Rollout, ids []string, jobs map[string]*model.Job) error {
	order := "rollback/" + r.ID
	for _, id := range ids {
		j, ok := jobs[id]
		if !ok {
			continue
		}
		reopen := store.Reopen{Type: model.DeleteDeployment, By: "status sync", Why: "rollout " + r.ID + " rolled back: " + r.Why, Order: order}
		if r.Change != "create" {
			prev, kept, err := f.store.PreviousManifests(ctx, id)
			if err != nil {
				return err
			}
			if kept {
				reopen.Type, reopen.Manifests = model.ReplaceDeployment, prev
			}
		}
		_, err := f.store.Reopen(ctx, j.ID, reopen)
		if err != nil && !errors.Is(err, store.ErrOrderSeen) && !errors.Is(err, store.ErrWrongState) && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return nil
}
