package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// spokeKubeconfigs names the managed clusters of `make run` and where their API servers are:
// cluster1 is the hub's own API server, cluster2 a second one.
var spokeKubeconfigs = []struct{ cluster, envVar string }{{"cluster1", "KUBECONFIG"}, {"cluster2", "CLUSTER2_KUBECONFIG"}}

// spokeView is what the spokes last showed: the desired replicas of each Deployment, by
// "<cluster>  <namespace>/<name>".
type spokeView struct {
	mu      sync.Mutex
	desired map[string]int32
}

// waitDesired waits until the spokes show want desired replicas for key, at most timeout.
func (v *spokeView) waitDesired(ctx context.Context, key string, want int32, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		v.mu.Lock()
		got, ok := v.desired[key]
		v.mu.Unlock()
		if ok && got == want {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// watchReplicas prints the replica counts of the Deployments in namespace on every spoke,
// read from the spokes' own API servers, each time they change, until ctx is done.
func (d *demo) watchReplicas(ctx context.Context, namespace string) {
	clients := map[string]kubernetes.Interface{}
	for _, s := range spokeKubeconfigs {
		path := d.env[s.envVar]
		if path == "" {
			continue
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			fmt.Printf("   spoke %s: %v\n", s.cluster, err)
			continue
		}
		if clients[s.cluster], err = kubernetes.NewForConfig(cfg); err != nil {
			fmt.Printf("   spoke %s: %v\n", s.cluster, err)
		}
	}
	last := map[string]string{}
	t := time.NewTicker(300 * time.Millisecond)
	defer t.Stop()
	for {
		now := map[string]string{}
		replicas := map[string]int32{}
		for cluster, c := range clients {
			list, err := c.AppsV1().Deployments(namespace).List(ctx, metav1.ListOptions{})
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				continue // a spoke that does not answer this once is asked again next time
			}
			for _, dep := range list.Items {
				desired := int32(1)
				if dep.Spec.Replicas != nil {
					desired = *dep.Spec.Replicas
				}
				state := fmt.Sprintf("desired %d, ready %d, available %d", desired, dep.Status.ReadyReplicas, dep.Status.AvailableReplicas)
				if dep.DeletionTimestamp != nil {
					state += ", being deleted"
				}
				key := cluster + "  " + dep.Namespace + "/" + dep.Name
				now[key] = state
				replicas[key] = desired
			}
		}
		var lines []string
		for k, v := range now {
			if last[k] != v {
				lines = append(lines, fmt.Sprintf("   %s  spoke %s  replicas %s", time.Now().Format("15:04:05.000"), k, v))
			}
		}
		for k := range last {
			if _, ok := now[k]; !ok {
				lines = append(lines, fmt.Sprintf("   %s  spoke %s  gone", time.Now().Format("15:04:05.000"), k))
			}
		}
		sort.Strings(lines)
		if len(lines) > 0 {
			fmt.Println(strings.Join(lines, "\n"))
		}
		last = now
		d.spokes.mu.Lock()
		d.spokes.desired = replicas
		d.spokes.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
