package integration

import (
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clusterv1beta1 "open-cluster-management.io/api/cluster/v1beta1"

	"github.com/ocm-jobs/ocm-jobs/functions/jobs"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// edgePlacement makes a cluster set of cluster1 and cluster2 bound to ns, labels both
// tier=<tier>, and a Placement <name> in ns choosing numberOfClusters of the set's clusters
// labelled so; OCM's placement controller decides it. The labels are removed at the end.
func edgePlacement(t *testing.T, ns, name, tier string, n int32) {
	t.Helper()
	ctx := t.Context()
	set := "ocm-jobs-" + ns
	if err := servers.ClusterSet(ctx, env.Hub, set, ns, "cluster1", "cluster2"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"cluster1", "cluster2"} {
		if err := servers.LabelCluster(ctx, env.Hub, c, map[string]string{"tier": tier}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, c := range []string{"cluster1", "cluster2"} {
			_ = servers.LabelCluster(t.Context(), env.Hub, c, map[string]string{"tier": ""})
		}
	})
	pl := &clusterv1beta1.Placement{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: clusterv1beta1.PlacementSpec{
			NumberOfClusters: &n,
			ClusterSets:      []string{set},
			Predicates: []clusterv1beta1.ClusterPredicate{{RequiredClusterSelector: clusterv1beta1.ClusterSelector{
				LabelSelector: metav1.LabelSelector{MatchLabels: map[string]string{"tier": tier}},
			}}},
		},
	}
	if _, err := env.Hub.OCM.ClusterV1beta1().Placements(ns).Create(ctx, pl, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitDecided(t, ns, name, "cluster1", "cluster2")
}

// waitDecided waits until the placement controller decided exactly the clusters listed.
func waitDecided(t *testing.T, ns, name string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var got []string
	for time.Now().Before(deadline) {
		cs, _, err := (&ocm.Hub{Cluster: env.Hub.OCM}).PlacementDecided(t.Context(), ocm.PlacementRef{Namespace: ns, Name: name})
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(cs)
		if got = cs; equalStrings(got, want) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("placement %s/%s decided %v, want %v (controller log %s)", ns, name, got, want, env.Placement.Log())
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// liveJobOn is the component's job on cluster that is not being undeployed (nil: none).
func liveJobOn(g *model.JobGroup, cluster string) *model.Job {
	for i := range g.Jobs {
		j := &g.Jobs[i]
		if j.Type != model.DeleteDeployment && j.Targets != nil && j.Targets.ClusterName == cluster {
			return j
		}
	}
	return nil
}

// TestPlacementFollowedOnTheTick: a component that names a Placement decided by OCM's own
// placement controller (numberOfClusters 2, a label predicate) runs on both clusters, one job
// and ManifestWork each, applied by each cluster's real agent and shown in the report; when
// cluster2 is relabelled out of the predicate, the next ticks undeploy its job (its work is
// deleted and the workload leaves the spoke); relabelled back, it gets a new job and work.
func TestPlacementFollowedOnTheTick(t *testing.T) {
	ctx := t.Context()
	ns := "placement-follow"
	edgePlacement(t, ns, "edge", "edge", 2)
	s := startE2E(t, map[string]string{"PLACEMENT_NAMESPACE": ns})
	s.ticking(t, time.Second)
	app := `
name: placed2
placement: edge
components: [{name: web, manifests: [{name: web}]}]
manifests:
` + webDeployment("nginx:1.27")
	r := s.rest(t, http.MethodPost, "/jobmanager/groups", app, s.token)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /groups: %d %s", r.status, r.body)
	}
	g, byCluster := s.finishedByCluster(t, r, "web", 2) // one per cluster the Placement decided
	for _, c := range []string{"cluster1", "cluster2"} {
		if worksOf(t, c, byCluster[c].ID) != 1 || spokeDeployment(t, c, "placed2", "web") == nil {
			t.Fatalf("no ManifestWork or Deployment on %s", c)
		}
	}
	var rep jobs.GroupReport
	s.rest(t, http.MethodGet, "/jobmanager/groups/"+g.ID+"/report", nil, s.token).decode(t, &rep)
	if len(rep.Components) != 1 || len(rep.Components[0].Instances) != 2 {
		t.Errorf("report: %+v", rep)
	}

	// cluster2 leaves the predicate: its job is undeployed, cluster1's is left alone.
	if err := servers.LabelCluster(ctx, env.Hub, "cluster2", map[string]string{"tier": "core"}); err != nil {
		t.Fatal(err)
	}
	waitDecided(t, ns, "edge", "cluster1")
	gone := waitJob(t, s.store, byCluster["cluster2"].ID, 90*time.Second, "undeployed", func(j *model.Job) bool {
		return j.Type == model.DeleteDeployment && j.State == model.Finished
	})
	if worksOf(t, "cluster2", gone.ID) != 0 {
		t.Error("the dropped cluster's ManifestWork is still there")
	}
	deadline := time.Now().Add(30 * time.Second)
	for spokeDeployment(t, "cluster2", "placed2", "web") != nil && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if spokeDeployment(t, "cluster2", "placed2", "web") != nil {
		t.Error("the dropped cluster still runs the workload")
	}
	if j, _ := s.store.GetJob(ctx, byCluster["cluster1"].ID); j == nil || j.Type != model.CreateDeployment || j.State != model.Finished {
		t.Errorf("the kept cluster's job changed: %+v", j)
	}

	// cluster2 comes back: a new job and a new ManifestWork.
	if err := servers.LabelCluster(ctx, env.Hub, "cluster2", map[string]string{"tier": "edge"}); err != nil {
		t.Fatal(err)
	}
	waitDecided(t, ns, "edge", "cluster1", "cluster2")
	var back *model.Job
	deadline = time.Now().Add(60 * time.Second)
	for back == nil && time.Now().Before(deadline) {
		cur, err := s.store.GetGroup(ctx, g.ID)
		if err != nil {
			t.Fatal(err)
		}
		back = liveJobOn(cur, "cluster2")
		time.Sleep(200 * time.Millisecond)
	}
	if back == nil {
		t.Fatal("no new job on cluster2 after it rejoined the decision")
	}
	if back.ID == byCluster["cluster2"].ID {
		t.Errorf("cluster2 got its old job %s back, want a new one", back.ID)
	}
	waitJob(t, s.store, back.ID, 90*time.Second, "finished", finished)
	if worksOf(t, "cluster2", back.ID) != 1 || spokeDeployment(t, "cluster2", "placed2", "web") == nil {
		t.Error("no new ManifestWork or Deployment on cluster2")
	}
	cur, err := s.store.GetGroup(ctx, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(cur.Jobs) != 3 {
		t.Errorf("%d jobs, want 3 (cluster1, cluster2's undeployed one and its new one)", len(cur.Jobs))
	}
	s.rest(t, http.MethodGet, "/jobmanager/groups/"+g.ID+"/report", nil, s.token).decode(t, &rep)
	if len(rep.Components) != 1 || len(rep.Components[0].Instances) != 3 {
		t.Errorf("report after cluster2 rejoined: %+v, want its 3 jobs under the component", rep)
	}

	// An update replaces the manifests on every cluster the Placement decided, keeping each
	// job on its cluster (not falling back to one cluster).
	r = s.rest(t, http.MethodPut, "/jobmanager/groups/"+g.ID, strings.Replace(app, "nginx:1.27", "nginx:1.28", 1), s.token)
	if r.status != http.StatusOK {
		t.Fatalf("update: %d %s", r.status, r.body)
	}
	for _, id := range []string{byCluster["cluster1"].ID, back.ID} {
		j := waitJob(t, s.store, id, 90*time.Second, "replaced", func(j *model.Job) bool {
			return j.Type == model.ReplaceDeployment && j.State == model.Finished
		})
		if c := j.Targets.ClusterName; spokeDeployment(t, c, "placed2", "web").Spec.Template.Spec.Containers[0].Image != "nginx:1.28" {
			t.Errorf("%s still runs the old image", c)
		}
	}
}
