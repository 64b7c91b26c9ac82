// Package ocm is how functions talk to the OCM hub: the clients, this hub's identity, the
// labels of the ManifestWorks ocm-jobs owns, and cluster choice from Placements.
package ocm

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clusterclient "open-cluster-management.io/api/client/cluster/clientset/versioned"
	operatorclient "open-cluster-management.io/api/client/operator/clientset/versioned"
	workclient "open-cluster-management.io/api/client/work/clientset/versioned"
)

// ClusterManagerName is the ClusterManager every OCM hub has; its UID is the default hub id.
const ClusterManagerName = "cluster-manager"

// Hub holds the clients of one OCM hub.
type Hub struct {
	Config   *rest.Config
	Kube     kubernetes.Interface
	Work     workclient.Interface
	Cluster  clusterclient.Interface
	Operator operatorclient.Interface
}

// RestConfig loads the hub's REST config: KUBECONFIG (or ~/.kube/config) when it names one,
// else the in-cluster service account.
func RestConfig() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err == nil {
		return cfg, nil
	}
	in, inErr := rest.InClusterConfig()
	if inErr != nil {
		return nil, fmt.Errorf("no hub API server: kubeconfig: %v; in-cluster: %w", err, inErr)
	}
	return in, nil
}

// NewHub builds the clients of the hub at cfg. A cfg with no rate limit of its own (QPS 0, no
// RateLimiter) gets none on the client side, not client-go's 5 per second: the functions' calls
// are bounded by their work, and the API server's priority and fairness protects it (a
// client-side limit of 200 per second capped the executor at 8 senders below the API
// server's own rate). A positive QPS with no burst gets a burst of twice the QPS.
func NewHub(cfg *rest.Config) (*Hub, error) {
	cfg = rest.CopyConfig(cfg)
	switch {
	case cfg.RateLimiter != nil:
	case cfg.QPS == 0:
		cfg.QPS = -1
	case cfg.QPS > 0 && cfg.Burst <= 0:
		cfg.Burst = int(2 * cfg.QPS)
		if cfg.Burst < 1 {
			cfg.Burst = 1
		}
	}
	h := &Hub{Config: cfg}
	var err error
	if h.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if h.Work, err = workclient.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if h.Cluster, err = clusterclient.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if h.Operator, err = operatorclient.NewForConfig(cfg); err != nil {
		return nil, err
	}
	return h, nil
}

// HubID is this hub's owner id: override when set (HUB_ID), else the UID of the hub's
// ClusterManager cluster-manager, as the ICOS Deployment Manager does.
func (h *Hub) HubID(ctx context.Context, override string) (string, error) {
	if override != "" {
		return override, nil
	}
	cm, err := h.Operator.OperatorV1().ClusterManagers().Get(ctx, ClusterManagerName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("no ClusterManager %q on the hub to take the hub id from: set HUB_ID", ClusterManagerName)
	}
	if err != nil {
		return "", fmt.Errorf("reading ClusterManager %q for the hub id: %w", ClusterManagerName, err)
	}
	return string(cm.UID), nil
}
