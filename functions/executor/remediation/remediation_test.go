package remediation

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// The fixtures are written the way people write YAML (comments, odd key order, quotes) so
// that a re-serialized manifest can never pass for an untouched one.
const (
	namespaceYAML = `# the job's namespace
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {app.icos.eu/name: "shop"}}
`
	serviceYAML = `kind: Service
apiVersion: v1
metadata:
  name: web
  namespace: shop
spec:
  ports: [{port: 80, targetPort: 8080}]   # http
  selector: {app: web}
`
	configMapYAML = `apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data:
  LOG_LEVEL: "debug"
  config.yaml: |
    a: 1
    b: [1,2]
`
	deploymentYAML = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: "nginx:1.27"
        resources:
          requests: {cpu: 500m, memory: 256Mi}
          limits: {cpu: "1", memory: 512Mi}
`
	statefulSetYAML = `apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: shop}
spec:
  # no replicas: Kubernetes' default of 1
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - {name: db, image: "postgres:16"}
`
	daemonSetYAML = `apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: shop}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers:
      - name: agent
        image: "agent:2"
        resources: {requests: {cpu: 200m, memory: 128Mi}}
`
	// A custom resource that happens to be called Deployment: not an apps Deployment.
	crdObjectYAML = `apiVersion: example.com/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 7
  template: {spec: {containers: [{name: x, image: "x"}]}}
`
)

// job is a component with one manifest of every sort.
func job() []model.PlainManifest {
	return manifests(namespaceYAML, serviceYAML, configMapYAML, deploymentYAML, statefulSetYAML, daemonSetYAML, crdObjectYAML)
}

// Indexes of job()'s manifests.
const (
	iNamespace = iota
	iService
	iConfigMap
	iDeployment
	iStatefulSet
	iDaemonSet
	iCRDObject
)

func manifests(ys ...string) []model.PlainManifest {
	out := make([]model.PlainManifest, len(ys))
	for i, y := range ys {
		out[i] = model.PlainManifest{YamlString: y}
	}
	return out
}

func decode(t testing.TB, y string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(y), &m); err != nil {
		t.Fatalf("re-reading a remediated manifest: %v\n%s", err, y)
	}
	return m
}

// at reads a path of keys and list indexes ("spec.template.spec.containers.0.image"); keys
// with a dot cannot be reached: compare their parent.
func at(t testing.TB, y string, path string) any {
	t.Helper()
	var cur any = decode(t, y)
	for _, p := range strings.Split(path, ".") {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[p]
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(c) {
				return nil
			}
			cur = c[i]
		default:
			return nil
		}
	}
	return cur
}

// reason returns the NotApplicableError reason of err, or "" for nil, or fails.
func reason(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var na *NotApplicableError
	if !errors.As(err, &na) {
		t.Fatalf("error %v is not a NotApplicableError", err)
	}
	if na.Message == "" {
		t.Errorf("%s has no message", na.Reason)
	}
	return na.Reason
}

// untouched checks that every manifest outside changed is byte-for-byte the input.
func untouched(t *testing.T, in, out []model.PlainManifest, changed ...int) {
	t.Helper()
	if len(out) != len(in) {
		t.Fatalf("got %d manifests, want %d", len(out), len(in))
	}
	for i := range in {
		isChanged := false
		for _, c := range changed {
			isChanged = isChanged || c == i
		}
		switch {
		case !isChanged && out[i].YamlString != in[i].YamlString:
			t.Errorf("manifest %d was rewritten although the remediation is not about it:\n%s", i, cmp.Diff(in[i].YamlString, out[i].YamlString))
		case isChanged && out[i].YamlString == in[i].YamlString:
			t.Errorf("manifest %d is unchanged, want it remediated", i)
		}
	}
}

func minReplicas(n int32) func(*Options) {
	return func(o *Options) { o.MinReplicas = n }
}

func maxReplicas(n int32) func(*Options) {
	return func(o *Options) { o.MaxReplicas = n }
}

func TestRemediateScaleReplicas(t *testing.T) {
	withReplicas := func(v string) string {
		return strings.Replace(deploymentYAML, "replicas: 2", "replicas: "+v, 1)
	}
	tests := map[string]struct {
		in         []model.PlainManifest
		action     model.SubType
		workload   string
		opts       func(*Options)
		want       map[int]any // manifest index → spec.replicas after; the others untouched
		wantReason string
	}{
		"out: every Deployment and StatefulSet, absent replicas count as 1": {
			in: job(), action: model.ScaleOut,
			want: map[int]any{iDeployment: 3.0, iStatefulSet: 2.0},
		},
		"in: the StatefulSet at the minimum is left alone": {
			in: job(), action: model.ScaleIn,
			want: map[int]any{iDeployment: 1.0},
		},
		"in: everything at the minimum": {
			in: job(), action: model.ScaleIn, opts: minReplicas(2),
			wantReason: ReasonAtMinimum,
		},
		"out: the Deployment at the maximum is left alone": {
			in: job(), action: model.ScaleOut, opts: maxReplicas(2),
			want: map[int]any{iStatefulSet: 2.0},
		},
		"out: everything at the maximum": {
			in: job(), action: model.ScaleOut, opts: maxReplicas(1),
			wantReason: ReasonAtMaximum,
		},
		"out: above the maximum already": {
			in: manifests(withReplicas("500")), action: model.ScaleOut,
			wantReason: ReasonAtMaximum,
		},
		"in: from above the maximum moves towards it": {
			in: manifests(withReplicas("500")), action: model.ScaleIn,
			want: map[int]any{0: 499.0},
		},
		"out: from zero": {
			in: manifests(withReplicas("0")), action: model.ScaleOut, opts: minReplicas(0),
			want: map[int]any{0: 1.0},
		},
		"in: a minimum of zero scales to zero": {
			in: manifests(withReplicas("1")), action: model.ScaleIn, opts: minReplicas(0),
			want: map[int]any{0: 0.0},
		},
		"out: replicas null counts as 1": {
			in: manifests(withReplicas("null")), action: model.ScaleOut,
			want: map[int]any{0: 2.0},
		},
		"out: no spec at all": {
			in:     manifests("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"),
			action: model.ScaleOut, want: map[int]any{0: 2.0},
		},
		"out: narrowed to the StatefulSet": {
			in: job(), action: model.ScaleOut, workload: "StatefulSet/db",
			want: map[int]any{iStatefulSet: 2.0},
		},
		"out: narrowing ignores the kind's case and accepts a group": {
			in: job(), action: model.ScaleOut, workload: "deployment.apps/web",
			want: map[int]any{iDeployment: 3.0},
		},
		"out: a workload the job does not have": {
			in: job(), action: model.ScaleOut, workload: "Deployment/api",
			wantReason: ReasonWorkloadNotFound,
		},
		"out: a workload that is not a Deployment or StatefulSet": {
			in: job(), action: model.ScaleOut, workload: "Service/web",
			wantReason: ReasonNoWorkload,
		},
		"out: DaemonSets have no replicas": {
			in: job(), action: model.ScaleOut, workload: "DaemonSet/agent",
			wantReason: ReasonNoWorkload,
		},
		"out: not of the form Kind/name": {
			in: job(), action: model.ScaleOut, workload: "web",
			wantReason: ReasonInvalidWorkload,
		},
		"out: no workload at all (a custom resource called Deployment is none)": {
			in: manifests(namespaceYAML, serviceYAML, crdObjectYAML), action: model.ScaleOut,
			wantReason: ReasonNoWorkload,
		},
		"out: no manifests": {
			in: nil, action: model.ScaleOut, wantReason: ReasonNoWorkload,
		},
		"out: replicas as a string": {
			in: manifests(withReplicas(`"three"`)), action: model.ScaleOut,
			wantReason: ReasonInvalidManifest,
		},
		"out: replicas as a fraction": {
			in: manifests(withReplicas("1.5")), action: model.ScaleOut,
			wantReason: ReasonInvalidManifest,
		},
		"out: negative replicas": {
			in: manifests(withReplicas("-1")), action: model.ScaleOut,
			wantReason: ReasonInvalidManifest,
		},
		"out: spec as a list": {
			in:     manifests("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: [1]\n"),
			action: model.ScaleOut, wantReason: ReasonInvalidManifest,
		},
		"out: one invalid workload edits nothing": {
			in:     manifests(statefulSetYAML, withReplicas("[]")),
			action: model.ScaleOut, wantReason: ReasonInvalidManifest,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			opts := DefaultOptions()
			if tc.opts != nil {
				tc.opts(&opts)
			}
			out, err := Remediate(tc.in, model.Remediation{Action: tc.action, Workload: tc.workload}, opts)
			if got := reason(t, err); got != tc.wantReason {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.wantReason)
			}
			if err != nil {
				if out != nil {
					t.Errorf("got manifests with an error")
				}
				return
			}
			var changed []int
			for i, want := range tc.want {
				changed = append(changed, i)
				if got := at(t, out[i].YamlString, "spec.replicas"); got != want {
					t.Errorf("manifest %d: replicas %v, want %v", i, got, want)
				}
			}
			untouched(t, tc.in, out, changed...)
		})
	}
}

func TestRemediateScaleResources(t *testing.T) {
	// workload builds a Deployment whose pod spec is podSpec (YAML, indented for the template).
	workload := func(kind, podSpec string) string {
		return "apiVersion: apps/v1\nkind: " + kind + "\nmetadata: {name: w}\nspec:\n  template:\n    spec:\n" + podSpec
	}
	container := func(resources string) string {
		return workload("Deployment", "      containers:\n      - name: c\n        image: i\n"+resources)
	}
	type res = map[string]any
	tests := map[string]struct {
		in         []model.PlainManifest
		action     model.SubType
		workload   string
		opts       func(*Options)
		want       map[int]res // manifest index → resources of its first container
		wantPath   map[string]any
		wantReason string
	}{
		"up: requests and limits": {
			in: job(), action: model.ScaleUp,
			want: map[int]res{
				iDeployment: {"requests": res{"cpu": "600m", "memory": "356Mi"}, "limits": res{"cpu": "1100m", "memory": "612Mi"}},
				// no requests: the steps
				iStatefulSet: {"requests": res{"cpu": "100m", "memory": "100Mi"}},
				// requests only: no limits appear
				iDaemonSet: {"requests": res{"cpu": "300m", "memory": "228Mi"}},
			},
		},
		"down: requests and limits, never below the floors": {
			in: job(), action: model.ScaleDown,
			want: map[int]res{
				iDeployment: {"requests": res{"cpu": "400m", "memory": "156Mi"}, "limits": res{"cpu": "900m", "memory": "412Mi"}},
				// no requests: the floors
				iStatefulSet: {"requests": res{"cpu": "100m", "memory": "64Mi"}},
				// 128Mi - 100Mi is below the 64Mi floor
				iDaemonSet: {"requests": res{"cpu": "100m", "memory": "64Mi"}},
			},
		},
		"down: everything at the floor": {
			in:     manifests(container("        resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 100m, memory: 64Mi}}\n")),
			action: model.ScaleDown, wantReason: ReasonAtMinimum,
		},
		"down: below the floor is not raised": {
			in:     manifests(container("        resources: {requests: {cpu: 50m, memory: 1Gi}}\n")),
			action: model.ScaleDown,
			want:   map[int]res{0: {"requests": res{"cpu": "50m", "memory": "924Mi"}}},
		},
		"down: only below the floor": {
			in:     manifests(container("        resources: {requests: {cpu: 50m, memory: 10Mi}}\n")),
			action: model.ScaleDown, wantReason: ReasonAtMinimum,
		},
		"down: limits stay at least the requests": {
			in:     manifests(container("        resources: {requests: {cpu: 300m, memory: 200Mi}, limits: {cpu: 150m, memory: 200Mi}}\n")),
			action: model.ScaleDown,
			want:   map[int]res{0: {"requests": res{"cpu": "200m", "memory": "100Mi"}, "limits": res{"cpu": "200m", "memory": "100Mi"}}},
		},
		"up: limits only: the limit is the request": {
			in:     manifests(container("        resources: {limits: {cpu: 500m}}\n")),
			action: model.ScaleUp,
			want:   map[int]res{0: {"requests": res{"cpu": "600m", "memory": "100Mi"}, "limits": res{"cpu": "600m"}}},
		},
		"down: limits only: the limit is the request": {
			in:     manifests(container("        resources: {limits: {cpu: 500m, memory: 1Gi}}\n")),
			action: model.ScaleDown,
			want:   map[int]res{0: {"requests": res{"cpu": "400m", "memory": "924Mi"}, "limits": res{"cpu": "400m", "memory": "924Mi"}}},
		},
		"up: resources null": {
			in:     manifests(container("        resources: null\n")),
			action: model.ScaleUp,
			want:   map[int]res{0: {"requests": res{"cpu": "100m", "memory": "100Mi"}}},
		},
		"up: requests null, limits empty": {
			in:     manifests(container("        resources: {requests: null, limits: {}}\n")),
			action: model.ScaleUp,
			want:   map[int]res{0: {"requests": res{"cpu": "100m", "memory": "100Mi"}, "limits": res{}}},
		},
		"up: numbers are quantities; other resources are kept": {
			in:     manifests(container("        resources: {requests: {cpu: 1, memory: 1073741824, nvidia.com/gpu: 1}}\n")),
			action: model.ScaleUp,
			want:   map[int]res{0: {"requests": res{"cpu": "1100m", "memory": "1178599424", "nvidia.com/gpu": 1.0}}},
		},
		"up: custom steps": {
			in: manifests(container("        resources: {requests: {cpu: 500m, memory: 256Mi}}\n")),
			opts: func(o *Options) {
				o.CPUStep, o.MemoryStep = resource.MustParse("250m"), resource.MustParse("1Gi")
			},
			action: model.ScaleUp,
			want:   map[int]res{0: {"requests": res{"cpu": "750m", "memory": "1280Mi"}}},
		},
		"up: narrowed to the DaemonSet": {
			in: job(), action: model.ScaleUp, workload: "DaemonSet/agent",
			want: map[int]res{iDaemonSet: {"requests": res{"cpu": "300m", "memory": "228Mi"}}},
		},
		"up: sidecars scale, plain init containers do not": {
			in: manifests(workload("StatefulSet", `      initContainers:
      - {name: migrate, image: m, resources: {requests: {cpu: 1}}}
      - {name: proxy, image: p, restartPolicy: Always, resources: {requests: {cpu: 1}}}
      containers:
      - {name: c, image: i, resources: {requests: {cpu: 1, memory: 1Gi}}}
`)),
			action: model.ScaleUp,
			want:   map[int]res{0: {"requests": res{"cpu": "1100m", "memory": "1124Mi"}}},
			wantPath: map[string]any{
				"spec.template.spec.initContainers.0.resources.requests.cpu": 1.0,
				"spec.template.spec.initContainers.1.resources.requests.cpu": "1100m",
			},
		},
		"up: a CronJob is no resource workload": {
			in: manifests("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\n"), action: model.ScaleUp,
			wantReason: ReasonNoWorkload,
		},
		"up: a Service is no resource workload": {
			in: job(), action: model.ScaleUp, workload: "Service/web",
			wantReason: ReasonNoWorkload,
		},
		"up: no containers": {
			in: manifests(workload("Deployment", "      containers: []\n")), action: model.ScaleUp,
			wantReason: ReasonNoWorkload,
		},
		"up: no pod template": {
			in: manifests("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 1}\n"), action: model.ScaleUp,
			wantReason: ReasonInvalidManifest,
		},
		"up: resources as a list": {
			in:     manifests(container("        resources: [cpu]\n")),
			action: model.ScaleUp, wantReason: ReasonInvalidManifest,
		},
		"up: requests as a string": {
			in:     manifests(container("        resources: {requests: lots}\n")),
			action: model.ScaleUp, wantReason: ReasonInvalidManifest,
		},
		"up: a quantity that is not one": {
			in:     manifests(container("        resources: {requests: {cpu: fast}}\n")),
			action: model.ScaleUp, wantReason: ReasonInvalidManifest,
		},
		"up: a negative quantity": {
			in:     manifests(container("        resources: {limits: {memory: -1Gi}}\n")),
			action: model.ScaleUp, wantReason: ReasonInvalidManifest,
		},
		"up: containers as a map": {
			in:     manifests(workload("Deployment", "      containers: {c: {image: i}}\n")),
			action: model.ScaleUp, wantReason: ReasonInvalidManifest,
		},
		"up: a container that is a string": {
			in:     manifests(workload("Deployment", "      containers: [c]\n")),
			action: model.ScaleUp, wantReason: ReasonInvalidManifest,
		},
		"up: one invalid workload edits nothing": {
			in:     manifests(deploymentYAML, container("        resources: [cpu]\n")),
			action: model.ScaleUp, wantReason: ReasonInvalidManifest,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			opts := DefaultOptions()
			if tc.opts != nil {
				tc.opts(&opts)
			}
			out, err := Remediate(tc.in, model.Remediation{Action: tc.action, Workload: tc.workload}, opts)
			if got := reason(t, err); got != tc.wantReason {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.wantReason)
			}
			if err != nil {
				return
			}
			var changed []int
			for i, want := range tc.want {
				changed = append(changed, i)
				got := at(t, out[i].YamlString, "spec.template.spec.containers.0.resources")
				if diff := cmp.Diff(map[string]any(want), got); diff != "" {
					t.Errorf("manifest %d: resources (-want +got):\n%s", i, diff)
				}
			}
			for path, want := range tc.wantPath {
				if got := at(t, out[0].YamlString, path); !reflect.DeepEqual(got, want) {
					t.Errorf("%s = %#v, want %#v", path, got, want)
				}
			}
			untouched(t, tc.in, out, changed...)
		})
	}
}

func TestRemediatePatch(t *testing.T) {
	tests := map[string]struct {
		in         []model.PlainManifest
		workload   string
		patch      string
		changed    int
		want       map[string]any // path in the changed manifest → value
		wantReason string
	}{
		"JSON on the named Deployment": {
			in: job(), workload: "Deployment/web",
			patch:   `{"spec":{"replicas":5,"template":{"metadata":{"labels":{"tier":"front"}}}}}`,
			changed: iDeployment,
			want: map[string]any{
				"spec.replicas":                        5.0,
				"spec.template.metadata.labels.tier":   "front",
				"spec.template.metadata.labels.app":    "web",
				"spec.template.spec.containers.0.name": "web",
			},
		},
		"YAML on the named Deployment, null removes": {
			in: job(), workload: "Deployment/web",
			patch:   "spec:\n  replicas: 4\n  selector: null\n",
			changed: iDeployment,
			want:    map[string]any{"spec.replicas": 4.0, "spec.selector": nil, "metadata.name": "web"},
		},
		"lists are replaced whole": {
			in: job(), workload: "Deployment/web",
			patch:   `{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.28"}]}}}}`,
			changed: iDeployment,
			want:    map[string]any{"spec.template.spec.containers.0.image": "nginx:1.28", "spec.template.spec.containers.0.resources": nil},
		},
		"a ConfigMap named by the workload": {
			in: job(), workload: "ConfigMap/settings",
			patch:   `{"data":{"LOG_LEVEL":"info"}}`,
			changed: iConfigMap,
			want:    map[string]any{"data": map[string]any{"LOG_LEVEL": "info", "config.yaml": "a: 1\nb: [1,2]\n"}},
		},
		"unnamed, the job's only manifest": {
			in: manifests(configMapYAML), patch: `{"data":{"LOG_LEVEL":"info"}}`,
			changed: 0, want: map[string]any{"data.LOG_LEVEL": "info"},
		},
		"unnamed, the job's only workload": {
			in: manifests(namespaceYAML, serviceYAML, configMapYAML, deploymentYAML), patch: `{"spec":{"replicas":9}}`,
			changed: 3, want: map[string]any{"spec.replicas": 9.0},
		},
		"patching the same value in the namespace is no identity change": {
			in: job(), workload: "Deployment/web", patch: `{"metadata":{"namespace":"shop","labels":{"a":"b"}}}`,
			changed: iDeployment, want: map[string]any{"metadata.labels.a": "b"},
		},
		"unnamed, several workloads": {
			in: job(), patch: `{"spec":{"replicas":9}}`, wantReason: ReasonAmbiguousWorkload,
		},
		"unnamed, no workload among several manifests": {
			in: manifests(serviceYAML, configMapYAML), patch: `{"a":1}`, wantReason: ReasonAmbiguousWorkload,
		},
		"named twice (two namespaces)": {
			in:       manifests(configMapYAML, strings.Replace(configMapYAML, "namespace: shop", "namespace: other", 1)),
			workload: "ConfigMap/settings", patch: `{"a":1}`, wantReason: ReasonAmbiguousWorkload,
		},
		"named with its group": {
			in: job(), workload: "Deployment.example.com/web", patch: `{"spec":{"replicas":8}}`,
			changed: iCRDObject, want: map[string]any{"spec.replicas": 8.0},
		},
		"not found": {
			in: job(), workload: "ConfigMap/other", patch: `{"a":1}`, wantReason: ReasonWorkloadNotFound,
		},
		"no manifests": {
			in: nil, patch: `{"a":1}`, wantReason: ReasonNoWorkload,
		},
		"the only manifest is not YAML": {
			in: manifests("{{{"), patch: `{"a":1}`, wantReason: ReasonInvalidManifest,
		},
		"changes the name":        {in: job(), workload: "ConfigMap/settings", patch: `{"metadata":{"name":"other"}}`, wantReason: ReasonPatchChangesIdentity},
		"changes the namespace":   {in: job(), workload: "ConfigMap/settings", patch: `{"metadata":{"namespace":"kube-system"}}`, wantReason: ReasonPatchChangesIdentity},
		"removes the namespace":   {in: job(), workload: "ConfigMap/settings", patch: `{"metadata":{"namespace":null}}`, wantReason: ReasonPatchChangesIdentity},
		"changes the kind":        {in: job(), workload: "ConfigMap/settings", patch: "kind: Secret\n", wantReason: ReasonPatchChangesIdentity},
		"changes the apiVersion":  {in: job(), workload: "StatefulSet/db", patch: `{"apiVersion":"apps/v1beta1"}`, wantReason: ReasonPatchChangesIdentity},
		"removes the metadata":    {in: job(), workload: "StatefulSet/db", patch: `{"metadata":null}`, wantReason: ReasonPatchChangesIdentity},
		"replaces the metadata":   {in: job(), workload: "StatefulSet/db", patch: `{"metadata":"x"}`, wantReason: ReasonPatchChangesIdentity},
		"a JSON patch, not merge": {in: job(), workload: "StatefulSet/db", patch: `[{"op":"replace","path":"/spec/replicas","value":3}]`, wantReason: ReasonInvalidPatch},
		"a string":                {in: job(), workload: "StatefulSet/db", patch: `"spec"`, wantReason: ReasonInvalidPatch},
		"a number":                {in: job(), workload: "StatefulSet/db", patch: `3`, wantReason: ReasonInvalidPatch},
		"null":                    {in: job(), workload: "StatefulSet/db", patch: `null`, wantReason: ReasonInvalidPatch},
		"empty":                   {in: job(), workload: "StatefulSet/db", patch: " \n", wantReason: ReasonInvalidPatch},
		"broken JSON":             {in: job(), workload: "StatefulSet/db", patch: `{"spec":`, wantReason: ReasonInvalidPatch},
		"two YAML documents":      {in: job(), workload: "StatefulSet/db", patch: "a: 1\n---\nb: 2\n", wantReason: ReasonInvalidPatch},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := model.Remediation{Action: model.Patch, Workload: tc.workload, Patch: tc.patch}
			out, err := Remediate(tc.in, r, DefaultOptions())
			if got := reason(t, err); got != tc.wantReason {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.wantReason)
			}
			if err != nil {
				return
			}
			untouched(t, tc.in, out, tc.changed)
			for path, want := range tc.want {
				if got := at(t, out[tc.changed].YamlString, path); !reflect.DeepEqual(got, want) {
					t.Errorf("%s = %#v, want %#v", path, got, want)
				}
			}
			// A redelivered job applies the same patch to the patched manifests: nothing moves.
			again, err := Remediate(out, r, DefaultOptions())
			if err != nil {
				t.Fatalf("patching again: %v", err)
			}
			untouched(t, out, again)
		})
	}
}

func TestRemediateSecure(t *testing.T) {
	const cronJob = `apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          initContainers: [{name: fetch, image: "busybox:1"}]
          containers: [{name: report, image: "report:1"}]
`
	const pod = `apiVersion: v1
kind: Pod
metadata: {name: debug}
spec:
  securityContext: {runAsUser: 1000, seccompProfile: {type: Localhost, localhostProfile: my.json}}
  containers:
  - name: debug
    image: "debug:1"
    securityContext:
      privileged: true
      runAsNonRoot: false
      readOnlyRootFilesystem: true
      seccompProfile: {type: Unconfined}
      capabilities: {add: [NET_BIND_SERVICE], drop: [NET_RAW]}
`
	const batchJob = `apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec: {template: {spec: {restartPolicy: Never, containers: [{name: once, image: "once:1"}]}}}
`
	hardened := map[string]any{
		"allowPrivilegeEscalation": false,
		"capabilities":             map[string]any{"drop": []any{"ALL"}},
	}
	podHardened := map[string]any{"runAsNonRoot": true, "seccompProfile": map[string]any{"type": "RuntimeDefault"}}
	tests := map[string]struct {
		in         []model.PlainManifest
		workload   string
		image      string
		changed    []int
		want       map[int]map[string]any // manifest index → path → value
		wantReason string
	}{
		"every pod template, no image": {
			in:      job(),
			changed: []int{iDeployment, iStatefulSet, iDaemonSet},
			want: map[int]map[string]any{
				iDeployment: {
					"spec.template.spec.securityContext":               podHardened,
					"spec.template.spec.containers.0.securityContext":  hardened,
					"spec.template.spec.containers.0.image":            "nginx:1.27",
					"spec.template.spec.containers.0.resources.limits": map[string]any{"cpu": "1", "memory": "512Mi"},
					"spec.replicas":                                      2.0,
					"spec.template.metadata.labels.app":                  "web",
					"spec.template.spec.containers.0.resources.requests": map[string]any{"cpu": "500m", "memory": "256Mi"},
				},
				iStatefulSet: {"spec.template.spec.containers.0.securityContext": hardened},
				iDaemonSet:   {"spec.template.spec.securityContext": podHardened},
			},
		},
		"with an image, narrowed to the Deployment": {
			in: job(), workload: "Deployment/web", image: "nginx:1.27-hardened",
			changed: []int{iDeployment},
			want: map[int]map[string]any{iDeployment: {
				"spec.template.spec.containers.0.image":           "nginx:1.27-hardened",
				"spec.template.spec.containers.0.securityContext": hardened,
			}},
		},
		"a CronJob: init containers hardened but keep their image": {
			in: manifests(cronJob), image: "report:2", changed: []int{0},
			want: map[int]map[string]any{0: {
				"spec.jobTemplate.spec.template.spec.securityContext":                  podHardened,
				"spec.jobTemplate.spec.template.spec.containers.0.image":               "report:2",
				"spec.jobTemplate.spec.template.spec.containers.0.securityContext":     hardened,
				"spec.jobTemplate.spec.template.spec.initContainers.0.image":           "busybox:1",
				"spec.jobTemplate.spec.template.spec.initContainers.0.securityContext": hardened,
				"spec.jobTemplate.spec.template.spec.restartPolicy":                    "OnFailure",
				"spec.jobTemplate.spec.template.spec.initContainers.0.resources":       nil,
			}},
		},
		"a Pod: overrides undone, other fields and a Localhost profile kept": {
			in: manifests(pod), changed: []int{0},
			want: map[int]map[string]any{0: {
				"spec.securityContext": map[string]any{"runAsNonRoot": true, "runAsUser": 1000.0,
					"seccompProfile": map[string]any{"type": "Localhost", "localhostProfile": "my.json"}},
				"spec.containers.0.securityContext": map[string]any{
					"allowPrivilegeEscalation": false, "privileged": false, "runAsNonRoot": true,
					"readOnlyRootFilesystem": true, "seccompProfile": map[string]any{"type": "RuntimeDefault"},
					"capabilities": map[string]any{"add": []any{"NET_BIND_SERVICE"}, "drop": []any{"ALL"}},
				},
			}},
		},
		"a Job and a ReplicaSet": {
			in:      manifests(batchJob, strings.Replace(deploymentYAML, "kind: Deployment", "kind: ReplicaSet", 1)),
			changed: []int{0, 1},
			want: map[int]map[string]any{
				0: {"spec.template.spec.containers.0.securityContext": hardened},
				1: {"spec.template.spec.containers.0.securityContext": hardened},
			},
		},
		"no pod template": {
			in: manifests(namespaceYAML, serviceYAML, configMapYAML, crdObjectYAML), wantReason: ReasonNoWorkload,
		},
		"narrowed to a Service": {
			in: job(), workload: "Service/web", wantReason: ReasonNoWorkload,
		},
		"containers as a map": {
			in:         manifests("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: {a: b}}\n"),
			wantReason: ReasonInvalidManifest,
		},
		"securityContext as a string": {
			in:         manifests("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {securityContext: strict, containers: []}\n"),
			wantReason: ReasonInvalidManifest,
		},
		"a Pod without spec": {
			in: manifests("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"), wantReason: ReasonInvalidManifest,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := model.Remediation{Action: model.Secure, Workload: tc.workload, Image: tc.image}
			out, err := Remediate(tc.in, r, DefaultOptions())
			if got := reason(t, err); got != tc.wantReason {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.wantReason)
			}
			if err != nil {
				return
			}
			untouched(t, tc.in, out, tc.changed...)
			for i, paths := range tc.want {
				for path, want := range paths {
					if got := at(t, out[i].YamlString, path); !reflect.DeepEqual(got, want) {
						t.Errorf("manifest %d: %s = %#v, want %#v", i, path, got, want)
					}
				}
			}
			// Hardened is a state: securing a secured job changes nothing.
			again, err := Remediate(out, r, DefaultOptions())
			if err != nil {
				t.Fatalf("securing again: %v", err)
			}
			untouched(t, out, again)
		})
	}
}

// TestRemediateByteForByte is the ICOS bug this file exists to avoid: remediation rebuilt the
// ManifestWork from the Namespace and the Deployments and dropped everything else.
func TestRemediateByteForByte(t *testing.T) {
	tests := map[string]struct {
		r       model.Remediation
		changed []int
	}{
		"scale-out":      {model.Remediation{Action: model.ScaleOut}, []int{iDeployment, iStatefulSet}},
		"scale-in":       {model.Remediation{Action: model.ScaleIn}, []int{iDeployment}},
		"scale-up":       {model.Remediation{Action: model.ScaleUp}, []int{iDeployment, iStatefulSet, iDaemonSet}},
		"scale-down":     {model.Remediation{Action: model.ScaleDown, Workload: "Deployment.apps/web"}, []int{iDeployment}},
		"patch":          {model.Remediation{Action: model.Patch, Workload: "StatefulSet/db", Patch: `{"spec":{"replicas":3}}`}, []int{iStatefulSet}},
		"secure":         {model.Remediation{Action: model.Secure, Image: "x:1"}, []int{iDeployment, iStatefulSet, iDaemonSet}},
		"reallocation":   {model.Remediation{Action: model.Reallocation, Target: &model.Target{ClusterName: "cluster2"}}, nil},
		"scale-out, one": {model.Remediation{Action: model.ScaleOut, Workload: "StatefulSet/db"}, []int{iStatefulSet}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := job()
			out, err := Remediate(in, tc.r, DefaultOptions())
			if err != nil {
				t.Fatal(err)
			}
			untouched(t, in, out, tc.changed...)
			if !reflect.DeepEqual(in, job()) {
				t.Error("Remediate changed its input")
			}
			for _, i := range tc.changed {
				m := decode(t, out[i].YamlString)
				if m["kind"] == nil || at(t, out[i].YamlString, "metadata.name") == nil {
					t.Errorf("manifest %d lost its identity:\n%s", i, out[i].YamlString)
				}
			}
		})
	}
}

func TestRemediateUnknown(t *testing.T) {
	for _, action := range []model.SubType{"", "scale-sideways", "Scale-Out"} {
		_, err := Remediate(job(), model.Remediation{Action: action}, DefaultOptions())
		if got := reason(t, err); got != ReasonUnknownRemediation {
			t.Errorf("action %q: reason %q, want %q", action, got, ReasonUnknownRemediation)
		}
		if !strings.HasPrefix(err.Error(), ReasonUnknownRemediation+": ") {
			t.Errorf("error %q does not start with its reason", err)
		}
	}
}

func TestRemediationOptionsValidate(t *testing.T) {
	tests := map[string]struct {
		change  func(*Options)
		wantErr bool
	}{
		"defaults":          {func(*Options) {}, false},
		"a zero minimum":    {func(o *Options) { o.MinReplicas = 0 }, false},
		"zero floors":       {func(o *Options) { o.CPUFloor, o.MemoryFloor = resource.Quantity{}, resource.Quantity{} }, false},
		"the zero value":    {func(o *Options) { *o = Options{} }, true},
		"min above max":     {func(o *Options) { o.MinReplicas, o.MaxReplicas = 5, 4 }, true},
		"a negative min":    {func(o *Options) { o.MinReplicas = -1 }, true},
		"a zero CPU step":   {func(o *Options) { o.CPUStep = resource.Quantity{} }, true},
		"a negative floor":  {func(o *Options) { o.MemoryFloor = resource.MustParse("-1Mi") }, true},
		"a negative memory": {func(o *Options) { o.MemoryStep = resource.MustParse("-1Mi") }, true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			o := DefaultOptions()
			tc.change(&o)
			err := o.Validate()
			if (err != nil) != tc.wantErr {
				t.Fatalf("Validate() = %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				// A configuration error is not the job's fault: it must not read as NotApplicable.
				if _, rerr := Remediate(job(), model.Remediation{Action: model.ScaleOut}, o); rerr == nil || errors.As(rerr, new(*NotApplicableError)) {
					t.Errorf("Remediate with invalid options = %v, want a plain error", rerr)
				}
			}
		})
	}
}

// FuzzRemediate feeds odd manifests and remediations: Remediate must never panic, and on
// success it returns as many manifests as it got, leaves the fixed manifests it is not about
// byte-for-byte alone, and every manifest it rewrote is still one object of the same identity.
func FuzzRemediate(f *testing.F) {
	seeds := []string{
		deploymentYAML, statefulSetYAML, daemonSetYAML, crdObjectYAML, configMapYAML,
		"", "null", "[]", "3", "{{{", "---\n---\n", "a: 1\n---\nb: 2\n",
		"apiVersion: apps/v1\nkind: Deployment\n",
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec: null\n",
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec: {replicas: \"3\"}\n",
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec: {replicas: 1e30}\n",
		"apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: w}\nspec: {template: {spec: {containers: [null]}}}\n",
		"apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: w}\nspec: {template: {spec: {containers: [{resources: [1]}]}}}\n",
		"apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: w}\nspec: {template: {spec: {containers: [{resources: {requests: {cpu: 1e308}, limits: {memory: 9223372036854775807}}}]}}}\n",
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec: {template: {spec: {containers: [{securityContext: {capabilities: {drop: ALL}}}], securityContext: {seccompProfile: 1}}}}\n",
		"apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec: {jobTemplate: [1]}\n",
		"apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: [x]}\nspec: {initContainers: {}}\n",
		"apiVersion: 1\nkind: {a: b}\nmetadata: 3\n",
	}
	actions := []model.SubType{model.ScaleOut, model.ScaleIn, model.ScaleUp, model.ScaleDown, model.Patch, model.Secure, model.Reallocation, "bogus"}
	for i, s := range seeds {
		f.Add(s, string(actions[i%len(actions)]), "", `{"spec":{"replicas":2}}`, "")
		f.Add(s, string(actions[(i+3)%len(actions)]), "Deployment/w", "metadata: {labels: {a: b}}", "img:1")
	}
	f.Fuzz(func(t *testing.T, manifest, action, workload, patch, image string) {
		in := manifests(namespaceYAML, manifest, configMapYAML, manifest)
		r := model.Remediation{Action: model.SubType(action), Workload: workload, Patch: patch, Image: image}
		out, err := Remediate(in, r, DefaultOptions())
		if err != nil {
			var na *NotApplicableError
			if !errors.As(err, &na) || na.Reason == "" || na.Message == "" {
				t.Fatalf("error %v is not a NotApplicableError with reason and message", err)
			}
			return
		}
		if len(out) != len(in) {
			t.Fatalf("got %d manifests, want %d", len(out), len(in))
		}
		fixed := []int{0, 2}
		if r.Action == model.Patch {
			// A patch may be about the ConfigMap; the Namespace only when named.
			fixed = []int{0}
			if workload != "" {
				fixed = nil
			}
		}
		for _, i := range fixed {
			if out[i].YamlString != in[i].YamlString {
				t.Errorf("manifest %d rewritten:\n%s", i, out[i].YamlString)
			}
		}
		for i := range in {
			if out[i].YamlString == in[i].YamlString {
				continue
			}
			before := parseObject(i, in[i].YamlString)
			after := parseObject(i, out[i].YamlString)
			if before.obj == nil || after.obj == nil {
				t.Fatalf("manifest %d rewritten from or to something that is not one object:\n%q\n→\n%q", i, in[i].YamlString, out[i].YamlString)
			}
			for _, path := range identity {
				b, _, _ := field(before.obj, path...)
				a, _, _ := field(after.obj, path...)
				if !reflect.DeepEqual(a, b) {
					t.Errorf("manifest %d: %v changed from %v to %v", i, path, b, a)
				}
			}
		}
		if r.Action == model.Secure || r.Action == model.Patch || r.Action == model.Reallocation {
			again, err := Remediate(out, r, DefaultOptions())
			if err != nil {
				t.Fatalf("second %s failed: %v", r.Action, err)
			}
			for i := range out {
				if again[i].YamlString != out[i].YamlString {
					t.Errorf("%s is not idempotent on manifest %d:\n%s", r.Action, i, cmp.Diff(out[i].YamlString, again[i].YamlString))
				}
			}
		}
	})
}

// TestRemediateRedeploy: redeploy changes nothing; the executor applies the same manifests
// again with its new fence.
func TestRemediateRedeploy(t *testing.T) {
	in := []model.PlainManifest{{YamlString: "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n"}, {YamlString: "not: [an object"}}
	out, err := Remediate(in, model.Remediation{Action: model.Redeploy}, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) || out[0] != in[0] || out[1] != in[1] {
		t.Errorf("redeploy changed the manifests: %v", out)
	}
}
