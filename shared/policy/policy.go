// Package policy is the manifest policy: what an application may put on a managed cluster.
package policy

import (
	"fmt"
	"os"
	"path"
	"slices"
	"sort"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"knative.dev/pkg/apis"
	"sigs.k8s.io/yaml"
)

// Policy says what an application may put on a managed cluster: which kinds, in which
// namespaces, on which clusters. It is checked when an application is created or updated —
// a manifest outside it is refused (422, every offending object with its path) and nothing is
// stored — and again by the executor before it applies a job, with the job's real cluster.
//
// A manifest is allowed when a rule whose clusters match the job's cluster allows its kind and
// its namespace. "$group" in a rule's namespaces is the application's own namespace (the
// descriptor's namespace, else its name). Cluster-scoped kinds are never allowed unless a rule
// lists them under clusterScoped; the application's own Namespace object always is. Namespaces
// matching forbiddenNamespaces are refused whatever the rules say.
type Policy struct {
	Rules []PolicyRule `json:"rules"`
	// ForbiddenNamespaces are glob patterns of namespaces no application may touch.
	ForbiddenNamespaces []string `json:"forbiddenNamespaces"`
}

// PolicyRule allows kinds in namespaces on clusters.
type PolicyRule struct {
	// Clusters are glob patterns of managed cluster names ("*": every cluster).
	Clusters []string `json:"clusters"`
	// Kinds are namespaced kinds, as group/Kind ("" group: the core API, e.g. "/ConfigMap";
	// "*" every kind).
	Kinds []string `json:"kinds"`
	// Namespaces are glob patterns of namespaces; "$group" is the application's own.
	Namespaces []string `json:"namespaces"`
	// ClusterScoped are cluster-scoped kinds (group/Kind) the rule allows.
	ClusterScoped []string `json:"clusterScoped,omitempty"`
}

// DefaultPolicy is the policy of an install that configures none: the namespaced kinds an
// application needs — workloads and what they use (Services, ConfigMaps, Secrets, PVCs,
// Ingresses, HPAs, PodDisruptionBudgets, NetworkPolicies, namespaced Roles and RoleBindings,
// ServiceAccounts) — in the application's own namespace, on any cluster; never the system's
// namespaces; no cluster-scoped RBAC, webhooks, CRDs, PriorityClasses or other namespaces.
var DefaultPolicy = Policy{
	Rules: []PolicyRule{{
		Clusters: []string{"*"},
		Kinds: []string{"apps/Deployment", "apps/StatefulSet", "apps/DaemonSet", "apps/ReplicaSet", "batch/Job", "batch/CronJob",
			"/Pod", "/Service", "/ConfigMap", "/Secret", "/PersistentVolumeClaim", "/ServiceAccount",
			"networking.k8s.io/Ingress", "networking.k8s.io/NetworkPolicy", "autoscaling/HorizontalPodAutoscaler",
			"policy/PodDisruptionBudget", "rbac.authorization.k8s.io/Role", "rbac.authorization.k8s.io/RoleBinding"},
		Namespaces: []string{"$group"},
	}},
	ForbiddenNamespaces: []string{"kube-*", "open-cluster-management*", "default", "ocm-jobs"},
}

// Load reads a policy from a YAML or JSON file (a mounted ConfigMap); "" is the default.
func Load(file string) (Policy, error) {
	if file == "" {
		return DefaultPolicy, nil
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return Policy{}, fmt.Errorf("MANIFEST_POLICY: %w", err)
	}
	var p Policy
	if err := yaml.UnmarshalStrict(raw, &p); err != nil {
		return Policy{}, fmt.Errorf("MANIFEST_POLICY %s: %w", file, err)
	}
	if len(p.Rules) == 0 {
		return Policy{}, fmt.Errorf("MANIFEST_POLICY %s: no rules: nothing could be deployed", file)
	}
	return p, nil
}

// clusterScopedKinds are the cluster-scoped kinds (by group/Kind) a manifest is recognised as.
var clusterScopedKinds = map[string]bool{
	"/Namespace": true, "/Node": true, "/PersistentVolume": true,
	"rbac.authorization.k8s.io/ClusterRole": true, "rbac.authorization.k8s.io/ClusterRoleBinding": true,
	"apiextensions.k8s.io/CustomResourceDefinition": true, "scheduling.k8s.io/PriorityClass": true,
	"storage.k8s.io/StorageClass": true, "storage.k8s.io/CSIDriver": true, "node.k8s.io/RuntimeClass": true,
	"networking.k8s.io/IngressClass": true, "apiregistration.k8s.io/APIService": true,
	"admissionregistration.k8s.io/ValidatingWebhookConfiguration": true, "admissionregistration.k8s.io/MutatingWebhookConfiguration": true,
	"admissionregistration.k8s.io/ValidatingAdmissionPolicy": true, "admissionregistration.k8s.io/ValidatingAdmissionPolicyBinding": true,
	"certificates.k8s.io/CertificateSigningRequest": true, "cluster.open-cluster-management.io/ManagedCluster": true,
}

// groupKind is "group/Kind" of an object.
func groupKind(o *unstructured.Unstructured) string {
	return o.GroupVersionKind().Group + "/" + o.GetKind()
}

// CheckAll checks a component's objects against the policy, for the application's own
// namespace ns on cluster ("": not known yet, checked against the rules for every cluster),
// and returns every offending object with its path (manifests[j]).
func (p Policy) CheckAll(objs []*unstructured.Unstructured, ns, cluster string) *apis.FieldError {
	var errs *apis.FieldError
	for j, o := range objs {
		if why := p.Refuses(o, ns, cluster); why != "" {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("%s %q: %s", o.GetKind(), o.GetName(), why), apis.CurrentField).ViaFieldIndex("manifests", j))
		}
	}
	return errs
}

// Refuses says why the policy refuses object o of an application with namespace ns on
// cluster ("" for not known yet), or "" when it allows it.
func (p Policy) Refuses(o *unstructured.Unstructured, ns, cluster string) string {
	gk := groupKind(o)
	if gk == "/Namespace" {
		if o.GetName() == ns && !matchAny(p.ForbiddenNamespaces, ns) {
			return ""
		}
		return fmt.Sprintf("the only Namespace an application may create is its own, %q", ns)
	}
	objNS := o.GetNamespace()
	scoped := clusterScopedKinds[gk]
	if !scoped && objNS == "" {
		objNS = ns // where the executor puts it
	}
	if !scoped && matchAny(p.ForbiddenNamespaces, objNS) {
		return fmt.Sprintf("namespace %q is off limits (forbiddenNamespaces)", objNS)
	}
	for _, r := range p.Rules {
		if !r.appliesTo(cluster) {
			continue
		}
		if scoped {
			if matchKind(r.ClusterScoped, gk) {
				return ""
			}
			continue
		}
		if matchKind(r.Kinds, gk) && r.allowsNamespace(objNS, ns) {
			return ""
		}
	}
	where := "any cluster"
	if cluster != "" {
		where = "cluster " + cluster
	}
	if scoped {
		return fmt.Sprintf("%s is cluster-scoped, which the manifest policy does not allow on %s", gk, where)
	}
	return fmt.Sprintf("the manifest policy does not allow %s in namespace %q on %s", gk, objNS, where)
}

// appliesTo: a rule applies to a cluster its patterns match; for a cluster not known yet,
// only a rule for every cluster does.
func (r PolicyRule) appliesTo(cluster string) bool {
	if cluster == "" {
		for _, c := range r.Clusters {
			if c == "*" {
				return true
			}
		}
		return false
	}
	return matchAny(r.Clusters, cluster)
}

func (r PolicyRule) allowsNamespace(objNS, own string) bool {
	for _, pat := range r.Namespaces {
		if pat == "$group" && objNS == own {
			return true
		}
		if pat != "$group" && glob(pat, objNS) {
			return true
		}
	}
	return false
}

func matchKind(kinds []string, gk string) bool {
	for _, k := range kinds {
		if k == "*" || k == gk {
			return true
		}
	}
	return false
}

func matchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if glob(p, s) {
			return true
		}
	}
	return false
}

// glob matches shell patterns (*, ?, [..]); a malformed pattern matches nothing.
func glob(pattern, s string) bool {
	ok, err := path.Match(pattern, s)
	return err == nil && ok && !strings.Contains(s, "/")
}

// DeployerVerbs are what the deployer service account of a namespace may do with the kinds
// the policy allows there: what the work agent needs to apply, read back and remove them.
var DeployerVerbs = []string{"get", "list", "watch", "create", "update", "patch", "delete"}

// RBACRules are the rights of the deployer service account in an application's own namespace
// ns on cluster: every namespaced kind a rule for that cluster allows in ns, nothing else. The
// work agent applies a job's objects as that account, so the spoke's own RBAC (and its
// escalation checks on Roles and RoleBindings) enforces the policy at apply time too.
func (p Policy) RBACRules(ns, cluster string) []rbacv1.PolicyRule {
	if matchAny(p.ForbiddenNamespaces, ns) {
		return nil
	}
	byGroup := map[string][]string{}
	var groups []string
	all := false
	for _, r := range p.Rules {
		if !r.appliesTo(cluster) || !r.allowsNamespace(ns, ns) {
			continue
		}
		for _, k := range r.Kinds {
			if k == "*" {
				all = true
				continue
			}
			group, kind, ok := strings.Cut(k, "/")
			if !ok || kind == "" {
				continue
			}
			res, _ := meta.UnsafeGuessKindToResource(schema.GroupVersionKind{Group: group, Kind: kind})
			if _, seen := byGroup[group]; !seen {
				groups = append(groups, group)
			}
			if !slices.Contains(byGroup[group], res.Resource) {
				byGroup[group] = append(byGroup[group], res.Resource)
			}
		}
	}
	if all {
		return []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: DeployerVerbs}}
	}
	sort.Strings(groups)
	var out []rbacv1.PolicyRule
	for _, g := range groups {
		res := byGroup[g]
		sort.Strings(res)
		out = append(out, rbacv1.PolicyRule{APIGroups: []string{g}, Resources: res, Verbs: DeployerVerbs})
	}
	return out
}
