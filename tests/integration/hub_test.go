package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	workv1 "open-cluster-management.io/api/work/v1"
)

func manifest(t *testing.T, obj any) workv1.Manifest {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return workv1.Manifest{RawExtension: runtime.RawExtension{Raw: raw}}
}

// TestWorkAgentsApplyManifestWorks checks the harness itself: each cluster's real work agent
// applies a ManifestWork created on the hub to its own spoke, and reports it Available.
func TestWorkAgentsApplyManifestWorks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, cluster := range []string{"cluster1", "cluster2"} {
		t.Run(cluster, func(t *testing.T) {
			ns := "harness-" + cluster
			deploy := &appsv1.Deployment{
				TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
				ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
				Spec: appsv1.DeploymentSpec{
					Replicas: ptr.To[int32](2),
					Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
					Template: corev1.PodTemplateSpec{
						ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
						Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx:1.27"}}},
					},
				},
			}
			mw := &workv1.ManifestWork{
				ObjectMeta: metav1.ObjectMeta{Name: "harness-" + cluster, Namespace: cluster},
				Spec: workv1.ManifestWorkSpec{Workload: workv1.ManifestsTemplate{Manifests: []workv1.Manifest{
					manifest(t, &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: ns}}),
					manifest(t, deploy),
				}}},
			}
			works := env.Hub.Work.WorkV1().ManifestWorks(cluster)
			if _, err := works.Create(ctx, mw, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			var got *workv1.ManifestWork
			err := poll(ctx, func() error {
				var err error
				if got, err = works.Get(ctx, mw.Name, metav1.GetOptions{}); err != nil {
					return err
				}
				if !meta.IsStatusConditionTrue(got.Status.Conditions, workv1.WorkAvailable) {
					return fmt.Errorf("not Available: %+v", got.Status.Conditions)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("ManifestWork on %s: %v (agent log %s)", cluster, err, env.Agents[cluster].Log())
			}
			applied, err := env.Spoke(cluster).Kube.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				t.Fatalf("Deployment on the spoke of %s: %v", cluster, err)
			}
			if *applied.Spec.Replicas != 2 {
				t.Errorf("replicas on the spoke = %d, want 2", *applied.Spec.Replicas)
			}
			if cluster == "cluster2" {
				// cluster2's workloads land on its own API server, not on the hub.
				if _, err := env.Hub.Kube.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					t.Errorf("cluster2's Deployment found on the hub: %v", err)
				}
			}
			if err := works.Delete(ctx, mw.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			err = poll(ctx, func() error {
				_, err := env.Spoke(cluster).Kube.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return nil
				}
				return fmt.Errorf("Deployment still on the spoke after its ManifestWork was deleted (%v)", err)
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
}

func poll(ctx context.Context, check func() error) error {
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
