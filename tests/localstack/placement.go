package main

import (
	"context"
	"os"

	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// localClusterSet is the ManagedClusterSet of the local stack's clusters.
const localClusterSet = "ocm-jobs-local"

// startPlacements makes the local clusters choosable by Placements: OCM's placement controller
// runs against the hub (servers.Need.Placement), and cluster1 and cluster2 are in a cluster
// set bound to the namespace Placements named without one live in (PLACEMENT_NAMESPACE, as the
// functions read it), so a descriptor's `placement:` is decided by OCM itself.
func (s *Stack) startPlacements(ctx context.Context) error {
	ns := os.Getenv("PLACEMENT_NAMESPACE")
	if ns == "" {
		ns = "ocm-jobs"
	}
	clusters := []string{"cluster1", "cluster2"}
	if err := servers.ClusterSet(ctx, s.env.Hub, localClusterSet, ns, clusters...); err != nil {
		return err
	}
	s.Log.Infow("OCM placement controller runs", "log", s.env.Placement.Log(), "clusterSet", localClusterSet,
		"boundTo", ns, "clusters", clusters)
	return nil
}
