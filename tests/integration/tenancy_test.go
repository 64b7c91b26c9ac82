package integration

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// appIn is a one-component app in namespace ns on cluster1: a Deployment and a ConfigMap,
// plus extra manifests.
func appIn(name, ns, extra string) string {
	return `
name: ` + name + `
namespace: ` + ns + `
components:
  - name: web
    manifests: [{name: web}, {name: web-config}` + extraRefs(extra) + `]
    targets: {cluster_name: cluster1, orchestrator: ocm}
manifests:
` + webDeployment("nginx:1.27") + `  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: web-config}
    data: {mode: demo}
` + extra
}

// extraRefs lists the names of extra's manifests ("  - ...metadata: {name: X}").
func extraRefs(extra string) string {
	var refs string
	for _, line := range strings.Split(extra, "\n") {
		if i := strings.Index(line, "metadata: {name: "); i >= 0 {
			name := strings.TrimSuffix(strings.TrimSpace(line[i+len("metadata: {name: "):]), "}")
			refs += ", {name: " + name + "}"
		}
	}
	return refs
}

// TestExistingNamespaceIsNotAdopted: an application deployed into a namespace that already
// exists on the spoke, then undeployed, leaves that namespace and what else it holds in place
// (the real agent and kube-controller-manager do the deleting) and removes only its own objects.
func TestExistingNamespaceIsNotAdopted(t *testing.T) {
	ctx := context.Background()
	kube := env.Spoke("cluster1").Kube
	ns := "kept-" + strings.ToLower(model.NewID()[:6])
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	keep := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "keep-me", Namespace: ns}, Data: map[string]string{"owner": "someone else"}}
	if _, err := kube.CoreV1().ConfigMaps(ns).Create(ctx, keep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	s := startE2E(t, nil)
	s.ticking(t, time.Second)
	var g model.JobGroup
	s.rest(t, http.MethodPost, "/jobmanager/groups", appIn("adopt", ns, ""), s.token).decode(t, &g)
	job := g.Jobs[0]
	waitJob(t, s.store, job.ID, 90*time.Second, "finished", finished)
	if spokeDeployment(t, "cluster1", ns, "web") == nil {
		t.Fatal("not deployed")
	}
	if r := s.rest(t, http.MethodPut, "/jobmanager/groups/undeploy/"+g.ID, nil, s.token); r.status != http.StatusOK {
		t.Fatalf("undeploy: %d %s", r.status, r.body)
	}
	waitJob(t, s.store, job.ID, 90*time.Second, "undeployed", func(j *model.Job) bool {
		return j.Type == model.DeleteDeployment && j.State == model.Finished
	})
	gone := func() bool {
		_, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, "web-config", metav1.GetOptions{})
		return apierrors.IsNotFound(err) && spokeDeployment(t, "cluster1", ns, "web") == nil
	}
	for deadline := time.Now().Add(30 * time.Second); !gone() && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
	}
	if !gone() {
		t.Error("the application's own objects are still on the spoke after undeploy")
	}
	// Give the namespace controller time to act on a deleted namespace.
	time.Sleep(3 * time.Second)
	got, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	switch {
	case err != nil:
		t.Fatalf("the namespace that existed before the deploy: %v", err)
	case got.DeletionTimestamp != nil:
		t.Errorf("the namespace that existed before the deploy is being deleted (%s)", got.Status.Phase)
	case len(got.OwnerReferences) > 0:
		t.Errorf("the namespace was adopted: owners %+v", got.OwnerReferences)
	}
	if _, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, "keep-me", metav1.GetOptions{}); err != nil {
		t.Errorf("another owner's ConfigMap in the namespace: %v", err)
	}
}

// TestExecutorSubjectIsEnforcedOnTheSpoke: the manifest policy allows namespaced
// RoleBindings, but the agent applies a job's objects as the deployer service account of the
// job's namespace, which holds only the rights the policy grants there; a RoleBinding to
// cluster-admin is an escalation the spoke's RBAC refuses. The job goes Degraded with the
// agent's reason and the binding never exists; an ordinary application next to it deploys.
func TestExecutorSubjectIsEnforcedOnTheSpoke(t *testing.T) {
	ctx := context.Background()
	kube := env.Spoke("cluster1").Kube
	s := startE2E(t, map[string]string{"SYNC_GRACE": "2s"})
	s.ticking(t, time.Second)

	ns := "esc-" + strings.ToLower(model.NewID()[:6])
	escalation := `  - apiVersion: rbac.authorization.k8s.io/v1
    kind: RoleBinding
    metadata: {name: take-over}
    roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
    subjects: [{kind: ServiceAccount, name: default, namespace: ` + ns + `}]
`
	r := s.rest(t, http.MethodPost, "/jobmanager/groups", appIn("escalate", ns, escalation), s.token)
	if r.status != http.StatusOK && r.status != http.StatusCreated {
		t.Fatalf("the policy should allow a namespaced RoleBinding at intake: %d %s", r.status, r.body)
	}
	var g model.JobGroup
	r.decode(t, &g)
	j := waitJob(t, s.store, g.Jobs[0].ID, 120*time.Second, "terminal", func(j *model.Job) bool {
		return j.State == model.Degraded || j.State == model.Finished
	})
	if j.State != model.Degraded {
		t.Fatalf("job %s is %s; a RoleBinding to cluster-admin must be refused on the spoke", j.ID, j.State)
	}
	if cond := j.Resource.Condition(model.ConditionDegraded); cond == nil || !strings.Contains(cond.Message, "not allowed") {
		t.Errorf("the job's Degraded condition does not carry the agent's refusal: %+v", cond)
	}
	if _, err := kube.RbacV1().RoleBindings(ns).Get(ctx, "take-over", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the escalating RoleBinding exists on the spoke (err %v)", err)
	}

	ok := "ok-" + strings.ToLower(model.NewID()[:6])
	var g2 model.JobGroup
	s.rest(t, http.MethodPost, "/jobmanager/groups", appIn("plain", ok, ""), s.token).decode(t, &g2)
	waitJob(t, s.store, g2.Jobs[0].ID, 90*time.Second, "finished", finished)
	if spokeDeployment(t, "cluster1", ok, "web") == nil {
		t.Error("the ordinary application is not on the spoke")
	}
}

// TestExecutorChecksThePolicy: a job whose manifest the policy refuses on its cluster (it got
// past intake some other way, e.g. written by another tool into the store) is not applied: the
// executor degrades it PolicyViolation, naming the object, and writes no ManifestWork.
func TestExecutorChecksThePolicy(t *testing.T) {
	prefix := "pv" + model.NewID()[:8]
	st := newStore(t, prefix)
	exec := startProcess(t, baseEnv(prefix, "executor"))
	j := createJobs(t, st, 1, "cluster1", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: sneaky, namespace: kube-system}\n")[0]
	if status := deliver(t, exec.url, "created-"+j.ID, j); status != 200 {
		t.Fatalf("job.created: %d", status)
	}
	got := waitJob(t, st, j.ID, 30*time.Second, "degraded", func(j *model.Job) bool { return j.State == model.Degraded })
	c := got.Resource.Condition(model.ConditionDegraded)
	if c == nil || c.Reason != "PolicyViolation" || !strings.Contains(c.Message, `ConfigMap "sneaky"`) || !strings.Contains(c.Message, "kube-system") {
		t.Errorf("Degraded condition %+v, want PolicyViolation naming ConfigMap sneaky in kube-system", c)
	}
	if n := worksOf(t, "cluster1", j.ID); n != 0 {
		t.Errorf("%d ManifestWorks written for a refused job", n)
	}
}
