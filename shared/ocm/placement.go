package ocm

import (
	"context"
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clusterv1beta1 "open-cluster-management.io/api/cluster/v1beta1"
)

// LocalCluster is the name OCM gives the hub's self-managed cluster; a workload placed by
// ocm-jobs never goes there (as in rcs-ocm-deployer).
const LocalCluster = "local-cluster"

// PlacementRef names a Placement: "namespace/name", or "name" in a default namespace.
type PlacementRef struct {
	Namespace, Name string
}

// ParsePlacementRef reads "namespace/name" or "name".
func ParsePlacementRef(s, defaultNamespace string) (PlacementRef, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok {
		ns, name = defaultNamespace, s
	}
	if ns == "" || name == "" || strings.Contains(name, "/") {
		return PlacementRef{}, fmt.Errorf("placement %q: want namespace/name or name", s)
	}
	return PlacementRef{Namespace: ns, Name: name}, nil
}

func (p PlacementRef) String() string { return p.Namespace + "/" + p.Name }

// ErrNoDecision means a Placement has chosen no cluster (yet).
var ErrNoDecision = fmt.Errorf("the placement has not chosen any cluster")

// PlacementClusters returns the clusters a Placement has chosen, read from its
// PlacementDecisions (label cluster.open-cluster-management.io/placement=<name>), in order,
// without local-cluster and without duplicates.
func (h *Hub) PlacementClusters(ctx context.Context, p PlacementRef) ([]string, error) {
	out, _, err := h.PlacementDecided(ctx, p)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: %w", p, ErrNoDecision)
	}
	return out, nil
}

// PlacementDecided reads a Placement's decision with one LIST of its PlacementDecisions:
// the clusters chosen, in order, without local-cluster and without duplicates; decided is
// false when the Placement has no PlacementDecision at all (not evaluated yet, or gone), which
// is not the same as a decision of no cluster.
func (h *Hub) PlacementDecided(ctx context.Context, p PlacementRef) (clusters []string, decided bool, err error) {
	list, err := h.Cluster.ClusterV1beta1().PlacementDecisions(p.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: clusterv1beta1.PlacementLabel + "=" + p.Name,
	})
	if err != nil {
		return nil, false, fmt.Errorf("listing PlacementDecisions of %s: %w", p, err)
	}
	decisions := list.Items
	// Large decisions are split over objects named <placement>-decision-<n>: keep their
	// order (shorter names first puts -2 before -10).
	sort.SliceStable(decisions, func(i, j int) bool {
		a, b := decisions[i].Name, decisions[j].Name
		if len(a) != len(b) {
			return len(a) < len(b)
		}
		return a < b
	})
	var out []string
	seen := map[string]bool{}
	for _, d := range decisions {
		for _, c := range d.Status.Decisions {
			if c.ClusterName == "" || c.ClusterName == LocalCluster || seen[c.ClusterName] {
				continue
			}
			seen[c.ClusterName] = true
			out = append(out, c.ClusterName)
		}
	}
	return out, len(decisions) > 0, nil
}
