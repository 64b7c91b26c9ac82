package chaos

import (
	"fmt"
	"hash/fnv"
	"math/rand"

	"sigs.k8s.io/yaml"

	"github.com/ocm-jobs/ocm-jobs/tests/chaos/invariants"
)

// descriptor is the ICOS application descriptor of a group at a revision, with the given
// components: per component a Deployment (its submitted spec in invariants.BaseAnnotation, so
// the checks know where its remediations started) and a ConfigMap.
func descriptor(g GroupSpec, rev int, comps []ComponentSpec) ([]byte, error) {
	var components, manifests []any
	for _, c := range comps {
		comp := map[string]any{
			"name": c.Name, "type": "manifest",
			"manifests": []any{map[string]any{"name": c.Name}, map[string]any{"name": c.Name + "-config"}},
		}
		if c.Cluster != "" {
			comp["targets"] = map[string]any{"cluster_name": c.Cluster, "orchestrator": "ocm"}
		}
		components = append(components, comp)
		manifests = append(manifests, deployment(c, rev), map[string]any{
			"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": c.Name + "-config"},
			"data":     map[string]any{"component": c.Name, "rev": fmt.Sprint(rev)},
		})
	}
	d := map[string]any{
		"name": g.Name, "description": fmt.Sprintf("chaos group %d, revision %d", g.Index, rev),
		"components": components, "manifests": manifests,
	}
	if g.Placement != "" {
		d["placement"] = g.Placement
	}
	return yaml.Marshal(d)
}

func deployment(c ComponentSpec, rev int) map[string]any {
	s := c.Base
	labels := map[string]any{"app": c.Name}
	return map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": c.Name, "annotations": map[string]any{invariants.BaseAnnotation: invariants.FormatSpec(s)}},
		"spec": map[string]any{
			"replicas": s.Replicas,
			"selector": map[string]any{"matchLabels": labels},
			"template": map[string]any{
				"metadata": map[string]any{"labels": labels},
				"spec": map[string]any{"containers": []any{map[string]any{
					"name": "main", "image": fmt.Sprintf("registry.invalid/chaos/%s:%d", c.Name, rev),
					"resources": map[string]any{
						"requests": map[string]any{"cpu": fmt.Sprintf("%dm", s.CPU), "memory": fmt.Sprintf("%dMi", s.Memory>>20)},
						"limits":   map[string]any{"cpu": fmt.Sprintf("%dm", s.CPULimit), "memory": fmt.Sprintf("%dMi", s.MemoryLimit>>20)},
					},
				}}},
			},
		},
	}
}

// revised is a component at a later revision: a new submitted spec, drawn from the seed, the
// group, the component and the revision, so a plan's updates are as reproducible as the rest.
func revised(seed int64, g GroupSpec, c ComponentSpec, rev int) ComponentSpec {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%s/%s/%d", seed, g.Name, c.Name, rev)
	c.Base = randomSpec(rand.New(rand.NewSource(int64(h.Sum64()))))
	return c
}
