package ocm

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
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

// WorkOptions are what a job's work is built with besides the job.
type WorkOptions struct {
	// Executor is the subject the agent applies the objects as; nil: the agent's own.
	Executor *workv1.ManifestWorkExecutor
	// Refuses says why an object may not be deployed ("" when it may); nil allows all.
	Refuses func(*unstructured.Unstructured) string
}

// RefusedError is an object the manifest policy refuses: retrying cannot help.
type RefusedError struct{ Message string }

func (e *RefusedError) Error() string { return e.Message }

// JobNamespace is the namespace a job's namespaced objects go to when they name none: the
// descriptor's namespace, else the application's name (as in ICOS).
func JobNamespace(j *model.Job) string {
	if j.Namespace != "" {
		return j.Namespace
	}
	return j.JobGroupName
}

// BuildWork turns a job into the ManifestWork of one execution (fence) on cluster: its
// manifests with the job's namespace and the ICOS annotations, our labels, the execution's
// fence, status feedback rules for workload replica counts, and Foreground deletion (the work
// is gone only when its objects are).
//
// With an executor (the deployer service account of the job's namespace, see
// BuildAccessWork), the agent applies the objects as that account; the job's namespace is the
// access work's, so the job's own Namespace manifest is left out here (its labels and
// annotations go to the access work). Without one, the work carries the namespace itself. In
// both cases the Namespace is never owned by a job's work: a namespace that existed before is
// not adopted, and none is deleted with the application (as Argo CD's CreateNamespace and
// Helm's --create-namespace do).
//
// opts.Refuses, when set, is asked about every object as it is read (the manifest policy): the
// first it refuses fails the build with a *RefusedError.
func BuildWork(j *model.Job, cluster, hubID string, fence uint64, manifests []model.PlainManifest, opts WorkOptions) (*workv1.ManifestWork, error) {
	ns := JobNamespace(j)
	executor := opts.Executor
	var out []workv1.Manifest
	var configs []workv1.ManifestConfigOption
	haveNS := false
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
		objNS, _ := md["namespace"].(string)
		if !clusterScoped[kind] && objNS == "" {
			md["namespace"] = ns
			objNS = ns
		}
		if opts.Refuses != nil {
			if why := opts.Refuses(&unstructured.Unstructured{Object: obj}); why != "" {
				return nil, &RefusedError{Message: fmt.Sprintf("%s %q: %s", kind, name, why)}
			}
		}
		annotate(md, j)
		if kind == "Namespace" && name == ns && apiVersion == "v1" {
			haveNS = true
			if executor != nil {
				continue
			}
		}
		raw, err := json.Marshal(obj)
		if err != nil {
			return nil, invalidManifest("manifest %d: %v", i, err)
		}
		out = append(out, workv1.Manifest{RawExtension: runtime.RawExtension{Raw: raw}})
		if res, ok := workloadResources[kind]; ok && strings.HasPrefix(apiVersion, "apps/") {
			configs = append(configs, FeedbackRule("apps", res, objNS, name))
		}
	}
	if executor == nil {
		if !haveNS {
			nsObj := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}
			if opts.Refuses != nil {
				if why := opts.Refuses(&unstructured.Unstructured{Object: nsObj}); why != "" {
					return nil, &RefusedError{Message: fmt.Sprintf("Namespace %q: %s", ns, why)}
				}
			}
			annotate(nsObj["metadata"].(map[string]any), j)
			raw, _ := json.Marshal(nsObj)
			out = append([]workv1.Manifest{{RawExtension: runtime.RawExtension{Raw: raw}}}, out...)
		}
		configs = append(configs, createOnly("", "namespaces", "", ns))
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
			DeleteOption:    keepNamespace(ns),
			Executor:        executor,
		},
	}, nil
}

// createOnly: the agent creates the object if it is missing and never changes an existing one.
func createOnly(group, resource, namespace, name string) workv1.ManifestConfigOption {
	return workv1.ManifestConfigOption{
		ResourceIdentifier: workv1.ResourceIdentifier{Group: group, Resource: resource, Namespace: namespace, Name: name},
		UpdateStrategy:     &workv1.UpdateStrategy{Type: workv1.UpdateStrategyTypeCreateOnly},
	}
}

// keepNamespace is Foreground deletion of everything a work applied except the Namespace ns,
// which the work never owns: the agent neither adopts an existing one nor deletes it.
func keepNamespace(ns string) *workv1.DeleteOption {
	return &workv1.DeleteOption{
		PropagationPolicy: workv1.DeletePropagationPolicyTypeSelectivelyOrphan,
		SelectivelyOrphan: &workv1.SelectivelyOrphan{OrphaningRules: []workv1.OrphaningRule{{Resource: "namespaces", Name: ns}}},
	}
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
