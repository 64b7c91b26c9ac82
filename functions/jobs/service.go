package jobs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/google/uuid"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/apis"

	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/policy"
	"github.com/ocm-jobs/ocm-jobs/shared/polman"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// Failure is an answer other than success: an HTTP status and a message, the same for the
// REST API and CloudEvents.
type Failure struct {
	Status  int
	Message string
}

func (f *Failure) Error() string { return f.Message }

func fail(status int, format string, args ...any) *Failure {
	return &Failure{Status: status, Message: fmt.Sprintf(format, args...)}
}

// failureOf classifies an error by the one error → answer table (events.StatusOfError).
func failureOf(err error) *Failure {
	var f *Failure
	switch {
	case err == nil:
		return nil
	case errors.As(err, &f):
		return f
	}
	status := events.StatusOfError(err)
	if status == http.StatusServiceUnavailable {
		return fail(status, "state store unavailable: %v", err)
	}
	return fail(status, "%v", err)
}

// service is what the jobs function does, shared by its CloudEvents, its groups API and its
// deployment-manager API: the only caller of the store in this function. Every job it
// creates, re-opens or gives a target is announced by the store's outbox in the same step.
type service struct {
	limits   Limits
	policy   policy.Policy
	store    *store.Store
	targeter *Targeter
	hubID    string
	// archiver archives deleted groups; nil without an object store bucket.
	archiver *archiver
	// pm registers groups with the Policy Manager; nil without POLICY_MANAGER_URL.
	pm *polman.Sender
}

// healthy checks that the store answers.
func (s *service) healthy(ctx context.Context) error { return s.store.Ping(ctx) }

// createGroup parses a descriptor, resolves targets and stores the group with one job per
// component (every job with a target is announced as job.created). id, when set, is the
// group's id (derived from an event, so a redelivery finds the group it made).
func (s *service) createGroup(ctx context.Context, descriptor []byte, id, by string) (*model.JobGroup, *Failure) {
	return s.createGroupRolledOut(ctx, descriptor, id, by, nil)
}

// createGroupRolledOut is createGroup with the rollout strategy of the order (nil: the
// descriptor's): the jobs of the waves after the first are stored held.
func (s *service) createGroupRolledOut(ctx context.Context, descriptor []byte, id, by string, rollout *model.RolloutStrategy) (*model.JobGroup, *Failure) {
	app, fl := s.parse(descriptor)
	if fl != nil {
		return nil, fl
	}
	if rollout != nil {
		app.Rollout = rollout
	}
	missing, err := s.targeter.Resolve(ctx, app, descriptor)
	if err != nil {
		return nil, fail(http.StatusServiceUnavailable, "resolving targets: %v", err)
	}
	g := &model.JobGroup{ID: id, AppName: app.Name, AppDescription: app.Description}
	if g.ID == "" {
		g.ID = model.NewID()
	}
	for _, c := range app.Components {
		js, fl := newJobs(g.ID, app, c, missing)
		if fl != nil {
			return nil, fl
		}
		g.Jobs = append(g.Jobs, js...)
	}
	if g.Rollout, fl = planRollout(app.Rollout, "create", g.Jobs); fl != nil {
		return nil, fl
	}
	if err := s.storeGroup(ctx, g, by, descriptor); err != nil {
		if errors.Is(err, store.ErrExists) && id != "" {
			// Made by an earlier delivery of the same event.
			if existing, gerr := s.store.GetGroup(ctx, id); gerr == nil {
				s.announce(ctx, id)
				if fl := s.bindPlacements(ctx, id, app, nil); fl != nil {
					return nil, fl
				}
				return existing, nil
			}
		}
		return nil, failureOf(err)
	}
	s.announce(ctx, g.ID)
	if fl := s.bindPlacements(ctx, g.ID, app, nil); fl != nil {
		return nil, fl
	}
	// CreateGroup filled in what the store decides (group fields, timestamps): g is the group
	// as stored, with no need to read it back.
	return g, nil
}

// parse reads a descriptor within the limits and checks it against the manifest policy:
// every problem is a 422 listing each offending object, and nothing is stored.
func (s *service) parse(descriptor []byte) (*Application, *Failure) {
	app, ferr := s.limits.Parse(descriptor)
	if ferr != nil {
		return nil, fail(http.StatusUnprocessableEntity, "the application descriptor is not valid: %v", ferr)
	}
	if ferr := polman.ValidateDescriptor(descriptor); ferr != nil {
		return nil, fail(http.StatusUnprocessableEntity, "the application descriptor's policies are not valid: %v", ferr)
	}
	ns := firstNonEmpty(app.Namespace, app.Name)
	var errs *apis.FieldError
	for i, c := range app.Components {
		if len(c.MoreTargets) > 0 {
			for _, t := range c.AllTargets() {
				errs = errs.Also(s.policy.CheckAll(c.Objects, ns, t.ClusterName).ViaFieldIndex("components", i))
			}
			continue
		}
		cluster := ""
		if c.Targets != nil {
			cluster = c.Targets.ClusterName
		}
		errs = errs.Also(s.policy.CheckAll(c.Objects, ns, cluster).ViaFieldIndex("components", i))
	}
	if errs != nil {
		return nil, fail(http.StatusUnprocessableEntity, "the manifest policy refuses: %v", errs)
	}
	return app, nil
}

// newJob is the Created CreateDeployment job of a component: its manifests, its target (or an
// AwaitingTarget condition saying why it has none), in the application's namespace.
func newJob(groupID string, app *Application, c Component, missing map[string]string) (model.Job, *Failure) {
	ms, err := c.Manifests()
	if err != nil {
		return model.Job{}, fail(http.StatusUnprocessableEntity, "component %s: %v", c.Name, err)
	}
	j := model.Job{
		ID: model.NewJobID(groupID), Type: model.CreateDeployment, State: model.Created, Manifests: ms,
		Targets: c.Targets, Orchestrator: model.OCM, Namespace: firstNonEmpty(app.Namespace, app.Name), Component: c.Name,
	}
	if c.Targets != nil {
		j.Orchestrator = c.Targets.Orchestrator
	}
	if why, ok := missing[c.Name]; ok {
		j.Resource = awaitingTarget(j.ID, why)
	}
	return j, nil
}

// newJobs are the Created jobs of a component: one per cluster it names (one job when it
// names one cluster or none).
func newJobs(groupID string, app *Application, c Component, missing map[string]string) ([]model.Job, *Failure) {
	if len(c.MoreTargets) == 0 {
		j, fl := newJob(groupID, app, c, missing)
		return []model.Job{j}, fl
	}
	var out []model.Job
	for _, t := range c.AllTargets() {
		one := c
		one.Targets, one.MoreTargets = t, nil
		j, fl := newJob(groupID, app, one, missing)
		if fl != nil {
			return nil, fl
		}
		out = append(out, j)
	}
	return out, nil
}

func awaitingTarget(jobID, why string) *model.Resource {
	r := &model.Resource{ID: jobID, JobID: jobID}
	r.SetCondition(metav1.Condition{Type: model.ConditionProgressing, Status: metav1.ConditionFalse,
		Reason: model.ReasonAwaitingTarget, Message: "awaiting a target: " + why})
	return r
}

// stopGroup undeploys a group: every job that ran becomes a DeleteDeployment job, and every
// job that never started is finished at once (nothing to undeploy), so a stopped group can
// always be deleted once its Delete jobs finish. Jobs being executed right now are stopped
// once they end (see order).
func (s *service) stopGroup(ctx context.Context, id, by string) (*model.JobGroup, *Failure) {
	return s.order(ctx, id, store.OrderStop, by, true)
}

// startGroup re-creates a stopped group's jobs: every finished DeleteDeployment becomes a
// CreateDeployment of the same manifests again.
func (s *service) startGroup(ctx context.Context, id, by string) (*model.JobGroup, *Failure) {
	return s.order(ctx, id, store.OrderStart, by, true)
}

// reopenOf is what an order asks of one job (nil: leave it alone). A stop undeploys every job
// not stopping or stopped already; a start re-deploys every job a stop undeployed or is
// undeploying.
// The first job re-opened records the Policy Manager's event (stopped, started) in the same
// step (GroupOp).
func reopenOf(id, order, by string, j model.Job) *store.Reopen {
	switch order {
	case store.OrderStop:
		if j.Type == model.DeleteDeployment && (j.State == model.Created || j.State == model.Finished) {
			return nil // already stopping or stopped
		}
		return &store.Reopen{Type: model.DeleteDeployment, By: by, Why: "group stopped", GroupOp: store.GroupStop, Group: id}
	case store.OrderStart:
		if j.Type != model.DeleteDeployment {
			return nil
		}
		return &store.Reopen{Type: model.CreateDeployment, By: by, Why: "group started", GroupOp: store.GroupStart, Group: id}
	}
	return nil
}

// order carries out a stop or a start on the group's jobs. Jobs being executed cannot be
// re-opened yet: the order is then accepted all the same — recorded as the group's pending
// order (the last order wins) and answered 202 with the group marked so — and the cron tick
// carries it out once they have ended (carryOut). fromUser: the order is new (not the tick
// carrying out a pending one), so it replaces whatever order was pending.
func (s *service) order(ctx context.Context, id, order, by string, fromUser bool) (*model.JobGroup, *Failure) {
	defer s.announce(ctx, id)
	g, err := s.store.GetGroup(ctx, id)
	if err != nil {
		return nil, failureOf(err)
	}
	var refused []string
	for _, j := range g.Jobs {
		if r := reopenOf(id, order, by, j); r != nil {
			if fl := s.reopen(ctx, &refused, j, *r); fl != nil {
				return nil, fl
			}
		}
	}
	switch {
	case len(refused) > 0 && !fromUser:
		// Still pending; it stays recorded (unless a newer order replaced it meanwhile,
		// which then is the one carried out: the last order wins).
	case len(refused) > 0:
		err = s.store.SetPendingOrder(ctx, id, order)
	case fromUser:
		err = s.store.ClearPendingOrder(ctx, id, "")
	default:
		err = s.store.ClearPendingOrder(ctx, id, order)
	}
	if err != nil {
		return nil, failureOf(err)
	}
	after, err := s.group(ctx, id)
	if err != nil {
		return nil, failureOf(err)
	}
	if len(refused) > 0 {
		return after, &Failure{Status: http.StatusAccepted, Message: fmt.Sprintf("%s accepted: group %s will %s once these jobs, being executed now, end: %s",
			order, id, order, list(refused))}
	}
	return after, nil
}

// carryOut carries out the groups' pending orders whose jobs have ended (the cron tick). It
// returns how many orders were completed.
func (s *service) carryOut(ctx context.Context) (int, error) {
	orders, err := s.store.PendingOrders(ctx)
	if err != nil {
		return 0, err
	}
	done := 0
	for id, order := range orders {
		_, fl := s.order(ctx, id, order, "pending "+order, false)
		switch {
		case fl != nil && fl.Status == http.StatusNotFound:
			_ = s.store.ClearPendingOrder(ctx, id, order) // the group is gone
		case fl == nil:
			done++
		case fl.Status >= 500:
			return done, errors.New(fl.Message)
		}
	}
	return done, nil
}

// reopen re-opens one job; a job being executed right now refuses, which is recorded and is
// not an error of the request.
func (s *service) reopen(ctx context.Context, refused *[]string, j model.Job, r store.Reopen) *Failure {
	if _, err := s.store.Reopen(ctx, j.ID, r); err != nil {
		if f := failureOf(err); f.Status != http.StatusConflict {
			return f
		}
		*refused = append(*refused, fmt.Sprintf("%s (%s, %s)", j.ID, j.Type, j.State))
	}
	return nil
}

func list(ids []string) string {
	sort.Strings(ids)
	return strings.Join(ids, ", ")
}

// updateGroup applies a new descriptor to a group: components that have a job get their
// manifests replaced (a ReplaceDeployment when the job ran), new components become new jobs,
// and jobs whose component is gone are undeployed.
func (s *service) updateGroup(ctx context.Context, id string, descriptor []byte, by string) (*model.JobGroup, *Failure) {
	return s.updateGroupRolledOut(ctx, id, descriptor, by, nil)
}

// updateGroupRolledOut is updateGroup with the rollout strategy of the order (the update
// event's `rollout` extension, the REST update's `rollout` field; nil: the descriptor's),
// checked as the descriptor's is: a bad one is a 422 naming each path, nothing changed.
func (s *service) updateGroupRolledOut(ctx context.Context, id string, descriptor []byte, by string, rollout *model.RolloutStrategy) (*model.JobGroup, *Failure) {
	app, fl := s.parse(descriptor)
	if fl != nil {
		return nil, fl
	}
	if rollout != nil {
		if ferr := rollout.Validate(namedClusters(app.Components)).ViaField("rollout"); ferr != nil {
			return nil, fail(http.StatusUnprocessableEntity, "the rollout strategy is not valid: %v", ferr)
		}
		app.Rollout = rollout
	}
	g, err := s.store.GetGroup(ctx, id)
	if err != nil {
		return nil, failureOf(err)
	}
	byComponent := map[string][]model.Job{}
	hasJobs := map[string]bool{}
	for _, j := range g.Jobs {
		byComponent[j.Component] = append(byComponent[j.Component], j)
		hasJobs[j.Component] = true
	}
	if fl := s.resolveExisting(ctx, app, hasJobs, descriptor); fl != nil {
		return nil, fl
	}
	var added []Component
	var placed []model.Job // new jobs of components on several clusters: their targets are known
	var refused []string
	var replaces []replace
	keep := map[string]bool{}
	for _, c := range app.Components {
		existing, ok := byComponent[c.Name]
		if !ok {
			keep[c.Name] = true
			added = append(added, c)
			continue
		}
		ms, err := c.Manifests()
		if err != nil {
			return nil, fail(http.StatusUnprocessableEntity, "component %s: %v", c.Name, err)
		}
		if len(c.MoreTargets) == 0 && (len(existing) == 1 || c.Targets == nil) {
			// One cluster, as in ICOS: the job keeps its cluster whoever chose it (of a
			// component that ran on several, the first job is kept, the others undeployed).
			keep[existing[0].ID] = true
			if sameManifests(existing[0].Manifests, ms) {
				continue
			}
			replaces = append(replaces, replace{existing[0], ms})
			continue
		}
		// Several clusters: one job per cluster named, matched by cluster.
		onCluster := map[string]model.Job{}
		for _, j := range existing {
			if j.Targets != nil {
				onCluster[j.Targets.ClusterName] = j
			}
		}
		for _, t := range c.AllTargets() {
			j, ok := onCluster[t.ClusterName]
			if !ok {
				one := c
				one.Targets, one.MoreTargets = t, nil
				nj, fl := newJob(id, app, one, nil)
				if fl != nil {
					return nil, fl
				}
				placed = append(placed, nj)
				continue
			}
			keep[j.ID] = true
			if sameManifests(j.Manifests, ms) {
				continue
			}
			replaces = append(replaces, replace{j, ms})
		}
	}
	plan, fl := s.replaceRolledOut(ctx, g, app.Rollout, replaces, placed, by, &refused)
	if fl != nil {
		return nil, fl
	}
	for _, j := range g.Jobs {
		if keep[j.ID] || keep[j.Component] || (j.Type == model.DeleteDeployment && j.State == model.Finished) {
			continue
		}
		if fl := s.reopen(ctx, &refused, j, store.Reopen{Type: model.DeleteDeployment, By: by, Why: "component or cluster removed by an update"}); fl != nil {
			return nil, fl
		}
	}
	if len(placed) > 0 {
		if err := s.store.AddHeldJobs(ctx, id, placed, by, plan); err != nil {
			return nil, failureOf(err)
		}
	}
	if len(added) > 0 {
		sub := &Application{Name: app.Name, Description: app.Description, Namespace: app.Namespace, Placement: app.Placement, Components: added}
		missing, err := s.targeter.Resolve(ctx, sub, descriptor)
		if err != nil {
			return nil, fail(http.StatusServiceUnavailable, "resolving targets: %v", err)
		}
		copyBound(app, sub)
		var jobs []model.Job
		for _, c := range sub.Components {
			js, fl := newJobs(id, app, c, missing)
			if fl != nil {
				return nil, fl
			}
			jobs = append(jobs, js...)
		}
		if err := s.store.AddJobs(ctx, id, jobs, by); err != nil {
			return nil, failureOf(err)
		}
	}
	if fl := s.bindPlacements(ctx, id, app, goneComponents(app, hasJobs)); fl != nil {
		return nil, fl
	}
	after, err := s.store.GetGroup(ctx, id)
	if err != nil {
		return nil, failureOf(err)
	}
	if len(refused) > 0 {
		return after, fail(http.StatusConflict, "group %s updated except jobs being executed: %s (retry when they finish)", id, list(refused))
	}
	return after, nil
}

func sameManifests(a, b []model.PlainManifest) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].YamlString != b[i].YamlString {
			return false
		}
	}
	return true
}

// deleteGroup deletes a group whose jobs are all undeployed or never ran; otherwise 409 with
// the jobs that are still running.
func (s *service) deleteGroup(ctx context.Context, id, by string) *Failure {
	var fl *Failure
	if s.archiver != nil {
		fl = s.deleteGroupArchived(ctx, id, by)
	} else {
		fl = failureOf(s.store.DeleteGroup(ctx, id, by))
	}
	if fl == nil {
		// A deleted group has no order left to carry out (a failure here leaves it to the
		// tick, which drops the orders of groups that are gone).
		_ = s.store.ClearPendingOrder(ctx, id, "")
		s.announce(ctx, id)
	}
	return fl
}

// retarget gives every Created job without a target one, if a target source has one now
// (the cron tick); the store announces each job that got one.
func (s *service) retarget(ctx context.Context) (int, error) {
	jobs, err := s.store.JobsInState(ctx, model.Created)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, j := range jobs {
		if j.Targets != nil {
			continue
		}
		t, err := s.targeter.ResolveOne(ctx, j.Component, "")
		if err != nil {
			return n, err
		}
		if t == nil {
			continue
		}
		changed, err := s.store.SetTargets(ctx, j.ID, *t, Name)
		switch {
		case errors.Is(err, store.ErrWrongState), errors.Is(err, store.ErrNotFound):
		case err != nil:
			return n, err
		case changed:
			n++
		}
	}
	return n, nil
}

// Reads.

func (s *service) groups(ctx context.Context) ([]model.JobGroup, *Failure) {
	gs, err := s.store.ListGroups(ctx)
	if err != nil {
		return nil, failureOf(err)
	}
	orders, err := s.store.PendingOrders(ctx)
	if err != nil {
		return nil, failureOf(err)
	}
	for i := range gs {
		gs[i].Pending = orders[gs[i].ID]
	}
	return gs, nil
}

// group reads a group with its pending order.
func (s *service) group(ctx context.Context, id string) (*model.JobGroup, error) {
	g, err := s.store.GetGroup(ctx, id)
	if err != nil {
		return nil, err
	}
	if g.Pending, err = s.store.PendingOrder(ctx, id); err != nil {
		return nil, err
	}
	return g, nil
}

func (s *service) jobs(ctx context.Context) ([]model.Job, *Failure) {
	js, err := s.store.ListJobs(ctx)
	return js, failureOf(err)
}

func (s *service) job(ctx context.Context, id string) (*model.Job, *Failure) {
	j, err := s.store.GetJob(ctx, id)
	return j, failureOf(err)
}

func (s *service) history(ctx context.Context, id string) ([]model.HistoryEntry, *Failure) {
	h, err := s.store.History(ctx, id)
	return h, failureOf(err)
}

// activity reads what happened to a group: its jobs' histories as one timeline and the
// incompliances about it with their outcome (the web UI's timeline).
func (s *service) activity(ctx context.Context, id string) (*store.GroupActivity, *Failure) {
	a, err := s.store.GroupActivity(ctx, id)
	return a, failureOf(err)
}

// undeployJob re-opens one job as a DeleteDeployment (one that never ran is finished at once).
func (s *service) undeployJob(ctx context.Context, id, by string) (*model.Job, *Failure) {
	if _, err := s.store.Reopen(ctx, id, store.Reopen{Type: model.DeleteDeployment, By: by, Why: "job deleted through the API"}); err != nil {
		return nil, failureOf(err)
	}
	return s.job(ctx, id)
}

// The deployment-manager side: what an external deployment manager (the ICOS OCM deployment
// manager, Nuvla) does through the REST API, through the same store steps as this project's
// own executor and status sync — so it is fenced, recorded and announced the same way.

func (s *service) executable(ctx context.Context, orch model.Orchestrator, owner string) ([]model.Job, *Failure) {
	js, err := s.store.ExecutableJobs(ctx, orch, owner)
	if js == nil {
		js = []model.Job{}
	}
	return js, failureOf(err)
}

// promote is the atomic promote of a job to an owner, for one API execution.
func (s *service) promote(ctx context.Context, id, owner string) (store.Claim, *Failure) {
	c, err := s.store.Promote(ctx, id, owner, "api/"+owner+"/"+uuid.NewString())
	return c, failureOf(err)
}

// report is what an owner says of its job: a new state (Progressing, Finished, Degraded)
// and/or its resource, written in one step as status sync writes them, guarded by the owner
// and its fencing token (fence 0: the job's current one).
func (s *service) report(ctx context.Context, id, owner string, fence uint64, to model.JobState, res *model.Resource) (*model.Job, *Failure) {
	if to != 0 && to != model.Progressing && to != model.Finished && to != model.Degraded {
		return nil, fail(http.StatusUnprocessableEntity, "state %d: a report sets 2 (Progressing), 3 (Finished) or 4 (Degraded)", to)
	}
	err := store.RetryOnResourceChange(func() error {
		cur, err := s.store.GetJobStatus(ctx, id)
		if err != nil {
			return err
		}
		if cur.OwnerID == "" {
			return fail(http.StatusConflict, "job %s has no owner yet: promote it before reporting on it", id)
		}
		c := store.ClaimOf(cur)
		c.Owner = owner
		if fence != 0 {
			c.Fence = fence
		}
		ch := store.Change{To: to, Why: "reported by " + owner}
		merged := mergeResource(cur, res, owner)
		if cond := merged.Condition(model.ConditionDegraded); to == model.Degraded && cond != nil && cond.Message != "" {
			ch.Why = cond.Message
		}
		if to == model.Finished && (res == nil || res.Condition(model.ConditionDegraded) == nil) {
			// A job reported Finished is not Degraded: an older Degraded condition would
			// stand beside Applied and Available and contradict them.
			meta.RemoveStatusCondition(&merged.Conditions, model.ConditionDegraded)
		}
		ch.Resource, ch.Read, ch.IfUnchanged = &merged, cur.Resource, true
		_, err = s.store.Apply(ctx, c, ch)
		return err
	})
	if err != nil {
		return nil, failureOf(err)
	}
	return s.job(ctx, id)
}

// mergeResource sets the reported conditions on the stored resource (one per type,
// lastTransitionTime kept when the status is unchanged) and the reported identity fields.
func mergeResource(cur *model.Job, in *model.Resource, by string) model.Resource {
	merged := model.Resource{ID: cur.ID, JobID: cur.ID}
	if cur.Resource != nil {
		merged = *cur.Resource
		merged.Conditions = append([]model.Condition(nil), cur.Resource.Conditions...)
	}
	if in != nil {
		for _, cond := range in.Conditions {
			merged.SetCondition(cond)
		}
		if in.ResourceUUID != "" {
			merged.ResourceUUID = in.ResourceUUID
		}
		if in.ResourceName != "" {
			merged.ResourceName = in.ResourceName
		}
		if in.ManifestWorkName != "" {
			merged.ManifestWorkName = in.ManifestWorkName
		}
	}
	merged.JobID = cur.ID
	merged.ReportedBy = by
	return merged
}

// groupID derives a group's id from the event that creates it, so a redelivered create
// (even after its remembered answer expired) finds the group instead of making a second.
func groupID(source, id string) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("ocm-jobs/jobgroup/"+source+"/"+id)).String()
}
