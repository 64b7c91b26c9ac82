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

// NewHub builds the clients of the hub at cfg, with client-side rate limits raised: the
// functions' calls are already bounded by their work.
func NewHub(cfg *rest.Config) (*Hub, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 200, 400
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
