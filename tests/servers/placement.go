package servers

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clusterv1beta1 "open-cluster-management.io/api/cluster/v1beta1"
	clusterv1beta2 "open-cluster-management.io/api/cluster/v1beta2"
)

// PlacementNamespace is where the placement controller keeps its own state on the hub.
const PlacementNamespace = "open-cluster-management-hub"

// PlacementController is OCM's own placement controller (open-cluster-management.io/ocm
// cmd/placement, built by tests/tools/install.sh next to the work agent) running against a
// hub: it evaluates Placements (cluster sets bound to their namespace, predicates,
// numberOfClusters) and writes their PlacementDecisions, as on a real hub.
type PlacementController struct {
	Hub  *Hub
	proc *Process
}

// StartPlacement starts the placement controller against hub. It returns once the
// controller has decided a probe Placement (an empty cluster set: it answers with zero
// clusters), so a broken controller fails here.
func StartPlacement(ctx context.Context, hub *Hub) (*PlacementController, error) {
	bin, err := Bin("placement")
	if err != nil {
		return nil, err
	}
	if err := hub.EnsureNamespace(ctx, PlacementNamespace); err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	p, err := startProcess("placement controller", filepath.Join(hub.Dir, "placement-controller.log"), nil, bin,
		"controller", "--kubeconfig="+hub.Kubeconfig, "--namespace="+PlacementNamespace,
		"--disable-leader-election", fmt.Sprintf("--listen=127.0.0.1:%d", port))
	if err != nil {
		return nil, err
	}
	c := &PlacementController{Hub: hub, proc: p}
	if err := c.probe(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// probe creates a Placement in the controller's namespace, which no cluster set is bound
// to, and waits until the controller reports it scheduled (no cluster chosen).
func (c *PlacementController) probe(ctx context.Context) error {
	placements := c.Hub.OCM.ClusterV1beta1().Placements(PlacementNamespace)
	pl := &clusterv1beta1.Placement{ObjectMeta: metav1.ObjectMeta{Name: "ocm-jobs-placement-probe"}}
	if _, err := placements.Create(ctx, pl, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating probe Placement: %w", err)
	}
	err := waitFor(ctx, c.proc, 90*time.Second, func(ctx context.Context) error {
		got, err := placements.Get(ctx, pl.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(got.Status.Conditions) == 0 {
			return fmt.Errorf("probe Placement has no conditions yet")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("the placement controller did not evaluate a probe Placement: %w", err)
	}
	return placements.Delete(ctx, pl.Name, metav1.DeleteOptions{})
}

// Log is the path of the controller's log.
func (c *PlacementController) Log() string { return c.proc.Log }

// Stop stops the controller.
func (c *PlacementController) Stop() {
	if c != nil {
		c.proc.Stop(10 * time.Second)
	}
}

// ClusterSet creates (or keeps) a ManagedClusterSet of the clusters labelled
// cluster.open-cluster-management.io/clusterset=<name> (OCM's exclusive cluster set label),
// labels the clusters listed into it, and binds it to namespace, so Placements there may
// choose its clusters.
func ClusterSet(ctx context.Context, hub *Hub, name, namespace string, clusters ...string) error {
	set := &clusterv1beta2.ManagedClusterSet{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := hub.OCM.ClusterV1beta2().ManagedClusterSets().Create(ctx, set, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating ManagedClusterSet %s: %w", name, err)
	}
	if err := hub.EnsureNamespace(ctx, namespace); err != nil {
		return err
	}
	binding := &clusterv1beta2.ManagedClusterSetBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec:       clusterv1beta2.ManagedClusterSetBindingSpec{ClusterSet: name},
	}
	if _, err := hub.OCM.ClusterV1beta2().ManagedClusterSetBindings(namespace).Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating ManagedClusterSetBinding %s/%s: %w", namespace, name, err)
	}
	for _, cl := range clusters {
		if err := LabelCluster(ctx, hub, cl, map[string]string{clusterv1beta2.ClusterSetLabel: name}); err != nil {
			return err
		}
	}
	return nil
}

// LabelCluster sets (value non-empty) or removes (value empty) labels of a ManagedCluster.
func LabelCluster(ctx context.Context, hub *Hub, cluster string, labels map[string]string) error {
	mcs := hub.OCM.ClusterV1().ManagedClusters()
	for attempt := 0; ; attempt++ {
		mc, err := mcs.Get(ctx, cluster, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading ManagedCluster %s: %w", cluster, err)
		}
		if mc.Labels == nil {
			mc.Labels = map[string]string{}
		}
		for k, v := range labels {
			if v == "" {
				delete(mc.Labels, k)
			} else {
				mc.Labels[k] = v
			}
		}
		_, err = mcs.Update(ctx, mc, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) && attempt < 5 {
			continue
		}
		if err != nil {
			return fmt.Errorf("labelling ManagedCluster %s: %w", cluster, err)
		}
		return nil
	}
}
