package integration

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ocm-jobs/ocm-jobs/functions/jobs"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
)

// rolloutApp is one component web on cluster1 and cluster2 with the image given, the rollout
// given (YAML flow mapping, "" for none), and, when headless, a headless Service web.
func rolloutApp(name, image, rollout string, headless bool) string {
	d := `
name: ` + name + `
components:
  - name: web
    manifests: [{name: web}` + map[bool]string{true: ", {name: web-svc}"}[headless] + `]
    targets: [{cluster_name: cluster1, orchestrator: ocm}, {cluster_name: cluster2, orchestrator: ocm}]
manifests:
` + webDeployment(image)
	if headless {
		d += `  - apiVersion: v1
    kind: Service
    metadata: {name: web-svc}
    spec: {clusterIP: None, selector: {app: web}, ports: [{port: 80}]}
`
	}
	if rollout != "" {
		d += "rollout: " + rollout + "\n"
	}
	return d
}

func jobsByCluster(g model.JobGroup) map[string]model.Job {
	out := map[string]model.Job{}
	for _, j := range g.Jobs {
		out[j.Targets.ClusterName] = j
	}
	return out
}

// finishedAt is when the job last went Finished (its history).
func finishedAt(t *testing.T, s *e2e, jobID string) time.Time {
	t.Helper()
	h, err := s.store.History(t.Context(), jobID)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range h {
		if e.To == model.Finished && e.From != model.Finished {
			return e.At
		}
	}
	t.Fatalf("job %s never finished: %+v", jobID, h)
	return time.Time{}
}

// TestCanaryRolloutOrdersWaves: a canary rollout creates the ManifestWork of cluster2 (wave 2)
// only after cluster1's (the canary) was Available for minSuccessTime; until then cluster2's job
// is held (Created, no work). The group and the report show the waves.
func TestCanaryRolloutOrdersWaves(t *testing.T) {
	s := startE2E(t, nil)
	s.ticking(t, 500*time.Millisecond)
	const minSuccess = 4 * time.Second
	r := s.rest(t, http.MethodPost, "/jobmanager/groups",
		rolloutApp("canary1", "nginx:1.27", "{strategy: canary, canary: cluster1, minSuccessTime: 4s}", false), s.token)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /groups: %d %s", r.status, r.body)
	}
	var g model.JobGroup
	r.decode(t, &g)
	if g.Rollout == nil || len(g.Rollout.Waves) != 2 || g.Rollout.Waves[0].Clusters[0] != "cluster1" {
		t.Fatalf("rollout: %+v", g.Rollout)
	}
	on := jobsByCluster(g)
	j1 := waitJob(t, s.store, on["cluster1"].ID, 90*time.Second, "finished", finished)
	// The canary is Available; its success time has not passed yet at this point for sure
	// only if the second wave is still held: the hold, not a timing, is what is checked.
	if j2, _ := s.store.GetJob(t.Context(), on["cluster2"].ID); j2.State == model.Created && worksOf(t, "cluster2", j2.ID) != 0 {
		t.Errorf("held job %s has a ManifestWork", j2.ID)
	}
	j2 := waitJob(t, s.store, on["cluster2"].ID, 90*time.Second, "finished", finished)
	w2, err := env.Hub.Work.WorkV1().ManifestWorks("cluster2").Get(t.Context(), ocm.WorkName(j2.ID), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	avail1 := finishedAt(t, s, j1.ID)
	// creationTimestamp has second precision: allow for its truncation.
	if created := w2.CreationTimestamp.Time; created.Before(avail1.Add(minSuccess).Add(-time.Second)) {
		t.Errorf("wave 2's ManifestWork created at %s, before wave 1 was Available (%s) for %s", created, avail1, minSuccess)
	}
	got := waitRolloutPhase(t, s, g.ID, model.RolloutComplete, 30*time.Second)
	if got.Rollout == nil || got.Rollout.Phase != model.RolloutComplete || strings.Join(got.Rollout.Done, ",") != "cluster1,cluster2" || len(got.Rollout.Pending) != 0 {
		t.Fatalf("rollout at the end: %+v", got.Rollout)
	}
	var rep jobs.GroupReport
	s.rest(t, http.MethodGet, "/jobmanager/groups/"+g.ID+"/report", nil, s.token).decode(t, &rep)
	if rep.Rollout == nil || rep.Rollout.Phase != model.RolloutComplete {
		t.Errorf("report's rollout: %+v", rep.Rollout)
	}
	for _, c := range []string{"cluster1", "cluster2"} {
		if spokeDeployment(t, c, "canary1", "web") == nil {
			t.Errorf("no Deployment on %s", c)
		}
	}
}

// TestRolloutHaltsAndRollsBack: an update rolled out canary-first succeeds on cluster1 and
// fails on cluster2 (the agent cannot apply it there: a Service of that name already has a
// cluster IP, which is immutable); the rollout halts, and with rollbackOnFailure cluster1 gets
// its previous manifests back, as its spoke shows.
func TestRolloutHaltsAndRollsBack(t *testing.T) {
	s := startE2E(t, map[string]string{"SYNC_GRACE": "1s"})
	s.ticking(t, 500*time.Millisecond)
	r := s.rest(t, http.MethodPost, "/jobmanager/groups", rolloutApp("rollback1", "nginx:1.27", "", false), s.token)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /groups: %d %s", r.status, r.body)
	}
	var g model.JobGroup
	r.decode(t, &g)
	on := jobsByCluster(g)
	for _, j := range on {
		waitJob(t, s.store, j.ID, 90*time.Second, "finished", finished)
	}
	// The injected failure: on cluster2 only, a Service web-svc with a cluster IP already.
	kube := env.Spoke("cluster2").Kube
	if _, err := kube.CoreV1().Services("rollback1").Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web-svc"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r = s.rest(t, http.MethodPut, "/jobmanager/groups/"+g.ID,
		rolloutApp("rollback1", "nginx:1.28", "{strategy: canary, canary: cluster1, rollbackOnFailure: true}", true), s.token)
	if r.status != http.StatusOK {
		t.Fatalf("update: %d %s", r.status, r.body)
	}
	got := waitRolloutPhase(t, s, g.ID, model.RolloutRolledBack, 120*time.Second)
	ro := got.Rollout
	if ro == nil || ro.Phase != model.RolloutRolledBack || strings.Join(ro.Failed, ",") != "cluster2" ||
		strings.Join(ro.Done, ",") != "cluster1" || strings.Join(ro.RolledBack, ",") != "cluster1" {
		t.Fatalf("rollout: %+v", ro)
	}
	if j2, _ := s.store.GetJob(t.Context(), on["cluster2"].ID); j2.State != model.Degraded {
		t.Errorf("cluster2's job: %+v", j2)
	}
	// The rollback re-opened cluster1's job with its previous manifests, once.
	waitJob(t, s.store, on["cluster1"].ID, 90*time.Second, "rolled back", func(j *model.Job) bool {
		return j.Type == model.ReplaceDeployment && j.State == model.Finished && len(j.Manifests) == 1 &&
			strings.Contains(j.Manifests[0].YamlString, "nginx:1.27")
	})
	deadline := time.Now().Add(60 * time.Second)
	image := ""
	for time.Now().Before(deadline) {
		if d := spokeDeployment(t, "cluster1", "rollback1", "web"); d != nil {
			image = d.Spec.Template.Spec.Containers[0].Image
			if image == "nginx:1.27" {
				break
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	if image != "nginx:1.27" {
		t.Errorf("cluster1 runs %q after the rollback, want the previous nginx:1.27", image)
	}
	if n := historyActions(t, s.store, on["cluster1"].ID, "reopen-8"); n != 2 {
		t.Errorf("cluster1's job was re-opened %d times as a Replace, want 2 (the update, the rollback)", n)
	}
}

// TestRolloutStrategyRefused: a bad strategy is a 422 listing each path; nothing is stored.
func TestRolloutStrategyRefused(t *testing.T) {
	s := startE2E(t, nil)
	r := s.rest(t, http.MethodPost, "/jobmanager/groups",
		rolloutApp("badrollout", "nginx:1.27", `{strategy: canary, canary: cluster9, maxConcurrency: "150%", minSuccessTime: soon}`, false), s.token)
	if r.status != http.StatusUnprocessableEntity {
		t.Fatalf("POST: %d %s", r.status, r.body)
	}
	for _, path := range []string{"rollout.maxConcurrency", "rollout.minSuccessTime", "rollout.canary"} {
		if !strings.Contains(string(r.body), path) {
			t.Errorf("the answer does not name %s: %s", path, r.body)
		}
	}
	r = s.rest(t, http.MethodPost, "/jobmanager/groups", rolloutApp("badrollout", "nginx:1.27", "{strategy: waves}", false), s.token)
	if r.status != http.StatusUnprocessableEntity || !strings.Contains(string(r.body), "rollout.strategy") {
		t.Fatalf("POST: %d %s", r.status, r.body)
	}
	var gs []model.JobGroup
	s.rest(t, http.MethodGet, "/jobmanager/groups", nil, s.token).decode(t, &gs)
	if len(gs) != 0 {
		t.Errorf("groups stored: %+v", gs)
	}
}

// waitRolloutPhase reads the group until its rollout reaches phase or timeout passes, and
// returns the group as last read (the caller checks it).
func waitRolloutPhase(t *testing.T, s *e2e, groupID string, phase string, timeout time.Duration) model.JobGroup {
	t.Helper()
	var got model.JobGroup
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		s.rest(t, http.MethodGet, "/jobmanager/groups/"+groupID, nil, s.token).decode(t, &got)
		if got.Rollout != nil && got.Rollout.Phase == phase {
			break
		}
	}
	return got
}
