package invariants

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// BaseAnnotation, on a Deployment the workload submits, is the spec it was submitted with
// (FormatSpec): the start from which its remediations are counted, kept on the manifest
// whatever the remediations change.
const BaseAnnotation = "chaos.ocm-jobs.io/base"

// Spec is what remediations change on a Deployment with one container: its replicas, and
// its CPU (millicores) and memory (bytes) requests and limits.
type Spec struct {
	Replicas              int64
	CPU, Memory           int64
	CPULimit, MemoryLimit int64
}

func (s Spec) String() string {
	return fmt.Sprintf("replicas=%d cpu=%dm memory=%dMi cpu-limit=%dm memory-limit=%dMi",
		s.Replicas, s.CPU, s.Memory>>20, s.CPULimit, s.MemoryLimit>>20)
}

// FormatSpec writes s as BaseAnnotation holds it.
func FormatSpec(s Spec) string {
	return fmt.Sprintf("replicas=%d,cpu=%dm,memory=%dMi,cpu-limit=%dm,memory-limit=%dMi",
		s.Replicas, s.CPU, s.Memory>>20, s.CPULimit, s.MemoryLimit>>20)
}

// ParseSpec reads what FormatSpec wrote.
func ParseSpec(v string) (Spec, error) {
	var s Spec
	for _, kv := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			return s, fmt.Errorf("%q: want key=value", kv)
		}
		q, err := resource.ParseQuantity(val)
		if err != nil {
			return s, fmt.Errorf("%s=%q: %w", k, val, err)
		}
		switch k {
		case "replicas":
			s.Replicas = q.Value()
		case "cpu":
			s.CPU = q.MilliValue()
		case "memory":
			s.Memory = q.Value()
		case "cpu-limit":
			s.CPULimit = q.MilliValue()
		case "memory-limit":
			s.MemoryLimit = q.Value()
		default:
			return s, fmt.Errorf("unknown key %q", k)
		}
	}
	return s, nil
}

// Steps are the remediation steps and bounds (the executor's REMEDIATION_* settings).
type Steps struct {
	MinReplicas, MaxReplicas int64
	// CPUStep and CPUFloor are millicores; MemoryStep and MemoryFloor bytes.
	CPUStep, MemoryStep   int64
	CPUFloor, MemoryFloor int64
}

// DefaultSteps are the executor's defaults: replicas in [1, 100], ±100m CPU and ±100Mi
// memory, floors 100m and 64Mi.
var DefaultSteps = Steps{MinReplicas: 1, MaxReplicas: 100, CPUStep: 100, MemoryStep: 100 << 20, CPUFloor: 100, MemoryFloor: 64 << 20}

// Remediate is s after one remediation, as the contract defines them (an independent
// model, not the executor's code): scale-out/in move replicas by one within the bounds;
// scale-up/down move requests and limits by the steps, never below the floors, and never a
// limit below its request. Other remediations leave s alone. changed is false when nothing
// moves (the executor then degrades the job instead).
func (st Steps) Remediate(s Spec, action model.SubType) (out Spec, changed bool) {
	out = s
	switch action {
	case model.ScaleOut:
		if s.Replicas < st.MaxReplicas {
			out.Replicas++
		}
	case model.ScaleIn:
		if s.Replicas > st.MinReplicas {
			out.Replicas--
		}
	case model.ScaleUp:
		out.CPU, out.CPULimit = s.CPU+st.CPUStep, s.CPULimit+st.CPUStep
		out.Memory, out.MemoryLimit = s.Memory+st.MemoryStep, s.MemoryLimit+st.MemoryStep
	case model.ScaleDown:
		out.CPU, out.CPULimit = lower(s.CPU, st.CPUStep, st.CPUFloor), lower(s.CPULimit, st.CPUStep, st.CPUFloor)
		out.Memory, out.MemoryLimit = lower(s.Memory, st.MemoryStep, st.MemoryFloor), lower(s.MemoryLimit, st.MemoryStep, st.MemoryFloor)
		out.CPULimit, out.MemoryLimit = max(out.CPULimit, out.CPU), max(out.MemoryLimit, out.Memory)
	}
	return out, out != s
}

// lower is v-step, not below floor, and never above v.
func lower(v, step, floor int64) int64 {
	return min(v, max(v-step, floor))
}

// deployment is the Deployment among a job's manifests: its spec and its base.
type deployment struct {
	name string
	spec Spec
	base Spec
}

// deploymentOf finds the Deployment among manifests; ok is false when there is none.
func deploymentOf(ms []model.PlainManifest) (d deployment, ok bool, err error) {
	for _, m := range ms {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(m.YamlString), &obj); err != nil {
			continue
		}
		u := unstructured.Unstructured{Object: obj}
		if u.GetKind() != "Deployment" {
			continue
		}
		d.name = u.GetName()
		if d.spec, err = SpecOf(obj); err != nil {
			return d, true, err
		}
		base, found := u.GetAnnotations()[BaseAnnotation]
		if !found {
			return d, true, fmt.Errorf("Deployment %s has no %s annotation", d.name, BaseAnnotation)
		}
		d.base, err = ParseSpec(base)
		return d, true, err
	}
	return d, false, nil
}

// SpecOf reads the Spec of a Deployment object (its first container).
func SpecOf(obj map[string]any) (Spec, error) {
	var s Spec
	s.Replicas = 1
	if r, found, err := unstructured.NestedFieldNoCopy(obj, "spec", "replicas"); err == nil && found {
		switch v := r.(type) {
		case int64:
			s.Replicas = v
		case float64:
			s.Replicas = int64(v)
		default:
			return s, fmt.Errorf("spec.replicas is %v", r)
		}
	}
	cs, _, err := unstructured.NestedSlice(obj, "spec", "template", "spec", "containers")
	if err != nil || len(cs) == 0 {
		return s, fmt.Errorf("no containers (%v)", err)
	}
	c, _ := cs[0].(map[string]any)
	read := func(section, name string, milli bool) (int64, error) {
		v, found, err := unstructured.NestedFieldNoCopy(c, "resources", section, name)
		if err != nil || !found {
			return 0, err
		}
		q, err := resource.ParseQuantity(fmt.Sprint(v))
		if err != nil {
			return 0, fmt.Errorf("resources.%s.%s: %w", section, name, err)
		}
		if milli {
			return q.MilliValue(), nil
		}
		return q.Value(), nil
	}
	for _, f := range []struct {
		dst           *int64
		section, name string
		milli         bool
	}{
		{&s.CPU, "requests", "cpu", true}, {&s.Memory, "requests", "memory", false},
		{&s.CPULimit, "limits", "cpu", true}, {&s.MemoryLimit, "limits", "memory", false},
	} {
		if *f.dst, err = read(f.section, f.name, f.milli); err != nil {
			return s, err
		}
	}
	return s, nil
}
