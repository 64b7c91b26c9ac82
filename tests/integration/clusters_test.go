package integration

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ocm-jobs/ocm-jobs/functions/jobs"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
)

// multiClusterApp is one component on the clusters listed.
func multiClusterApp(name string, clusters ...string) string {
	var ts []string
	for _, c := range clusters {
		ts = append(ts, "{cluster_name: "+c+", orchestrator: ocm}")
	}
	return `
name: ` + name + `
components:
  - name: web
    manifests: [{name: web}]
    targets: [` + strings.Join(ts, ", ") + `]
manifests:
` + webDeployment("nginx:1.27")
}

// TestComponentOnSeveralClusters: a component whose targets are a list runs on each cluster
// as its own job with its own ManifestWork, applied by each cluster's real agent, all under
// the component in the group and the report; an update that drops a cluster undeploys that
// cluster's job only.
func TestComponentOnSeveralClusters(t *testing.T) {
	s := startE2E(t, nil)
	s.ticking(t, time.Second)
	r := s.rest(t, http.MethodPost, "/jobmanager/groups", multiClusterApp("multi1", "cluster1", "cluster2"), s.token)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /groups: %d %s", r.status, r.body)
	}
	g, byCluster := s.finishedByCluster(t, r, "web", 2)
	for _, c := range []string{"cluster1", "cluster2"} {
		if spokeDeployment(t, c, "multi1", "web") == nil {
			t.Errorf("no Deployment on %s", c)
		}
		if worksOf(t, c, byCluster[c].ID) != 1 {
			t.Errorf("no ManifestWork %s on %s", ocm.WorkName(byCluster[c].ID), c)
		}
	}
	var rep jobs.GroupReport
	s.rest(t, http.MethodGet, "/jobmanager/groups/"+g.ID+"/report", nil, s.token).decode(t, &rep)
	if len(rep.Components) != 1 || len(rep.Components[0].Instances) != 2 ||
		rep.Components[0].Instances[0].Cluster != "cluster1" || rep.Components[0].Instances[1].Cluster != "cluster2" {
		t.Errorf("report: %+v", rep)
	}

	r = s.rest(t, http.MethodPut, "/jobmanager/groups/"+g.ID, multiClusterApp("multi1", "cluster2"), s.token)
	if r.status != http.StatusOK {
		t.Fatalf("update: %d %s", r.status, r.body)
	}
	waitJob(t, s.store, byCluster["cluster1"].ID, 90*time.Second, "undeployed", func(j *model.Job) bool {
		return j.Type == model.DeleteDeployment && j.State == model.Finished
	})
	deadline := time.Now().Add(30 * time.Second)
	for spokeDeployment(t, "cluster1", "multi1", "web") != nil && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if spokeDeployment(t, "cluster1", "multi1", "web") != nil {
		t.Error("the dropped cluster still runs the workload")
	}
	if j, _ := s.store.GetJob(t.Context(), byCluster["cluster2"].ID); j == nil || j.Type != model.CreateDeployment || j.State != model.Finished {
		t.Errorf("the kept cluster's job changed: %+v", j)
	}
	if spokeDeployment(t, "cluster2", "multi1", "web") == nil {
		t.Error("the kept cluster lost the workload")
	}
}

// webDeployment is the manifest entry (descriptor YAML, under `manifests:`) of the one-replica
// Deployment "web" running image that the several-cluster, restart, rollout and tenancy tests deploy.
func webDeployment(image string) string {
	return `  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web}
    spec:
      replicas: 1
      selector: {matchLabels: {app: web}}
      template:
        metadata: {labels: {app: web}}
        spec: {containers: [{name: web, image: ` + image + `}]}
`
}

// finishedByCluster reads the group a create answered (r) and waits until each of its jobs —
// want of them, all of component, one per cluster — is Finished; it returns the group and its
// jobs as Finished, by cluster.
func (s *e2e) finishedByCluster(t *testing.T, r reply, component string, want int) (model.JobGroup, map[string]model.Job) {
	t.Helper()
	var g model.JobGroup
	r.decode(t, &g)
	if len(g.Jobs) != want {
		t.Fatalf("%d jobs, want %d, one per cluster: %s", len(g.Jobs), want, r.body)
	}
	byCluster := map[string]model.Job{}
	for _, j := range g.Jobs {
		if j.Component != component || j.Targets == nil {
			t.Fatalf("job %+v", j)
		}
		byCluster[j.Targets.ClusterName] = *waitJob(t, s.store, j.ID, 90*time.Second, "finished", finished)
	}
	return g, byCluster
}
