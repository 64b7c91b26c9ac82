// Package incompliance is the incompliance intake function: it records policy incompliances
// and turns each into a remediation (UpdateDeployment) job, de-duplicating alert storms.
package incompliance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/ocm-jobs/ocm-jobs/shared/auth"
	"github.com/ocm-jobs/ocm-jobs/shared/config"
	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/platform"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/shared/telemetry"
)

// Name is the function's name (FUNCTION, Knative Service suffix).
const Name = config.Incompliance

// Config is the incompliance function's configuration, from the environment.
type Config struct {
	config.Runtime
	config.Store
	auth.Config
	Cooldown   time.Duration `envconfig:"INCOMPLIANCE_COOLDOWN" default:"60s" desc:"the same policy on the same job within this time yields one remediation job, not one per alert"`
	RetryAfter time.Duration `envconfig:"INCOMPLIANCE_RETRY_AFTER" default:"30s" desc:"an incompliance still pending this long after it was received (its intake died half-way and its sender did not redeliver it) is finished by the next cron tick"`
}

// Types are the event types the incompliance function handles: incompliances, and the cron
// tick that finishes those whose intake died half-way.
var Types = []string{events.PolicyIncompliance, events.Ping}

// Function is the incompliance function.
type Function struct {
	cfg      Config
	store    *store.Store
	verifier *auth.Verifier
	tel      *telemetry.Telemetry
}

// New builds the function on the platform's store.
func New(_ context.Context, cfg Config, p platform.Platform) (*Function, error) {
	v, err := auth.NewVerifier(cfg.Config)
	if err != nil {
		return nil, err
	}
	return &Function{cfg: cfg, store: p.Store.As(events.Source(p.HubID, Name)), verifier: v, tel: p.Telemetry}, nil
}

// Routes serves the Policy Manager's webhook route of the ICOS Job Manager API, under both
// of its ICOS paths: /create is the callback the Job Manager registers with the Policy
// Manager (shared/polman).
func (f *Function) Routes() map[string]http.Handler {
	h := f.verifier.Require(auth.RolePolicyManager)(http.HandlerFunc(f.post))
	return map[string]http.Handler{
		// The record as stored: what became of it, and every job it covers (job_ids).
		"GET /jobmanager/policies/incompliance/{id}": f.verifier.Require(auth.RolePolicyManager, auth.RoleUser,
			auth.RoleDeploymentManager, auth.RoleReader)(http.HandlerFunc(f.get)),
		"POST /jobmanager/policies/incompliance": h,
		// The callback path ICOS registers with the Policy Manager (policy-manager.md).
		"POST /jobmanager/policies/incompliance/create": h,
	}
}

// answer is the outcome of one incompliance: the HTTP status and the stored record.
type answer struct {
	status int
	msg    string
	inc    *model.Incompliance
}

// Handle handles eu.icos.policy.incompliance.v1, and the cron tick: it finishes the
// incompliances whose intake died half-way (recorded, still pending after RETRY_AFTER), so
// every incompliance received ends with an outcome even when its sender never redelivers it.
func (f *Function) Handle(ctx context.Context, e event.Event) (*event.Event, protocol.Result) {
	if e.Type() == events.Ping {
		n, err := f.finishPending(ctx)
		if err != nil {
			return nil, events.Unavailable("finishing pending incompliances: %v", err)
		}
		return nil, events.Done("%d pending incompliances finished", n)
	}
	a := f.intake(ctx, e.Data(), e.Source())
	return nil, cehttp.NewResult(a.status, "%s", a.msg)
}

// finishPending resolves the incompliances still pending after RETRY_AFTER.
func (f *Function) finishPending(ctx context.Context) (int, error) {
	ids, err := f.store.PendingIncompliances(ctx, f.cfg.RetryAfter)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		in, err := f.store.GetIncompliance(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			// Expired: take it out of the index (settling a missing one does that).
			_, _ = f.store.SetIncomplianceOutcome(ctx, id, model.OutcomeRejected, "expired", "")
			continue
		}
		if err != nil {
			return n, err
		}
		if in.Outcome != model.OutcomePending {
			continue
		}
		if a := f.resolve(ctx, in, Name+"/retry"); events.IsTransient(a.status) {
			return n, fmt.Errorf("incompliance %s: %s", id, a.msg)
		}
		n++
	}
	return n, nil
}

func (f *Function) post(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	a := f.intake(r.Context(), body, "api:"+r.RemoteAddr)
	if a.status >= 300 {
		writeJSON(w, a.status, map[string]any{"error": a.msg, "incompliance": a.inc})
		return
	}
	writeJSON(w, a.status, a.inc)
}

// get is GET /jobmanager/policies/incompliance/{id}: the record, 404 when unknown or expired.
func (f *Function) get(w http.ResponseWriter, r *http.Request) {
	in, err := f.store.GetIncompliance(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no incompliance " + r.PathValue("id") + " (unknown, or expired)"})
	case errors.Is(err, store.ErrInvalid):
		writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"error": err.Error()})
	case err != nil:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "state store unavailable: " + err.Error()})
	default:
		writeJSON(w, http.StatusOK, in)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// intake records an incompliance and decides what it becomes:
//   - 422: it is malformed, names no known job, or the job cannot be remediated (rejected);
//   - 202: the job is already being remediated, or the same policy fired on the same job
//     within the cooldown: recorded, no second job;
//   - 200: the job was re-opened as an UpdateDeployment with the remediation as sub_type
//     (announced as job.created by the store's outbox);
//   - 503: Redis is unreachable; nothing was half-written, the sender retries.
//
// A redelivered incompliance (same id) answers as the first did.
func (f *Function) intake(ctx context.Context, body []byte, by string) answer {
	req, ferr := Decode(body)
	if ferr != nil {
		return answer{status: http.StatusUnprocessableEntity, msg: "the incompliance is not valid: " + ferr.Error()}
	}
	in := req.Incompliance
	rem := req.Remediation
	in.Payload = &rem
	isNew, err := f.store.RecordIncompliance(ctx, &in)
	if err != nil {
		return storeFailure(err, &in)
	}
	if !isNew {
		stored, err := f.store.GetIncompliance(ctx, in.ID)
		if err != nil {
			return storeFailure(err, &in)
		}
		if stored.Outcome != model.OutcomePending {
			return answerFor(stored)
		}
		// A delivery that died before settling it: go on, with what was recorded.
		if stored.Payload == nil {
			stored.Payload = &rem
		}
		in = *stored
	}
	return f.resolve(ctx, &in, by)
}

// resolve decides what a recorded, pending incompliance becomes (see intake) and settles it.
func (f *Function) resolve(ctx context.Context, inc *model.Incompliance, by string) answer {
	in := *inc
	sj, why := f.findJobs(ctx, &in)
	if len(sj.jobs) == 0 {
		if why.status == http.StatusServiceUnavailable {
			return why
		}
		return f.settle(ctx, &in, model.OutcomeRejected, why.msg, "")
	}
	if len(sj.jobs) > 1 {
		return f.resolveEvery(ctx, &in, sj, by)
	}
	job := sj.jobs[0]
	in.JobID = job.ID
	switch {
	case in.Remediation == model.RemediationNone:
		// The Policy Manager's default: the violation is on record, nothing is done (202).
		return f.settle(ctx, &in, model.OutcomeApplied, noneReason, job.ID)
	case openedFor(job, &in):
		// An earlier delivery of this same incompliance opened the remediation.
		return f.settle(ctx, &in, model.OutcomeApplied, "", job.ID)
	case job.OwnerID == "":
		return f.settle(ctx, &in, model.OutcomeRejected, fmt.Sprintf("job %s was never deployed (state %s): nothing to remediate", job.ID, job.State), job.ID)
	case job.State == model.Created || job.State == model.Progressing:
		return f.settle(ctx, &in, model.OutcomeApplied, fmt.Sprintf("deduplicated: job %s is already being worked on (%s%s, %s)", job.ID, job.Type, subtype(job), job.State), job.ID)
	case job.Type == model.DeleteDeployment:
		return f.settle(ctx, &in, model.OutcomeRejected, fmt.Sprintf("job %s is undeployed: nothing to remediate", job.ID), job.ID)
	case job.State == model.Degraded:
		return f.settle(ctx, &in, model.OutcomeRejected, fmt.Sprintf("job %s is Degraded: a remediation needs a Finished job; fix or redeploy it first", job.ID), job.ID)
	}
	// Alert storms: one remediation per policy and job within the cooldown.
	ok, err := f.store.StartCooldown(ctx, job.ID, in.PolicyName, in.ID, f.cfg.Cooldown)
	if err != nil {
		return answer{status: http.StatusServiceUnavailable, msg: "redis unreachable: " + err.Error(), inc: &in}
	}
	if !ok {
		return f.settle(ctx, &in, model.OutcomeApplied, fmt.Sprintf("deduplicated: policy %s fired on job %s less than %s ago", in.PolicyName, job.ID, f.cfg.Cooldown), job.ID)
	}
	rem := model.Remediation{Action: in.Remediation}
	if in.Payload != nil {
		rem = *in.Payload
	}
	rem.IncomplianceID = in.ID
	rem.Action = rem.Action.Canonical()
	_, err = f.store.Reopen(ctx, job.ID, store.Reopen{
		Type: model.UpdateDeployment, SubType: in.Remediation.Canonical(), Remediation: &rem, IfFence: job.Fence,
		By: by, Why: fmt.Sprintf("incompliance %s: policy %s", in.ID, in.PolicyName),
	})
	switch {
	case errors.Is(err, store.ErrWrongState), errors.Is(err, store.ErrFenced):
		// Another remediation got there first — or a concurrent delivery of this one.
		if now, gerr := f.store.GetJob(ctx, job.ID); gerr == nil && openedFor(now, &in) {
			return f.settle(ctx, &in, model.OutcomeApplied, "", job.ID)
		}
		return f.settle(ctx, &in, model.OutcomeApplied, fmt.Sprintf("deduplicated: job %s changed meanwhile (%v)", job.ID, err), job.ID)
	case errors.Is(err, store.ErrInvalid):
		_ = f.store.EndCooldown(context.WithoutCancel(ctx), job.ID, in.PolicyName)
		return f.settle(ctx, &in, model.OutcomeRejected, err.Error(), job.ID)
	case err != nil:
		_ = f.store.EndCooldown(context.WithoutCancel(ctx), job.ID, in.PolicyName)
		return storeFailure(err, &in)
	}
	return f.settle(ctx, &in, model.OutcomeApplied, "", job.ID)
}

// noneReason is the reason of an incompliance whose remediation is none.
const noneReason = "remediation none: the incompliance is recorded; nothing is done"

// openedFor says the job's current order is the remediation of this incompliance.
func openedFor(j *model.Job, in *model.Incompliance) bool {
	return j.Type == model.UpdateDeployment && j.Remediation != nil && j.Remediation.IncomplianceID == in.ID
}

func subtype(j *model.Job) string {
	if j.SubType == "" {
		return ""
	}
	return " " + string(j.SubType)
}

// findJob finds the job an incompliance is about: subject.resourceId is a job id (ICOS Job
// Manager shape); otherwise subject.appInstance is the job group and appComponent the
// component (the Policy Manager's shape).
func (f *Function) findJob(ctx context.Context, in *model.Incompliance) (*model.Job, answer) {
	s := in.Subject
	if s.ResourceID != "" {
		j, err := f.store.GetJob(ctx, s.ResourceID)
		if err == nil {
			return j, answer{}
		}
		if !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrInvalid) {
			return nil, storeFailure(err, in)
		}
		if s.AppInstance == "" {
			return nil, answer{msg: fmt.Sprintf("unknown subject: no job %q (subject.resourceId)", s.ResourceID)}
		}
	}
	g, err := f.store.GetGroup(ctx, s.AppInstance)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalid) {
			return nil, answer{msg: fmt.Sprintf("unknown subject: no application instance %q (subject.appInstance)", s.AppInstance)}
		}
		return nil, storeFailure(err, in)
	}
	for i := range g.Jobs {
		if g.Jobs[i].Component == s.AppComponent {
			return &g.Jobs[i], answer{}
		}
	}
	return nil, answer{msg: fmt.Sprintf("unknown subject: application instance %s has no component %q (subject.appComponent)", s.AppInstance, s.AppComponent)}
}

// settle stores the outcome and answers accordingly.
func (f *Function) settle(ctx context.Context, in *model.Incompliance, o model.Outcome, reason, jobID string) answer {
	changed, err := f.store.SetIncomplianceOutcome(ctx, in.ID, o, reason, jobID)
	return f.settled(ctx, in, o, reason, changed, err)
}

// settled answers with the incompliance as stored once its outcome was set (changed: by this
// call; ErrWrongState: it was settled before).
func (f *Function) settled(ctx context.Context, in *model.Incompliance, o model.Outcome, reason string, changed bool, err error) answer {
	if err != nil && !errors.Is(err, store.ErrWrongState) {
		return storeFailure(err, in)
	}
	if changed {
		f.tel.Incompliance(ctx, string(in.Remediation), outcomeOf(o, reason))
	}
	stored, err := f.store.GetIncompliance(ctx, in.ID)
	if err != nil {
		return storeFailure(err, in)
	}
	return answerFor(stored)
}

// outcomeOf names what was done about an incompliance, for the metrics: a remediation job
// applied (or joined), an alert storm cooled down (deduplicated), or rejected.
func outcomeOf(o model.Outcome, reason string) string {
	switch {
	case o == model.OutcomeRejected:
		return telemetry.IncomplianceRejected
	case strings.HasPrefix(reason, "deduplicated"):
		return telemetry.IncomplianceCooledDown
	default:
		return telemetry.IncomplianceApplied
	}
}

// answerFor maps a settled incompliance to its answer.
func answerFor(in *model.Incompliance) answer {
	switch {
	case in.Outcome == model.OutcomeRejected:
		return answer{status: http.StatusUnprocessableEntity, msg: in.Reason, inc: in}
	case in.Reason != "":
		return answer{status: http.StatusAccepted, msg: in.Reason, inc: in}
	default:
		if len(in.JobIDs) > 1 {
			return answer{status: http.StatusOK, msg: "remediation jobs " + strings.Join(in.JobIDs, ", ") + " opened", inc: in}
		}
		return answer{status: http.StatusOK, msg: "remediation job " + in.JobID + " opened", inc: in}
	}
}

func storeFailure(err error, in *model.Incompliance) answer {
	if errors.Is(err, store.ErrInvalid) {
		return answer{status: http.StatusUnprocessableEntity, msg: err.Error(), inc: in}
	}
	return answer{status: http.StatusServiceUnavailable, msg: "state store unavailable: " + err.Error(), inc: in}
}
