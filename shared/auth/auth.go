// Package auth checks the bearer tokens of the ICOS Job Manager API: RS256 JWTs issued by
// Keycloak, verified against a public key (KEYCLOAK_PUBLIC_KEY, base64 PKIX as ICOS takes it,
// or PEM) or the keys of a JWKS URL. A missing, expired or badly signed token is a 401 with
// {"error": …} — never a 500.
package auth

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Config is the authentication configuration.
type Config struct {
	PublicKey string `envconfig:"KEYCLOAK_PUBLIC_KEY" desc:"RSA public key that signs bearer tokens: base64 of the PKIX DER (as ICOS takes it) or PEM"`
	JWKSURL   string `envconfig:"JWKS_URL" desc:"URL of a JWKS document (e.g. Keycloak's .../protocol/openid-connect/certs) whose RSA keys sign bearer tokens"`
	Issuer    string `envconfig:"JWT_ISSUER" desc:"required iss claim; empty: not checked"`
	Audience  string `envconfig:"JWT_AUDIENCE" desc:"required aud claim; empty: not checked"`
	Mode      string `envconfig:"AUTH_MODE" default:"jwt" desc:"jwt: the REST API needs a bearer token; none: no authentication (development only)"`
	Events    bool   `envconfig:"AUTH_CLOUDEVENTS" default:"false" desc:"also require a bearer token on the CloudEvents endpoint"`
}

// Verifier checks bearer tokens.
type Verifier struct {
	cfg    Config
	static *rsa.PublicKey
	jwks   *jwks
}

// NewVerifier builds a verifier. Mode jwt needs a public key or a JWKS URL.
func NewVerifier(cfg Config) (*Verifier, error) {
	v := &Verifier{cfg: cfg}
	switch cfg.Mode {
	case "none":
		return v, nil
	case "jwt", "":
	default:
		return nil, fmt.Errorf("AUTH_MODE=%q: want jwt or none", cfg.Mode)
	}
	if cfg.PublicKey == "" && cfg.JWKSURL == "" {
		return nil, errors.New("authentication needs KEYCLOAK_PUBLIC_KEY or JWKS_URL (or AUTH_MODE=none, for development only)")
	}
	if cfg.PublicKey != "" {
		k, err := ParsePublicKey(cfg.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("KEYCLOAK_PUBLIC_KEY: %w", err)
		}
		v.static = k
	}
	if cfg.JWKSURL != "" {
		v.jwks = &jwks{url: cfg.JWKSURL, client: &http.Client{Timeout: 10 * time.Second}}
	}
	return v, nil
}

// Enabled reports whether tokens are checked.
func (v *Verifier) Enabled() bool { return v.cfg.Mode != "none" }

// Claims are the token claims handlers may use.
type Claims struct {
	jwt.RegisteredClaims
	PreferredUsername string `json:"preferred_username,omitempty"`
}

// Check verifies the request's bearer token and returns its claims.
func (v *Verifier) Check(r *http.Request) (*Claims, error) {
	if !v.Enabled() {
		return &Claims{}, nil
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, errors.New("missing Authorization header: send `Authorization: Bearer <token>`")
	}
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return nil, errors.New("the Authorization header is not `Bearer <token>`")
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{"RS256"}), jwt.WithExpirationRequired()}
	if v.cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.cfg.Issuer))
	}
	if v.cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(v.cfg.Audience))
	}
	claims := &Claims{}
	_, err := jwt.ParseWithClaims(strings.TrimSpace(token), claims, func(t *jwt.Token) (any, error) {
		if v.static != nil {
			return v.static, nil
		}
		kid, _ := t.Header["kid"].(string)
		return v.jwks.key(r.Context(), kid)
	}, opts...)
	if err != nil {
		return nil, fmt.Errorf("invalid bearer token: %w", err)
	}
	return claims, nil
}

// Middleware answers 401 {"error": …} to requests without a valid token.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	if !v.Enabled() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, err := v.Check(r)
		if err != nil {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, claims)))
	})
}

type claimsKey struct{}

// ClaimsFrom returns the claims of the request's verified token, or nil.
func ClaimsFrom(ctx context.Context) *Claims {
	c, _ := ctx.Value(claimsKey{}).(*Claims)
	return c
}

// ParsePublicKey reads an RSA public key: PEM, or base64 of the PKIX DER (the Keycloak realm
// "public key" as ICOS configures it).
func ParsePublicKey(s string) (*rsa.PublicKey, error) {
	s = strings.TrimSpace(s)
	var der []byte
	if block, _ := pem.Decode([]byte(s)); block != nil {
		der = block.Bytes
	} else {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("neither PEM nor base64: %w", err)
		}
		der = b
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("not a PKIX public key: %w", err)
	}
	k, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("a %T, not an RSA key", pub)
	}
	return k, nil
}

// jwks fetches and caches the RSA keys of a JWKS URL, refetching (at most every 30s) when a
// token names a key it does not know, so a Keycloak key rotation needs no restart.
type jwks struct {
	url    string
	client *http.Client

	mu      sync.Mutex
	keys    map[string]*rsa.PublicKey
	fetched time.Time
}

func (j *jwks) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if k, ok := j.lookup(kid); ok {
		return k, nil
	}
	if time.Since(j.fetched) < 30*time.Second && j.keys != nil {
		return nil, fmt.Errorf("no key %q in the JWKS", kid)
	}
	if err := j.fetch(ctx); err != nil {
		return nil, err
	}
	if k, ok := j.lookup(kid); ok {
		return k, nil
	}
	return nil, fmt.Errorf("no key %q in the JWKS at %s", kid, j.url)
}

func (j *jwks) lookup(kid string) (*rsa.PublicKey, bool) {
	if kid == "" && len(j.keys) == 1 {
		for _, k := range j.keys {
			return k, true
		}
	}
	k, ok := j.keys[kid]
	return k, ok
}

func (j *jwks) fetch(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return err
	}
	resp, err := j.client.Do(req)
	if err != nil {
		return fmt.Errorf("fetching the JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching the JWKS: %s", resp.Status)
	}
	var doc struct {
		Keys []struct {
			Kid, Kty, Use, N, E string
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return fmt.Errorf("reading the JWKS: %w", err)
	}
	keys := map[string]*rsa.PublicKey{}
	for _, k := range doc.Keys {
		if k.Kty != "RSA" || (k.Use != "" && k.Use != "sig") {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(k.N)
		e, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 {
			continue
		}
		keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	}
	j.keys, j.fetched = keys, time.Now()
	return nil
}
