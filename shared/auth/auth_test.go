package auth_test

import (
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ocm-jobs/ocm-jobs/shared/auth"
)

func serve(t *testing.T, v *auth.Verifier, header string) (int, string) {
	t.Helper()
	srv := httptest.NewServer(v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"ok":true}`))
	})))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	if header != "" {
		req.Header.Set("Authorization", header)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	msg, _ := body["error"].(string)
	return resp.StatusCode, msg
}

func TestBearerTokens(t *testing.T) {
	good, _ := auth.NewIssuer()
	other, _ := auth.NewIssuer()
	v, err := auth.NewVerifier(auth.Config{Mode: "jwt", PublicKey: good.PublicKeyBase64()})
	if err != nil {
		t.Fatal(err)
	}
	valid, _ := good.Token("alice", time.Hour)
	expired, _ := good.Token("alice", -time.Minute)
	forged, _ := other.Token("mallory", time.Hour)
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))})
	// Algorithm confusion: an HMAC token keyed with the public key must not pass.
	confused, _ := hs.SignedString([]byte(good.PublicKeyBase64()))
	noExp := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.RegisteredClaims{Subject: "x"})
	noExpToken, _ := noExp.SignedString(good.Key)

	tests := map[string]struct {
		header  string
		status  int
		message string
	}{
		"valid":             {"Bearer " + valid, 200, ""},
		"lower-case scheme": {"bearer " + valid, 200, ""},
		"missing":           {"", 401, "missing Authorization"},
		"not bearer":        {"Basic YTpi", 401, "not `Bearer"},
		"garbage":           {"Bearer not.a.jwt", 401, "invalid bearer token"},
		"expired":           {"Bearer " + expired, 401, "expired"},
		"signed by another": {"Bearer " + forged, 401, "invalid bearer token"},
		"HS256 confusion":   {"Bearer " + confused, 401, "signing method"},
		"no expiry":         {"Bearer " + noExpToken, 401, "exp"},
		"empty bearer":      {"Bearer ", 401, "not `Bearer"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			status, msg := serve(t, v, tc.header)
			if status != tc.status || !strings.Contains(msg, tc.message) {
				t.Errorf("got %d %q, want %d containing %q", status, msg, tc.status, tc.message)
			}
		})
	}
}

func TestPEMKey(t *testing.T) {
	iss, _ := auth.NewIssuer()
	pemKey := "-----BEGIN PUBLIC KEY-----\n" + iss.PublicKeyBase64() + "\n-----END PUBLIC KEY-----\n"
	if _, err := auth.ParsePublicKey(pemKey); err != nil {
		t.Fatal(err)
	}
	if _, err := auth.ParsePublicKey("not a key"); err == nil {
		t.Error("garbage parsed as a key")
	}
}

func TestJWKSWithRotation(t *testing.T) {
	first, _ := auth.NewIssuer()
	second, _ := auth.NewIssuer()
	second.Kid = "rotated"
	var current atomic.Pointer[auth.Issuer]
	current.Store(first)
	var fetches atomic.Int32
	jwksSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetches.Add(1)
		k := current.Load()
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kid": k.Kid, "kty": "RSA", "use": "sig",
			"n": base64.RawURLEncoding.EncodeToString(k.Key.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.Key.E)).Bytes()),
		}}})
	}))
	defer jwksSrv.Close()
	v, err := auth.NewVerifier(auth.Config{Mode: "jwt", JWKSURL: jwksSrv.URL})
	if err != nil {
		t.Fatal(err)
	}
	tok1, _ := first.Token("a", time.Hour)
	if status, msg := serve(t, v, "Bearer "+tok1); status != 200 {
		t.Fatalf("token of the JWKS key: %d %s", status, msg)
	}
	if status, _ := serve(t, v, "Bearer "+tok1); status != 200 || fetches.Load() != 1 {
		t.Errorf("second request refetched the JWKS (%d fetches) or failed (%d)", fetches.Load(), status)
	}
	current.Store(second)
	tok2, _ := second.Token("a", time.Hour)
	// Within 30s of the last fetch an unknown kid is refused without refetching, so a flood
	// of tokens with made-up kids cannot hammer the identity provider.
	if status, _ := serve(t, v, "Bearer "+tok2); status != 401 || fetches.Load() != 1 {
		t.Errorf("unknown kid right after a fetch: %d after %d fetches", status, fetches.Load())
	}
}

func TestModes(t *testing.T) {
	if _, err := auth.NewVerifier(auth.Config{Mode: "jwt"}); err == nil || !strings.Contains(err.Error(), "KEYCLOAK_PUBLIC_KEY") {
		t.Errorf("jwt mode without a key: %v", err)
	}
	if _, err := auth.NewVerifier(auth.Config{Mode: "maybe"}); err == nil {
		t.Error("unknown mode accepted")
	}
	v, err := auth.NewVerifier(auth.Config{Mode: "none"})
	if err != nil {
		t.Fatal(err)
	}
	if status, _ := serve(t, v, ""); status != 200 {
		t.Errorf("mode none refused a request: %d", status)
	}
}

// TestJWKSOutage: while the JWKS endpoint is down, tokens of a cached key still verify, and a
// token whose key cannot be fetched is answered 503 (retry), never 401; a slow JWKS fetch
// never holds back tokens of keys already known.
func TestJWKSOutage(t *testing.T) {
	known, _ := auth.NewIssuer()
	fresh, _ := auth.NewIssuer()
	fresh.Kid = "fresh"
	var down atomic.Bool
	release := make(chan struct{})
	var slow atomic.Bool
	jwksSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if slow.Load() {
			<-release
		}
		if down.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kid": known.Kid, "kty": "RSA", "use": "sig",
			"n": base64.RawURLEncoding.EncodeToString(known.Key.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(known.Key.E)).Bytes()),
		}}})
	}))
	defer jwksSrv.Close()
	v, err := auth.NewVerifier(auth.Config{Mode: "jwt", JWKSURL: jwksSrv.URL})
	if err != nil {
		t.Fatal(err)
	}
	good, _ := known.Token("a", time.Hour)
	if status, msg := serve(t, v, "Bearer "+good); status != 200 {
		t.Fatalf("first token: %d %s", status, msg)
	}
	down.Store(true)
	if status, _ := serve(t, v, "Bearer "+good); status != 200 {
		t.Errorf("a cached key while the JWKS is down: %d", status)
	}
	// A verifier that never fetched, with its JWKS down: 503, not 401.
	cold, _ := auth.NewVerifier(auth.Config{Mode: "jwt", JWKSURL: jwksSrv.URL})
	if status, msg := serve(t, cold, "Bearer "+good); status != http.StatusServiceUnavailable {
		t.Errorf("JWKS down and no key cached: %d %s, want 503", status, msg)
	}
	// A fetch in flight (a token with an unknown key, past the 30s refetch limit of a fresh
	// verifier) does not hold back a token of a known key.
	down.Store(false)
	slow.Store(true)
	warm, _ := auth.NewVerifier(auth.Config{Mode: "jwt", JWKSURL: jwksSrv.URL})
	go func() { _, _ = serve(t, warm, "Bearer "+good) }() // first fetch, held by the server
	time.Sleep(100 * time.Millisecond)
	close(release)
	slow.Store(false)
	time.Sleep(100 * time.Millisecond)
	unknown, _ := fresh.Token("a", time.Hour)
	done := make(chan int, 1)
	go func() { s, _ := serve(t, warm, "Bearer "+unknown); done <- s }()
	if status, _ := serve(t, warm, "Bearer "+good); status != 200 {
		t.Errorf("known key during another token's lookup: %d", status)
	}
	if s := <-done; s != http.StatusUnauthorized {
		t.Errorf("a key the JWKS does not have: %d, want 401", s)
	}
}
