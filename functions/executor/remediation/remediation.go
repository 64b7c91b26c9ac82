// Package remediation turns an incompliance's remediation into new manifests for a job:
// scale-out/in, scale-up/down, patch and secure edit only the manifests they are about and
// keep every other manifest byte-for-byte as it was. It is pure: no I/O.
package remediation

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
	yamlv2 "go.yaml.in/yaml/v2"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/yaml"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// Reasons a remediation does not apply. They are Kubernetes condition reasons (CamelCase) and
// stable: clients and dashboards match on them.
const (
	// ReasonNoWorkload: the job (or the manifest it names) has nothing the action applies to.
	ReasonNoWorkload = "NoWorkload"
	// ReasonAtMinimum: every workload is already at the replica minimum or the resource floor.
	ReasonAtMinimum = "AtMinimum"
	// ReasonAtMaximum: every workload is already at the replica maximum.
	ReasonAtMaximum = "AtMaximum"
	// ReasonInvalidPatch: the patch is not a JSON merge patch (not JSON/YAML, or not an object).
	ReasonInvalidPatch = "InvalidPatch"
	// ReasonPatchChangesIdentity: the patch would change apiVersion, kind, name or namespace.
	ReasonPatchChangesIdentity = "PatchChangesIdentity"
	// ReasonUnknownRemediation: the action is not one this executor knows.
	ReasonUnknownRemediation = "UnknownRemediation"
	// ReasonWorkloadNotFound: no manifest of the job is the "Kind/name" the remediation names.
	ReasonWorkloadNotFound = "WorkloadNotFound"
	// ReasonAmbiguousWorkload: a patch names no manifest and the job has several it could mean,
	// or the name matches several manifests.
	ReasonAmbiguousWorkload = "AmbiguousWorkload"
	// ReasonInvalidWorkload: the workload is not of the form "Kind/name".
	ReasonInvalidWorkload = "InvalidWorkload"
	// ReasonInvalidManifest: a manifest the remediation is about cannot be read or edited
	// (not one YAML object, or a field of the wrong type such as replicas: "three").
	ReasonInvalidManifest = "InvalidManifest"
)

// Options are the steps and bounds of remediations (env-configured by the lead).
type Options struct {
	// MinReplicas and MaxReplicas bound scale-in and scale-out.
	MinReplicas, MaxReplicas int32
	// CPUStep and MemoryStep are what scale-up adds and scale-down removes per container.
	CPUStep, MemoryStep resource.Quantity
	// CPUFloor and MemoryFloor are the lowest requests and limits scale-down leaves.
	CPUFloor, MemoryFloor resource.Quantity
}

// DefaultOptions returns replicas within [1, 100], steps of 100m CPU and 100Mi
// memory, and floors of 100m CPU and 64Mi memory.
func DefaultOptions() Options {
	return Options{
		MinReplicas: 1,
		MaxReplicas: 100,
		CPUStep:     resource.MustParse("100m"),
		MemoryStep:  resource.MustParse("100Mi"),
		CPUFloor:    resource.MustParse("100m"),
		MemoryFloor: resource.MustParse("64Mi"),
	}
}

// Validate reports options no remediation can work with: they are a configuration error,
// not something a job can fix.
func (o Options) Validate() error {
	var errs []error
	if o.MinReplicas < 0 {
		errs = append(errs, fmt.Errorf("minimum replicas %d is negative", o.MinReplicas))
	}
	if o.MaxReplicas < 1 || o.MaxReplicas < o.MinReplicas {
		errs = append(errs, fmt.Errorf("maximum replicas %d must be at least 1 and at least the minimum %d", o.MaxReplicas, o.MinReplicas))
	}
	for _, q := range []struct {
		name     string
		q        resource.Quantity
		positive bool
	}{
		{"CPU step", o.CPUStep, true}, {"memory step", o.MemoryStep, true},
		{"CPU floor", o.CPUFloor, false}, {"memory floor", o.MemoryFloor, false},
	} {
		if s := q.q.Sign(); s < 0 || (q.positive && s == 0) {
			errs = append(errs, fmt.Errorf("%s %s must be positive", q.name, q.q.String()))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remediation options: %w", err)
	}
	return nil
}

// NotApplicableError says why a remediation cannot apply (no workload, already at a bound,
// a patch that is not a JSON merge patch, a patch that changes kind/name); the job goes
// Degraded with this reason; retrying cannot help. Remediate returns it as a
// *NotApplicableError (match it with errors.As).
type NotApplicableError struct{ Reason, Message string }

// Error returns the reason and the message.
func (e *NotApplicableError) Error() string { return e.Reason + ": " + e.Message }

func notApplicable(reason, format string, args ...any) error {
	return &NotApplicableError{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Remediate returns the job's manifests with the remediation applied. Every manifest the
// remediation is not about is returned byte-for-byte unchanged (same YamlString); only changed
// manifests are re-serialized. Reallocation is not a manifest change: return the manifests
// unchanged (the executor moves the work). An unknown action is a NotApplicableError.
//
// The actions follow Kubernetes' naming (the ICOS README and code disagreed):
//
//   - scale-out / scale-in: spec.replicas ±1 on Deployments and StatefulSets (absent replicas
//     count as 1). A workload already at MaxReplicas (out) or MinReplicas (in) is left alone;
//     if none changes the result is AtMaximum / AtMinimum.
//   - scale-up / scale-down: CPU ±CPUStep and memory ±MemoryStep on the requests of every
//     container of Deployments, StatefulSets and DaemonSets, and on the limits where a limit
//     is set; see scaleResources for containers without requests and for init containers.
//     Scale-down never goes below the floors; if nothing changes the result is AtMinimum.
//   - patch: r.Patch is a JSON merge patch (RFC 7386), as JSON or as YAML, applied to one
//     manifest; it may not change apiVersion, kind, metadata.name or metadata.namespace.
//   - secure: hardens every pod template; see secureManifest.
//   - reallocation: no manifest changes.
//   - redeploy: no manifest changes; the executor applies them again with a new fence.
//   - restart: the pod templates' restart annotation set to r.RestartedAt; see restart.
//
// r.Workload ("Kind/name", the kind case-insensitive) narrows any action to that manifest;
// empty means every manifest the action applies to, except for patch, which needs exactly one
// manifest: the job's only manifest, else its only workload, else AmbiguousWorkload.
// A manifest that is not one YAML object is nobody's workload: never edited, never matched
// by name (a patch on a job whose only manifest it is gets InvalidManifest). A workload the
// action is about with a field of the wrong type (replicas: "three", resources: [...]) is
// InvalidManifest. On any error no manifests are returned: nothing is half-remediated.
func Remediate(manifests []model.PlainManifest, r model.Remediation, opts Options) ([]model.PlainManifest, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	remediate, ok := remediations[r.Action]
	if !ok {
		return nil, notApplicable(ReasonUnknownRemediation, "unknown remediation %q; want one of %v", r.Action, model.SubTypes)
	}
	if remediate == nil {
		// Reallocation: the executor moves the work to another cluster; redeploy: it applies
		// the work again. Nothing to edit.
		return append([]model.PlainManifest(nil), manifests...), nil
	}
	objs := make([]*object, len(manifests))
	for i, m := range manifests {
		objs[i] = parseObject(i, m.YamlString)
	}
	// The actions edit the parsed objects in place: on an error none of them is returned.
	if err := remediate(objs, r, opts); err != nil {
		return nil, err
	}
	out := make([]model.PlainManifest, len(manifests))
	for i, o := range objs {
		out[i] = manifests[i]
		if !o.changed {
			continue
		}
		y, err := yaml.Marshal(o.obj)
		if err != nil {
			return nil, fmt.Errorf("serializing %s: %w", o, err)
		}
		out[i] = model.PlainManifest{YamlString: string(y)}
	}
	return out, nil
}

// remediations are the actions by name; nil means no manifest changes.
var remediations = map[model.SubType]func([]*object, model.Remediation, Options) error{
	model.ScaleOut:     scaleReplicas,
	model.ScaleIn:      scaleReplicas,
	model.ScaleUp:      scaleResources,
	model.ScaleDown:    scaleResources,
	model.Patch:        patchObject,
	model.Secure:       secure,
	model.Reallocation: nil,
	// Redeploy applies the same manifests again, with the new execution's fence.
	model.Redeploy: nil,
	model.Restart:  restart,
}

// object is one manifest of the job, parsed; obj is nil when it is not one YAML object.
type object struct {
	index   int
	obj     map[string]any
	group   string
	kind    string
	name    string
	changed bool
}

func (o *object) String() string {
	if o.obj == nil {
		return fmt.Sprintf("manifest %d", o.index)
	}
	return fmt.Sprintf("%s/%s (manifest %d)", o.kind, o.name, o.index)
}

// parseObject reads a manifest as one object. A YAML stream of several documents is not
// read: editing its first document and re-serializing would silently drop the others.
func parseObject(i int, s string) *object {
	o := &object{index: i}
	if docs, err := countDocuments(s); err != nil || docs != 1 {
		return o
	}
	j, err := yaml.YAMLToJSON([]byte(s))
	if err != nil {
		return o
	}
	var m map[string]any
	// apimachinery's json keeps integers as int64 (as unstructured objects have them), where
	// encoding/json would make every number a float64.
	if err := utiljson.Unmarshal(j, &m); err != nil || m == nil {
		return o
	}
	u := unstructured.Unstructured{Object: m}
	o.obj = m
	o.kind = u.GetKind()
	o.name = u.GetName()
	if g, _, ok := strings.Cut(u.GetAPIVersion(), "/"); ok {
		o.group = g
	}
	return o
}

// countDocuments counts the YAML documents of s that hold something.
func countDocuments(s string) (int, error) {
	dec := yamlv2.NewDecoder(strings.NewReader(s))
	n := 0
	for {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return 0, err
		}
		if v != nil {
			n++
		}
	}
}

// workloadKind says where a kind keeps its pod template and which actions apply to it.
type workloadKind struct {
	podSpec   []string
	replicas  bool // scale-out / scale-in
	resources bool // scale-up / scale-down
}

// workloadKinds are the kinds with a pod template, by API group and kind. Kinds are matched
// with their group so that a custom resource that happens to be called "Deployment" is not
// edited as one. extensions is the group of the long-gone v1beta1 workloads.
var workloadKinds = map[[2]string]workloadKind{
	{"apps", "Deployment"}:        {podSpec: templateSpec, replicas: true, resources: true},
	{"apps", "StatefulSet"}:       {podSpec: templateSpec, replicas: true, resources: true},
	{"apps", "DaemonSet"}:         {podSpec: templateSpec, resources: true},
	{"apps", "ReplicaSet"}:        {podSpec: templateSpec},
	{"extensions", "Deployment"}:  {podSpec: templateSpec, replicas: true, resources: true},
	{"extensions", "DaemonSet"}:   {podSpec: templateSpec, resources: true},
	{"extensions", "ReplicaSet"}:  {podSpec: templateSpec},
	{"batch", "Job"}:              {podSpec: templateSpec},
	{"batch", "CronJob"}:          {podSpec: []string{"spec", "jobTemplate", "spec", "template", "spec"}},
	{"", "Pod"}:                   {podSpec: []string{"spec"}},
	{"", "ReplicationController"}: {podSpec: templateSpec},
}

var templateSpec = []string{"spec", "template", "spec"}

func (o *object) workload() (workloadKind, bool) {
	if o.obj == nil {
		return workloadKind{}, false
	}
	w, ok := workloadKinds[[2]string{o.group, o.kind}]
	return w, ok
}

// targets picks the objects an action is about: those named by workload ("Kind/name"), or
// every one applies accepts when workload is empty. what names the accepted kinds for messages.
func targets(objs []*object, workload string, applies func(*object) bool, what string) ([]*object, error) {
	if workload == "" {
		var out []*object
		for _, o := range objs {
			if applies(o) {
				out = append(out, o)
			}
		}
		if len(out) == 0 {
			return nil, notApplicable(ReasonNoWorkload, "the job has no %s", what)
		}
		return out, nil
	}
	named, err := named(objs, workload)
	if err != nil {
		return nil, err
	}
	var out []*object
	for _, o := range named {
		if applies(o) {
			out = append(out, o)
		}
	}
	if len(out) == 0 {
		return nil, notApplicable(ReasonNoWorkload, "%s is not a %s", workload, what)
	}
	return out, nil
}

// named returns the readable objects that are workload ("Kind/name"; the kind may carry its
// group, "Deployment.apps/web", and is matched case-insensitively, as kubectl does).
func named(objs []*object, workload string) ([]*object, error) {
	kind, name, ok := strings.Cut(workload, "/")
	if !ok || kind == "" || name == "" || strings.Contains(name, "/") {
		return nil, notApplicable(ReasonInvalidWorkload, "workload %q is not of the form Kind/name", workload)
	}
	kind, group, hasGroup := strings.Cut(kind, ".")
	var out []*object
	for _, o := range objs {
		if o.obj != nil && strings.EqualFold(o.kind, kind) && o.name == name && (!hasGroup || o.group == group) {
			out = append(out, o)
		}
	}
	if len(out) == 0 {
		return nil, notApplicable(ReasonWorkloadNotFound, "the job has no manifest %s", workload)
	}
	if !hasGroup && len(out) > 1 {
		// As kubectl does, a bare kind means Kubernetes' own before a custom resource's.
		var builtins []*object
		for _, o := range out {
			if builtinGroup(o.group) {
				builtins = append(builtins, o)
			}
		}
		if len(builtins) > 0 {
			out = builtins
		}
	}
	return out, nil
}

// builtinGroup reports whether an API group is Kubernetes' own: custom resources' groups
// must contain a dot, and those of Kubernetes that do end in k8s.io.
func builtinGroup(g string) bool {
	return !strings.Contains(g, ".") || strings.HasSuffix(g, ".k8s.io")
}

// scaleReplicas is scale-out and scale-in.
func scaleReplicas(objs []*object, r model.Remediation, opts Options) error {
	ts, err := targets(objs, r.Workload, func(o *object) bool {
		w, ok := o.workload()
		return ok && w.replicas
	}, "Deployment or StatefulSet")
	if err != nil {
		return err
	}
	out := r.Action == model.ScaleOut
	type change struct {
		o *object
		n int64
	}
	var changes []change
	var atBound []string
	for _, o := range ts {
		cur, err := replicas(o)
		if err != nil {
			return err
		}
		switch {
		case out && cur >= int64(opts.MaxReplicas):
			atBound = append(atBound, fmt.Sprintf("%s has %d", o, cur))
		case !out && cur <= int64(opts.MinReplicas):
			atBound = append(atBound, fmt.Sprintf("%s has %d", o, cur))
		case out:
			changes = append(changes, change{o, cur + 1})
		default:
			changes = append(changes, change{o, cur - 1})
		}
	}
	if len(changes) == 0 {
		if out {
			return notApplicable(ReasonAtMaximum, "already at the maximum of %d replicas: %s", opts.MaxReplicas, strings.Join(atBound, ", "))
		}
		return notApplicable(ReasonAtMinimum, "already at the minimum of %d replicas: %s", opts.MinReplicas, strings.Join(atBound, ", "))
	}
	for _, c := range changes {
		spec, err := childMap(c.o.obj, "spec")
		if err != nil {
			return invalidManifest(c.o, err)
		}
		spec["replicas"] = c.n
		c.o.changed = true
	}
	return nil
}

// replicas reads spec.replicas; absent (or null) counts as 1, Kubernetes' default.
func replicas(o *object) (int64, error) {
	v, found, err := field(o.obj, "spec", "replicas")
	if err != nil {
		return 0, invalidManifest(o, err)
	}
	if !found {
		return 1, nil
	}
	n, ok := v.(int64)
	if !ok || n < 0 || n > maxInt32 {
		return 0, notApplicable(ReasonInvalidManifest, "%s: spec.replicas is %v, not a replica count", o, v)
	}
	return n, nil
}

const maxInt32 = 1<<31 - 1

// resourceStep is one resource scale-up and scale-down change.
type resourceStep struct {
	name        string
	step, floor resource.Quantity
}

// scaleResources is scale-up and scale-down. It changes the regular containers and the
// sidecars (init containers with restartPolicy Always), which run as long as the pod does;
// other init containers have exited before the load that triggered the incompliance, and
// shrinking them could break start-up, so they are left alone.
//
// Per container and resource (cpu, memory): the request moves by the step and so does the
// limit, if one is set; the limit never ends below the request. A container without a
// request but with a limit has, in Kubernetes, the limit as its request: that is the value
// moved. A container with neither gets a request of the step (scale-up) or of the floor
// (scale-down). Scale-down never goes below the floor, and never raises a value that is
// already below it.
func scaleResources(objs []*object, r model.Remediation, opts Options) error {
	ts, err := targets(objs, r.Workload, func(o *object) bool {
		w, ok := o.workload()
		return ok && w.resources
	}, "Deployment, StatefulSet or DaemonSet")
	if err != nil {
		return err
	}
	up := r.Action == model.ScaleUp
	steps := []resourceStep{
		{"cpu", opts.CPUStep, opts.CPUFloor},
		{"memory", opts.MemoryStep, opts.MemoryFloor},
	}
	containers, changed := 0, 0
	for _, o := range ts {
		w, _ := o.workload()
		spec, err := podSpec(o.obj, w)
		if err != nil {
			return invalidManifest(o, err)
		}
		cs, inits, err := podContainers(spec)
		if err != nil {
			return invalidManifest(o, err)
		}
		for _, c := range inits {
			if sidecar(c) {
				cs = append(cs, c)
			}
		}
		for _, c := range cs {
			containers++
			ch, err := scaleContainer(c, up, steps)
			if err != nil {
				return invalidManifest(o, err)
			}
			if ch {
				o.changed = true
				changed++
			}
		}
	}
	if containers == 0 {
		return notApplicable(ReasonNoWorkload, "the workloads have no containers")
	}
	if changed == 0 {
		// Scale-up always changes a container; only scale-down can find nothing to do.
		return notApplicable(ReasonAtMinimum, "every container is at the floor of %s CPU and %s memory", opts.CPUFloor.String(), opts.MemoryFloor.String())
	}
	return nil
}

// scaleContainer moves one container's requests and limits by the steps; it reports whether
// anything changed.
func scaleContainer(c map[string]any, up bool, steps []resourceStep) (bool, error) {
	res, err := optionalMap(c, "resources")
	if err != nil {
		return false, err
	}
	requests, err := optionalMap(res, "requests")
	if err != nil {
		return false, fmt.Errorf("resources: %w", err)
	}
	limits, err := optionalMap(res, "limits")
	if err != nil {
		return false, fmt.Errorf("resources: %w", err)
	}
	newRequests := map[string]resource.Quantity{}
	newLimits := map[string]resource.Quantity{}
	for _, s := range steps {
		req, hasReq, err := quantity(requests, s.name)
		if err != nil {
			return false, fmt.Errorf("resources.requests: %w", err)
		}
		lim, hasLim, err := quantity(limits, s.name)
		if err != nil {
			return false, fmt.Errorf("resources.limits: %w", err)
		}
		base, hasBase := req, hasReq
		if !hasReq && hasLim {
			base, hasBase = lim, true
		}
		var r, l resource.Quantity
		switch {
		case !hasBase && up:
			r = s.step.DeepCopy()
		case !hasBase:
			r = s.floor.DeepCopy()
		case up:
			r = add(base, s.step)
		default:
			r = lower(base, s.step, s.floor)
		}
		if hasLim {
			if up {
				l = add(lim, s.step)
			} else {
				l = lower(lim, s.step, s.floor)
			}
			if l.Cmp(r) < 0 {
				l = r.DeepCopy()
			}
			if l.Cmp(lim) != 0 {
				newLimits[s.name] = l
			}
		}
		if !hasReq || r.Cmp(req) != 0 {
			newRequests[s.name] = r
		}
	}
	if len(newRequests) == 0 && len(newLimits) == 0 {
		return false, nil
	}
	// Only the values that moved are written: untouched ones keep their spelling ("1" stays
	// "1", not "1000m").
	if res == nil {
		res = map[string]any{}
		c["resources"] = res
	}
	if len(newRequests) > 0 {
		if requests == nil {
			requests = map[string]any{}
			res["requests"] = requests
		}
		for k, q := range newRequests {
			requests[k] = q.String()
		}
	}
	for k, q := range newLimits {
		limits[k] = q.String()
	}
	return true, nil
}

func add(q, step resource.Quantity) resource.Quantity {
	q = q.DeepCopy()
	q.Add(step)
	return q
}

// lower is q - step, but not below floor, and never above q (a value already under the
// floor stays where it is: scale-down must not raise anything).
func lower(q, step, floor resource.Quantity) resource.Quantity {
	n := q.DeepCopy()
	n.Sub(step)
	if n.Cmp(floor) < 0 {
		n = floor.DeepCopy()
	}
	if n.Cmp(q) > 0 {
		n = q.DeepCopy()
	}
	return n
}

// quantity reads m[key] as a resource quantity; absent or null is not found. JSON numbers
// (cpu: 1) are quantities too, as the API server reads them.
func quantity(m map[string]any, key string) (resource.Quantity, bool, error) {
	v, ok := m[key]
	if !ok || v == nil {
		return resource.Quantity{}, false, nil
	}
	var s string
	switch v := v.(type) {
	case string:
		s = v
	case int64:
		s = strconv.FormatInt(v, 10)
	case float64:
		s = strconv.FormatFloat(v, 'f', -1, 64)
	default:
		return resource.Quantity{}, false, fmt.Errorf("%s is %T, not a quantity", key, v)
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return resource.Quantity{}, false, fmt.Errorf("%s: %w", key, err)
	}
	if q.Sign() < 0 {
		return resource.Quantity{}, false, fmt.Errorf("%s is negative (%s)", key, s)
	}
	return q, true, nil
}

// patchObject is patch: a JSON merge patch applied to the one manifest it is about.
func patchObject(objs []*object, r model.Remediation, _ Options) error {
	o, err := patchTarget(objs, r.Workload)
	if err != nil {
		return err
	}
	p, err := mergePatch(r.Patch)
	if err != nil {
		return err
	}
	doc, err := utiljson.Marshal(o.obj)
	if err != nil {
		return invalidManifest(o, err)
	}
	patched, err := jsonpatch.MergePatch(doc, p)
	if err != nil {
		return notApplicable(ReasonInvalidPatch, "applying the patch to %s: %v", o, err)
	}
	var obj map[string]any
	if err := utiljson.Unmarshal(patched, &obj); err != nil || obj == nil {
		return notApplicable(ReasonInvalidPatch, "the patched %s is not an object", o)
	}
	for _, path := range identity {
		before, _, _ := field(o.obj, path...)
		after, _, _ := field(obj, path...)
		if !reflect.DeepEqual(before, after) {
			return notApplicable(ReasonPatchChangesIdentity, "the patch changes %s of %s (from %v to %v); a remediation may not turn a manifest into another", strings.Join(path, "."), o, before, after)
		}
	}
	if reflect.DeepEqual(o.obj, obj) {
		// Already patched (a redelivered job): the manifest stays byte-for-byte as it is.
		return nil
	}
	o.obj = obj
	o.changed = true
	return nil
}

// identity are the fields that say which object a manifest is.
var identity = [][]string{{"apiVersion"}, {"kind"}, {"metadata", "name"}, {"metadata", "namespace"}}

// patchTarget is the manifest a patch is about: the one named, else the job's only manifest,
// else its only workload.
func patchTarget(objs []*object, workload string) (*object, error) {
	if workload != "" {
		ns, err := named(objs, workload)
		if err != nil {
			return nil, err
		}
		if len(ns) > 1 {
			return nil, notApplicable(ReasonAmbiguousWorkload, "%d manifests are %s (in several namespaces or API groups)", len(ns), workload)
		}
		return ns[0], nil
	}
	switch len(objs) {
	case 0:
		return nil, notApplicable(ReasonNoWorkload, "the job has no manifests to patch")
	case 1:
		if objs[0].obj == nil {
			return nil, notApplicable(ReasonInvalidManifest, "the job's only manifest is not one YAML object")
		}
		return objs[0], nil
	}
	var ws []*object
	for _, o := range objs {
		if _, ok := o.workload(); ok {
			ws = append(ws, o)
		}
	}
	if len(ws) != 1 {
		return nil, notApplicable(ReasonAmbiguousWorkload, "the patch names no workload and the job has %d manifests, %d of them workloads; name one as Kind/name", len(objs), len(ws))
	}
	return ws[0], nil
}

// mergePatch reads a JSON merge patch given as JSON or as YAML (JSON is YAML) and returns it
// as JSON; it must be an object, since a merge patch of anything else replaces the manifest.
func mergePatch(patch string) ([]byte, error) {
	if strings.TrimSpace(patch) == "" {
		return nil, notApplicable(ReasonInvalidPatch, "the patch is empty")
	}
	if docs, err := countDocuments(patch); err != nil || docs > 1 {
		return nil, notApplicable(ReasonInvalidPatch, "the patch is not one JSON or YAML document")
	}
	j, err := yaml.YAMLToJSON([]byte(patch))
	if err != nil {
		return nil, notApplicable(ReasonInvalidPatch, "the patch is neither JSON nor YAML: %v", err)
	}
	j = bytes.TrimSpace(j)
	if len(j) == 0 || j[0] != '{' {
		return nil, notApplicable(ReasonInvalidPatch, "the patch is %s, not a JSON merge patch object", abbreviate(string(j)))
	}
	return j, nil
}

func abbreviate(s string) string {
	if r := []rune(s); len(r) > 40 {
		return string(r[:40]) + "…"
	}
	return s
}

// secure hardens every pod template; see secureManifest.
func secure(objs []*object, r model.Remediation, _ Options) error {
	ts, err := targets(objs, r.Workload, func(o *object) bool {
		_, ok := o.workload()
		return ok
	}, "workload with a pod template")
	if err != nil {
		return err
	}
	for _, o := range ts {
		changed, err := secureManifest(o.obj, o, r.Image)
		if err != nil {
			return err
		}
		// Already hardened is success, not an error: secure describes a state, not a step.
		o.changed = o.changed || changed
	}
	return nil
}

// secureManifest makes a pod template meet the Pod Security "restricted" profile as far as
// the manifest can without knowing the image:
//
//   - pod: securityContext.runAsNonRoot true and seccompProfile.type RuntimeDefault (a
//     Localhost profile is kept: it is the operator's own, and restricted accepts it);
//   - every container and init container: allowPrivilegeEscalation false, privileged false
//     (the API server refuses privileged with allowPrivilegeEscalation false), capabilities
//     drop [ALL] (capabilities.add is kept), runAsNonRoot false and seccompProfile Unconfined
//     undone (they would override the pod's);
//   - image set to image on every regular container when image is set; init containers keep
//     theirs, as they usually run other tools than the application.
//
// Other fields stay as they are; runAsUser 0 is not rewritten (the kubelet then refuses to
// start the pod, which says more than a silently changed user would).
func secureManifest(obj map[string]any, o *object, image string) (bool, error) {
	w, _ := o.workload()
	spec, err := podSpec(obj, w)
	if err != nil {
		return false, invalidManifest(o, err)
	}
	changed := false
	set := func(m map[string]any, key string, v any) {
		if !reflect.DeepEqual(m[key], v) {
			m[key] = v
			changed = true
		}
	}
	psc, err := ensureMap(spec, "securityContext", &changed)
	if err != nil {
		return false, invalidManifest(o, err)
	}
	set(psc, "runAsNonRoot", true)
	sp, err := ensureMap(psc, "seccompProfile", &changed)
	if err != nil {
		return false, invalidManifest(o, err)
	}
	if sp["type"] != "Localhost" {
		set(sp, "type", "RuntimeDefault")
		if _, ok := sp["localhostProfile"]; ok {
			delete(sp, "localhostProfile")
			changed = true
		}
	}
	cs, inits, err := podContainers(spec)
	if err != nil {
		return false, invalidManifest(o, err)
	}
	for i, c := range append(cs, inits...) {
		if image != "" && i < len(cs) {
			set(c, "image", image)
		}
		sc, err := ensureMap(c, "securityContext", &changed)
		if err != nil {
			return false, invalidManifest(o, fmt.Errorf("container %v: %w", c["name"], err))
		}
		set(sc, "allowPrivilegeEscalation", false)
		if v, ok := sc["privileged"]; ok && v != false {
			set(sc, "privileged", false)
		}
		if v, ok := sc["runAsNonRoot"]; ok && v != true {
			set(sc, "runAsNonRoot", true)
		}
		if csp, ok := sc["seccompProfile"].(map[string]any); ok && csp["type"] != "Localhost" && csp["type"] != "RuntimeDefault" {
			set(csp, "type", "RuntimeDefault")
			if _, ok := csp["localhostProfile"]; ok {
				delete(csp, "localhostProfile")
			}
		}
		caps, err := ensureMap(sc, "capabilities", &changed)
		if err != nil {
			return false, invalidManifest(o, fmt.Errorf("container %v: %w", c["name"], err))
		}
		if !dropsAll(caps["drop"]) {
			set(caps, "drop", []any{"ALL"})
		}
	}
	return changed, nil
}

func dropsAll(v any) bool {
	l, _ := v.([]any)
	for _, c := range l {
		if c == "ALL" {
			return true
		}
	}
	return false
}

// podSpec returns the pod spec of a workload's template.
func podSpec(obj map[string]any, w workloadKind) (map[string]any, error) {
	v, found, err := field(obj, w.podSpec...)
	if err != nil {
		return nil, err
	}
	spec, ok := v.(map[string]any)
	if !found || !ok {
		return nil, fmt.Errorf("%s is not a pod spec", strings.Join(w.podSpec, "."))
	}
	return spec, nil
}

// podContainers returns the containers and the init containers of a pod spec.
func podContainers(spec map[string]any) (containers, inits []map[string]any, err error) {
	if containers, err = containerList(spec, "containers"); err != nil {
		return nil, nil, err
	}
	if inits, err = containerList(spec, "initContainers"); err != nil {
		return nil, nil, err
	}
	return containers, inits, nil
}

func containerList(spec map[string]any, key string) ([]map[string]any, error) {
	v, ok := spec[key]
	if !ok || v == nil {
		return nil, nil
	}
	l, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%s is %T, not a list", key, v)
	}
	out := make([]map[string]any, 0, len(l))
	for i, c := range l {
		m, ok := c.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s[%d] is %T, not a container", key, i, c)
		}
		out = append(out, m)
	}
	return out, nil
}

// sidecar reports whether an init container is a sidecar: it runs as long as the pod does.
func sidecar(c map[string]any) bool { return c["restartPolicy"] == "Always" }

// field returns the value at path; a missing or null step is not found, a step that is not
// an object is an error. (unstructured.NestedFieldNoCopy treats null as an error.)
func field(obj map[string]any, path ...string) (any, bool, error) {
	var cur any = obj
	for i, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false, fmt.Errorf("%s is %T, not an object", strings.Join(path[:i], "."), cur)
		}
		v, ok := m[p]
		if !ok || v == nil {
			return nil, false, nil
		}
		cur = v
	}
	return cur, true, nil
}

// childMap returns m[key] as an object, creating it when missing or null.
func childMap(m map[string]any, key string) (map[string]any, error) {
	var changed bool
	return ensureMap(m, key, &changed)
}

// ensureMap returns m[key] as an object, creating it (and setting *changed) when missing or
// null; any other value is an error.
func ensureMap(m map[string]any, key string, changed *bool) (map[string]any, error) {
	v, ok := m[key]
	if !ok || v == nil {
		c := map[string]any{}
		m[key] = c
		*changed = true
		return c, nil
	}
	c, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s is %T, not an object", key, v)
	}
	return c, nil
}

// optionalMap returns m[key] as an object, or nil when missing or null; m may be nil.
func optionalMap(m map[string]any, key string) (map[string]any, error) {
	v, ok := m[key]
	if !ok || v == nil {
		return nil, nil
	}
	c, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s is %T, not an object", key, v)
	}
	return c, nil
}

func invalidManifest(o *object, err error) error {
	return notApplicable(ReasonInvalidManifest, "%s: %v", o, err)
}
