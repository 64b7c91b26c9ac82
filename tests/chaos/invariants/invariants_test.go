package invariants

import (
	"fmt"
	"testing"
	"time"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	hubA    = "hub-a"
	hubB    = "hub-b"
	groupID = "ab000000-0000-0000-0000-000000000001"
	jobID   = "ab000000-0000-0000-0000-0000000000j1"
	incID   = "cd000000-0000-0000-0000-0000000000i1"
	prefix  = "p:{b:ab}"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func at(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

var base = Spec{Replicas: 2, CPU: 200, Memory: 128 << 20, CPULimit: 400, MemoryLimit: 256 << 20}

func deploymentYAML(s, b Spec) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations: {%s: "%s"}
spec:
  replicas: %d
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: main
        image: registry.invalid/web:1
        resources:
          requests: {cpu: %dm, memory: %dMi}
          limits: {cpu: %dm, memory: %dMi}
`, BaseAnnotation, FormatSpec(b), s.Replicas, s.CPU, s.Memory>>20, s.CPULimit, s.MemoryLimit>>20)
}

// healthy is the snapshot of a run that went right: one group whose one job was deployed on
// cluster1 by hub A, then scaled out once for an incompliance, everything announced.
func healthy() Snapshot {
	scaled := base
	scaled.Replicas = 3
	j := Job{Job: model.Job{
		ID: jobID, JobGroupID: groupID, OwnerID: hubA, Type: model.UpdateDeployment, SubType: model.ScaleOut,
		State: model.Finished, Fence: 2, Namespace: "app", Component: "web", Orchestrator: model.OCM,
		Targets:   &model.Target{ClusterName: "cluster1", Orchestrator: model.OCM},
		Manifests: []model.PlainManifest{{YamlString: deploymentYAML(scaled, base)}},
		UpdatedAt: at(9),
	}, History: []model.HistoryEntry{
		{At: at(0), By: "api", Action: "create", From: 0, To: 1},
		{At: at(1), By: hubA, Action: "promote", From: 1, To: 2, Fence: 1},
		{At: at(2), By: hubA, Action: "finish", From: 2, To: 3, Fence: 1},
		{At: at(5), By: "policy", Action: "reopen-7", From: 3, To: 1, Fence: 1, Why: "incompliance " + incID + ": policy cpu"},
		{At: at(6), By: hubA, Action: "promote", From: 1, To: 2, Fence: 2},
		{At: at(7), By: hubA, Action: "remediate", From: 2, To: 2, Fence: 2},
		{At: at(9), By: hubA, Action: "finish", From: 2, To: 3, Fence: 2},
	}}
	ev := func(typ string, fence uint64, st model.JobState) Event {
		return Event{ID: fmt.Sprintf("%s-%d", typ, fence), Source: "/ocm-jobs/hubs/hub-a/x", Type: typ, JobID: jobID, Fence: fence, State: st}
	}
	return Snapshot{
		HubOf:  map[string]string{"cluster1": hubA, "cluster2": hubB},
		Jobs:   []Job{j},
		Groups: map[string]Group{groupID: {ID: groupID, Jobs: []string{jobID}}},
		Works: []Work{{Hub: hubA, Namespace: "cluster1", Name: "job-" + jobID,
			Labels:      map[string]string{ocm.LabelManagedBy: ocm.ManagedBy, ocm.LabelJob: jobID, ocm.LabelInstance: groupID, ocm.LabelOwner: hubA},
			Annotations: map[string]string{ocm.AnnotationFence: "2"}}},
		SpokeObjects: []SpokeObject{{Cluster: "cluster1", Kind: "Deployment", Namespace: "app", Name: "web", Instance: groupID, Component: "web", Spec: &scaled}},
		Events: []Event{
			ev("eu.icos.job.created.v1", 0, 1), ev("eu.icos.job.progressing.v1", 1, 2), ev("eu.icos.job.finished.v1", 1, 3),
			ev("eu.icos.job.created.v1", 1, 1), ev("eu.icos.job.progressing.v1", 2, 2), ev("eu.icos.job.finished.v1", 2, 3),
		},
		Incompliances: map[string]model.Incompliance{incID: {ID: incID, PolicyName: "cpu", Remediation: model.ScaleOut, JobID: jobID, Outcome: model.OutcomeApplied}},
		Creates:       []Create{{GroupID: groupID, At: at(0), Via: "rest"}},
	}
}

func job(s *Snapshot) *Job { return &s.Jobs[0] }

// TestCheck: a healthy snapshot passes, and each hand-made breakage is caught by the
// invariant it breaks, with the kind of reason expected — so every check provably can fail.
func TestCheck(t *testing.T) {
	cases := map[string]struct {
		breakIt func(s *Snapshot)
		want    Invariant
		kind    string
	}{
		"1 stuck Progressing": {func(s *Snapshot) {
			job(s).State = model.Progressing
			job(s).History = append(job(s).History, model.HistoryEntry{At: at(20), By: hubA, Action: "promote", From: 1, To: 2, Fence: 2})
		}, Settled, "stuck Progressing"},
		"1 Created with a target never executed": {func(s *Snapshot) {
			job(s).State = model.Created
		}, Settled, "Created with a target, never executed"},
		"2 no ManifestWork": {func(s *Snapshot) { s.Works = nil }, OneWork, "no ManifestWork"},
		"2 two ManifestWorks": {func(s *Snapshot) {
			w := s.Works[0]
			w.Hub = hubB
			s.Works = append(s.Works, w)
		}, OneWork, "more than one ManifestWork"},
		"2 work on the wrong hub":    {func(s *Snapshot) { s.Works[0].Hub = hubB }, OneWork, "ManifestWork in the wrong place"},
		"2 fence annotation missing": {func(s *Snapshot) { s.Works[0].Annotations = nil }, OneWork, "no fence annotation"},
		"2 stale fence":              {func(s *Snapshot) { s.Works[0].Annotations[ocm.AnnotationFence] = "1" }, OneWork, "stale fence annotation"},
		"2 orphan work": {func(s *Snapshot) {
			w := s.Works[0]
			w.Name, w.Labels = "job-gone", map[string]string{ocm.LabelJob: "gone"}
			s.Works = append(s.Works, w)
		}, OneWork, "orphan ManifestWork"},
		"2 owned by the other hub": {func(s *Snapshot) {
			job(s).OwnerID = hubB
			s.Works[0].Labels[ocm.LabelOwner] = hubB
		}, OneWork, "owned by a hub that does not manage its cluster"},
		"2 promoted by the other hub": {func(s *Snapshot) { job(s).History[1].By = hubB }, OneWork, "promoted by a hub that does not manage its cluster"},
		"2 deleted group left on a spoke": {func(s *Snapshot) {
			job(s).Deleted = true
			s.Groups[groupID] = Group{ID: groupID, Deleted: true, Jobs: []string{jobID}}
			s.Works = nil
		}, OneWork, "left on a spoke after its group was deleted"},
		"2 undeployed component left on a spoke": {func(s *Snapshot) {
			job(s).Type = model.DeleteDeployment
			s.Works = nil
		}, OneWork, "left on a spoke after undeploy"},
		"3 remediation applied twice on the spoke": {func(s *Snapshot) { s.SpokeObjects[0].Spec.Replicas = 4 }, ExactlyOnce, "spoke differs from the remediations that ran"},
		"3 stored manifests applied twice": {func(s *Snapshot) {
			twice := base
			twice.Replicas = 4
			job(s).Manifests[0].YamlString = deploymentYAML(twice, base)
			h := job(s).History
			job(s).History = append(append(append([]model.HistoryEntry{}, h[:6]...), model.HistoryEntry{At: at(8), By: hubA, Action: "remediate", From: 2, To: 2, Fence: 2}), h[6:]...)
		}, ExactlyOnce, "remediation applied twice"},
		"3 drift before a remediation not repaired": {func(s *Snapshot) {
			s.SpokeObjects[0].Spec.Replicas = 7
			s.Drift = []Drift{{Cluster: "cluster1", Namespace: "app", Name: "web", At: at(6), Replicas: 7}}
		}, ExactlyOnce, "spoke differs from the remediations that ran"},
		"3 incompliance pending": {func(s *Snapshot) {
			in := s.Incompliances[incID]
			in.Outcome = model.OutcomePending
			s.Incompliances[incID] = in
		}, ExactlyOnce, "incompliance outcome not recorded"},
		"4 takeover of a Degraded job": {func(s *Snapshot) {
			h := job(s).History
			job(s).History = append(h[:3:3], model.HistoryEntry{At: at(3), By: hubA, Action: "degrade", From: 3, To: 4, Fence: 1},
				model.HistoryEntry{At: at(4), By: hubA, Action: "takeover", From: 4, To: 2, Fence: 2})
			job(s).History = append(job(s).History, h[5:]...)
		}, NoReexecution, "re-executed after a terminal state"},
		"5 transition not announced": {func(s *Snapshot) { s.Events = s.Events[:5] }, Announced, "transition not announced"},
		"5 invented event": {func(s *Snapshot) {
			s.Events = append(s.Events, Event{Type: "eu.icos.job.degraded.v1", JobID: jobID, Fence: 2, State: 4})
		}, Announced, "event for no committed transition"},
		"6 acknowledged create lost": {func(s *Snapshot) {
			s.Creates = append(s.Creates, Create{GroupID: "lost", At: at(1), Via: "rest"})
			s.RedisKills = []RedisKill{{At: at(30), AppendFsync: "always"}}
		}, Durable, "acknowledged create lost"},
		"7 the store's check finds a problem": {func(s *Snapshot) {
			s.StoreProblems = []string{"index " + prefix + ":idx:owner:" + hubA + " lacks " + jobID}
		}, Consistent, "store inconsistent"},
		"7 history disagrees": {func(s *Snapshot) {
			job(s).History = job(s).History[:6]
		}, Consistent, "history disagrees with the job"},
	}
	if r := Check(healthy()); len(r.Violations) > 0 {
		t.Fatalf("the healthy snapshot has violations: %v", r.Violations)
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := healthy()
			tc.breakIt(&s)
			r := Check(s)
			found := false
			for _, v := range r.Of(tc.want) {
				found = found || v.Kind == tc.kind
			}
			if !found {
				t.Errorf("invariant %d (%s) not reported; got %v", tc.want, tc.kind, r.Violations)
			}
		})
	}
}

// TestLegitimateStates: what the contract allows passes — a job awaiting a target, a drifted
// spoke nothing has re-applied since.
func TestLegitimateStates(t *testing.T) {
	s := healthy()
	waiting := Job{Job: model.Job{ID: "ab000000-0000-0000-0000-0000000000j2", JobGroupID: groupID, Type: model.CreateDeployment, State: model.Created,
		Resource: &model.Resource{Conditions: []metav1.Condition{{Type: model.ConditionProgressing, Status: metav1.ConditionFalse, Reason: "AwaitingTarget"}}}},
		History: []model.HistoryEntry{{At: at(0), Action: "create", To: 1}}}
	s.Jobs = append(s.Jobs, waiting)
	g := s.Groups[groupID]
	g.Jobs = append(g.Jobs, waiting.ID)
	s.Groups[groupID] = g
	// The same component undeployed from cluster2 (a cluster its Placement dropped) while it
	// runs on cluster1.
	const droppedID = "ab000000-0000-0000-0000-0000000000j3"
	dropped := Job{Job: model.Job{ID: droppedID, JobGroupID: groupID, OwnerID: hubB, Type: model.DeleteDeployment, State: model.Finished, Fence: 1,
		Component: "web", Targets: &model.Target{ClusterName: "cluster2", Orchestrator: model.OCM}},
		History: []model.HistoryEntry{
			{At: at(0), By: "api", Action: "create", From: 0, To: 1},
			{At: at(1), By: hubB, Action: "promote", From: 1, To: 2, Fence: 1},
			{At: at(2), By: hubB, Action: "finish", From: 2, To: 3, Fence: 1},
		}}
	s.Jobs = append(s.Jobs, dropped)
	for _, e := range []struct {
		typ   string
		fence uint64
		st    model.JobState
	}{{"eu.icos.job.created.v1", 0, 1}, {"eu.icos.job.progressing.v1", 1, 2}, {"eu.icos.job.finished.v1", 1, 3}} {
		s.Events = append(s.Events, Event{ID: droppedID + e.typ, Source: "/ocm-jobs/hubs/hub-b/x", Type: e.typ, JobID: droppedID, Fence: e.fence, State: e.st})
	}
	g = s.Groups[groupID]
	g.Jobs = append(g.Jobs, dropped.ID)
	s.Groups[groupID] = g
	s.SpokeObjects[0].Spec.Replicas = 7
	s.Drift = []Drift{{Cluster: "cluster1", Namespace: "app", Name: "web", At: at(12), Replicas: 7}}
	r := Check(s)
	if len(r.Violations) > 0 {
		t.Errorf("violations: %v", r.Violations)
	}
	if len(r.Notes) == 0 {
		t.Error("the drift is not noted")
	}
}

// TestEverysecWindow: a create lost by a kill with appendfsync everysec within the window is a
// note, not a violation; the same loss with always is a violation.
func TestEverysecWindow(t *testing.T) {
	for policy, want := range map[string]int{"everysec": 0, "always": 1} {
		s := healthy()
		s.Creates = append(s.Creates, Create{GroupID: "lost", At: at(10), Via: "event"})
		s.RedisKills = []RedisKill{{At: at(11), AppendFsync: policy}}
		if got := len(Check(s).Of(Durable)); got != want {
			t.Errorf("%s: %d violations, want %d", policy, got, want)
		}
	}
}

// TestRemediate: the independent model of the remediations.
func TestRemediate(t *testing.T) {
	st := DefaultSteps
	floor := Spec{Replicas: 1, CPU: 100, Memory: 64 << 20, CPULimit: 150, MemoryLimit: 100 << 20}
	cases := map[string]struct {
		in      Spec
		action  model.SubType
		want    Spec
		changed bool
	}{
		"scale-out":               {base, model.ScaleOut, Spec{3, 200, 128 << 20, 400, 256 << 20}, true},
		"scale-in":                {base, model.ScaleIn, Spec{1, 200, 128 << 20, 400, 256 << 20}, true},
		"scale-in at minimum":     {floor, model.ScaleIn, floor, false},
		"scale-up":                {base, model.ScaleUp, Spec{2, 300, 228 << 20, 500, 356 << 20}, true},
		"scale-down":              {base, model.ScaleDown, Spec{2, 100, 64 << 20, 300, 156 << 20}, true},
		"scale-down at the floor": {floor, model.ScaleDown, Spec{1, 100, 64 << 20, 100, 64 << 20}, true},
		"patch":                   {base, model.Patch, base, false},
	}
	for name, tc := range cases {
		got, changed := st.Remediate(tc.in, tc.action)
		if got != tc.want || changed != tc.changed {
			t.Errorf("%s: %v, %v; want %v, %v", name, got, changed, tc.want, tc.changed)
		}
	}
	if s, err := ParseSpec(FormatSpec(base)); err != nil || s != base {
		t.Errorf("FormatSpec/ParseSpec: %v, %v", s, err)
	}
}
