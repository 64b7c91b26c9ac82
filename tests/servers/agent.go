package servers

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clusterv1 "open-cluster-management.io/api/cluster/v1"
	workv1 "open-cluster-management.io/api/work/v1"
)

// AgentNamespace is the namespace the work agent keeps its state in on the spoke.
const AgentNamespace = "open-cluster-management-agent"

// Agent is the real OCM work agent (open-cluster-management.io/ocm cmd/work) running as one
// managed cluster: it takes ManifestWorks from the cluster's namespace on the hub and applies
// them to the spoke API server.
type Agent struct {
	Cluster string
	Hub     *Hub
	Spoke   *Hub
	proc    *Process
	bin     string
	args    []string
}

// StartAgent registers cluster on the hub (its namespace and a ManagedCluster) and starts a
// work agent that applies the cluster's ManifestWorks to spoke (which may be the hub itself).
// It returns once the agent has applied a probe ManifestWork, so a broken agent fails here.
func StartAgent(ctx context.Context, hub, spoke *Hub, cluster string) (*Agent, error) {
	bin, err := Bin("work")
	if err != nil {
		return nil, err
	}
	if err := RegisterCluster(ctx, hub, cluster); err != nil {
		return nil, err
	}
	if err := spoke.EnsureNamespace(ctx, AgentNamespace); err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	a := &Agent{Cluster: cluster, Hub: hub, Spoke: spoke, bin: bin, args: []string{"agent",
		"--spoke-cluster-name=" + cluster,
		"--workload-source-driver=kube", "--workload-source-config=" + hub.Kubeconfig,
		"--kubeconfig=" + spoke.Kubeconfig,
		"--namespace=" + AgentNamespace, "--disable-leader-election",
		fmt.Sprintf("--listen=127.0.0.1:%d", port),
		"--status-sync-interval=1s",
	}}
	if err := a.start(); err != nil {
		return nil, err
	}
	if err := a.probe(ctx); err != nil {
		a.Stop()
		return nil, err
	}
	return a, nil
}

// RegisterCluster creates the cluster's namespace and an accepted ManagedCluster on the hub.
func RegisterCluster(ctx context.Context, hub *Hub, cluster string) error {
	if err := hub.EnsureNamespace(ctx, cluster); err != nil {
		return err
	}
	mc := &clusterv1.ManagedCluster{
		ObjectMeta: metav1.ObjectMeta{Name: cluster},
		Spec:       clusterv1.ManagedClusterSpec{HubAcceptsClient: true},
	}
	if _, err := hub.OCM.ClusterV1().ManagedClusters().Create(ctx, mc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating ManagedCluster %s: %w", cluster, err)
	}
	return nil
}

// probe creates a ManifestWork with one ConfigMap and waits until the agent reports it
// Available, then deletes it.
func (a *Agent) probe(ctx context.Context) error {
	cm := &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: "ocm-jobs-agent-probe", Namespace: AgentNamespace},
		Data:       map[string]string{"cluster": a.Cluster},
	}
	raw, err := json.Marshal(cm)
	if err != nil {
		return err
	}
	mw := &workv1.ManifestWork{
		ObjectMeta: metav1.ObjectMeta{Name: "ocm-jobs-agent-probe", Namespace: a.Cluster},
		Spec: workv1.ManifestWorkSpec{Workload: workv1.ManifestsTemplate{
			Manifests: []workv1.Manifest{{RawExtension: runtime.RawExtension{Raw: raw}}},
		}},
	}
	works := a.Hub.Work.WorkV1().ManifestWorks(a.Cluster)
	if _, err := works.Create(ctx, mw, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating probe ManifestWork in %s: %w", a.Cluster, err)
	}
	err = waitFor(ctx, a.proc, 90*time.Second, func(ctx context.Context) error {
		got, err := works.Get(ctx, mw.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(got.Status.Conditions, workv1.WorkAvailable) {
			return fmt.Errorf("probe ManifestWork not Available yet: %v", got.Status.Conditions)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("work agent of %s did not apply a probe ManifestWork: %w", a.Cluster, err)
	}
	return works.Delete(ctx, mw.Name, metav1.DeleteOptions{})
}

func (a *Agent) start() error {
	p, err := startProcess("work agent "+a.Cluster, filepath.Join(a.Spoke.Dir, "work-agent-"+a.Cluster+".log"), nil, a.bin, a.args...)
	if err != nil {
		return err
	}
	a.proc = p
	return nil
}

// Restart starts a stopped (or killed) agent again with the same arguments; a running one is
// stopped first.
func (a *Agent) Restart() error {
	a.proc.Stop(10 * time.Second)
	return a.start()
}

// Log is the path of the agent's log.
func (a *Agent) Log() string { return a.proc.Log }

// Stop stops the agent.
func (a *Agent) Stop() {
	if a != nil {
		a.proc.Stop(10 * time.Second)
	}
}

// Kill kills the agent with SIGKILL.
func (a *Agent) Kill() { a.proc.Kill() }
