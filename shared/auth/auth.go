// Package auth checks the bearer tokens of the ICOS Job Manager API: RS256 JWTs issued by
// Keycloak, verified against a public key (KEYCLOAK_PUBLIC_KEY, base64 PKIX as ICOS takes it,
// or PEM) or the keys of a JWKS URL. A missing, expired or badly signed token is a 401 with
// {"error": …} — never a 500.
package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
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
	Roles
}

// Events is how CloudEvents deliveries are authenticated: by default with a bearer token —
// Knative Eventing's sender identity (an audience-bound token of the broker's service account,
// verified against the cluster's OIDC keys) when EVENTS_OIDC_ISSUER is set, else a token of
// the REST API's issuer.
type Events struct {
	On         bool   `envconfig:"AUTH_CLOUDEVENTS" default:"true" desc:"require a bearer token on the CloudEvents endpoint (anonymous or wrong-audience events get 401); false only for development"`
	Audiences  string `envconfig:"EVENTS_AUDIENCES" desc:"accepted aud of event tokens, comma-separated (the audience Knative gives this function's Service); empty: not checked"`
	OIDCIssuer string `envconfig:"EVENTS_OIDC_ISSUER" desc:"issuer (iss) of the broker's sender identity tokens, verified against the hub API server's /openid/v1/jwks; 'hub' reads it from the hub API server's OIDC discovery; empty: event tokens are verified as REST tokens are (KEYCLOAK_PUBLIC_KEY or JWKS_URL)"`
}

// Roles says where a token's roles are and what they are called.
type Roles struct {
	// Claims are the dotted paths of the claims that list a token's roles; {client} stands for
	// ClientID. Keycloak puts realm roles in realm_access.roles and client roles in
	// resource_access.<client>.roles.
	Claims   string `envconfig:"AUTH_ROLE_CLAIMS" default:"realm_access.roles,resource_access.{client}.roles" desc:"comma-separated dotted paths of the token claims that list its roles ({client} is AUTH_CLIENT_ID)"`
	ClientID string `envconfig:"AUTH_CLIENT_ID" default:"ocm-jobs" desc:"the client whose roles resource_access.{client}.roles holds"`
	// The role names of the four roles.
	User              string `envconfig:"AUTH_ROLE_USER" default:"ocm-jobs-user" desc:"role of users: job groups (create, update, stop, start, delete) and reads"`
	DeploymentManager string `envconfig:"AUTH_ROLE_DEPLOYMENT_MANAGER" default:"ocm-jobs-deployment-manager" desc:"role of deployment managers: executable jobs, promote, job and resource reports (as the owner their token names) and reads"`
	PolicyManager     string `envconfig:"AUTH_ROLE_POLICY_MANAGER" default:"ocm-jobs-policy-manager" desc:"role of the Policy Manager: incompliances"`
	Reader            string `envconfig:"AUTH_ROLE_READONLY" default:"ocm-jobs-readonly" desc:"role of readers: reads only"`
	// OwnerClaim is the claim that names the owner id a deployment manager acts as.
	OwnerClaim string `envconfig:"AUTH_OWNER_CLAIM" default:"owner_id" desc:"claim naming the owner id (owner_id of promote and reports) a deployment manager's token acts as; a report or promote for another owner is 403"`
}

// Role is what a caller may do, whatever its name in the tokens.
type Role string

// The roles.
const (
	RoleUser              Role = "user"
	RoleDeploymentManager Role = "deployment-manager"
	RolePolicyManager     Role = "policy-manager"
	RoleReader            Role = "read-only"
)

// AllRoles lists every role.
var AllRoles = []Role{RoleUser, RoleDeploymentManager, RolePolicyManager, RoleReader}

// name is the token role name of r.
func (c Roles) name(r Role) string {
	switch r {
	case RoleUser:
		return c.User
	case RoleDeploymentManager:
		return c.DeploymentManager
	case RolePolicyManager:
		return c.PolicyManager
	case RoleReader:
		return c.Reader
	}
	return ""
}

// withDefaults fills unset fields (a zero Roles, as tests build it) with the defaults.
func (c Roles) withDefaults() Roles {
	d := Roles{Claims: "realm_access.roles,resource_access.{client}.roles", ClientID: "ocm-jobs", User: "ocm-jobs-user",
		DeploymentManager: "ocm-jobs-deployment-manager", PolicyManager: "ocm-jobs-policy-manager", Reader: "ocm-jobs-readonly", OwnerClaim: "owner_id"}
	for _, f := range []struct{ dst, def *string }{{&c.Claims, &d.Claims}, {&c.ClientID, &d.ClientID}, {&c.User, &d.User},
		{&c.DeploymentManager, &d.DeploymentManager}, {&c.PolicyManager, &d.PolicyManager}, {&c.Reader, &d.Reader}, {&c.OwnerClaim, &d.OwnerClaim}} {
		if *f.dst == "" {
			*f.dst = *f.def
		}
	}
	return c
}

// Verifier checks bearer tokens.
type Verifier struct {
	cfg    Config
	static *rsa.PublicKey
	jwks   *jwks
	// audiences, when set, are the aud values of which a token must carry one.
	audiences []string
}

// NewEventsVerifier builds the verifier of CloudEvents deliveries, or nil when they are not
// authenticated. With an OIDC issuer, tokens are verified against the keys of the hub API
// server (its service-account issuer, as Knative Eventing's sender identity uses), fetched
// with hub's authenticated client at hubURL.
func NewEventsVerifier(rest Config, ev Events, hub *http.Client, hubURL string) (*Verifier, error) {
	if !ev.On {
		return nil, nil
	}
	var v *Verifier
	if ev.OIDCIssuer != "" {
		if hub == nil {
			return nil, errors.New("EVENTS_OIDC_ISSUER needs a hub API server to read the OIDC keys from")
		}
		base := strings.TrimSuffix(hubURL, "/")
		issuer := ev.OIDCIssuer
		if issuer == "hub" {
			var err error
			if issuer, err = discoverIssuer(hub, base); err != nil {
				return nil, fmt.Errorf("EVENTS_OIDC_ISSUER=hub: %w", err)
			}
		}
		v = &Verifier{cfg: Config{Mode: "jwt", Issuer: issuer, Roles: rest.Roles.withDefaults()},
			jwks: &jwks{url: base + "/openid/v1/jwks", client: hub}}
	} else {
		rest.Issuer, rest.Audience = "", ""
		var err error
		if v, err = NewVerifier(rest); err != nil {
			return nil, fmt.Errorf("AUTH_CLOUDEVENTS: %w", err)
		}
		if !v.Enabled() {
			return nil, nil
		}
	}
	for _, a := range strings.Split(ev.Audiences, ",") {
		if a = strings.TrimSpace(a); a != "" {
			v.audiences = append(v.audiences, a)
		}
	}
	return v, nil
}

// discoverIssuer reads the issuer of the API server's OIDC discovery document.
func discoverIssuer(c *http.Client, base string) (string, error) {
	resp, err := c.Get(base + "/.well-known/openid-configuration")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("OIDC discovery: %s", resp.Status)
	}
	var doc struct {
		Issuer string `json:"issuer"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || doc.Issuer == "" {
		return "", fmt.Errorf("OIDC discovery: no issuer (%v)", err)
	}
	return doc.Issuer, nil
}

// NewVerifier builds a verifier. Mode jwt needs a public key or a JWKS URL.
func NewVerifier(cfg Config) (*Verifier, error) {
	cfg.Roles = cfg.Roles.withDefaults()
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
	// Roles are the token's roles this service knows (by Role, whatever their token names).
	Roles []Role `json:"-"`
	// Owner is the owner id a deployment manager's token acts as ("" when it names none).
	Owner string `json:"-"`
	// all says every role applies (no authentication: AUTH_MODE=none).
	all bool
}

// Has reports whether the claims grant any of roles.
func (c *Claims) Has(roles ...Role) bool {
	if c == nil {
		return false
	}
	if c.all {
		return true
	}
	for _, r := range roles {
		for _, h := range c.Roles {
			if r == h {
				return true
			}
		}
	}
	return false
}

// ActsAs reports whether the token may act as owner (a deployment manager's own owner id).
func (c *Claims) ActsAs(owner string) bool {
	return c != nil && (c.all || (c.Owner != "" && c.Owner == owner))
}

// Check verifies the request's bearer token and returns its claims.
func (v *Verifier) Check(r *http.Request) (*Claims, error) {
	if !v.Enabled() {
		return &Claims{all: true}, nil
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, errors.New("missing Authorization header: send `Authorization: Bearer <token>`")
	}
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return nil, errors.New("the Authorization header is not `Bearer <token>`")
	}
	methods := []string{"RS256"}
	if v.jwks != nil {
		// A JWKS may hold EC keys too: a Kubernetes API server signs service-account tokens
		// with the key it is given, often ECDSA.
		methods = append(methods, "RS384", "RS512", "ES256", "ES384")
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(methods), jwt.WithExpirationRequired()}
	if v.cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.cfg.Issuer))
	}
	if v.cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(v.cfg.Audience))
	}
	raw := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(strings.TrimSpace(token), raw, func(t *jwt.Token) (any, error) {
		if v.static != nil {
			return v.static, nil
		}
		kid, _ := t.Header["kid"].(string)
		return v.jwks.key(r.Context(), kid)
	}, opts...)
	if err != nil {
		return nil, fmt.Errorf("invalid bearer token: %w", err)
	}
	if len(v.audiences) > 0 {
		aud, _ := raw.GetAudience()
		if !overlaps(aud, v.audiences) {
			return nil, fmt.Errorf("invalid bearer token: audience %v, want one of %v", []string(aud), v.audiences)
		}
	}
	return v.claimsOf(raw), nil
}

func overlaps(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}

// claimsOf reads what handlers use from a verified token's claims.
func (v *Verifier) claimsOf(raw jwt.MapClaims) *Claims {
	c := &Claims{}
	c.Subject, _ = raw["sub"].(string)
	c.Issuer, _ = raw["iss"].(string)
	c.PreferredUsername, _ = raw["preferred_username"].(string)
	c.Owner, _ = lookup(raw, v.cfg.OwnerClaim).(string)
	have := map[string]bool{}
	for _, path := range strings.Split(strings.ReplaceAll(v.cfg.Claims, "{client}", v.cfg.ClientID), ",") {
		if list, ok := lookup(raw, strings.TrimSpace(path)).([]any); ok {
			for _, x := range list {
				if s, ok := x.(string); ok {
					have[s] = true
				}
			}
		}
	}
	for _, r := range AllRoles {
		if have[v.cfg.name(r)] {
			c.Roles = append(c.Roles, r)
		}
	}
	return c
}

// lookup follows a dotted path through nested claims.
func lookup(m map[string]any, path string) any {
	var cur any = m
	for _, k := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[k]
	}
	return cur
}

// Middleware answers 401 {"error": …} to requests without a valid token.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return v.Require(AllRoles...)(next)
}

// Require is Middleware that also wants one of roles: a valid token without any of them is
// answered 403 {"error": …} naming the roles wanted. With no roles, any valid token passes
// (a sender identity, which has none).
func (v *Verifier) Require(roles ...Role) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			claims, err := v.Check(r)
			if errors.Is(err, ErrKeysUnavailable) {
				writeError(w, http.StatusServiceUnavailable, err.Error())
				return
			}
			if err != nil {
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
				writeError(w, http.StatusUnauthorized, err.Error())
				return
			}
			if len(roles) > 0 && !claims.Has(roles...) {
				names := make([]string, len(roles))
				for i, role := range roles {
					names[i] = v.cfg.name(role)
				}
				writeError(w, http.StatusForbidden, fmt.Sprintf("%s %s needs one of the roles %s; the token has %v",
					r.Method, r.URL.Path, strings.Join(names, ", "), claims.Roles))
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, claims)))
		})
	}
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
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

// ErrKeysUnavailable: the keys that verify tokens cannot be fetched (the JWKS endpoint is
// down) and none is cached for the token's key id. The request is answered 503, not 401: the
// token may well be good.
var ErrKeysUnavailable = errors.New("signing keys unavailable")

// jwks fetches and caches the RSA keys of a JWKS URL, refetching (at most every 30s) when a
// token names a key it does not know, so a key rotation needs no restart. Known keys are read
// without waiting for a fetch; one fetch runs at a time, and tokens naming an unknown key wait
// for it (or for their request's end).
type jwks struct {
	url    string
	client *http.Client

	mu       sync.Mutex
	keys     map[string]crypto.PublicKey
	fetched  time.Time
	fetching chan struct{} // closed when the fetch in flight ends
	lastErr  error
}

func (j *jwks) key(ctx context.Context, kid string) (crypto.PublicKey, error) {
	for attempt := 0; ; attempt++ {
		j.mu.Lock()
		if k, ok := j.lookup(kid); ok {
			j.mu.Unlock()
			return k, nil
		}
		if attempt > 0 || (j.keys != nil && time.Since(j.fetched) < 30*time.Second && j.fetching == nil) {
			err := j.lastErr
			known := j.keys != nil
			j.mu.Unlock()
			if err != nil && !known {
				return nil, fmt.Errorf("%w: %v", ErrKeysUnavailable, err)
			}
			return nil, fmt.Errorf("no key %q in the JWKS at %s", kid, j.url)
		}
		wait := j.fetching
		if wait == nil {
			wait = make(chan struct{})
			j.fetching = wait
			go j.refresh(context.WithoutCancel(ctx), wait)
		}
		j.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// refresh fetches the keys and wakes whoever waits for them.
func (j *jwks) refresh(ctx context.Context, done chan struct{}) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	keys, err := j.fetch(ctx)
	j.mu.Lock()
	if err == nil {
		j.keys = keys
	}
	j.fetched, j.lastErr, j.fetching = time.Now(), err, nil
	j.mu.Unlock()
	close(done)
}

func (j *jwks) lookup(kid string) (crypto.PublicKey, bool) {
	if kid == "" && len(j.keys) == 1 {
		for _, k := range j.keys {
			return k, true
		}
	}
	k, ok := j.keys[kid]
	return k, ok
}

func (j *jwks) fetch(ctx context.Context) (map[string]crypto.PublicKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching the JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching the JWKS: %s", resp.Status)
	}
	var doc struct {
		Keys []struct {
			Kid, Kty, Use, N, E, Crv, X, Y string
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return nil, fmt.Errorf("reading the JWKS: %w", err)
	}
	keys := map[string]crypto.PublicKey{}
	for _, k := range doc.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		switch k.Kty {
		case "RSA":
			n, err1 := base64.RawURLEncoding.DecodeString(k.N)
			e, err2 := base64.RawURLEncoding.DecodeString(k.E)
			if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 {
				continue
			}
			keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		case "EC":
			var curve elliptic.Curve
			switch k.Crv {
			case "P-256":
				curve = elliptic.P256()
			case "P-384":
				curve = elliptic.P384()
			default:
				continue
			}
			x, err1 := base64.RawURLEncoding.DecodeString(k.X)
			y, err2 := base64.RawURLEncoding.DecodeString(k.Y)
			if err1 != nil || err2 != nil {
				continue
			}
			keys[k.Kid] = &ecdsa.PublicKey{Curve: curve, X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}
		}
	}
	return keys, nil
}
