package servers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// Knative's OIDC sender identity against the hub, as a cluster would have it:
//   - the feature authentication-oidc on, its verifiers reading the hub's OIDC discovery at
//     oidc-discovery-base-url (the hub's address), the hub's CA trusted by a trust-bundle
//     ConfigMap;
//   - the discovery readable without credentials, as a public issuer's is (the verifier reads
//     it with a plain HTTP client);
//   - the API server's discovery naming its JWKS where it listens (hub.go: external-hostname).

var (
	eventPolicies = schema.GroupVersionResource{Group: "eventing.knative.dev", Version: "v1alpha1", Resource: "eventpolicies"}
	imcs          = schema.GroupVersionResource{Group: "messaging.knative.dev", Version: "v1", Resource: "inmemorychannels"}
	knBrokers     = schema.GroupVersionResource{Group: "eventing.knative.dev", Version: "v1", Resource: "brokers"}
)

// enableOIDC turns on Knative's OIDC sender identity before its components start.
func (k *Knative) enableOIDC(ctx context.Context) error {
	kube := k.hub.Kube
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "ocm-jobs-anonymous-oidc-discovery"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:service-account-issuer-discovery"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "Group", Name: "system:unauthenticated"}},
	}
	if _, err := kube.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("anonymous OIDC discovery: %w", err)
	}
	ca := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "ocm-jobs-hub-ca", Namespace: KnativeNamespace,
			Labels: map[string]string{"networking.knative.dev/trust-bundle": "true"}},
		Data: map[string]string{"ca.crt": string(k.hub.Config.CAData)},
	}
	if _, err := kube.CoreV1().ConfigMaps(KnativeNamespace).Create(ctx, ca, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("trust bundle of the hub's CA: %w", err)
	}
	// The verifier reads the discovery with Go's default roots (the trust bundle reaches only
	// some of its clients, and only on a later config change): the pods trust the hub's CA.
	caFile := filepath.Join(k.Dir, "hub-ca.crt")
	if err := os.WriteFile(caFile, k.hub.Config.CAData, 0o644); err != nil {
		return err
	}
	k.podEnv = append(k.podEnv, "SSL_CERT_FILE="+caFile)
	patch := fmt.Sprintf(`{"data":{"authentication-oidc":"enabled","oidc-discovery-base-url":%q}}`, strings.TrimSuffix(k.hub.URL(), "/"))
	if _, err := kube.CoreV1().ConfigMaps(KnativeNamespace).Patch(ctx, "config-features", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("config-features: %w", err)
	}
	return nil
}

// BrokerAudience is the OIDC audience of a broker's ingress (its status.address.audience):
// what a sender's token must be issued for.
func (k *Knative) BrokerAudience(ctx context.Context, namespace, broker string) (string, error) {
	dc, err := dynamic.NewForConfig(k.hub.Config)
	if err != nil {
		return "", err
	}
	b, err := dc.Resource(knBrokers).Namespace(namespace).Get(ctx, broker, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	aud, _, _ := unstructured.NestedString(b.Object, "status", "address", "audience")
	if aud == "" {
		return "", fmt.Errorf("broker %s/%s announces no OIDC audience (is OIDC on?)", namespace, broker)
	}
	return aud, nil
}

// AliasBrokerChannel works around knative/eventing#8705 (fixed after v0.46): with OIDC on,
// the in-memory channel's dispatcher looks a delivery's channel up by the first label of its
// host, <channel>-kn-channel, finds none and answers 500. An empty channel of that name whose
// EventPolicies copy the real channel's makes the lookup succeed; the token is still checked
// against the same policies. Call it once the broker is Ready.
func (k *Knative) AliasBrokerChannel(ctx context.Context, namespace, broker string) error {
	dc, err := dynamic.NewForConfig(k.hub.Config)
	if err != nil {
		return err
	}
	channel := broker + "-kne-trigger"
	alias := channel + "-kn-channel"
	var copies []unstructured.Unstructured
	deadline := time.Now().Add(time.Minute)
	for {
		list, err := dc.Resource(eventPolicies).Namespace(namespace).List(ctx, metav1.ListOptions{})
		if err == nil {
			copies = copies[:0]
			for _, p := range list.Items {
				to, _, _ := unstructured.NestedSlice(p.Object, "spec", "to")
				for _, t := range to {
					m, _ := t.(map[string]any)
					ref, _ := m["ref"].(map[string]any)
					if ref["kind"] == "InMemoryChannel" && ref["name"] == channel {
						copies = append(copies, p)
					}
				}
			}
			if len(copies) > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no EventPolicy for channel %s/%s after 1m (%v)", namespace, channel, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	imc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "messaging.knative.dev/v1", "kind": "InMemoryChannel",
		"metadata": map[string]any{"name": alias, "namespace": namespace,
			"annotations": map[string]any{"ocm-jobs.icos.eu/why": "alias of " + channel + " for knative/eventing#8705"}},
		"spec": map[string]any{},
	}}
	if _, err := dc.Resource(imcs).Namespace(namespace).Create(ctx, imc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("alias channel %s: %w", alias, err)
	}
	for i, p := range copies {
		from, _, _ := unstructured.NestedSlice(p.Object, "spec", "from")
		cp := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "EventPolicy",
			"metadata": map[string]any{"name": fmt.Sprintf("%s-%d", alias, i), "namespace": namespace},
			"spec": map[string]any{
				"to":   []any{map[string]any{"ref": map[string]any{"apiVersion": "messaging.knative.dev/v1", "kind": "InMemoryChannel", "name": alias}}},
				"from": from,
			},
		}}
		if _, err := dc.Resource(eventPolicies).Namespace(namespace).Create(ctx, cp, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("EventPolicy of the alias channel %s: %w", alias, err)
		}
	}
	return nil
}
