package servers

import (
	"context"
	"fmt"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// Identity hands out tokens of a service account, one per audience, issued by the API
// server's TokenRequest API: what Knative Eventing's broker presents to a subscriber when OIDC
// sender identity is on. A token is reused until half its life is gone.
type Identity struct {
	hub                *Hub
	namespace, account string
	mu                 sync.Mutex
	tokens             map[string]issued
}

type issued struct {
	token string
	renew time.Time
}

// SenderIdentity makes sure the service account exists and returns its identity.
func (h *Hub) SenderIdentity(ctx context.Context, namespace, account string) (*Identity, error) {
	if err := h.EnsureNamespace(ctx, namespace); err != nil {
		return nil, err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: account, Namespace: namespace}}
	if _, err := h.Kube.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating service account %s/%s: %w", namespace, account, err)
	}
	return &Identity{hub: h, namespace: namespace, account: account, tokens: map[string]issued{}}, nil
}

// Token returns a valid token for audience (a fresh one when the last is half expired).
func (i *Identity) Token(ctx context.Context, audience string) (string, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if t, ok := i.tokens[audience]; ok && time.Now().Before(t.renew) {
		return t.token, nil
	}
	tok, err := i.hub.Token(ctx, i.namespace, i.account, audience, time.Hour)
	if err != nil {
		return "", err
	}
	i.tokens[audience] = issued{token: tok, renew: time.Now().Add(30 * time.Minute)}
	return tok, nil
}

// Token asks the API server for a token of a service account for audience, valid for ttl.
func (h *Hub) Token(ctx context.Context, namespace, account, audience string, ttl time.Duration) (string, error) {
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{audience}, ExpirationSeconds: ptr.To(int64(ttl.Seconds()))}}
	got, err := h.Kube.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, account, tr, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("TokenRequest for %s/%s (audience %s): %w", namespace, account, audience, err)
	}
	return got.Status.Token, nil
}
