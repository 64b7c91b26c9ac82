package incompliance

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// What an incompliance acts on is decided by what it says (the rule the README writes down):
//   - subject.resourceId names a job: that job only — one instance on one cluster, as in the
//     ICOS Job Manager; with subject.type "component", every cluster of that job's component;
//   - subject.appInstance and appComponent (the Policy Manager's shape): every cluster of the
//     component; when extraLabels carries LabelCluster naming one of them (the metric came from
//     one cluster), that cluster only.
//
// A component on one cluster has one job either way: its incompliances act as they always did.

// SubjectComponent is the subject type that makes an incompliance naming one job act on every
// cluster of the job's component.
const SubjectComponent = "component"

// LabelCluster is the extra label naming the cluster an incompliance was measured on.
const LabelCluster = "cluster"

// subjectJobs are the jobs an incompliance is about, and the strategy their group rolls
// changes out with (its last rollout's; nil: all at once).
type subjectJobs struct {
	jobs     []*model.Job
	strategy *model.RolloutStrategy
}

// findJobs finds every job an incompliance is about, by the rule above.
func (f *Function) findJobs(ctx context.Context, in *model.Incompliance) (subjectJobs, answer) {
	j, why := f.findJob(ctx, in)
	if j == nil {
		return subjectJobs{}, why
	}
	s := in.Subject
	if s.ResourceID != "" && s.ResourceID == j.ID && s.Type != SubjectComponent {
		return subjectJobs{jobs: []*model.Job{j}}, answer{}
	}
	g, err := f.store.GetGroup(ctx, j.JobGroupID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return subjectJobs{}, answer{msg: fmt.Sprintf("unknown subject: the group of job %s is gone", j.ID)}
		}
		return subjectJobs{}, storeFailure(err, in)
	}
	out := subjectJobs{}
	if g.Rollout != nil {
		out.strategy = &g.Rollout.Strategy
	}
	cluster := in.ExtraLabels[LabelCluster]
	var on []*model.Job
	for i := range g.Jobs {
		c := &g.Jobs[i]
		if c.Component != j.Component {
			continue
		}
		out.jobs = append(out.jobs, c)
		if cluster != "" && c.Targets != nil && c.Targets.ClusterName == cluster {
			on = append(on, c)
		}
	}
	if len(on) > 0 {
		out.jobs = on
	}
	return out, answer{}
}

// resolveEvery opens the remediation on every job of the component where it applies (a
// Finished job this hub's executors deployed), in waves when the group rolls changes out in
// waves: the jobs of the later waves are re-opened held, and status sync releases them wave
// by wave as for an update (same halt, same rollback to the manifests each job ran before).
// Jobs where it does not apply (being worked on, undeployed, Degraded, never deployed, or in
// the cooldown of the same policy) are left alone; the record names every job it covers. A
// redelivery goes on where the first delivery stopped: a job already opened for this
// incompliance counts as covered, and the rollout is the one the first delivery planned.
func (f *Function) resolveEvery(ctx context.Context, in *model.Incompliance, sj subjectJobs, by string) answer {
	var all []string
	for _, j := range sj.jobs {
		all = append(all, j.ID)
	}
	if in.Remediation == model.RemediationNone {
		return f.settleJobs(ctx, in, model.OutcomeApplied, noneReason, all)
	}
	var covered, eligibleIDs []string
	var eligible []*model.Job
	skipped := map[string]string{}
	busy := false
	for _, j := range sj.jobs {
		switch {
		case openedFor(j, in):
			covered = append(covered, j.ID)
		case j.OwnerID == "":
			skipped[j.ID] = "never deployed"
		case j.Type == model.DeleteDeployment:
			skipped[j.ID] = "undeployed"
		case j.State == model.Created || j.State == model.Progressing:
			skipped[j.ID], busy = fmt.Sprintf("being worked on: %s%s, %s", j.Type, subtype(j), j.State), true
		case j.State == model.Degraded:
			skipped[j.ID] = "Degraded"
		default:
			ok, err := f.store.StartCooldown(ctx, j.ID, in.PolicyName, in.ID, f.cfg.Cooldown)
			if err != nil {
				return answer{status: http.StatusServiceUnavailable, msg: "redis unreachable: " + err.Error(), inc: in}
			}
			if !ok {
				skipped[j.ID], busy = fmt.Sprintf("policy %s fired on it less than %s ago", in.PolicyName, f.cfg.Cooldown), true
				continue
			}
			eligible = append(eligible, j)
			eligibleIDs = append(eligibleIDs, j.ID)
		}
	}
	endCooldowns := func(ids []string) {
		for _, id := range ids {
			_ = f.store.EndCooldown(context.WithoutCancel(ctx), id, in.PolicyName)
		}
	}
	var plan *model.Rollout
	if len(eligible) > 0 {
		jobs := make([]model.Job, 0, len(eligible))
		for _, j := range eligible {
			jobs = append(jobs, *j)
		}
		if p := model.PlanRollout("remediation-"+in.ID, "remediation", sj.strategy, jobs); p != nil {
			r, ok, err := f.store.StartRollout(ctx, eligible[0].JobGroupID, p)
			if err != nil {
				endCooldowns(eligibleIDs)
				return storeFailure(err, in)
			}
			if !ok {
				endCooldowns(eligibleIDs)
				return f.settleJobs(ctx, in, model.OutcomeApplied, fmt.Sprintf("deduplicated: group %s is rolling out %s (%s, wave %d of %d); the remediation in waves waits for it to end",
					eligible[0].JobGroupID, r.ID, r.Phase, r.Wave+1, len(r.Waves)), append(covered, eligibleIDs...))
			}
			plan = r
		}
	}
	rem := model.Remediation{Action: in.Remediation}
	if in.Payload != nil {
		rem = *in.Payload
	}
	rem.IncomplianceID = in.ID
	rem.Action = rem.Action.Canonical()
	why := fmt.Sprintf("incompliance %s: policy %s", in.ID, in.PolicyName)
	var notTaken []string // jobs of the rollout that did not take the remediation
	for _, j := range eligible {
		ro := store.Reopen{Type: model.UpdateDeployment, SubType: in.Remediation.Canonical(), Remediation: &rem, IfFence: j.Fence, By: by, Why: why}
		if plan != nil {
			ro.KeepPrevious, ro.Why = true, why+" (rollout "+plan.ID+")"
			if plan.HeldBy(j.ID) {
				ro.Hold = plan.ID
			}
		}
		_, err := f.store.Reopen(ctx, j.ID, ro)
		switch {
		case err == nil:
			covered = append(covered, j.ID)
		case errors.Is(err, store.ErrWrongState), errors.Is(err, store.ErrFenced):
			if now, gerr := f.store.GetJob(ctx, j.ID); gerr == nil && openedFor(now, in) {
				covered = append(covered, j.ID) // a concurrent delivery of this one
				continue
			}
			skipped[j.ID], busy = fmt.Sprintf("changed meanwhile (%v)", err), true
			notTaken = append(notTaken, j.ID)
		case errors.Is(err, store.ErrInvalid):
			endCooldowns([]string{j.ID})
			skipped[j.ID] = err.Error()
			notTaken = append(notTaken, j.ID)
		default:
			endCooldowns([]string{j.ID})
			return storeFailure(err, in)
		}
	}
	if plan != nil && len(notTaken) > 0 {
		// The rollout waits only for the jobs that took the remediation.
		if err := f.store.DropFromRollout(ctx, eligible[0].JobGroupID, plan.ID, notTaken); err != nil {
			return storeFailure(err, in)
		}
	}
	if len(covered) == 0 {
		if busy {
			return f.settleJobs(ctx, in, model.OutcomeApplied, "deduplicated: "+skippedList(skipped), nil)
		}
		return f.settleJobs(ctx, in, model.OutcomeRejected, "nothing to remediate: "+skippedList(skipped), nil)
	}
	reason := ""
	if len(skipped) > 0 {
		reason = fmt.Sprintf("remediation opened on %d of %d clusters; left alone: %s", len(covered), len(sj.jobs), skippedList(skipped))
	}
	return f.settleJobs(ctx, in, model.OutcomeApplied, reason, covered)
}

// skippedList names each job left alone and why, in a stable order.
func skippedList(skipped map[string]string) string {
	out := make([]string, 0, len(skipped))
	for id, why := range skipped {
		out = append(out, fmt.Sprintf("job %s (%s)", id, why))
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

// settleJobs is settle for an incompliance that covers several jobs.
func (f *Function) settleJobs(ctx context.Context, in *model.Incompliance, o model.Outcome, reason string, jobIDs []string) answer {
	if len(jobIDs) < 2 {
		return f.settle(ctx, in, o, reason, strings.Join(jobIDs, ""))
	}
	changed, err := f.store.SetIncomplianceOutcomeJobs(ctx, in.ID, o, reason, jobIDs)
	return f.settled(ctx, in, o, reason, changed, err)
}
