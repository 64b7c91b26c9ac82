package auth

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Issuer signs tokens with its own key: the local run uses it to stand in for Keycloak, and
// tests use it to make good and bad tokens.
type Issuer struct {
	Key *rsa.PrivateKey
	Kid string
}

// NewIssuer generates a 2048-bit RSA key.
func NewIssuer() (*Issuer, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	return &Issuer{Key: k, Kid: "ocm-jobs-local"}, nil
}

// PublicKeyBase64 is the public key as KEYCLOAK_PUBLIC_KEY takes it (base64 PKIX DER).
func (i *Issuer) PublicKeyBase64() string {
	der, _ := x509.MarshalPKIXPublicKey(&i.Key.PublicKey)
	return base64.StdEncoding.EncodeToString(der)
}

// Token signs an RS256 token for subject, valid for ttl (negative: already expired), with
// every role (under the default role names) and the subject as its owner id.
func (i *Issuer) Token(subject string, ttl time.Duration) (string, error) {
	return i.Sign(Grant{Subject: subject, TTL: ttl, Roles: AllRoles, Owner: subject})
}

// Grant is what a token says.
type Grant struct {
	Subject string
	TTL     time.Duration
	// Roles are granted under the default role names, as Keycloak realm roles.
	Roles []Role
	// Owner is the owner_id claim ("" for none).
	Owner string
	// Audience is the aud claim ("" for none).
	Audience string
}

// Sign signs an RS256 token saying g.
func (i *Issuer) Sign(g Grant) (string, error) {
	now := time.Now()
	names := Roles{}.withDefaults()
	roles := make([]string, 0, len(g.Roles))
	for _, r := range g.Roles {
		roles = append(roles, names.name(r))
	}
	claims := jwt.MapClaims{
		"sub": g.Subject, "iat": now.Unix(), "exp": now.Add(g.TTL).Unix(), "iss": "ocm-jobs-local",
		"preferred_username": g.Subject, "realm_access": map[string]any{"roles": roles},
	}
	if g.Owner != "" {
		claims["owner_id"] = g.Owner
	}
	if g.Audience != "" {
		claims["aud"] = g.Audience
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	t.Header["kid"] = i.Kid
	return t.SignedString(i.Key)
}
