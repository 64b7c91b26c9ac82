package statussync

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/google/uuid"
	"knative.dev/pkg/logging"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// placementStep is what the tick does to one component that follows a Placement: the
// clusters that get a new job, the jobs undeployed because their cluster left the decision,
// and a job awaiting a target that gets the first cluster decided.
type placementStep struct {
	add    []string
	drop   []string
	target *model.Job
	// targetCluster is the cluster target gets.
	targetCluster string
	// followed is the clusters the component has jobs on once the step is done.
	followed []string
}

func (p placementStep) acts() bool { return len(p.add) > 0 || len(p.drop) > 0 || p.target != nil }

// followPlacement compares a component's jobs with the clusters its Placement decided (known:
// the Placement has PlacementDecisions; an unknown decision changes nothing). It is pure: the
// tick writes what it says. A job counts as deployed on its cluster unless it is a
// DeleteDeployment (a cluster whose job is still being undeployed gets no new one until that
// ends, and one whose job was undeployed by anything but its Placement none at all); a component whose jobs are all DeleteDeployments is stopped (and left
// alone) unless every one of them was dropped by its Placement (dropped).
func followPlacement(jobs []model.Job, dropped map[string]bool, decided []string, known bool) placementStep {
	var step placementStep
	if !known || len(jobs) == 0 {
		return step
	}
	live, undeploying := map[string]bool{}, map[string]bool{}
	deployed := false
	var awaiting *model.Job
	for i := range jobs {
		j := &jobs[i]
		if j.Type == model.DeleteDeployment {
			switch {
			case j.Targets == nil:
			case j.State != model.Finished && j.State != model.Degraded:
				// Still being undeployed: a new job there waits until its work is gone, so
				// two works never apply the same objects.
				undeploying[j.Targets.ClusterName] = true
			case !dropped[j.ID]:
				// Undeployed by a stop, an update or a user, not by the Placement: that
				// cluster's job is re-opened by a start or an update, never replaced by the
				// tick (which would deploy again what a stop, still going on over the
				// component's other jobs, has just taken away).
				undeploying[j.Targets.ClusterName] = true
			}
			continue
		}
		deployed = true
		if j.Targets == nil || j.Targets.ClusterName == "" {
			if j.State == model.Created && awaiting == nil {
				awaiting = j
			}
			continue
		}
		live[j.Targets.ClusterName] = true
	}
	if !deployed && !allDropped(jobs, dropped) {
		// Undeployed by a stop, an update or a user, not by its Placement.
		return step
	}
	want := map[string]bool{}
	for _, c := range decided {
		want[c] = true
	}
	if awaiting != nil && len(decided) > 0 && !live[decided[0]] {
		step.target, step.targetCluster = awaiting, decided[0]
		live[decided[0]] = true
	}
	for _, c := range decided {
		if !live[c] && !undeploying[c] {
			step.add = append(step.add, c)
		}
	}
	for i := range jobs {
		j := &jobs[i]
		if j.Type == model.DeleteDeployment || j.Targets == nil || j.Targets.ClusterName == "" {
			continue
		}
		if !want[j.Targets.ClusterName] {
			step.drop = append(step.drop, j.ID)
		}
	}
	step.followed = append([]string{}, decided...)
	sort.Strings(step.followed)
	sort.Strings(step.drop)
	return step
}

// allDropped: the component has jobs and every one is a DeleteDeployment its Placement made.
func allDropped(jobs []model.Job, dropped map[string]bool) bool {
	for _, j := range jobs {
		if j.Type != model.DeleteDeployment || !dropped[j.ID] {
			return false
		}
	}
	return len(jobs) > 0
}

// placedJobID is the id of the n-th job (n counts the component's jobs on the cluster so
// far) the Placement gives a component on a cluster: derived, so two ticks that read the same
// jobs add the same job and the store refuses the second (ErrExists). Its first byte is the
// group's bucket, as model.NewJobID's.
func placedJobID(groupID, component, cluster string, n int) string {
	u := uuid.NewSHA1(uuid.NameSpaceURL, []byte(fmt.Sprintf("ocm-jobs/placement/%s/%s/%s/%d", groupID, component, cluster, n)))
	u[0] = model.Bucket(groupID)
	return u.String()
}

// PlacementReport is what one tick did to the groups that follow Placements.
type PlacementReport struct {
	Groups, Placements, Added, Dropped, Targeted int
	// Deferred counts groups left for a later tick: a rollout is rolling, or another tick
	// acted on the group meanwhile.
	Deferred int
}

func (r PlacementReport) String() string {
	return fmt.Sprintf("placements: %d groups, %d placements listed, %d jobs added, %d dropped, %d targeted, %d deferred",
		r.Groups, r.Placements, r.Added, r.Dropped, r.Targeted, r.Deferred)
}

// Placements follows the Placements that groups' components are bound to (the tick): one
// PlacementDecision LIST per distinct Placement, whatever the number of groups and jobs; a
// cluster the Placement decides that a component has no job on gets a new Created job (the
// executor makes its ManifestWork as for any job), and a job whose cluster left the decision
// is undeployed (re-opened as a DeleteDeployment, so its ManifestWork is deleted). A group
// whose rollout is rolling is left until the rollout ends: a cluster that joins meanwhile is
// a wave of its own after it. Nothing waits: what cannot be done now is done on a later tick.
func (f *Function) Placements(ctx context.Context) (PlacementReport, error) {
	var rep PlacementReport
	ids, err := f.store.PlacementGroups(ctx)
	if err != nil || len(ids) == 0 {
		return rep, err
	}
	states, gone, err := f.store.PlacementsFollowed(ctx, ids)
	if err != nil {
		return rep, err
	}
	for _, id := range gone {
		_ = f.store.ForgetPlacementGroup(ctx, id)
	}
	refs := map[string]bool{}
	for _, st := range states {
		for _, p := range st.Read.Binding.Bound {
			refs[p] = true
		}
	}
	type decision struct {
		clusters []string
		known    bool
	}
	decisions := map[string]decision{}
	var errs []error
	for p := range refs {
		ref, err := ocm.ParsePlacementRef(p, "")
		if err != nil {
			continue // bound by the jobs function as namespace/name: never happens
		}
		cs, known, err := f.hub.PlacementDecided(ctx, ref)
		rep.Placements++
		if err != nil {
			// Its components are left as they are (an unknown decision); the others go on.
			errs = append(errs, err)
			continue
		}
		decisions[p] = decision{cs, known}
	}
	for id, st := range states {
		rep.Groups++
		if st.Rolling {
			rep.Deferred++
			continue
		}
		byComponent := map[string][]model.Job{}
		for _, j := range st.Jobs {
			byComponent[j.Component] = append(byComponent[j.Component], j)
		}
		dropped := map[string]bool{}
		for _, jid := range st.Read.Binding.Dropped {
			dropped[jid] = true
		}
		steps := map[string]placementStep{}
		for comp, p := range st.Read.Binding.Bound {
			d := decisions[p]
			if step := followPlacement(byComponent[comp], dropped, d.clusters, d.known); step.acts() {
				steps[comp] = step
			}
		}
		if len(steps) == 0 {
			continue
		}
		if err := f.followGroup(ctx, id, st, byComponent, steps, &rep); err != nil {
			if errors.Is(err, store.ErrPlacementChanged) {
				rep.Deferred++
				continue
			}
			errs = append(errs, fmt.Errorf("group %s: %w", id, err))
		}
	}
	if rep.Added+rep.Dropped+rep.Targeted > 0 {
		logging.FromContext(ctx).Infow("placements followed", "report", rep.String())
	}
	return rep, errors.Join(errs...)
}

// followGroup carries out the steps of one group's components: first the binding is written
// (compare-and-set on the one read, recording the jobs about to be dropped), so of two ticks
// racing only one goes on; then the jobs are added, targeted and re-opened, each an atomic
// step of its own that a later tick repeats harmlessly if this one dies half-way.
func (f *Function) followGroup(ctx context.Context, groupID string, st *store.PlacementState, byComponent map[string][]model.Job, steps map[string]placementStep, rep *PlacementReport) error {
	next := st.Read.Binding
	next.Followed = map[string][]string{}
	for c, cs := range st.Read.Binding.Followed {
		next.Followed[c] = cs
	}
	next.Dropped = append([]string{}, st.Read.Binding.Dropped...)
	for comp, step := range steps {
		next.Followed[comp] = step.followed
		next.Dropped = append(next.Dropped, step.drop...)
	}
	if err := f.store.WritePlacement(ctx, st.Read, next); err != nil {
		return err
	}
	comps := make([]string, 0, len(steps))
	for c := range steps {
		comps = append(comps, c)
	}
	sort.Strings(comps)
	for _, comp := range comps {
		step := steps[comp]
		placement := st.Read.Binding.Bound[comp]
		if j := step.target; j != nil {
			t := model.Target{ClusterName: step.targetCluster, Orchestrator: model.OCM}
			changed, err := f.store.SetTargets(ctx, j.ID, t, Name)
			switch {
			case errors.Is(err, store.ErrWrongState), errors.Is(err, store.ErrNotFound):
			case err != nil:
				return err
			case changed:
				rep.Targeted++
			}
		}
		if len(step.add) > 0 {
			jobs, err := f.placedJobs(ctx, groupID, comp, byComponent[comp], step.add)
			if err != nil {
				return err
			}
			for _, j := range jobs {
				err := f.store.AddJobs(ctx, groupID, []model.Job{j}, Name+" (placement "+placement+")")
				switch {
				case errors.Is(err, store.ErrExists):
					// Another tick added it.
				case err != nil:
					return err
				default:
					rep.Added++
					logging.FromContext(ctx).Infow("placement added a job", "group", groupID, "component", comp,
						"cluster", j.Targets.ClusterName, "job", j.ID, "placement", placement)
				}
			}
		}
		for _, id := range step.drop {
			ro := store.Reopen{Type: model.DeleteDeployment, By: Name, Why: "its cluster left the decision of placement " + placement}
			for _, j := range byComponent[comp] {
				if j.ID == id && (j.State == model.Finished || j.State == model.Degraded) {
					// Named, so a tick that read the job before this one re-opened it does
					// not re-open it twice (a Created job just takes the newest order).
					ro.Order = fmt.Sprintf("placement-drop/%d", j.Fence)
				}
			}
			_, err := f.store.Reopen(ctx, id, ro)
			switch {
			case errors.Is(err, store.ErrOrderSeen), errors.Is(err, store.ErrNotFound):
			case errors.Is(err, store.ErrWrongState):
				// Being executed now: a later tick drops it once it ends.
				rep.Deferred++
			case err != nil:
				return err
			default:
				rep.Dropped++
				logging.FromContext(ctx).Infow("placement dropped a job", "group", groupID, "component", comp,
					"job", id, "placement", placement)
			}
		}
	}
	return nil
}

// placedJobs are the new Created jobs of a component on the clusters listed: the component's
// manifests as its most recently changed deployed job has them (one GET), in its namespace.
func (f *Function) placedJobs(ctx context.Context, groupID, component string, jobs []model.Job, clusters []string) ([]model.Job, error) {
	// Deployed jobs first, then the most recently changed.
	rank := func(j *model.Job) int {
		if j.Type == model.DeleteDeployment {
			return 0
		}
		return 1
	}
	var from *model.Job
	for i := range jobs {
		j := &jobs[i]
		if from == nil || rank(j) > rank(from) || rank(j) == rank(from) && j.UpdatedAt.After(from.UpdatedAt) {
			from = j
		}
	}
	if from == nil {
		return nil, nil
	}
	src, err := f.store.GetJob(ctx, from.ID)
	if err != nil {
		return nil, err
	}
	count := map[string]int{}
	for _, j := range jobs {
		if j.Targets != nil {
			count[j.Targets.ClusterName]++
		}
	}
	var out []model.Job
	for _, c := range clusters {
		out = append(out, model.Job{
			ID: placedJobID(groupID, component, c, count[c]), Type: model.CreateDeployment, State: model.Created,
			Manifests: src.Manifests, Namespace: src.Namespace, Component: component, Orchestrator: model.OCM,
			Targets: &model.Target{ClusterName: c, Orchestrator: model.OCM},
		})
	}
	return out, nil
}
