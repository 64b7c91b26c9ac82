package statussync

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	workv1 "open-cluster-management.io/api/work/v1"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
)

// The rules of decide, one table; the integration suite (tests/statussync) runs them against
// the real work agent.

var (
	t0  = time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	now = t0.Add(10 * time.Minute)
	pol = policy{grace: 30 * time.Second, deadline: 5 * time.Minute}
)

const jobID = "0a000000-0000-4000-8000-000000000001"

// job is a job at fence 3 (with an empty resource when none is given).
func job(ty model.JobType, st model.JobState, updated time.Time, res *model.Resource) *model.Job {
	if res == nil {
		res = &model.Resource{ID: jobID, JobID: jobID}
	}
	return &model.Job{ID: jobID, Type: ty, State: st, OwnerID: "hub", Fence: 3, UpdatedAt: updated, Orchestrator: model.OCM,
		Targets: &model.Target{ClusterName: "c1", Orchestrator: model.OCM}, Resource: res}
}

func cond(t string, s metav1.ConditionStatus, reason string, gen int64, at time.Time) metav1.Condition {
	return metav1.Condition{Type: t, Status: s, Reason: reason, Message: reason + " message", ObservedGeneration: gen, LastTransitionTime: metav1.NewTime(at)}
}

// mw is the job's work as execution 3 (the job's current one) wrote it.
func mw(gen int64, conds ...metav1.Condition) *ocm.Work {
	w := &ocm.Work{Metadata: ocm.WorkMeta{Name: ocm.WorkName(jobID), Namespace: "c1", UID: "uid-1", Generation: gen,
		Annotations: map[string]string{ocm.AnnotationFence: "3"}}}
	w.Status.Conditions = conds
	return w
}

// writtenBy is w as another execution (fence; 0: none recorded) wrote it.
func writtenBy(fence string, w *ocm.Work) *ocm.Work {
	w.Metadata.Annotations = map[string]string{ocm.AnnotationFence: fence}
	if fence == "" {
		w.Metadata.Annotations = nil
	}
	return w
}

// seen is a resource on which status sync recorded the job's work before.
func seen(conds ...metav1.Condition) *model.Resource {
	return &model.Resource{ID: jobID, JobID: jobID, ResourceUUID: "icos-resource-uuid", ClusterName: "c1",
		ManifestWorkName: ocm.WorkName(jobID), ManifestWorkUID: "uid-1", Conditions: conds}
}

func TestDecide(t *testing.T) {
	applied := cond(model.ConditionApplied, metav1.ConditionTrue, "AppliedManifestWorkComplete", 1, t0)
	available := cond(model.ConditionAvailable, metav1.ConditionTrue, "ResourcesAvailable", 1, t0)
	recent := now.Add(-time.Second)
	executorDegraded := cond(model.ConditionDegraded, metav1.ConditionTrue, "ClusterUnknown", 0, t0)
	moved := seen()
	moved.ClusterName = "c0"
	deleting := mw(1, applied, available)
	deleting.Metadata.DeletionTimestamp = &metav1.Time{Time: now}
	staleFence := writtenBy("2", mw(1, applied, available))
	currentFence := mw(1, applied, available)

	for name, tc := range map[string]struct {
		job       *model.Job
		work      *ocm.Work
		outcome   model.JobState
		reason    string
		missing   bool
		degraded  metav1.ConditionStatus // the resource's Degraded condition afterwards ("" none)
		unchanged bool                   // the resource is what is stored
	}{
		"applied and available: finished": {job: job(model.CreateDeployment, model.Progressing, recent, nil), work: mw(1, applied, available),
			outcome: model.Finished, reason: ReasonAvailable},
		"fence of this execution: finished": {job: job(model.CreateDeployment, model.Progressing, recent, nil), work: currentFence,
			outcome: model.Finished, reason: ReasonAvailable},
		"work of this execution not written yet: no verdict": {job: job(model.UpdateDeployment, model.Progressing, recent, nil),
			work: writtenBy("2", mw(1, applied, available))},
		"work without a fence: no verdict": {job: job(model.CreateDeployment, model.Progressing, recent, nil),
			work: writtenBy("", mw(1, applied, available))},
		"applied, availability not reported yet: no verdict": {job: job(model.CreateDeployment, model.Progressing, recent, nil), work: mw(1, applied)},
		"applied false within the grace: no verdict": {job: job(model.CreateDeployment, model.Progressing, recent, nil),
			work: mw(1, cond(model.ConditionApplied, metav1.ConditionFalse, "AppliedManifestWorkFailed", 1, recent))},
		"applied false past the grace: degraded with the agent's reason": {job: job(model.CreateDeployment, model.Progressing, recent, nil),
			work:    mw(1, cond(model.ConditionApplied, metav1.ConditionFalse, "AppliedManifestWorkFailed", 1, t0)),
			outcome: model.Degraded, reason: "AppliedManifestWorkFailed", degraded: metav1.ConditionTrue},
		"available false past the grace: degraded": {job: job(model.CreateDeployment, model.Finished, recent, nil),
			work:    mw(1, applied, cond(model.ConditionAvailable, metav1.ConditionFalse, "ResourcesNotAvailable", 1, t0)),
			outcome: model.Degraded, reason: "ResourcesNotAvailable", degraded: metav1.ConditionTrue},
		"degraded true: degraded": {job: job(model.CreateDeployment, model.Progressing, recent, nil),
			work:    mw(1, applied, available, cond(model.ConditionDegraded, metav1.ConditionTrue, "ProbeFailed", 1, now)),
			outcome: model.Degraded, reason: "ProbeFailed", degraded: metav1.ConditionTrue},
		"conditions of an older generation: no verdict": {job: job(model.UpdateDeployment, model.Progressing, recent, nil), work: mw(2, applied, available)},
		"conditions of an older generation past the deadline: timeout": {job: job(model.UpdateDeployment, model.Progressing, t0, nil), work: mw(2, applied, available),
			outcome: model.Degraded, reason: ReasonTimeout, degraded: metav1.ConditionTrue},
		"no conditions past the deadline: timeout": {job: job(model.CreateDeployment, model.Progressing, t0, nil), work: mw(1),
			outcome: model.Degraded, reason: ReasonTimeout, degraded: metav1.ConditionTrue},
		"work of an earlier execution: no verdict, executor's reason kept": {job: job(model.UpdateDeployment, model.Degraded, recent, seen(executorDegraded)), work: staleFence,
			degraded: metav1.ConditionTrue},
		"work being deleted: missing": {job: job(model.CreateDeployment, model.Finished, recent, seen()), work: deleting,
			outcome: model.Degraded, reason: ReasonManifestWorkMissing, degraded: metav1.ConditionTrue},
		"no work yet: waiting, nothing written": {job: job(model.CreateDeployment, model.Progressing, recent, nil), unchanged: true},
		"no work past the deadline: timeout": {job: job(model.CreateDeployment, model.Progressing, t0, nil),
			outcome: model.Degraded, reason: ReasonTimeout, degraded: metav1.ConditionTrue},
		"work of a finished job gone: missing": {job: job(model.CreateDeployment, model.Finished, recent, seen(applied, available)),
			outcome: model.Degraded, reason: ReasonManifestWorkMissing, missing: true, degraded: metav1.ConditionTrue},
		"work seen before gone while progressing: missing": {job: job(model.ReplaceDeployment, model.Progressing, recent, seen(applied)),
			outcome: model.Degraded, reason: ReasonManifestWorkMissing, missing: true, degraded: metav1.ConditionTrue},
		"degraded by the executor, never had a work: untouched": {job: job(model.CreateDeployment, model.Degraded, t0,
			&model.Resource{ID: jobID, JobID: jobID, Conditions: []metav1.Condition{executorDegraded}}), degraded: metav1.ConditionTrue, unchanged: true},
		"work seen on the cluster the job left: waiting": {job: job(model.UpdateDeployment, model.Progressing, recent, moved), unchanged: true},
		"delete job, work gone: finished": {job: job(model.DeleteDeployment, model.Progressing, recent, seen(applied)),
			outcome: model.Finished, reason: ReasonDeleted, unchanged: true},
		"delete job, work still there: waiting": {job: job(model.DeleteDeployment, model.Progressing, recent, nil), work: mw(1, applied, available)},
		"recovered after a degrade: finished, degraded false": {
			job:  job(model.CreateDeployment, model.Degraded, recent, seen(cond(model.ConditionDegraded, metav1.ConditionTrue, "ResourcesNotAvailable", 1, t0))),
			work: mw(1, applied, available), outcome: model.Finished, reason: ReasonAvailable, degraded: metav1.ConditionFalse},
	} {
		t.Run(name, func(t *testing.T) {
			v := decide(tc.job, tc.work, now, pol)
			if v.outcome != tc.outcome || v.reason != tc.reason || v.missing != tc.missing {
				t.Fatalf("verdict %v %q missing=%v (%s), want %v %q missing=%v", v.outcome, v.reason, v.missing, v.message, tc.outcome, tc.reason, tc.missing)
			}
			r := &v.resource
			var got metav1.ConditionStatus
			if c := r.Condition(model.ConditionDegraded); c != nil {
				got = c.Status
				if tc.outcome == model.Degraded && (c.Reason != tc.reason || c.Message != v.message) {
					t.Errorf("Degraded condition %s %q, want the verdict's %q %q", c.Status, c.Reason, tc.reason, v.message)
				}
			}
			if got != tc.degraded {
				t.Errorf("Degraded condition %q, want %q", got, tc.degraded)
			}
			if same := sameResource(tc.job, r); same != tc.unchanged {
				t.Errorf("resource unchanged = %v, want %v: %+v", same, tc.unchanged, r)
			}
			if tc.job.Resource != nil && (r.ID != tc.job.Resource.ID || r.ResourceUUID != tc.job.Resource.ResourceUUID) {
				t.Errorf("resource id/uuid %q/%q overwritten (was %q/%q)", r.ID, r.ResourceUUID, tc.job.Resource.ID, tc.job.Resource.ResourceUUID)
			}
			if tc.work != nil && tc.work.Metadata.DeletionTimestamp == nil && r.ManifestWorkUID != tc.work.Metadata.UID {
				t.Errorf("work uid %q not recorded", r.ManifestWorkUID)
			}
		})
	}
}

// Syncing the same status again changes nothing: one condition per type, each keeping its
// lastTransitionTime; a status change moves it.
func TestDecideKeepsTransitionTimes(t *testing.T) {
	first := decide(job(model.CreateDeployment, model.Progressing, now, nil),
		mw(1, cond(model.ConditionApplied, metav1.ConditionTrue, "Applied", 1, t0), cond(model.ConditionAvailable, metav1.ConditionTrue, "Available", 1, t0)), now, pol)
	stored := first.resource
	// The agent re-reports the same statuses with later times (as after a restart).
	later := t0.Add(time.Minute)
	j := job(model.CreateDeployment, model.Finished, now, &stored)
	again := decide(j, mw(1, cond(model.ConditionApplied, metav1.ConditionTrue, "Applied", 1, later), cond(model.ConditionAvailable, metav1.ConditionTrue, "Available", 1, later)), now, pol)
	if !sameResource(j, &again.resource) {
		t.Fatalf("same statuses changed the resource: %+v → %+v", stored.Conditions, again.resource.Conditions)
	}
	if again.outcome != model.Finished || len(again.resource.Conditions) != 2 { // Applied, Available
		t.Fatalf("outcome %v, %d conditions", again.outcome, len(again.resource.Conditions))
	}
	flipped := decide(j, mw(1, cond(model.ConditionApplied, metav1.ConditionTrue, "Applied", 1, later), cond(model.ConditionAvailable, metav1.ConditionFalse, "Gone", 1, later)), now, pol)
	c := flipped.resource.Condition(model.ConditionAvailable)
	if c.Status != metav1.ConditionFalse || !c.LastTransitionTime.Time.Equal(later) || len(flipped.resource.Conditions) != 3 || flipped.outcome != model.Degraded {
		t.Fatalf("flipped Available = %+v (%d conditions, outcome %v), want False since %v, and Degraded past the grace", c, len(flipped.resource.Conditions), flipped.outcome, later)
	}
	// A re-created work (another uid) starts its conditions afresh.
	other := mw(1, cond(model.ConditionApplied, metav1.ConditionTrue, "Applied", 1, later))
	other.Metadata.UID = "uid-2"
	fresh := decide(j, other, now, pol)
	if fresh.resource.Condition(model.ConditionAvailable) != nil || fresh.resource.ManifestWorkUID != "uid-2" {
		t.Fatalf("re-created work kept the old work's conditions: %+v", fresh.resource)
	}
}

func TestWorkloads(t *testing.T) {
	two, one := int64(2), int64(1)
	w := mw(1)
	w.Status.ResourceStatus.Manifests = []workv1.ManifestCondition{
		{ResourceMeta: workv1.ManifestResourceMeta{Kind: "Namespace", Name: "shop"}},
		{ResourceMeta: workv1.ManifestResourceMeta{Kind: "Deployment", Namespace: "shop", Name: "web"},
			StatusFeedbacks: workv1.StatusFeedbackResult{Values: []workv1.FeedbackValue{
				{Name: ocm.FeedbackReplicas, Value: workv1.FieldValue{Type: workv1.Integer, Integer: &two}},
				{Name: ocm.FeedbackReadyReplicas, Value: workv1.FieldValue{Type: workv1.Integer, Integer: &one}},
			}}},
		{ResourceMeta: workv1.ManifestResourceMeta{Kind: "StatefulSet", Namespace: "shop", Name: "db"}},
	}
	got := workloads(w)
	if len(got) != 2 || got[0].Name != "web" || *got[0].Replicas != 2 || *got[0].ReadyReplicas != 1 || got[0].AvailableReplicas != nil ||
		got[1].Kind != "StatefulSet" || got[1].Replicas != nil {
		t.Fatalf("workloads = %+v", got)
	}
}

func TestEligible(t *testing.T) {
	base := func() *model.Job { return job(model.CreateDeployment, model.Progressing, now, nil) }
	for name, tc := range map[string]struct {
		change func(*model.Job)
		want   bool
	}{
		"ours, progressing":        {func(*model.Job) {}, true},
		"another hub's":            {func(j *model.Job) { j.OwnerID = "other" }, false},
		"nuvla":                    {func(j *model.Job) { j.Orchestrator = model.Nuvla }, false},
		"created":                  {func(j *model.Job) { j.State = model.Created }, false},
		"never promoted":           {func(j *model.Job) { j.Fence = 0 }, false},
		"no target":                {func(j *model.Job) { j.Targets = nil }, false},
		"finished delete":          {func(j *model.Job) { j.Type, j.State = model.DeleteDeployment, model.Finished }, false},
		"finished create":          {func(j *model.Job) { j.State = model.Finished }, true},
		"degraded delete":          {func(j *model.Job) { j.Type, j.State = model.DeleteDeployment, model.Degraded }, true},
		"orchestrator from target": {func(j *model.Job) { j.Orchestrator = "" }, true},
		"being moved":              {func(j *model.Job) { j.Move = &model.Move{From: "c1", To: "c2", Phase: model.MoveApply} }, false},
	} {
		j := base()
		tc.change(j)
		if got := eligible(j, "hub"); got != tc.want {
			t.Errorf("%s: eligible = %v, want %v", name, got, tc.want)
		}
	}
}
