package packaging

import (
	"context"
	"fmt"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

var (
	manifestWorks      = schema.GroupVersionResource{Group: "work.open-cluster-management.io", Version: "v1", Resource: "manifestworks"}
	managedClusters    = schema.GroupVersionResource{Group: "cluster.open-cluster-management.io", Version: "v1", Resource: "managedclusters"}
	placements         = schema.GroupVersionResource{Group: "cluster.open-cluster-management.io", Version: "v1beta1", Resource: "placements"}
	placementDecisions = schema.GroupVersionResource{Group: "cluster.open-cluster-management.io", Version: "v1beta1", Resource: "placementdecisions"}
	clusterManagers    = schema.GroupVersionResource{Group: "operator.open-cluster-management.io", Version: "v1", Resource: "clustermanagers"}
	secrets            = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	configMaps         = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	namespaces         = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	deployments        = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
)

// Where the fixtures live: a managed cluster's namespace and an application namespace holding
// a Placement and its decision.
const (
	clusterNS = "cluster1"
	appNS     = "apps"
)

// action is one request a ServiceAccount makes.
type action struct {
	name string
	do   func(ctx context.Context, c dynamic.Interface) error
}

// TestRBACLeastPrivilege applies k8s/base's RBAC for real (the API server authorizes with
// RBAC) and acts as each function's ServiceAccount: it can do what the function does and is
// refused (403) everything else that matters.
func TestRBACLeastPrivilege(t *testing.T) {
	ctx := context.Background()
	applyRBAC(t, ctx)
	admin, err := dynamic.NewForConfig(env.Hub.Config)
	if err != nil {
		t.Fatal(err)
	}
	seedHub(t, ctx, admin)

	readHubID := action{"get ClusterManager cluster-manager", func(ctx context.Context, c dynamic.Interface) error {
		_, err := c.Resource(clusterManagers).Get(ctx, "cluster-manager", metav1.GetOptions{})
		return err
	}}
	// What no function may do.
	common := []action{
		{"get ClusterManager other", getCluster(clusterManagers, "", "other")},
		{"list ClusterManagers", list(clusterManagers, "")},
		{"update ClusterManager cluster-manager", func(ctx context.Context, c dynamic.Interface) error {
			_, err := c.Resource(clusterManagers).Patch(ctx, "cluster-manager", types.MergePatchType, []byte(`{"metadata":{"labels":{"x":"y"}}}`), metav1.PatchOptions{})
			return err
		}},
		{"get Secret in ocm-jobs", getCluster(secrets, Namespace, "ocm-jobs-redis")},
		{"list Secrets in cluster1", list(secrets, clusterNS)},
		{"list Secrets everywhere", list(secrets, "")},
		{"list ConfigMaps in cluster1", list(configMaps, clusterNS)},
		{"list Deployments in apps", list(deployments, appNS)},
		{"create Namespace", create(namespaces, "", object("v1", "Namespace", "", "evil", nil))},
		{"create ManagedCluster", create(managedClusters, "", object("cluster.open-cluster-management.io/v1", "ManagedCluster", "", "cluster9", map[string]any{"hubAcceptsClient": true}))},
		{"delete ManagedCluster cluster1", deleteObj(managedClusters, "", "cluster1")},
		{"create Placement", create(placements, appNS, object("cluster.open-cluster-management.io/v1beta1", "Placement", appNS, "p2", map[string]any{}))},
	}
	work := func(name string) *unstructured.Unstructured {
		return object("work.open-cluster-management.io/v1", "ManifestWork", clusterNS, name, map[string]any{
			"workload": map[string]any{"manifests": []any{map[string]any{
				"apiVersion": "v1", "kind": "ConfigMap",
				"metadata": map[string]any{"name": name, "namespace": "default"},
				"data":     map[string]any{"k": "v"},
			}}},
		})
	}
	cases := map[string]struct {
		allowed, denied []action
	}{
		"executor": {
			allowed: []action{
				readHubID,
				{"create ManifestWork in cluster1", create(manifestWorks, clusterNS, work("job-1-web"))},
				{"get ManifestWork", getCluster(manifestWorks, clusterNS, "job-1-web")},
				{"list ManifestWorks in cluster1", list(manifestWorks, clusterNS)},
				{"patch ManifestWork", func(ctx context.Context, c dynamic.Interface) error {
					_, err := c.Resource(manifestWorks).Namespace(clusterNS).Patch(ctx, "job-1-web", types.MergePatchType,
						[]byte(`{"metadata":{"labels":{"jobmanager.icos.eu/job":"1"}}}`), metav1.PatchOptions{})
					return err
				}},
				{"update ManifestWork", func(ctx context.Context, c dynamic.Interface) error {
					w, err := c.Resource(manifestWorks).Namespace(clusterNS).Get(ctx, "job-1-web", metav1.GetOptions{})
					if err != nil {
						return err
					}
					w.SetAnnotations(map[string]string{"app.icos.eu/name": "web"})
					_, err = c.Resource(manifestWorks).Namespace(clusterNS).Update(ctx, w, metav1.UpdateOptions{})
					return err
				}},
				{"delete ManifestWork", deleteObj(manifestWorks, clusterNS, "job-1-web")},
				{"list ManagedClusters", list(managedClusters, "")},
				{"get ManagedCluster cluster1", getCluster(managedClusters, "", "cluster1")},
				{"list PlacementDecisions", list(placementDecisions, appNS)},
			},
			denied: append([]action{
				{"watch ManifestWorks", watch(manifestWorks, clusterNS)},
				{"list Placements", list(placements, appNS)},
				{"update ManagedCluster", func(ctx context.Context, c dynamic.Interface) error {
					_, err := c.Resource(managedClusters).Patch(ctx, "cluster1", types.MergePatchType, []byte(`{"spec":{"hubAcceptsClient":false}}`), metav1.PatchOptions{})
					return err
				}},
			}, common...),
		},
		"statussync": {
			allowed: []action{
				readHubID,
				{"list ManifestWorks in cluster1", list(manifestWorks, clusterNS)},
				{"list ManifestWorks everywhere", list(manifestWorks, "")},
				{"watch ManifestWorks", watch(manifestWorks, "")},
				{"get ManifestWork", getCluster(manifestWorks, clusterNS, "seeded")},
				// The tick follows the Placements components are bound to (issue 18).
				{"list PlacementDecisions", list(placementDecisions, appNS)},
			},
			denied: append([]action{
				{"create ManifestWork", create(manifestWorks, clusterNS, work("sneaky"))},
				{"delete ManifestWork", deleteObj(manifestWorks, clusterNS, "seeded")},
				{"delete PlacementDecision", deleteObj(placementDecisions, appNS, "p1-decision-1")},
				{"list Placements", list(placements, appNS)},
			}, common...),
		},
		"jobs": {
			allowed: []action{
				readHubID,
				{"get Placement", getCluster(placements, appNS, "p1")},
				{"list Placements", list(placements, appNS)},
				{"list PlacementDecisions", list(placementDecisions, appNS)},
				{"list ManagedClusters", list(managedClusters, "")},
			},
			denied: append([]action{
				{"list ManifestWorks", list(manifestWorks, clusterNS)},
				{"create ManifestWork", create(manifestWorks, clusterNS, work("sneaky"))},
				{"delete PlacementDecision", deleteObj(placementDecisions, appNS, "p1-decision-1")},
			}, common...),
		},
		"incompliance": {
			allowed: []action{readHubID},
			denied: append([]action{
				{"list ManifestWorks", list(manifestWorks, clusterNS)},
				{"list PlacementDecisions", list(placementDecisions, appNS)},
				{"list ManagedClusters", list(managedClusters, "")},
			}, common...),
		},
		"deadletter": {
			denied: append([]action{readHubID, {"list ManifestWorks", list(manifestWorks, "")}}, common...),
		},
	}
	for fn, tc := range cases {
		t.Run(fn, func(t *testing.T) {
			cfg := rest.CopyConfig(env.Hub.Config)
			cfg.Impersonate = rest.ImpersonationConfig{
				UserName: fmt.Sprintf("system:serviceaccount:%s:ocm-jobs-%s", Namespace, fn),
				Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + Namespace, "system:authenticated"},
			}
			c, err := dynamic.NewForConfig(cfg)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range tc.allowed {
				if err := a.do(ctx, c); err != nil && !apierrors.IsNotFound(err) {
					t.Errorf("ocm-jobs-%s cannot %s: %v", fn, a.name, err)
				}
			}
			for _, a := range tc.denied {
				if err := a.do(ctx, c); !apierrors.IsForbidden(err) {
					t.Errorf("ocm-jobs-%s may %s (want 403, got %v)", fn, a.name, err)
				}
			}
		})
	}
}

// applyRBAC applies the namespace, ServiceAccounts and RBAC objects k8s/base renders.
func applyRBAC(t *testing.T, ctx context.Context) {
	t.Helper()
	var doc []byte
	n := 0
	for _, o := range decode(t, render(t, "base")) {
		switch o.GetKind() {
		case "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			y, err := yaml.Marshal(o.Object)
			if err != nil {
				t.Fatal(err)
			}
			doc = append(append(doc, "---\n"...), y...)
			n++
		}
	}
	if n < 10 {
		t.Fatalf("k8s/base renders only %d RBAC objects", n)
	}
	if _, err := kubectl(ctx, doc, "apply", "--server-side", "--field-manager=ocm-jobs-test", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

// seedHub creates, as admin, the objects the functions work with: cluster1 and its namespace,
// the ClusterManager, a Placement with a decision, a ManifestWork and a Secret.
func seedHub(t *testing.T, ctx context.Context, admin dynamic.Interface) {
	t.Helper()
	for _, ns := range []string{clusterNS, appNS, Namespace} {
		if err := env.Hub.EnsureNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	seed := []struct {
		gvr schema.GroupVersionResource
		obj *unstructured.Unstructured
	}{
		{managedClusters, object("cluster.open-cluster-management.io/v1", "ManagedCluster", "", "cluster1", map[string]any{"hubAcceptsClient": true})},
		{clusterManagers, object("operator.open-cluster-management.io/v1", "ClusterManager", "", "cluster-manager", map[string]any{})},
		{placements, object("cluster.open-cluster-management.io/v1beta1", "Placement", appNS, "p1", map[string]any{})},
		{placementDecisions, object("cluster.open-cluster-management.io/v1beta1", "PlacementDecision", appNS, "p1-decision-1", nil)},
		{manifestWorks, object("work.open-cluster-management.io/v1", "ManifestWork", clusterNS, "seeded", map[string]any{"workload": map[string]any{}})},
		{secrets, object("v1", "Secret", Namespace, "ocm-jobs-redis", nil)},
	}
	for _, s := range seed {
		if err := create(s.gvr, s.obj.GetNamespace(), s.obj)(ctx, admin); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("seeding %s %s: %v", s.obj.GetKind(), s.obj.GetName(), err)
		}
	}
}

func object(apiVersion, kind, namespace, name string, spec map[string]any) *unstructured.Unstructured {
	o := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind}}
	o.SetName(name)
	if namespace != "" {
		o.SetNamespace(namespace)
	}
	if spec != nil {
		o.Object["spec"] = spec
	}
	return o
}

func resource(c dynamic.Interface, gvr schema.GroupVersionResource, namespace string) dynamic.ResourceInterface {
	if namespace == "" {
		return c.Resource(gvr)
	}
	return c.Resource(gvr).Namespace(namespace)
}

func getCluster(gvr schema.GroupVersionResource, namespace, name string) func(context.Context, dynamic.Interface) error {
	return func(ctx context.Context, c dynamic.Interface) error {
		_, err := resource(c, gvr, namespace).Get(ctx, name, metav1.GetOptions{})
		return err
	}
}

func list(gvr schema.GroupVersionResource, namespace string) func(context.Context, dynamic.Interface) error {
	return func(ctx context.Context, c dynamic.Interface) error {
		_, err := resource(c, gvr, namespace).List(ctx, metav1.ListOptions{})
		return err
	}
}

func watch(gvr schema.GroupVersionResource, namespace string) func(context.Context, dynamic.Interface) error {
	return func(ctx context.Context, c dynamic.Interface) error {
		w, err := resource(c, gvr, namespace).Watch(ctx, metav1.ListOptions{})
		if err == nil {
			w.Stop()
		}
		return err
	}
}

func create(gvr schema.GroupVersionResource, namespace string, o *unstructured.Unstructured) func(context.Context, dynamic.Interface) error {
	return func(ctx context.Context, c dynamic.Interface) error {
		_, err := resource(c, gvr, namespace).Create(ctx, o.DeepCopy(), metav1.CreateOptions{})
		return err
	}
}

func deleteObj(gvr schema.GroupVersionResource, namespace, name string) func(context.Context, dynamic.Interface) error {
	return func(ctx context.Context, c dynamic.Interface) error {
		return resource(c, gvr, namespace).Delete(ctx, name, metav1.DeleteOptions{})
	}
}
