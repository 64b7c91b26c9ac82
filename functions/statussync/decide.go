package statussync

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
)

// Reasons status sync gives when the agent's own conditions are not the cause.
const (
	// ReasonManifestWorkMissing: the ManifestWork of a deployed job is gone from the hub. It
	// is not re-created: something outside ocm-jobs deleted it, and re-creating it silently
	// would hide that.
	ReasonManifestWorkMissing = "ManifestWorkMissing"
	// ReasonTimeout: the job stayed Progressing longer than PROGRESS_DEADLINE without a
	// verdict from the work agent.
	ReasonTimeout = "Timeout"
	// ReasonDeleted: a DeleteDeployment job's ManifestWork is gone.
	ReasonDeleted = "ManifestWorkDeleted"
	// ReasonAvailable: the ManifestWork is applied and available (the job is Finished).
	ReasonAvailable = ocm.ReasonAvailable
)

// policy is what decide needs of the configuration.
type policy struct {
	grace    time.Duration
	deadline time.Duration
}

// verdict is what a job's ManifestWork says about the job.
type verdict struct {
	// resource is the job's resource as it should be stored.
	resource model.Resource
	// outcome is the state the work puts the job in: Finished, Degraded, or 0 when the work
	// has no verdict yet (or none that may be acted on).
	outcome model.JobState
	reason  string
	message string
	// missing says the verdict rests on the work being gone, which a LIST from the watch
	// cache must confirm with a quorum GET before it is acted on.
	missing bool
}

// why is the history note of the verdict.
func (v verdict) why() string {
	if v.message == "" {
		return v.reason
	}
	return v.reason + ": " + v.message
}

// eligible says whether status sync looks after a job at all: an OCM job this hub owns that
// was promoted (has a fence) and has a target, in Progressing, Finished or Degraded. Created
// jobs belong to the executor, and so does a job while it is being moved to another cluster
// (its reallocation decides); a finished DeleteDeployment has nothing left to watch.
func eligible(j *model.Job, hubID string) bool {
	if j.OwnerID != hubID || j.Fence == 0 || j.Targets == nil || j.Targets.ClusterName == "" || j.Move != nil {
		return false
	}
	orch := j.Orchestrator
	if orch == "" {
		orch = j.Targets.Orchestrator
	}
	if orch != model.OCM || !j.Type.Valid() {
		return false
	}
	switch j.State {
	case model.Progressing, model.Degraded:
		return true
	case model.Finished:
		return j.Type != model.DeleteDeployment
	}
	return false
}

// reported says a deployment manager other than ocm-jobs' executor reported on the job through
// the REST API (the ICOS OCM deployment manager, say): it executed the job, under its own
// ManifestWork, and its reports are the job's verdict.
func reported(j *model.Job) bool { return j.Resource != nil && j.Resource.ReportedBy != "" }

// decide derives a job's resource and verdict from its ManifestWork (nil: there is none) at
// time now. It is pure: the caller writes what changed.
func decide(j *model.Job, w *ocm.Work, now time.Time, p policy) verdict {
	v := verdict{resource: resourceOf(j)}
	res := &v.resource
	if w != nil {
		mirror(res, w)
	}
	if reported(j) {
		// A deployment manager executed the job and reports its state through the REST API;
		// its work (w: the one the resource names, or none found) is only mirrored. What
		// status sync said of the job before the deployment manager's report is dropped.
		if j.State != model.Degraded {
			if c := res.Condition(model.ConditionDegraded); c != nil && (c.Reason == ReasonManifestWorkMissing || c.Reason == ReasonTimeout) {
				meta.RemoveStatusCondition(&res.Conditions, model.ConditionDegraded)
			}
		}
		return v
	}
	cluster, name := j.Targets.ClusterName, ocm.WorkName(j.ID)
	progressingTooLong := j.State == model.Progressing && now.Sub(j.UpdatedAt) >= p.deadline
	// current: the work was written for the job's current execution (it carries the job's
	// fence), so its status is about it and not about the previous spec (a tick between a
	// promote and the executor's write of the new spec must not finish an UpdateDeployment on
	// the old one).
	current := w != nil && !w.Deleting() && w.Fence() == j.Fence

	switch {
	case j.Type == model.DeleteDeployment:
		if w == nil {
			if j.State != model.Finished {
				v.outcome, v.reason, v.message = model.Finished, ReasonDeleted, fmt.Sprintf("ManifestWork %s/%s is gone", cluster, name)
			}
		} else if progressingTooLong {
			v.outcome, v.reason = model.Degraded, ReasonTimeout
			v.message = fmt.Sprintf("ManifestWork %s/%s still exists %s after the delete", cluster, name, p.deadline)
		}
	case w == nil:
		// Gone is only a verdict for a work that was there: one seen at this place before, or
		// one a Finished job must have. A Progressing job whose work was never seen is still
		// being created by the executor; a Degraded one never got one (the executor said why).
		seen := res.ManifestWorkUID != "" && res.ClusterName == cluster && res.ManifestWorkName == name
		switch {
		case seen || j.State == model.Finished:
			v.outcome, v.reason, v.missing = model.Degraded, ReasonManifestWorkMissing, true
			v.message = fmt.Sprintf("ManifestWork %s/%s is gone from the hub; it is not re-created", cluster, name)
		case progressingTooLong:
			v.outcome, v.reason = model.Degraded, ReasonTimeout
			v.message = fmt.Sprintf("no ManifestWork %s/%s after %s", cluster, name, p.deadline)
		}
	case w.Deleting():
		v.outcome, v.reason = model.Degraded, ReasonManifestWorkMissing
		v.message = fmt.Sprintf("ManifestWork %s/%s is being deleted; it is not re-created", cluster, name)
	case !current:
		// Written for another execution: its status says nothing about this one yet.
		if progressingTooLong {
			v.outcome, v.reason = model.Degraded, ReasonTimeout
			v.message = fmt.Sprintf("ManifestWork %s/%s was not written for execution %d within %s", cluster, name, j.Fence, p.deadline)
		}
	default:
		switch verdict := ocm.VerdictOf(w, now, p.grace); verdict.Outcome {
		case ocm.Done:
			v.outcome, v.reason, v.message = model.Finished, verdict.Reason, verdict.Message
		case ocm.Failed:
			v.outcome, v.reason, v.message = model.Degraded, verdict.Reason, verdict.Message
		}
		if v.outcome == 0 && progressingTooLong {
			v.outcome, v.reason = model.Degraded, ReasonTimeout
			v.message = fmt.Sprintf("no verdict from the work agent on ManifestWork %s/%s after %s (%s)", cluster, name, p.deadline, summary(w))
		}
	}

	gen := int64(0)
	if w != nil {
		gen = w.Metadata.Generation
	}
	switch {
	case v.outcome == model.Degraded:
		res.SetCondition(metav1.Condition{Type: model.ConditionDegraded, Status: metav1.ConditionTrue,
			Reason: v.reason, Message: v.message, ObservedGeneration: gen, LastTransitionTime: metav1.NewTime(now)})
	case current && w.Condition(model.ConditionDegraded) != nil:
		res.SetCondition(*w.Condition(model.ConditionDegraded))
	case v.outcome == model.Finished && res.Condition(model.ConditionDegraded) != nil:
		res.SetCondition(metav1.Condition{Type: model.ConditionDegraded, Status: metav1.ConditionFalse,
			Reason: v.reason, Message: v.message, ObservedGeneration: gen, LastTransitionTime: metav1.NewTime(now)})
	}
	return v
}

// summary lists the work's conditions, for a Timeout message.
func summary(w *ocm.Work) string {
	if len(w.Status.Conditions) == 0 {
		return "no conditions"
	}
	s := ""
	for i, c := range w.Status.Conditions {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s=%s", c.Type, c.Status)
		if c.ObservedGeneration != 0 && c.ObservedGeneration != w.Metadata.Generation {
			s += fmt.Sprintf(" (generation %d of %d)", c.ObservedGeneration, w.Metadata.Generation)
		}
	}
	return s
}

// resourceOf is a copy of the job's stored resource to change, or a new one, named after the
// job's component (as the ICOS deployment manager names it). A condition that said why the job
// waited to be placed (AwaitingTarget, NoManagingHub) is dropped: the job runs now.
func resourceOf(j *model.Job) model.Resource {
	if j.Resource == nil {
		return model.Resource{ID: j.ID, JobID: j.ID, ResourceName: j.Component}
	}
	r := *j.Resource
	r.Conditions = nil
	for _, c := range j.Resource.Conditions {
		if !model.Waiting(c) {
			r.Conditions = append(r.Conditions, c)
		}
	}
	r.Workloads = append([]model.WorkloadStatus(nil), j.Resource.Workloads...)
	if r.JobID == "" {
		r.JobID = j.ID
	}
	if r.ResourceName == "" {
		r.ResourceName = j.Component
	}
	return r
}

// mirrored are the work's condition types copied onto the resource as the agent reports them.
var mirrored = []string{model.ConditionApplied, model.ConditionAvailable, model.ConditionProgressing}

// mirror records the work on the resource: where it is, its UID, its conditions and the
// workloads' status feedback. The resource's own id and resource_uuid are never touched (the
// ICOS status sync overwrote the resource uid with the work's). Conditions are set with
// SetCondition, so one stays one per type and keeps its lastTransitionTime while its status
// holds.
func mirror(res *model.Resource, w *ocm.Work) {
	if res.ManifestWorkUID != "" && res.ManifestWorkUID != w.Metadata.UID {
		// Another work (re-created, or the job moved): the old one's conditions are history.
		for _, t := range mirrored {
			meta.RemoveStatusCondition(&res.Conditions, t)
		}
	}
	res.ClusterName, res.ManifestWorkName, res.ManifestWorkUID = w.Metadata.Namespace, w.Metadata.Name, w.Metadata.UID
	for _, t := range mirrored {
		if c := meta.FindStatusCondition(w.Status.Conditions, t); c != nil {
			res.SetCondition(metav1.Condition{Type: c.Type, Status: c.Status, ObservedGeneration: c.ObservedGeneration,
				LastTransitionTime: c.LastTransitionTime, Reason: c.Reason, Message: c.Message})
		}
	}
	res.Workloads = workloads(w)
}

// workloads are the status-feedback values of the work's workloads, in manifest order.
func workloads(w *ocm.Work) []model.WorkloadStatus {
	var out []model.WorkloadStatus
	for _, m := range w.Status.ResourceStatus.Manifests {
		_, isWorkload := ocm.WorkloadKinds[m.ResourceMeta.Kind]
		if !isWorkload && len(m.StatusFeedbacks.Values) == 0 {
			continue
		}
		ws := model.WorkloadStatus{Kind: m.ResourceMeta.Kind, Namespace: m.ResourceMeta.Namespace, Name: m.ResourceMeta.Name}
		for _, fv := range m.StatusFeedbacks.Values {
			switch fv.Name {
			case ocm.FeedbackReplicas:
				ws.Replicas = fv.Value.Integer
			case ocm.FeedbackReadyReplicas:
				ws.ReadyReplicas = fv.Value.Integer
			case ocm.FeedbackAvailableReplicas:
				ws.AvailableReplicas = fv.Value.Integer
			}
		}
		out = append(out, ws)
	}
	return out
}
