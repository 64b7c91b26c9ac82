package ocm

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ManagedClusters lists the clusters this hub manages: ManagedClusters the hub accepts
// (spec.hubAcceptsClient) whose namespace exists on the hub (where their ManifestWorks go).
// The hub's own local-cluster is one of them when it is registered.
func (h *Hub) ManagedClusters(ctx context.Context) ([]string, error) {
	mcs, err := h.Cluster.ClusterV1().ManagedClusters().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing ManagedClusters: %w", err)
	}
	nss, err := h.Kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing namespaces: %w", err)
	}
	have := map[string]bool{}
	for _, ns := range nss.Items {
		if ns.DeletionTimestamp == nil {
			have[ns.Name] = true
		}
	}
	var out []string
	for _, mc := range mcs.Items {
		if mc.Spec.HubAcceptsClient && mc.DeletionTimestamp == nil && have[mc.Name] {
			out = append(out, mc.Name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Clusters is the set of clusters a hub manages, read again at most every TTL: clusters come
// and go far slower than jobs, and every job decision asks.
type Clusters struct {
	Hub *Hub
	TTL time.Duration

	mu   sync.Mutex
	set  map[string]bool
	list []string
	at   time.Time
}

// Manages reports whether the hub manages cluster.
func (c *Clusters) Manages(ctx context.Context, cluster string) (bool, error) {
	set, _, err := c.get(ctx)
	return set[cluster], err
}

// List returns the clusters the hub manages, in name order.
func (c *Clusters) List(ctx context.Context) ([]string, error) {
	_, list, err := c.get(ctx)
	return list, err
}

func (c *Clusters) get(ctx context.Context) (map[string]bool, []string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.set != nil && time.Since(c.at) < c.TTL {
		return c.set, c.list, nil
	}
	list, err := c.Hub.ManagedClusters(ctx)
	if err != nil {
		return nil, nil, err
	}
	c.set = make(map[string]bool, len(list))
	for _, n := range list {
		c.set[n] = true
	}
	c.list, c.at = list, time.Now()
	return c.set, c.list, nil
}
