package integration

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ocm-jobs/ocm-jobs/functions/jobs"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
)

// lastTransition is when the job last went from one state to another (its history), the zero
// time when it never did.
func lastTransition(t *testing.T, s *e2e, jobID string, from, to model.JobState) time.Time {
	t.Helper()
	h, err := s.store.History(t.Context(), jobID)
	if err != nil {
		t.Fatal(err)
	}
	var at time.Time
	for _, e := range h {
		if e.From == from && e.To == to && e.At.After(at) {
			at = e.At
		}
	}
	return at
}

// assertSecondWaveWaited checks, from the jobs' histories, that the job on cluster2 was
// promoted for the change only after the job on cluster1 had finished it and stayed Finished
// for minSuccess.
func assertSecondWaveWaited(t *testing.T, s *e2e, first, second string, minSuccess time.Duration) {
	t.Helper()
	done1 := lastTransition(t, s, first, model.Progressing, model.Finished)
	start2 := lastTransition(t, s, second, model.Created, model.Progressing)
	if done1.IsZero() || start2.IsZero() {
		t.Fatalf("no transitions: cluster1 finished %s, cluster2 promoted %s", done1, start2)
	}
	if start2.Before(done1.Add(minSuccess)) {
		t.Errorf("cluster2's job was promoted at %s, before cluster1's had been Finished (%s) for %s", start2, done1, minSuccess)
	}
	t.Logf("cluster1 finished %s; cluster2 promoted %s (%s later; minSuccessTime %s)", done1.Format(time.RFC3339Nano),
		start2.Format(time.RFC3339Nano), start2.Sub(done1).Round(time.Millisecond), minSuccess)
}

// TestEveryClusterInWaves: on the real agents of cluster1 and cluster2, a change that spans
// every cluster of a component follows the group's canary rollout: an incompliance about the
// component remediates both clusters, cluster2 only once cluster1 was Available for
// minSuccessTime (and one naming a job acts on that job's cluster only); a restart restarts
// both, in the same waves; an update that adds cluster2 holds its new job until its wave.
func TestEveryClusterInWaves(t *testing.T) {
	s := startE2E(t, nil)
	s.ticking(t, 500*time.Millisecond)
	const minSuccess = 3 * time.Second
	const canary = "{strategy: canary, canary: cluster1, minSuccessTime: 3s}"

	r := s.rest(t, http.MethodPost, "/jobmanager/groups", rolloutApp("waves1", "nginx:1.27", canary, false), s.token)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /groups: %d %s", r.status, r.body)
	}
	var g model.JobGroup
	r.decode(t, &g)
	if got := waitRolloutPhase(t, s, g.ID, model.RolloutComplete, 120*time.Second); got.Rollout == nil || got.Rollout.Phase != model.RolloutComplete {
		t.Fatalf("the create's rollout: %+v", got.Rollout)
	}
	on := jobsByCluster(g)
	j1, j2 := on["cluster1"].ID, on["cluster2"].ID

	t.Run("remediation", func(t *testing.T) {
		// The Policy Manager's shape: the component, no job, no cluster.
		inc := map[string]any{"id": "11111111-2222-4333-8444-555555555555", "policyName": "cpu-waves1", "remediation": "scale-out",
			"subject": map[string]string{"type": "app", "appName": "waves1", "appInstance": g.ID, "appComponent": "web"}}
		r := s.rest(t, http.MethodPost, "/jobmanager/policies/incompliance", inc, s.token)
		if r.status != http.StatusOK {
			t.Fatalf("incompliance: %d %s", r.status, r.body)
		}
		var rec model.Incompliance
		r.decode(t, &rec)
		if strings.Join(sorted(rec.JobIDs), ",") != strings.Join(sorted([]string{j1, j2}), ",") {
			t.Fatalf("the incompliance covers %v, want both clusters' jobs %s, %s", rec.JobIDs, j1, j2)
		}
		var view model.Incompliance
		s.rest(t, http.MethodGet, "/jobmanager/policies/incompliance/"+rec.ID, nil, s.token).decode(t, &view)
		if len(view.JobIDs) != 2 || view.Outcome != model.OutcomeApplied {
			t.Errorf("GET incompliance: %+v", view)
		}
		// cluster2 is held: its remediation is open, in the report, before it runs.
		var rep jobs.GroupReport
		s.rest(t, http.MethodGet, "/jobmanager/groups/"+g.ID+"/report", nil, s.token).decode(t, &rep)
		open := 0
		for _, c := range rep.Components {
			for _, in := range c.Instances {
				if len(in.Incompliances) == 1 && in.Incompliances[0].ID == rec.ID {
					open++
				}
			}
		}
		if open != 2 {
			t.Errorf("the report shows the incompliance open on %d instances, want 2: %+v", open, rep.Components)
		}
		if rep.Rollout == nil || rep.Rollout.Change != "remediation" || len(rep.Rollout.Waves) != 2 || rep.Rollout.Waves[0].Clusters[0] != "cluster1" {
			t.Fatalf("the report's rollout: %+v", rep.Rollout)
		}
		remediated := func(j *model.Job) bool {
			return j.Type == model.UpdateDeployment && j.SubType == model.ScaleOut && j.State == model.Finished
		}
		waitJob(t, s.store, j1, 90*time.Second, "remediated", remediated)
		waitJob(t, s.store, j2, 90*time.Second, "remediated", remediated)
		assertSecondWaveWaited(t, s, j1, j2, minSuccess)
		if got := waitRolloutPhase(t, s, g.ID, model.RolloutComplete, 30*time.Second); got.Rollout.ID != "remediation-"+rec.ID {
			t.Errorf("rollout at the end: %+v", got.Rollout)
		}
		for _, c := range []string{"cluster1", "cluster2"} {
			deadline := time.Now().Add(60 * time.Second)
			var replicas int32
			for time.Now().Before(deadline) {
				if d := spokeDeployment(t, c, "waves1", "web"); d != nil && d.Spec.Replicas != nil {
					if replicas = *d.Spec.Replicas; replicas == 2 {
						break
					}
				}
				time.Sleep(300 * time.Millisecond)
			}
			if replicas != 2 {
				t.Errorf("%s runs %d replicas after the scale-out, want 2", c, replicas)
			}
		}

		// One job named (ICOS's Job Manager shape): that job's cluster only.
		before1 := reopens(t, s.store, j1)
		one := map[string]any{"policyName": "mem-waves1", "remediation": "scale-out", "subject": map[string]string{"resourceId": j2}}
		r = s.rest(t, http.MethodPost, "/jobmanager/policies/incompliance", one, s.token)
		if r.status != http.StatusOK {
			t.Fatalf("incompliance naming job %s: %d %s", j2, r.status, r.body)
		}
		r.decode(t, &rec)
		if rec.JobID != j2 || strings.Join(rec.JobIDs, ",") != j2 {
			t.Errorf("the incompliance naming job %s covers %s %v", j2, rec.JobID, rec.JobIDs)
		}
		waitJob(t, s.store, j2, 90*time.Second, "remediated again", func(j *model.Job) bool {
			return remediated(j) && j.Remediation != nil && j.Remediation.IncomplianceID == rec.ID
		})
		if n := reopens(t, s.store, j1); n != before1 {
			t.Errorf("cluster1's job was re-opened by an incompliance naming cluster2's job (%d -> %d)", before1, n)
		}

		// The component, measured on one cluster (extraLabels.cluster): that cluster only.
		before2 := reopens(t, s.store, j2)
		measured := map[string]any{"policyName": "disk-waves1", "remediation": "scale-out", "extraLabels": map[string]string{"cluster": "cluster1"},
			"subject": map[string]string{"type": "app", "appInstance": g.ID, "appComponent": "web"}}
		r = s.rest(t, http.MethodPost, "/jobmanager/policies/incompliance", measured, s.token)
		if r.status != http.StatusOK {
			t.Fatalf("incompliance measured on cluster1: %d %s", r.status, r.body)
		}
		r.decode(t, &rec)
		if strings.Join(rec.JobIDs, ",") != j1 {
			t.Errorf("the incompliance measured on cluster1 covers %v, want %s", rec.JobIDs, j1)
		}
		waitJob(t, s.store, j1, 90*time.Second, "remediated on cluster1", func(j *model.Job) bool {
			return remediated(j) && j.Remediation != nil && j.Remediation.IncomplianceID == rec.ID
		})
		if n := reopens(t, s.store, j2); n != before2 {
			t.Errorf("cluster2's job was re-opened by an incompliance measured on cluster1 (%d -> %d)", before2, n)
		}

		// One job named as its component (subject.type component): every cluster again.
		whole := map[string]any{"policyName": "net-waves1", "remediation": "scale-in", "subject": map[string]string{"type": "component", "resourceId": j1}}
		r = s.rest(t, http.MethodPost, "/jobmanager/policies/incompliance", whole, s.token)
		if r.status != http.StatusOK {
			t.Fatalf("incompliance naming job %s as its component: %d %s", j1, r.status, r.body)
		}
		r.decode(t, &rec)
		if len(rec.JobIDs) != 2 {
			t.Errorf("the incompliance naming job %s as its component covers %v, want both clusters", j1, rec.JobIDs)
		}
		for _, id := range []string{j1, j2} {
			waitJob(t, s.store, id, 90*time.Second, "scaled in", func(j *model.Job) bool {
				return j.SubType == model.ScaleIn && j.State == model.Finished
			})
		}
		waitRolloutPhase(t, s, g.ID, model.RolloutComplete, 30*time.Second)
	})

	t.Run("restart", func(t *testing.T) {
		r := s.rest(t, http.MethodPut, "/jobmanager/groups/restart/"+g.ID, nil, s.token)
		if r.status != http.StatusOK {
			t.Fatalf("restart: %d %s", r.status, r.body)
		}
		var after model.JobGroup
		r.decode(t, &after)
		if after.Rollout == nil || after.Rollout.Change != "restart" || !after.Rollout.Active() {
			t.Fatalf("the restart's rollout: %+v", after.Rollout)
		}
		restarted := func(j *model.Job) bool {
			return j.Type == model.UpdateDeployment && j.SubType == model.Restart && j.State == model.Finished
		}
		a1 := waitJob(t, s.store, j1, 90*time.Second, "restarted", restarted)
		waitJob(t, s.store, j2, 90*time.Second, "restarted", restarted)
		assertSecondWaveWaited(t, s, j1, j2, minSuccess)
		at := a1.Remediation.RestartedAt
		for _, c := range []string{"cluster1", "cluster2"} {
			d := waitDeployment(t, c, "waves1", "web", func(p *corev1.PodTemplateSpec) bool { return restartedAt(p) == at })
			if restartedAt(&d.Spec.Template) != at {
				t.Errorf("%s: template annotation %q, want %q", c, restartedAt(&d.Spec.Template), at)
			}
		}
		if got := waitRolloutPhase(t, s, g.ID, model.RolloutComplete, 30*time.Second); got.Rollout.Change != "restart" {
			t.Errorf("rollout at the end: %+v", got.Rollout)
		}
	})

	t.Run("update adds a cluster", func(t *testing.T) {
		single := strings.Replace(rolloutApp("waves2", "nginx:1.27", "", false),
			"targets: [{cluster_name: cluster1, orchestrator: ocm}, {cluster_name: cluster2, orchestrator: ocm}]",
			"targets: {cluster_name: cluster1, orchestrator: ocm}", 1)
		r := s.rest(t, http.MethodPost, "/jobmanager/groups", single, s.token)
		if r.status != http.StatusCreated {
			t.Fatalf("POST /groups: %d %s", r.status, r.body)
		}
		var g2 model.JobGroup
		r.decode(t, &g2)
		first := waitJob(t, s.store, g2.Jobs[0].ID, 90*time.Second, "finished", finished)
		// A bad strategy in the REST update is a 422 naming its path; nothing changes.
		bad := map[string]any{"id": g2.ID, "descriptor": rolloutApp("waves2", "nginx:1.28", "", false),
			"rollout": map[string]any{"strategy": "canary", "canary": "cluster9"}}
		if r := s.rest(t, http.MethodPut, "/jobmanager/groups", bad, s.token); r.status != http.StatusUnprocessableEntity || !strings.Contains(string(r.body), "rollout.canary") {
			t.Fatalf("update with a bad rollout: %d %s", r.status, r.body)
		}
		// So is one in the update event's rollout extension.
		body, _ := json.Marshal(map[string]string{"id": g2.ID, "descriptor": rolloutApp("waves2", "nginx:1.28", "", false)})
		if r := s.eventWith(t, "eu.icos.jobgroup.update.v1", "waves2-bad", map[string]string{"Content-Type": "application/json",
			"Ce-Rollout": `{"strategy":"canary","canary":"cluster9"}`}, body); r.status != http.StatusUnprocessableEntity || !strings.Contains(string(r.body), "rollout.canary") {
			t.Fatalf("update event with a bad rollout extension: %d %s", r.status, r.body)
		}
		if j, _ := s.store.GetJob(t.Context(), first.ID); j.Type != model.CreateDeployment || j.State != model.Finished {
			t.Fatalf("a refused update changed the job: %+v", j)
		}
		// Both clusters, a new image, a canary rollout from the update's own field.
		up := map[string]any{"id": g2.ID, "descriptor": rolloutApp("waves2", "nginx:1.28", "", false),
			"rollout": map[string]any{"strategy": "canary", "canary": "cluster1", "minSuccessTime": "3s"}}
		r = s.rest(t, http.MethodPut, "/jobmanager/groups", up, s.token)
		if r.status != http.StatusOK {
			t.Fatalf("update: %d %s", r.status, r.body)
		}
		var after model.JobGroup
		r.decode(t, &after)
		added := jobsByCluster(after)["cluster2"]
		if added.ID == "" || after.Rollout == nil || after.Rollout.Change != "update" || len(after.Rollout.Waves) != 2 ||
			strings.Join(after.Rollout.Waves[1].Jobs, ",") != added.ID {
			t.Fatalf("the update's rollout %+v, the new job %+v", after.Rollout, added)
		}
		// Held until its wave: Created, and no ManifestWork while cluster1 is not done.
		if j, _ := s.store.GetJob(t.Context(), added.ID); j.State != model.Created || worksOf(t, "cluster2", added.ID) != 0 {
			t.Errorf("the new cluster's job is not held: %+v", j)
		}
		waitJob(t, s.store, first.ID, 90*time.Second, "replaced", func(j *model.Job) bool {
			return j.Type == model.ReplaceDeployment && j.State == model.Finished
		})
		waitJob(t, s.store, added.ID, 90*time.Second, "finished", finished)
		done1 := lastTransition(t, s, first.ID, model.Progressing, model.Finished)
		w2, err := env.Hub.Work.WorkV1().ManifestWorks("cluster2").Get(t.Context(), ocm.WorkName(added.ID), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// creationTimestamp has second precision: allow for its truncation.
		if created := w2.CreationTimestamp.Time; created.Before(done1.Add(minSuccess).Add(-time.Second)) {
			t.Errorf("the added cluster's ManifestWork was created at %s, before cluster1 was done (%s) for %s", created, done1, minSuccess)
		}
		if got := waitRolloutPhase(t, s, g2.ID, model.RolloutComplete, 30*time.Second); strings.Join(got.Rollout.Done, ",") != "cluster1,cluster2" {
			t.Errorf("rollout at the end: %+v", got.Rollout)
		}
		if d := spokeDeployment(t, "cluster2", "waves2", "web"); d == nil || d.Spec.Template.Spec.Containers[0].Image != "nginx:1.28" {
			t.Errorf("cluster2 runs %+v, want nginx:1.28", d)
		}
	})
}

func sorted(in []string) []string {
	out := append([]string(nil), in...)
	sort.Strings(out)
	return out
}
