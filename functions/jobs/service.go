package jobs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/google/uuid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/logging"

	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// ReasonAwaitingTarget is the condition reason of a job no target source could place yet.
const ReasonAwaitingTarget = "AwaitingTarget"

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

// failureOf classifies a store error: bad input 422, missing 404, a refused guard 409, and
// anything else (Redis unreachable) 503.
func failureOf(err error) *Failure {
	var f *Failure
	switch {
	case err == nil:
		return nil
	case errors.As(err, &f):
		return f
	case errors.Is(err, store.ErrInvalid):
		return fail(http.StatusUnprocessableEntity, "%v", err)
	case errors.Is(err, store.ErrNotFound):
		return fail(http.StatusNotFound, "%v", err)
	case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrWrongState), errors.Is(err, store.ErrNotOwner),
		errors.Is(err, store.ErrFenced), errors.Is(err, store.ErrLeaseHeld), errors.Is(err, store.ErrNoTarget),
		errors.Is(err, store.ErrNotDeletable):
		return fail(http.StatusConflict, "%v", err)
	case errors.Is(err, context.Canceled):
		return fail(http.StatusServiceUnavailable, "request canceled: %v", err)
	}
	return fail(http.StatusServiceUnavailable, "state store unavailable: %v", err)
}

// service is what the jobs function does, shared by its CloudEvents and its REST API.
type service struct {
	store     *store.Store
	targeter  *Targeter
	publisher events.Publisher
	hubID     string
	// archiver archives deleted groups; nil without an object store bucket.
	archiver *archiver
}

// createGroup parses a descriptor, resolves targets and stores the group with one job per
// component; it publishes job.created for every job that has a target. id, when set, is the
// group's id (derived from an event, so a redelivery finds the group it made).
func (s *service) createGroup(ctx context.Context, descriptor []byte, id, by string) (*model.JobGroup, *Failure) {
	app, ferr := ParseDescriptor(descriptor)
	if ferr != nil {
		return nil, fail(http.StatusUnprocessableEntity, "the application descriptor is not valid: %v", ferr)
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
		j, fl := newJob(g.ID, app, c, missing)
		if fl != nil {
			return nil, fl
		}
		g.Jobs = append(g.Jobs, j)
	}
	if err := s.store.CreateGroup(ctx, g, by); err != nil {
		if errors.Is(err, store.ErrExists) && id != "" {
			// Made by an earlier delivery of the same event.
			if existing, gerr := s.store.GetGroup(ctx, id); gerr == nil {
				return existing, nil
			}
		}
		return nil, failureOf(err)
	}
	// CreateGroup filled in what the store decides (group fields, timestamps): g is the group
	// as stored, with no need to read it back.
	s.publishCreated(ctx, executable(g.Jobs))
	return g, nil
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

func awaitingTarget(jobID, why string) *model.Resource {
	r := &model.Resource{ID: jobID, JobID: jobID}
	r.SetCondition(metav1.Condition{Type: model.ConditionProgressing, Status: metav1.ConditionFalse,
		Reason: ReasonAwaitingTarget, Message: "awaiting a target: " + why})
	return r
}

// executable are the Created jobs with a target: those an executor can take.
func executable(jobs []model.Job) []model.Job {
	var out []model.Job
	for _, j := range jobs {
		if j.State == model.Created && j.Targets != nil {
			out = append(out, j)
		}
	}
	return out
}

func (s *service) publishCreated(ctx context.Context, jobs []model.Job) {
	if err := events.PublishJobs(ctx, s.publisher, events.JobCreated, s.hubID, Name, jobs); err != nil {
		// The jobs are stored and executable: the executor's sweep picks them up on the next
		// tick even if the event is lost.
		logging.FromContext(ctx).Warnw("publishing job.created failed; the executor's sweep will find the jobs", "error", err)
	}
}

// stopGroup undeploys a group: every job that ran becomes a DeleteDeployment job, and every
// job that never started is finished at once (nothing to undeploy), so a stopped group can
// always be deleted once its Delete jobs finish. Jobs being executed right now refuse; the
// answer says which (409), and the stop can be retried.
func (s *service) stopGroup(ctx context.Context, id, by string) (*model.JobGroup, *Failure) {
	return s.reopenAll(ctx, id, by, "stop", func(j model.Job) *store.Reopen {
		if j.Type == model.DeleteDeployment && (j.State == model.Created || j.State == model.Finished) {
			return nil // already stopping or stopped
		}
		return &store.Reopen{Type: model.DeleteDeployment, By: by, Why: "group stopped"}
	})
}

// startGroup re-creates a stopped group's jobs: every finished DeleteDeployment becomes a
// CreateDeployment of the same manifests again.
func (s *service) startGroup(ctx context.Context, id, by string) (*model.JobGroup, *Failure) {
	return s.reopenAll(ctx, id, by, "start", func(j model.Job) *store.Reopen {
		if j.Type != model.DeleteDeployment || j.State != model.Finished {
			return nil
		}
		return &store.Reopen{Type: model.CreateDeployment, By: by, Why: "group started"}
	})
}

// reopenAll re-opens the group's jobs as order says (nil: leave the job alone), publishes
// job.created for those that became executable, and answers with the group. Jobs that
// refuse are listed in a 409; the others are re-opened all the same.
func (s *service) reopenAll(ctx context.Context, id, by, verb string, order func(model.Job) *store.Reopen) (*model.JobGroup, *Failure) {
	g, err := s.store.GetGroup(ctx, id)
	if err != nil {
		return nil, failureOf(err)
	}
	rs := reopens{changed: map[string]bool{}}
	for _, j := range g.Jobs {
		if r := order(j); r != nil {
			if fl := s.reopen(ctx, &rs, j, *r); fl != nil {
				return nil, fl
			}
		}
	}
	after, err := s.store.GetGroup(ctx, id)
	if err != nil {
		return nil, failureOf(err)
	}
	s.publishCreated(ctx, rs.executable(after.Jobs))
	if len(rs.refused) > 0 {
		return after, fail(http.StatusConflict, "cannot %s group %s yet: jobs being executed: %s (retry when they finish)",
			verb, id, rs.list())
	}
	return after, nil
}

// reopens are the outcomes of re-opening the jobs of one request: which jobs changed (and so
// are announced, not the ones that were already waiting) and which refused.
type reopens struct {
	changed map[string]bool
	refused []string
}

// reopen re-opens one job; a job being executed right now refuses, which is recorded and is
// not an error of the request.
func (s *service) reopen(ctx context.Context, rs *reopens, j model.Job, r store.Reopen) *Failure {
	if _, err := s.store.Reopen(ctx, j.ID, r); err != nil {
		if f := failureOf(err); f.Status != http.StatusConflict {
			return f
		}
		rs.refused = append(rs.refused, fmt.Sprintf("%s (%s, %s)", j.ID, j.Type, j.State))
		return nil
	}
	rs.changed[j.ID] = true
	return nil
}

// executable are the executable jobs among those this request changed.
func (rs *reopens) executable(jobs []model.Job) []model.Job {
	var out []model.Job
	for _, j := range executable(jobs) {
		if rs.changed[j.ID] {
			out = append(out, j)
		}
	}
	return out
}

func (rs *reopens) list() string {
	sort.Strings(rs.refused)
	return strings.Join(rs.refused, ", ")
}

// updateGroup applies a new descriptor to a group: components that have a job get their
// manifests replaced (a ReplaceDeployment when the job ran), new components become new jobs,
// and jobs whose component is gone are undeployed.
func (s *service) updateGroup(ctx context.Context, id string, descriptor []byte, by string) (*model.JobGroup, *Failure) {
	app, ferr := ParseDescriptor(descriptor)
	if ferr != nil {
		return nil, fail(http.StatusUnprocessableEntity, "the application descriptor is not valid: %v", ferr)
	}
	g, err := s.store.GetGroup(ctx, id)
	if err != nil {
		return nil, failureOf(err)
	}
	byComponent := map[string]model.Job{}
	for _, j := range g.Jobs {
		byComponent[j.Component] = j
	}
	var added []Component
	rs := reopens{changed: map[string]bool{}}
	keep := map[string]bool{}
	for _, c := range app.Components {
		keep[c.Name] = true
		j, ok := byComponent[c.Name]
		if !ok {
			added = append(added, c)
			continue
		}
		ms, err := c.Manifests()
		if err != nil {
			return nil, fail(http.StatusUnprocessableEntity, "component %s: %v", c.Name, err)
		}
		if sameManifests(j.Manifests, ms) {
			continue
		}
		if fl := s.reopen(ctx, &rs, j, store.Reopen{Type: model.ReplaceDeployment, Manifests: ms, By: by, Why: "group updated"}); fl != nil {
			return nil, fl
		}
	}
	for _, j := range g.Jobs {
		if keep[j.Component] || (j.Type == model.DeleteDeployment && j.State == model.Finished) {
			continue
		}
		if fl := s.reopen(ctx, &rs, j, store.Reopen{Type: model.DeleteDeployment, By: by, Why: "component removed by an update"}); fl != nil {
			return nil, fl
		}
	}
	if len(added) > 0 {
		sub := &Application{Name: app.Name, Description: app.Description, Namespace: app.Namespace, Placement: app.Placement, Components: added}
		missing, err := s.targeter.Resolve(ctx, sub, descriptor)
		if err != nil {
			return nil, fail(http.StatusServiceUnavailable, "resolving targets: %v", err)
		}
		var jobs []model.Job
		for _, c := range sub.Components {
			j, fl := newJob(id, app, c, missing)
			if fl != nil {
				return nil, fl
			}
			jobs = append(jobs, j)
			rs.changed[j.ID] = true
		}
		if err := s.store.AddJobs(ctx, id, jobs, by); err != nil {
			return nil, failureOf(err)
		}
	}
	after, err := s.store.GetGroup(ctx, id)
	if err != nil {
		return nil, failureOf(err)
	}
	s.publishCreated(ctx, rs.executable(after.Jobs))
	if len(rs.refused) > 0 {
		return after, fail(http.StatusConflict, "group %s updated except jobs being executed: %s (retry when they finish)", id, rs.list())
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
	if s.archiver != nil {
		return s.deleteGroupArchived(ctx, id, by)
	}
	return failureOf(s.store.DeleteGroup(ctx, id, by))
}

// retarget gives every Created job without a target one, if a target source has one now
// (the cron tick).
func (s *service) retarget(ctx context.Context) (int, error) {
	jobs, err := s.store.JobsInState(ctx, model.Created)
	if err != nil {
		return 0, err
	}
	n := 0
	var ready []model.Job
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
		if changed, err := s.store.SetTargets(ctx, j.ID, *t, Name); err != nil {
			if errors.Is(err, store.ErrWrongState) || errors.Is(err, store.ErrNotFound) {
				continue
			}
			return n, err
		} else if changed {
			n++
			if got, err := s.store.GetJob(ctx, j.ID); err == nil {
				ready = append(ready, *got)
			}
		}
	}
	s.publishCreated(ctx, ready)
	return n, nil
}

// groupID derives a group's id from the event that creates it, so a redelivered create
// (even after its remembered answer expired) finds the group instead of making a second.
func groupID(source, id string) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("ocm-jobs/jobgroup/"+source+"/"+id)).String()
}
