package jobs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"knative.dev/pkg/apis"
	"sigs.k8s.io/yaml"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// Application is a parsed application descriptor: what becomes a job group.
type Application struct {
	Name        string
	Description string
	// Namespace is where the components' namespaced objects land on the managed cluster.
	Namespace string
	// Placement is the OCM Placement that picks clusters for components without targets.
	Placement  string
	Components []Component
	// Rollout is how a change spanning several clusters is rolled out (nil: all at once).
	Rollout *model.RolloutStrategy
}

// Component is one job to be: a named set of Kubernetes objects and, maybe, where they go.
type Component struct {
	Name    string
	Objects []*unstructured.Unstructured
	Targets *model.Target
	// MoreTargets are the clusters beyond Targets when the descriptor lists several: the
	// component runs on each, one job (and ManifestWork) per cluster.
	MoreTargets []*model.Target
	Placement   string
	// Bound is the Placement ("namespace/name") the component's clusters come from, when one
	// chose them: the status sync tick follows its decisions (statussync/placement.go).
	Bound string
}

// AllTargets are the clusters the descriptor names for the component (none: a Placement or
// the matchmaker decides).
func (c Component) AllTargets() []*model.Target {
	if c.Targets == nil {
		return nil
	}
	return append([]*model.Target{c.Targets}, c.MoreTargets...)
}

// Manifests returns the component's objects as ICOS plain manifests (YAML each).
func (c Component) Manifests() ([]model.PlainManifest, error) {
	out := make([]model.PlainManifest, 0, len(c.Objects))
	for _, o := range c.Objects {
		y, err := yaml.Marshal(o.Object)
		if err != nil {
			return nil, err
		}
		out = append(out, model.PlainManifest{YamlString: string(y)})
	}
	return out, nil
}

// icosDescriptor is the ICOS application descriptor: components reference the top-level
// manifests by metadata.name.
type icosDescriptor struct {
	Name        string                 `json:"name"`
	Description string                 `json:"description"`
	Namespace   string                 `json:"namespace"`
	Placement   string                 `json:"placement"`
	Rollout     *model.RolloutStrategy `json:"rollout,omitempty"`
	Components  []icosComponent        `json:"components"`
	Manifests   []map[string]any       `json:"manifests"`
}

type icosComponent struct {
	Name      string                  `json:"name"`
	Type      string                  `json:"type"`
	Manifests []struct{ Name string } `json:"manifests"`
	// Targets is one object in ICOS; a one-element list is accepted too.
	Targets      any    `json:"targets"`
	Placement    string `json:"placement"`
	Requirements any    `json:"requirements,omitempty"`
	Policies     any    `json:"policies,omitempty"`
}

// workloadKinds get a component each in a plain multi-document descriptor.
var workloadKinds = map[string]bool{
	"Deployment": true, "StatefulSet": true, "DaemonSet": true, "Job": true, "CronJob": true,
	"ReplicaSet": true, "Pod": true,
}

// Limits bound the work one descriptor may cause: components share top-level manifests by
// reference, and every reference becomes a copy in a job, so a small descriptor could expand
// into thousands of jobs and gigabytes.
type Limits struct {
	// Components is the most components (jobs) one group may have.
	Components int
	// ComponentManifests is the most manifests one component may have.
	ComponentManifests int
	// ExpandedBytes is the most bytes all components' manifests may total, every reference to
	// a shared manifest counted (what the jobs will hold).
	ExpandedBytes int
}

// DefaultLimits are the limits of MAX_COMPONENTS, MAX_COMPONENT_MANIFESTS, MAX_EXPANDED_BYTES.
var DefaultLimits = Limits{Components: 100, ComponentManifests: 100, ExpandedBytes: 8 << 20}

// ParseDescriptor is Parse with the default limits.
func ParseDescriptor(data []byte) (*Application, *apis.FieldError) {
	return DefaultLimits.Parse(data)
}

// Parse reads an application descriptor, YAML or JSON: either the ICOS application
// descriptor (name, components referencing top-level manifests by name), or a plain
// multi-document YAML of Kubernetes objects (one component per workload). Manifests of any
// kind are kept. Every problem is reported at once, with its path; a descriptor beyond the
// limits is refused before any manifest is copied.
func (l Limits) Parse(data []byte) (*Application, *apis.FieldError) {
	docs, err := splitDocuments(data)
	if err != nil {
		return nil, &apis.FieldError{Message: "the descriptor does not parse as YAML or JSON: " + err.Error(), Paths: []string{apis.CurrentField}}
	}
	if len(docs) == 0 {
		return nil, &apis.FieldError{Message: "the descriptor is empty", Paths: []string{apis.CurrentField}}
	}
	if cs, ok := docs[0]["components"]; ok {
		if list, _ := cs.([]any); l.Components > 0 && len(list) > l.Components {
			return nil, tooMany(len(list), l.Components, "components", "MAX_COMPONENTS")
		}
		head := docs[0]
		if len(docs) > 1 {
			// Layout C (the icos-shell, Oct 2024): a header document with the components,
			// then one document per Kubernetes object: they are the manifests.
			if l.Components > 0 && len(docs)-1 > l.Components*l.ComponentManifests {
				return nil, tooMany(len(docs)-1, l.Components*l.ComponentManifests, "documents", "MAX_COMPONENTS × MAX_COMPONENT_MANIFESTS")
			}
			head = make(map[string]any, len(docs[0]))
			for k, v := range docs[0] {
				head[k] = v
			}
			ms, _ := head["manifests"].([]any)
			for _, d := range docs[1:] {
				ms = append(ms, d)
			}
			head["manifests"] = ms
		}
		return l.parseICOS(head)
	}
	if l.Components > 0 && len(docs) > l.Components*l.ComponentManifests {
		return nil, tooMany(len(docs), l.Components*l.ComponentManifests, "documents", "MAX_COMPONENTS × MAX_COMPONENT_MANIFESTS")
	}
	app, ferr := parsePlain(docs)
	if ferr != nil {
		return nil, ferr
	}
	return app, l.check(app)
}

// check applies the limits to a parsed application (a plain descriptor has no sharing: its
// size is its own).
func (l Limits) check(app *Application) *apis.FieldError {
	var errs *apis.FieldError
	if l.Components > 0 && len(app.Components) > l.Components {
		errs = errs.Also(tooMany(len(app.Components), l.Components, "components", "MAX_COMPONENTS"))
	}
	total := 0
	for i, c := range app.Components {
		if l.ComponentManifests > 0 && len(c.Objects) > l.ComponentManifests {
			errs = errs.Also(tooMany(len(c.Objects), l.ComponentManifests, "manifests", "MAX_COMPONENT_MANIFESTS").ViaFieldIndex("components", i))
		}
		for _, o := range c.Objects {
			b, _ := o.MarshalJSON()
			total += len(b)
		}
	}
	return errs.Also(l.checkBytes(total))
}

func (l Limits) checkBytes(total int) *apis.FieldError {
	if l.ExpandedBytes > 0 && total > l.ExpandedBytes {
		return &apis.FieldError{Message: fmt.Sprintf("the components' manifests total %d bytes, every shared manifest counted once per component that references it; the limit is %d (MAX_EXPANDED_BYTES)", total, l.ExpandedBytes),
			Paths: []string{"components"}}
	}
	return nil
}

func tooMany(n, limit int, what, knob string) *apis.FieldError {
	return &apis.FieldError{Message: fmt.Sprintf("%d %s; the limit is %d (%s)", n, what, limit, knob), Paths: []string{what}}
}

// splitDocuments decodes every YAML (or JSON) document into a map; empty documents are dropped.
func splitDocuments(data []byte) ([]map[string]any, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs []map[string]any
	for i := 1; ; i++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		var doc any
		if err := yaml.Unmarshal(raw, &doc); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if doc == nil {
			continue
		}
		m, ok := doc.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("document %d is a %T, not a mapping", i, doc)
		}
		docs = append(docs, m)
	}
}

func (l Limits) parseICOS(doc map[string]any) (*Application, *apis.FieldError) {
	raw, err := yaml.Marshal(doc)
	if err != nil {
		return nil, &apis.FieldError{Message: err.Error(), Paths: []string{apis.CurrentField}}
	}
	var d icosDescriptor
	if err := yaml.UnmarshalStrict(raw, &d); err != nil {
		// Unknown fields are not fatal (ICOS descriptors carry more than we use); wrong
		// types are.
		if err2 := yaml.Unmarshal(raw, &d); err2 != nil {
			return nil, &apis.FieldError{Message: "the descriptor has a field of the wrong type: " + err2.Error(), Paths: []string{apis.CurrentField}}
		}
	}
	app := &Application{Name: d.Name, Description: d.Description, Namespace: d.Namespace, Placement: d.Placement, Rollout: d.Rollout}
	var errs *apis.FieldError
	if d.Name == "" {
		errs = errs.Also(apis.ErrMissingField("name"))
	} else if msgs := validation.IsDNS1123Label(d.Name); len(msgs) > 0 {
		errs = errs.Also(apis.ErrInvalidValue(d.Name, "name", strings.Join(msgs, "; ")))
	}
	if d.Namespace != "" {
		if msgs := validation.IsDNS1123Label(d.Namespace); len(msgs) > 0 {
			errs = errs.Also(apis.ErrInvalidValue(d.Namespace, "namespace", strings.Join(msgs, "; ")))
		}
	}
	if len(d.Components) == 0 {
		errs = errs.Also(apis.ErrMissingField("components"))
	}

	// Top-level manifests, by metadata.name.
	byName := map[string]*unstructured.Unstructured{}
	dupes := map[string]int{}
	for i, m := range d.Manifests {
		// Layout B (the icos-shell, Apr 2025): {name, manifest: <the object>}, referenced
		// by that name; layouts A and C: the object itself, referenced by metadata.name.
		var name string
		if inner, ok := m["manifest"].(map[string]any); ok && len(m) <= 2 {
			m = inner
			name, _ = d.Manifests[i]["name"].(string)
		}
		obj, ferr := toObject(m)
		if ferr != nil {
			if name != "" {
				ferr = ferr.ViaField("manifest")
			}
			errs = errs.Also(ferr.ViaFieldIndex("manifests", i))
			continue
		}
		if name == "" {
			name = obj.GetName()
		}
		if _, seen := byName[name]; seen {
			dupes[name]++
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("manifest name %q is used by more than one manifest; components reference manifests by name", name), "metadata.name").ViaFieldIndex("manifests", i))
			continue
		}
		byName[name] = obj
	}

	// The limits, before any manifest is copied: each reference will be a copy.
	if l.Components > 0 && len(d.Components) > l.Components {
		return nil, errs.Also(tooMany(len(d.Components), l.Components, "components", "MAX_COMPONENTS"))
	}
	sizes := map[string]int{}
	for name, obj := range byName {
		b, _ := obj.MarshalJSON()
		sizes[name] = len(b)
	}
	total := 0
	var limited *apis.FieldError
	for i, c := range d.Components {
		if l.ComponentManifests > 0 && len(c.Manifests) > l.ComponentManifests {
			limited = limited.Also(tooMany(len(c.Manifests), l.ComponentManifests, "manifests", "MAX_COMPONENT_MANIFESTS").ViaFieldIndex("components", i))
		}
		for _, ref := range c.Manifests {
			total += sizes[ref.Name]
		}
	}
	if limited = limited.Also(l.checkBytes(total)); limited != nil {
		return nil, errs.Also(limited)
	}

	seen := map[string]int{}
	for i, c := range d.Components {
		var cerrs *apis.FieldError
		comp := Component{Name: c.Name, Placement: c.Placement}
		switch {
		case c.Name == "":
			cerrs = cerrs.Also(apis.ErrMissingField("name"))
		case len(validation.IsValidLabelValue(c.Name)) > 0 || len(validation.IsDNS1123Label(c.Name)) > 0:
			cerrs = cerrs.Also(apis.ErrInvalidValue(c.Name, "name", "a component name must be a DNS-1123 label (lower case letters, digits and '-', at most 63 characters)"))
		default:
			if j, dup := seen[c.Name]; dup {
				cerrs = cerrs.Also(apis.ErrGeneric(fmt.Sprintf("duplicate component name %q (also components[%d])", c.Name, j), "name"))
			}
			seen[c.Name] = i
		}
		if c.Type != "" && c.Type != "manifest" {
			cerrs = cerrs.Also(apis.ErrInvalidValue(c.Type, "type", "only components of type manifest are deployed"))
		}
		if len(c.Manifests) == 0 {
			cerrs = cerrs.Also(apis.ErrMissingField("manifests"))
		}
		for j, ref := range c.Manifests {
			obj, ok := byName[ref.Name]
			switch {
			case ref.Name == "":
				cerrs = cerrs.Also(apis.ErrMissingField("name").ViaFieldIndex("manifests", j))
			case !ok && dupes[ref.Name] == 0:
				cerrs = cerrs.Also(apis.ErrGeneric(fmt.Sprintf("references manifest %q, which is not among the descriptor's manifests", ref.Name), "name").ViaFieldIndex("manifests", j))
			case ok:
				comp.Objects = append(comp.Objects, obj.DeepCopy())
			}
		}
		ts, terr := toTargets(c.Targets)
		cerrs = cerrs.Also(terr)
		if len(ts) > 0 {
			comp.Targets, comp.MoreTargets = ts[0], ts[1:]
		}
		errs = errs.Also(cerrs.ViaFieldIndex("components", i))
		app.Components = append(app.Components, comp)
	}
	if d.Rollout != nil {
		// The canary must be one of the clusters named; a Placement's are checked once known.
		errs = errs.Also(d.Rollout.Validate(namedClusters(app.Components)).ViaField("rollout"))
	}
	if errs != nil {
		return nil, errs
	}
	return app, nil
}

// toTargets reads a component's targets: one object (one cluster, as in ICOS), or a list of
// them (one job per cluster; a cluster named twice is refused).
func toTargets(v any) ([]*model.Target, *apis.FieldError) {
	list, ok := v.([]any)
	if !ok || len(list) <= 1 {
		t, ferr := toTarget(v)
		if t == nil {
			return nil, ferr
		}
		return []*model.Target{t}, ferr
	}
	var out []*model.Target
	var errs *apis.FieldError
	seen := map[string]int{}
	for i, e := range list {
		t, ferr := toTarget(e)
		if ferr != nil {
			errs = errs.Also(ferr.ViaIndex(i))
			continue
		}
		if t == nil {
			errs = errs.Also(apis.ErrMissingField("cluster_name").ViaFieldIndex("targets", i))
			continue
		}
		if j, dup := seen[t.ClusterName]; dup {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("cluster %s is named twice (also targets[%d])", t.ClusterName, j), "cluster_name").ViaFieldIndex("targets", i))
			continue
		}
		seen[t.ClusterName] = i
		out = append(out, t)
	}
	if errs != nil {
		return nil, errs
	}
	return out, nil
}

// toTarget reads one target: an object, or a list of one.
func toTarget(v any) (*model.Target, *apis.FieldError) {
	if v == nil {
		return nil, nil
	}
	if list, ok := v.([]any); ok {
		switch len(list) {
		case 0:
			return nil, nil
		case 1:
			v = list[0]
		default:
			return nil, apis.ErrGeneric(fmt.Sprintf("%d targets where one is expected", len(list)), "targets")
		}
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, apis.ErrInvalidValue(fmt.Sprint(v), "targets", "want an object with cluster_name and orchestrator")
	}
	t := &model.Target{Orchestrator: model.OCM}
	var errs *apis.FieldError
	for k, val := range m {
		s, isString := val.(string)
		if !isString {
			errs = errs.Also(apis.ErrInvalidValue(fmt.Sprint(val), k, "want a string").ViaField("targets"))
			continue
		}
		switch k {
		case "cluster_name":
			t.ClusterName = s
		case "node_name":
			t.NodeName = s
		case "orchestrator":
			t.Orchestrator = model.Orchestrator(s)
		}
	}
	if errs != nil {
		return nil, errs
	}
	if t.ClusterName == "" && t.NodeName == "" && len(m) == 0 {
		return nil, nil
	}
	if ferr := t.Validate(); ferr != nil {
		return nil, ferr.ViaField("targets")
	}
	if msgs := validation.IsDNS1123Label(t.ClusterName); len(msgs) > 0 {
		return nil, apis.ErrInvalidValue(t.ClusterName, "cluster_name", "a managed cluster name is a DNS-1123 label").ViaField("targets")
	}
	return t, nil
}

// toObject checks that a manifest is a Kubernetes object: apiVersion, kind, metadata.name.
func toObject(m map[string]any) (*unstructured.Unstructured, *apis.FieldError) {
	obj := &unstructured.Unstructured{Object: m}
	var errs *apis.FieldError
	if s, ok := m["apiVersion"].(string); !ok || s == "" {
		errs = errs.Also(apis.ErrMissingField("apiVersion"))
	}
	if s, ok := m["kind"].(string); !ok || s == "" {
		errs = errs.Also(apis.ErrMissingField("kind"))
	}
	md, ok := m["metadata"].(map[string]any)
	if !ok {
		errs = errs.Also(apis.ErrMissingField("metadata.name"))
	} else if s, ok := md["name"].(string); !ok || s == "" {
		errs = errs.Also(apis.ErrMissingField("metadata.name"))
	} else if msgs := validation.IsDNS1123Subdomain(s); len(msgs) > 0 {
		errs = errs.Also(apis.ErrInvalidValue(s, "metadata.name", strings.Join(msgs, "; ")))
	}
	if errs != nil {
		return nil, errs
	}
	return obj, nil
}

// parsePlain reads a multi-document YAML of Kubernetes objects: each workload becomes a
// component named after it, with the non-workload objects it references (ConfigMaps,
// Secrets, ServiceAccounts, PVCs by name; Services by selector). Objects no single workload
// claims (referenced by none, or by several) form a component of their own,
// `<app>-shared`, so every object has exactly one owner.
func parsePlain(docs []map[string]any) (*Application, *apis.FieldError) {
	var errs *apis.FieldError
	var objs []*unstructured.Unstructured
	for i, d := range docs {
		obj, ferr := toObject(d)
		if ferr != nil {
			errs = errs.Also(ferr.ViaFieldIndex("documents", i))
			continue
		}
		objs = append(objs, obj)
	}
	if errs != nil {
		return nil, errs
	}
	var workloads []*unstructured.Unstructured
	for _, o := range objs {
		if workloadKinds[o.GetKind()] {
			workloads = append(workloads, o)
		}
	}
	app := &Application{Name: appName(objs, workloads)}
	if ns := commonNamespace(objs); ns != "" {
		app.Namespace = ns
	}
	if msgs := validation.IsDNS1123Label(app.Name); len(msgs) > 0 {
		return nil, apis.ErrInvalidValue(app.Name, "name", "the application name (annotation app.icos.eu/name, label app.kubernetes.io/part-of, or the first workload's name) must be a DNS-1123 label")
	}
	index := map[string]int{}
	seen := map[string]bool{}
	for _, w := range workloads {
		name := w.GetName()
		if seen[name] {
			// Two workloads of different kinds with one name: make the component name unique.
			name = strings.ToLower(w.GetKind()) + "-" + name
		}
		seen[name] = true
		index[w.GetKind()+"/"+w.GetNamespace()+"/"+w.GetName()] = len(app.Components)
		app.Components = append(app.Components, Component{Name: name, Objects: []*unstructured.Unstructured{w}})
	}
	var shared []*unstructured.Unstructured
	for _, o := range objs {
		if workloadKinds[o.GetKind()] {
			continue
		}
		owner := -1
		for _, w := range workloads {
			if references(w, o) {
				i := index[w.GetKind()+"/"+w.GetNamespace()+"/"+w.GetName()]
				if owner >= 0 && owner != i {
					owner = -2 // referenced by two workloads: shared
					break
				}
				owner = i
			}
		}
		if owner >= 0 {
			app.Components[owner].Objects = append(app.Components[owner].Objects, o)
		} else {
			shared = append(shared, o)
		}
	}
	if len(shared) > 0 {
		name := app.Name + "-shared"
		if len(app.Components) == 0 {
			name = app.Name
		}
		app.Components = append(app.Components, Component{Name: name, Objects: shared})
	}
	return app, nil
}

func appName(objs, workloads []*unstructured.Unstructured) string {
	for _, o := range objs {
		if n := o.GetAnnotations()["app.icos.eu/name"]; n != "" {
			return n
		}
		if n := o.GetLabels()["app.kubernetes.io/part-of"]; n != "" {
			return n
		}
	}
	if len(workloads) > 0 {
		return workloads[0].GetName()
	}
	return objs[0].GetName()
}

func commonNamespace(objs []*unstructured.Unstructured) string {
	ns := ""
	for _, o := range objs {
		if n := o.GetNamespace(); n != "" {
			if ns != "" && ns != n {
				return ""
			}
			ns = n
		}
	}
	return ns
}

// references reports whether workload w uses object o: by name for ConfigMaps, Secrets,
// ServiceAccounts and PersistentVolumeClaims anywhere in its pod template, by selector for
// Services.
func references(w, o *unstructured.Unstructured) bool {
	if o.GetNamespace() != "" && w.GetNamespace() != "" && o.GetNamespace() != w.GetNamespace() {
		return false
	}
	tmpl := podTemplate(w)
	if tmpl == nil {
		return false
	}
	switch o.GetKind() {
	case "Service":
		sel, _, _ := unstructured.NestedStringMap(o.Object, "spec", "selector")
		if len(sel) == 0 {
			return false
		}
		labels, _, _ := unstructured.NestedStringMap(tmpl, "metadata", "labels")
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return true
	case "ConfigMap", "Secret", "ServiceAccount", "PersistentVolumeClaim":
		raw, err := yaml.Marshal(tmpl)
		if err != nil {
			return false
		}
		return mentions(string(raw), o.GetName())
	}
	return false
}

// mentions reports whether a YAML document has a scalar equal to name.
func mentions(doc, name string) bool {
	for _, line := range strings.Split(doc, "\n") {
		_, v, ok := strings.Cut(line, ": ")
		if ok && strings.Trim(strings.TrimSpace(v), `"'`) == name {
			return true
		}
	}
	return false
}

// podTemplate returns the pod template of a workload (a Pod is its own template).
func podTemplate(w *unstructured.Unstructured) map[string]any {
	switch w.GetKind() {
	case "Pod":
		return w.Object
	case "CronJob":
		t, _, _ := unstructured.NestedMap(w.Object, "spec", "jobTemplate", "spec", "template")
		return t
	default:
		t, _, _ := unstructured.NestedMap(w.Object, "spec", "template")
		return t
	}
}

// namedClusters lists the clusters the components name, or nil when one of them names none
// (a Placement or the matchmaker decides it).
func namedClusters(cs []Component) []string {
	var out []string
	for _, c := range cs {
		if c.Targets == nil {
			return nil
		}
		for _, t := range c.AllTargets() {
			out = append(out, t.ClusterName)
		}
	}
	return out
}
