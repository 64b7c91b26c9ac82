package polman

import (
	"context"
	"net/http"
	"strings"
)

type callerTokenKey struct{}

// WithCallerToken returns a context carrying the bearer token of the request being served,
// for an event sent on its behalf (the caller auth mode). It is held in memory only.
func WithCallerToken(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return context.WithValue(ctx, callerTokenKey{}, token)
}

// CallerToken is the bearer token WithCallerToken put in ctx, or "".
func CallerToken(ctx context.Context) string {
	t, _ := ctx.Value(callerTokenKey{}).(string)
	return t
}

// CarryCallerToken puts a REST request's bearer token in its context (WithCallerToken).
func CarryCallerToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			r = r.WithContext(WithCallerToken(r.Context(), strings.TrimSpace(h[7:])))
		}
		next.ServeHTTP(w, r)
	})
}
