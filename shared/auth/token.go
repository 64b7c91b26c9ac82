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

// Token signs an RS256 token for subject, valid for ttl (negative: already expired).
func (i *Issuer) Token(subject string, ttl time.Duration) (string, error) {
	now := time.Now()
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject: subject, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			Issuer: "ocm-jobs-local",
		},
		PreferredUsername: subject,
	})
	t.Header["kid"] = i.Kid
	return t.SignedString(i.Key)
}
