package ocm

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	workv1 "open-cluster-management.io/api/work/v1"
	"sigs.k8s.io/yaml"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// Deployer is the name of the service account, Role and RoleBinding through which the work
// agent applies a job's objects in the job's namespace.
const Deployer = "ocm-jobs-deployer"

// LabelAccess marks an access work with the namespace it opens.
const LabelAccess = "jobmanager.icos.eu/access-namespace"

// AnnotationAccessRules is the digest of the Role an access work grants: a work whose digest
// differs (the manifest policy changed) is applied again.
const AnnotationAccessRules = "jobmanager.icos.eu/access-rules"

// AccessWorkName is the name of the access work of namespace ns on a cluster.
func AccessWorkName(ns string) string { return "ocm-jobs-access-" + ns }

// DeployerOf is the executor subject of the jobs in namespace ns.
func DeployerOf(ns string) *workv1.ManifestWorkExecutor {
	return &workv1.ManifestWorkExecutor{Subject: workv1.ManifestWorkExecutorSubject{
		Type:           workv1.ExecutorSubjectTypeServiceAccount,
		ServiceAccount: &workv1.ManifestWorkSubjectServiceAccount{Namespace: ns, Name: Deployer},
	}}
}

// RulesDigest identifies a set of RBAC rules.
func RulesDigest(rules []rbacv1.PolicyRule) string {
	b, _ := json.Marshal(rules)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// BuildAccessWork is the work that opens namespace ns of cluster to ocm-jobs, applied by the
// agent with its own rights before any job work that names the deployer as its executor: the
// Namespace (created if missing, never changed if it exists, never deleted: it is orphaned),
// the deployer ServiceAccount, a Role with rules (what the manifest policy allows there) and
// the RoleBinding between them. The labels and annotations of a job's own Namespace manifest,
// if it has one, are the new namespace's. One access work serves every job in the namespace
// and stays with it.
func BuildAccessWork(j *model.Job, cluster, hubID string, manifests []model.PlainManifest, rules []rbacv1.PolicyRule) *workv1.ManifestWork {
	ns := JobNamespace(j)
	nsMeta := namespaceMeta(manifests, ns)
	nsMeta["name"] = ns
	labels, _ := nsMeta["labels"].(map[string]any)
	if labels == nil {
		labels = map[string]any{}
	}
	labels[LabelManagedBy] = ManagedBy
	nsMeta["labels"] = labels
	meta := metav1.ObjectMeta{Name: Deployer, Namespace: ns, Labels: map[string]string{LabelManagedBy: ManagedBy}}
	objects := []any{
		map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": nsMeta},
		map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
		&rbacv1.Role{TypeMeta: metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"}, ObjectMeta: meta, Rules: rules},
		&rbacv1.RoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
			ObjectMeta: meta,
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: Deployer},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: Deployer, Namespace: ns}},
		},
	}
	var out []workv1.Manifest
	for _, o := range objects {
		raw, _ := json.Marshal(o)
		out = append(out, workv1.Manifest{RawExtension: runtime.RawExtension{Raw: raw}})
	}
	return &workv1.ManifestWork{
		TypeMeta: metav1.TypeMeta{APIVersion: workv1.GroupVersion.String(), Kind: "ManifestWork"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        AccessWorkName(ns),
			Namespace:   cluster,
			Labels:      map[string]string{LabelManagedBy: ManagedBy, LabelOwner: LabelValue(hubID), LabelAccess: ns},
			Annotations: map[string]string{AnnotationAccessRules: RulesDigest(rules)},
		},
		Spec: workv1.ManifestWorkSpec{
			Workload:        workv1.ManifestsTemplate{Manifests: out},
			ManifestConfigs: []workv1.ManifestConfigOption{createOnly("", "namespaces", "", ns)},
			DeleteOption:    keepNamespace(ns),
		},
	}
}

// namespaceMeta is the metadata of the job's own Namespace manifest (labels and annotations
// only), empty when it has none.
func namespaceMeta(manifests []model.PlainManifest, ns string) map[string]any {
	out := map[string]any{}
	for _, m := range manifests {
		var obj struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name        string            `json:"name"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		if yaml.Unmarshal([]byte(m.YamlString), &obj) != nil || obj.Kind != "Namespace" || obj.APIVersion != "v1" || obj.Metadata.Name != ns {
			continue
		}
		if len(obj.Metadata.Labels) > 0 {
			l := map[string]any{}
			for k, v := range obj.Metadata.Labels {
				l[k] = v
			}
			out["labels"] = l
		}
		if len(obj.Metadata.Annotations) > 0 {
			a := map[string]any{}
			for k, v := range obj.Metadata.Annotations {
				a[k] = v
			}
			out["annotations"] = a
		}
		break
	}
	return out
}
