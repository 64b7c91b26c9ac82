package polman

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ocm-jobs/ocm-jobs/shared/config"
)

// Path is the Policy Manager's route for application lifecycle events.
const Path = "/polman/registry/api/v1/icos/app"

// Service is who the Job Manager is to the Policy Manager: the only service it takes a
// callback from.
const Service = "job-manager"

// Callback is where the Policy Manager calls on a violation: its own ICOS Job Manager base
// URL plus URI (the caller cannot choose the host).
type Callback struct {
	Type               string            `json:"type"`
	URI                string            `json:"uri"`
	HTTPMethod         string            `json:"http_method"`
	IncludeAccessToken bool              `json:"include_access_token"`
	ExtraParams        map[string]string `json:"extra_params"`
}

// Request is the body of one lifecycle event: created carries the descriptor (the YAML as
// submitted) and the callback; started, stopped and deleted name the app instance only.
type Request struct {
	AppInstance   string    `json:"app_instance"`
	Event         string    `json:"event"`
	Service       string    `json:"service"`
	AppDescriptor string    `json:"app_descriptor,omitempty"`
	Callback      *Callback `json:"callback,omitempty"`
}

// NewRequest is the request of event about group: with created, the descriptor and the
// callback to uri.
func NewRequest(group, event, descriptor, callbackURI string) Request {
	r := Request{AppInstance: group, Event: event, Service: Service}
	if event == "created" {
		r.AppDescriptor = descriptor
		r.Callback = &Callback{Type: "icos-service", URI: callbackURI, HTTPMethod: http.MethodPost,
			IncludeAccessToken: true, ExtraParams: map[string]string{}}
	}
	return r
}

// SendError is a request the Policy Manager did not take.
type SendError struct {
	// Status is the HTTP status (0: no answer).
	Status  int
	Message string
	// Permanent: the Policy Manager refuses the request for good (a 4xx other than 401, 403,
	// 404, 408 and 429); sending it again cannot help.
	Permanent bool
	// Ambiguous: the request may have been carried out (an answer lost after the request
	// was written, or a 5xx: the Policy Manager does not roll back a half-made created).
	Ambiguous bool
}

func (e *SendError) Error() string {
	if e.Status == 0 {
		return e.Message
	}
	return fmt.Sprintf("%d %s", e.Status, e.Message)
}

// Client sends lifecycle events to the Policy Manager.
type Client struct {
	cfg    config.PolicyManager
	http   *http.Client
	tokens *ClientCredentials
}

// NewClient returns a client of the Policy Manager cfg names; hc nil: a client with
// cfg.Timeout.
func NewClient(cfg config.PolicyManager, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Timeout: cfg.Timeout}
	}
	c := &Client{cfg: cfg, http: hc}
	if cfg.TokenURL != "" && cfg.ClientID != "" {
		c.tokens = &ClientCredentials{URL: cfg.TokenURL, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, HTTP: hc}
	}
	return c
}

// Send posts one event. callerToken is the bearer token of the request that caused it ("" for
// a retry or a started): used in the caller mode.
func (c *Client) Send(ctx context.Context, r Request, callerToken string) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	token, err := c.token(ctx, callerToken)
	if err != nil {
		return &SendError{Message: "getting a token for the Policy Manager: " + err.Error()}
	}
	body, err := json.Marshal(r)
	if err != nil {
		return &SendError{Message: err.Error(), Permanent: true}
	}
	var written bool
	trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { written = true }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodPost,
		strings.TrimSuffix(c.cfg.URL, "/")+Path, bytes.NewReader(body))
	if err != nil {
		return &SendError{Message: err.Error(), Permanent: true}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return &SendError{Message: err.Error(), Ambiguous: written}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	msg := strings.TrimSpace(string(raw))
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	e := &SendError{Status: resp.StatusCode, Message: msg}
	switch {
	case resp.StatusCode >= 500:
		e.Ambiguous = true
	case resp.StatusCode == http.StatusUnauthorized:
		if c.tokens != nil {
			c.tokens.Forget(token)
		}
	case resp.StatusCode == http.StatusForbidden, resp.StatusCode == http.StatusNotFound,
		resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests:
	default:
		e.Permanent = true
	}
	return e
}

// token is the bearer token of a request, by the auth mode.
func (c *Client) token(ctx context.Context, caller string) (string, error) {
	switch c.cfg.AuthMode() {
	case config.PolicyManagerAuthNone:
		return "", nil
	case config.PolicyManagerAuthCaller:
		if caller != "" || c.tokens == nil {
			return caller, nil
		}
	}
	if c.tokens == nil {
		return "", errors.New("no client credentials configured")
	}
	return c.tokens.Token(ctx)
}

// ClientCredentials gets OAuth2 client-credentials tokens (Keycloak's token endpoint) and
// caches one until shortly before it expires. Concurrent callers share one fetch.
type ClientCredentials struct {
	URL, ClientID, ClientSecret string
	HTTP                        *http.Client

	mu    sync.Mutex
	token string
	until time.Time
}

// Token returns a valid token: the cached one, or a new one. A caller waits for a fetch in
// flight at most as long as that fetch's own deadline.
func (c *ClientCredentials) Token(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && time.Now().Before(c.until) {
		return c.token, nil
	}
	tok, ttl, err := c.fetch(ctx)
	if err != nil {
		return "", err
	}
	// Renewed a little before it expires: a token must not lapse on its way.
	margin := min(ttl/10, 30*time.Second)
	c.token, c.until = tok, time.Now().Add(ttl-margin)
	return tok, nil
}

// Forget drops tok from the cache (the Policy Manager refused it).
func (c *ClientCredentials) Forget(tok string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token == tok {
		c.token = ""
	}
}

func (c *ClientCredentials) fetch(ctx context.Context) (string, time.Duration, error) {
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {c.ClientID}, "client_secret": {c.ClientSecret}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("token endpoint %s: %d %s", c.URL, resp.StatusCode, strings.TrimSpace(string(raw)))
	}
	var t struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(raw, &t); err != nil || t.AccessToken == "" {
		return "", 0, fmt.Errorf("token endpoint %s: no access_token in the answer", c.URL)
	}
	ttl := time.Duration(t.ExpiresIn) * time.Second
	if ttl <= 0 {
		ttl = time.Minute
	}
	return t.AccessToken, ttl, nil
}
