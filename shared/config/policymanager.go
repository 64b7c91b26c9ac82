package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Policy Manager auth modes: how requests to the Policy Manager are authenticated.
const (
	// PolicyManagerAuthAuto is client-credentials when POLICY_MANAGER_TOKEN_URL is set, else caller.
	PolicyManagerAuthAuto = "auto"
	// PolicyManagerAuthClientCredentials: a token of this service's own Keycloak client.
	PolicyManagerAuthClientCredentials = "client-credentials"
	// PolicyManagerAuthCaller: the bearer token of the user whose request caused the event (what the ICOS
	// Job Manager does); an event sent later (a retry, started) uses client credentials when
	// they are configured, else none.
	PolicyManagerAuthCaller = "caller"
	// PolicyManagerAuthNone: no token (a Policy Manager with authn skipped).
	PolicyManagerAuthNone = "none"
)

// PolicyManager is how the jobs function reaches the ICOS Dynamic Policy Manager, where it
// registers job groups (shared/polman).
type PolicyManager struct {
	URL          string        `envconfig:"POLICY_MANAGER_URL" desc:"base URL of the ICOS Dynamic Policy Manager (e.g. http://dpm:8000); job groups are registered with it (POST <url>/polman/registry/api/v1/icos/app: created, started once the jobs run, stopped, started, deleted). Empty: no registration"`
	Auth         string        `envconfig:"POLICY_MANAGER_AUTH" default:"auto" desc:"how requests to the Policy Manager are authenticated: client-credentials (a token of POLICY_MANAGER_CLIENT_ID from POLICY_MANAGER_TOKEN_URL, cached until it expires), caller (the bearer token of the request that caused the event, never stored; later sends use client credentials when configured, else none), none, or auto (client-credentials when POLICY_MANAGER_TOKEN_URL is set, else caller)"`
	TokenURL     string        `envconfig:"POLICY_MANAGER_TOKEN_URL" desc:"OAuth2 token endpoint for client credentials, e.g. Keycloak's https://<host>/realms/<realm>/protocol/openid-connect/token"`
	ClientID     string        `envconfig:"POLICY_MANAGER_CLIENT_ID" desc:"client id of the client-credentials grant"`
	ClientSecret string        `envconfig:"POLICY_MANAGER_CLIENT_SECRET" desc:"client secret of the client-credentials grant (from a Secret)"`
	Timeout      time.Duration `envconfig:"POLICY_MANAGER_TIMEOUT" default:"10s" desc:"longest a request to the Policy Manager (or its token endpoint) may take; a slower one counts as failed and is retried"`
	RetryMin     time.Duration `envconfig:"POLICY_MANAGER_RETRY_MIN" default:"5s" desc:"delay before the first retry of a registration event the Policy Manager did not take (doubling each attempt; retries run on the cron tick)"`
	RetryMax     time.Duration `envconfig:"POLICY_MANAGER_RETRY_MAX" default:"10m" desc:"longest delay between retries of a registration event"`
	CallbackURI  string        `envconfig:"POLICY_MANAGER_CALLBACK_URI" default:"/jobmanager/policies/incompliance/create" desc:"path the Policy Manager calls on a violation (it prefixes its own PLM_ICOS_JOB_MANAGER_BASE_URL); the incompliance function serves it"`
}

// Enabled reports whether groups are registered at all.
func (c PolicyManager) Enabled() bool { return c.URL != "" }

// AuthMode is the mode in effect (auto resolved).
func (c PolicyManager) AuthMode() string {
	if c.Auth == "" || c.Auth == PolicyManagerAuthAuto {
		if c.TokenURL != "" {
			return PolicyManagerAuthClientCredentials
		}
		return PolicyManagerAuthCaller
	}
	return c.Auth
}

// Validate checks what envconfig cannot.
func (c PolicyManager) Validate() error {
	if !c.Enabled() {
		return nil
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("POLICY_MANAGER_URL=%q: want an http(s) URL", c.URL)
	}
	switch c.AuthMode() {
	case PolicyManagerAuthClientCredentials:
		if c.TokenURL == "" || c.ClientID == "" || c.ClientSecret == "" {
			return fmt.Errorf("POLICY_MANAGER_AUTH=client-credentials needs POLICY_MANAGER_TOKEN_URL, POLICY_MANAGER_CLIENT_ID and POLICY_MANAGER_CLIENT_SECRET")
		}
	case PolicyManagerAuthCaller, PolicyManagerAuthNone:
	default:
		return fmt.Errorf("POLICY_MANAGER_AUTH=%q: want auto, client-credentials, caller or none", c.Auth)
	}
	if c.Timeout <= 0 || c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		return fmt.Errorf("POLICY_MANAGER_TIMEOUT, _RETRY_MIN must be positive and POLICY_MANAGER_RETRY_MAX at least POLICY_MANAGER_RETRY_MIN")
	}
	if !strings.HasPrefix(c.CallbackURI, "/") {
		return fmt.Errorf("POLICY_MANAGER_CALLBACK_URI=%q: want a path", c.CallbackURI)
	}
	return nil
}

// Backoff is the delay before the next attempt after n failed ones (n ≥ 1): RetryMin doubled
// each attempt, at most RetryMax.
func (c PolicyManager) Backoff(n int) time.Duration {
	d := c.RetryMin
	for i := 1; i < n && d < c.RetryMax; i++ {
		d *= 2
	}
	return min(d, c.RetryMax)
}
