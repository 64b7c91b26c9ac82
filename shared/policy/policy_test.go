package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

func obj(t *testing.T, y string) *unstructured.Unstructured {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(y), &m); err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: m}
}

// TestDefaultPolicy: what an application needs passes; what would reach beyond its own
// namespace, or into the cluster's control, is refused with a reason.
func TestDefaultPolicy(t *testing.T) {
	for name, tc := range map[string]struct {
		manifest, cluster, refusal string
	}{
		"a Deployment in its namespace":       {manifest: "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}"},
		"a Service, namespace written out":    {manifest: "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}"},
		"its own Namespace":                   {manifest: "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}"},
		"a namespaced RoleBinding":            {manifest: "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: rb}"},
		"on a named cluster":                  {manifest: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}", cluster: "cluster1"},
		"another namespace":                   {manifest: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: bank}", refusal: `namespace "bank"`},
		"kube-system":                         {manifest: "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: kube-system}", refusal: "off limits"},
		"the OCM agent's namespace":           {manifest: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: open-cluster-management-agent}", refusal: "off limits"},
		"a ClusterRoleBinding to admin":       {manifest: "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: pwn}", refusal: "cluster-scoped"},
		"a ClusterRole":                       {manifest: "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r}", refusal: "cluster-scoped"},
		"a webhook":                           {manifest: "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {name: w}", refusal: "cluster-scoped"},
		"a CRD":                               {manifest: "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: x.example.com}", refusal: "cluster-scoped"},
		"a PriorityClass":                     {manifest: "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: top}", refusal: "cluster-scoped"},
		"another Namespace":                   {manifest: "apiVersion: v1\nkind: Namespace\nmetadata: {name: bank}", refusal: "its own"},
		"a kind no rule lists (a custom one)": {manifest: "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}", refusal: "does not allow example.com/Widget"},
	} {
		t.Run(name, func(t *testing.T) {
			why := DefaultPolicy.Refuses(obj(t, tc.manifest), "shop", tc.cluster)
			switch {
			case tc.refusal == "" && why != "":
				t.Errorf("refused: %s", why)
			case tc.refusal != "" && !strings.Contains(why, tc.refusal):
				t.Errorf("refusal %q, want one saying %q", why, tc.refusal)
			}
		})
	}
}

// TestPolicyPerCluster: a configured policy may allow more on some clusters only; a job
// whose cluster is not known yet gets only what every cluster allows.
func TestPolicyPerCluster(t *testing.T) {
	file := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(file, []byte(`
rules:
  - clusters: ["*"]
    kinds: [/ConfigMap]
    namespaces: [$group]
  - clusters: [edge-*]
    kinds: ["*"]
    namespaces: [$group, monitoring]
    clusterScoped: [rbac.authorization.k8s.io/ClusterRole]
forbiddenNamespaces: [kube-*]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	dep := obj(t, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: monitoring}")
	role := obj(t, "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r}")
	for _, tc := range []struct {
		o       *unstructured.Unstructured
		cluster string
		ok      bool
	}{{dep, "edge-7", true}, {dep, "core-1", false}, {dep, "", false}, {role, "edge-7", true}, {role, "core-1", false}} {
		if why := p.Refuses(tc.o, "shop", tc.cluster); (why == "") != tc.ok {
			t.Errorf("%s on %q: refusal %q, want allowed=%v", tc.o.GetKind(), tc.cluster, why, tc.ok)
		}
	}
	if errs := p.CheckAll([]*unstructured.Unstructured{dep, role, dep}, "shop", "core-1"); errs == nil ||
		!strings.Contains(errs.Error(), "manifests[0]") || !strings.Contains(errs.Error(), "manifests[1]") || !strings.Contains(errs.Error(), "manifests[2]") {
		t.Errorf("every offending object with its path: %v", errs)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("a missing policy file loaded")
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	_ = os.WriteFile(bad, []byte("rules: []\nunknown: 1\n"), 0o600)
	if _, err := Load(bad); err == nil {
		t.Error("a policy with an unknown field and no rules loaded")
	}
}

// TestRBACRules: the deployer's Role grants exactly the kinds the policy allows in the
// application's namespace on that cluster, by API group and resource; nothing in a forbidden
// namespace; everything (still only in that namespace) for a "*" rule.
func TestRBACRules(t *testing.T) {
	rules := DefaultPolicy.RBACRules("shop", "cluster1")
	got := map[string][]string{}
	for _, r := range rules {
		if len(r.APIGroups) != 1 || strings.Join(r.Verbs, ",") != strings.Join(DeployerVerbs, ",") {
			t.Fatalf("rule %+v", r)
		}
		got[r.APIGroups[0]] = r.Resources
	}
	want := map[string]string{
		"":                          "configmaps,persistentvolumeclaims,pods,secrets,serviceaccounts,services",
		"apps":                      "daemonsets,deployments,replicasets,statefulsets",
		"batch":                     "cronjobs,jobs",
		"networking.k8s.io":         "ingresses,networkpolicies",
		"autoscaling":               "horizontalpodautoscalers",
		"policy":                    "poddisruptionbudgets",
		"rbac.authorization.k8s.io": "rolebindings,roles",
	}
	if len(got) != len(want) {
		t.Errorf("groups %v, want %v", got, want)
	}
	for g, res := range want {
		if strings.Join(got[g], ",") != res {
			t.Errorf("group %q: %v, want %s", g, got[g], res)
		}
	}
	if r := DefaultPolicy.RBACRules("kube-system", "cluster1"); len(r) != 0 {
		t.Errorf("rights in a forbidden namespace: %+v", r)
	}
	edge := Policy{Rules: []PolicyRule{
		{Clusters: []string{"edge-*"}, Kinds: []string{"*"}, Namespaces: []string{"$group"}},
		{Clusters: []string{"*"}, Kinds: []string{"/ConfigMap"}, Namespaces: []string{"$group"}},
		{Clusters: []string{"*"}, Kinds: []string{"apps/Deployment"}, Namespaces: []string{"other"}},
	}}
	if r := edge.RBACRules("shop", "edge-1"); len(r) != 1 || r[0].APIGroups[0] != "*" || r[0].Resources[0] != "*" {
		t.Errorf("a * rule: %+v", r)
	}
	if r := edge.RBACRules("shop", "core-1"); len(r) != 1 || r[0].APIGroups[0] != "" || strings.Join(r[0].Resources, ",") != "configmaps" {
		t.Errorf("core-1: %+v (a rule for another namespace must grant nothing here)", r)
	}
}
