package ocm

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	workv1 "open-cluster-management.io/api/work/v1"
	"sigs.k8s.io/yaml"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// AnnotationFence is the fencing token of the execution that last wrote a ManifestWork. It is
// how ocm-jobs knows, from the hub itself, whether an execution was applied ("was job J's
// execution F applied?" = does J's work carry fence F), and status sync draws a job's verdict
// only from a work written for the job's current execution.
const AnnotationFence = "jobmanager.icos.eu/fence"

// clusterScoped are the kinds that take no namespace. Everything else is given the job's
// namespace when it names none (as in ICOS: the descriptor's namespace or the app's name).
var clusterScoped = map[string]bool{
	"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true, "CustomResourceDefinition": true,
	"PersistentVolume": true, "StorageClass": true, "PriorityClass": true, "IngressClass": true,
	"RuntimeClass": true, "CSIDriver": true, "APIService": true, "Node": true,
	"ValidatingWebhookConfiguration": true, "MutatingWebhookConfiguration": true,
	"ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true,
}

// workloadResources maps the workloads whose replica counts are fed back to their resource.
var workloadResources = map[string]string{"Deployment": "deployments", "StatefulSet": "statefulsets"}

// InvalidManifestError is a job manifest that cannot become part of a ManifestWork: retrying
// cannot help.
type InvalidManifestError struct{ Message string }

func (e *InvalidManifestError) Error() string { return e.Message }

func invalidManifest(format string, args ...any) error {
	return &InvalidManifestError{Message: fmt.Sprintf(format, args...)}
}

// BuildWork turns a job into the ManifestWork of one execution (fence) on cluster: its
// manifests with the job's namespace and the ICOS annotations, preceded by that Namespace (so a
// fresh cluster needs nothing beforehand), our labels, the execution's fence, status feedback
// rules for workload replica counts, and Foreground deletion (the work is gone only when its
// objects are).
func BuildWork(j *model.Job, cluster, hubID string, fence uint64, manifests []model.PlainManifest) (*workv1.ManifestWork, error) {
	ns := j.Namespace
	if ns == "" {
		ns = j.JobGroupName
	}
	var out []workv1.Manifest
	var configs []workv1.ManifestConfigOption
	haveNamespace := false
	for i, m := range manifests {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(m.YamlString), &obj); err != nil || obj == nil {
			return nil, invalidManifest("manifest %d is not a YAML object: %v", i, err)
		}
		kind, _ := obj["kind"].(string)
		apiVersion, _ := obj["apiVersion"].(string)
		md, _ := obj["metadata"].(map[string]any)
		if md == nil {
			md = map[string]any{}
			obj["metadata"] = md
		}
		name, _ := md["name"].(string)
		if kind == "" || apiVersion == "" || name == "" {
			return nil, invalidManifest("manifest %d needs apiVersion, kind and metadata.name", i)
		}
		if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
			return nil, invalidManifest("manifest %d (%s %q): metadata.name: %s", i, kind, name, strings.Join(msgs, "; "))
		}
		if kind == "Namespace" && name == ns {
			haveNamespace = true
		}
		objNS, _ := md["namespace"].(string)
		if !clusterScoped[kind] && objNS == "" {
			md["namespace"] = ns
			objNS = ns
		}
		annotate(md, j)
		raw, err := json.Marshal(obj)
		if err != nil {
			return nil, invalidManifest("manifest %d: %v", i, err)
		}
		out = append(out, workv1.Manifest{RawExtension: runtime.RawExtension{Raw: raw}})
		if res, ok := workloadResources[kind]; ok && strings.HasPrefix(apiVersion, "apps/") {
			configs = append(configs, FeedbackRule("apps", res, objNS, name))
		}
	}
	if !haveNamespace {
		nsObj := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}
		annotate(nsObj["metadata"].(map[string]any), j)
		raw, _ := json.Marshal(nsObj)
		out = append([]workv1.Manifest{{RawExtension: runtime.RawExtension{Raw: raw}}}, out...)
	}
	return &workv1.ManifestWork{
		TypeMeta: metav1.TypeMeta{APIVersion: workv1.GroupVersion.String(), Kind: "ManifestWork"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      WorkName(j.ID),
			Namespace: cluster,
			Labels: map[string]string{
				LabelManagedBy: ManagedBy,
				LabelJob:       j.ID,
				LabelInstance:  j.JobGroupID,
				LabelComponent: LabelValue(j.Component),
				LabelOwner:     LabelValue(hubID),
			},
			Annotations: map[string]string{AnnotationFence: strconv.FormatUint(fence, 10)},
		},
		Spec: workv1.ManifestWorkSpec{
			Workload:        workv1.ManifestsTemplate{Manifests: out},
			ManifestConfigs: configs,
			DeleteOption:    &workv1.DeleteOption{PropagationPolicy: workv1.DeletePropagationPolicyTypeForeground},
		},
	}, nil
}

// annotate adds the ICOS annotations a manifest does not carry yet (those it carries are kept).
func annotate(md map[string]any, j *model.Job) {
	ann, _ := md["annotations"].(map[string]any)
	if ann == nil {
		ann = map[string]any{}
	}
	for k, v := range map[string]string{AnnotationName: j.JobGroupName, AnnotationComponent: j.Component, AnnotationInstance: j.JobGroupID} {
		if _, ok := ann[k]; !ok && v != "" {
			ann[k] = v
		}
	}
	if len(ann) > 0 {
		md["annotations"] = ann
	}
}
