package ocm

import (
	"encoding/json"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	workv1 "open-cluster-management.io/api/work/v1"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

func kinds(t *testing.T, mw *workv1.ManifestWork) []string {
	t.Helper()
	var out []string
	for _, m := range mw.Spec.Workload.Manifests {
		var o struct{ Kind string }
		if err := json.Unmarshal(m.Raw, &o); err != nil {
			t.Fatal(err)
		}
		out = append(out, o.Kind)
	}
	return out
}

// TestBuildWorkNamespace: a job's work never owns its namespace (orphaned, created only if
// missing); with a deployer executor the namespace is left to the access work, which carries
// the labels of the job's own Namespace manifest.
func TestBuildWorkNamespace(t *testing.T) {
	j := &model.Job{ID: "j1", JobGroupID: "g1", JobGroupName: "shop", Component: "web"}
	ms := []model.PlainManifest{
		{YamlString: "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {pod-security.kubernetes.io/enforce: restricted}}"},
		{YamlString: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}"},
	}
	orphaned := func(mw *workv1.ManifestWork) bool {
		d := mw.Spec.DeleteOption
		return d != nil && d.PropagationPolicy == workv1.DeletePropagationPolicyTypeSelectivelyOrphan && d.SelectivelyOrphan != nil &&
			len(d.SelectivelyOrphan.OrphaningRules) == 1 && d.SelectivelyOrphan.OrphaningRules[0] == workv1.OrphaningRule{Resource: "namespaces", Name: "shop"}
	}
	own, err := BuildWork(j, "c1", "hub", 3, ms, WorkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if k := kinds(t, own); len(k) != 2 || k[0] != "Namespace" || !orphaned(own) || own.Spec.Executor != nil {
		t.Errorf("without executor: kinds %v, delete option %+v", k, own.Spec.DeleteOption)
	}
	createOnlyNS := false
	for _, c := range own.Spec.ManifestConfigs {
		if c.ResourceIdentifier.Resource == "namespaces" && c.UpdateStrategy != nil && c.UpdateStrategy.Type == workv1.UpdateStrategyTypeCreateOnly {
			createOnlyNS = true
		}
	}
	if !createOnlyNS {
		t.Errorf("the namespace is not create-only: %+v", own.Spec.ManifestConfigs)
	}
	dep, err := BuildWork(j, "c1", "hub", 3, ms, WorkOptions{Executor: DeployerOf("shop")})
	if err != nil {
		t.Fatal(err)
	}
	if k := kinds(t, dep); len(k) != 1 || k[0] != "ConfigMap" || !orphaned(dep) || dep.Spec.Executor.Subject.ServiceAccount.Name != Deployer {
		t.Errorf("with executor: kinds %v, executor %+v", k, dep.Spec.Executor)
	}
	rules := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}}
	acc := BuildAccessWork(j, "c1", "hub", ms, rules)
	if k := kinds(t, acc); len(k) != 4 || k[0] != "Namespace" || k[1] != "ServiceAccount" || k[2] != "Role" || k[3] != "RoleBinding" || !orphaned(acc) {
		t.Errorf("access work: kinds %v, delete option %+v", k, acc.Spec.DeleteOption)
	}
	var ns struct {
		Metadata struct{ Labels map[string]string } `json:"metadata"`
	}
	_ = json.Unmarshal(acc.Spec.Workload.Manifests[0].Raw, &ns)
	if ns.Metadata.Labels["pod-security.kubernetes.io/enforce"] != "restricted" || ns.Metadata.Labels[LabelManagedBy] != ManagedBy {
		t.Errorf("access namespace labels %v", ns.Metadata.Labels)
	}
	if acc.Annotations[AnnotationAccessRules] != RulesDigest(rules) || acc.Labels[LabelAccess] != "shop" || acc.Labels[LabelJob] != "" {
		t.Errorf("access work meta %v %v", acc.Labels, acc.Annotations)
	}
}
