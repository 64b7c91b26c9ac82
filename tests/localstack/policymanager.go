package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ocm-jobs/ocm-jobs/shared/auth"
	"github.com/ocm-jobs/ocm-jobs/shared/polman"
)

// The local run's stand-in for the ICOS Dynamic Policy Manager: it records every registration
// event the jobs function sends (and logs it), answers as the Policy Manager does (200, a list
// of policies — none here), serves `make demo` what it got (GET /recorder/requests), and stands
// in for Keycloak's token endpoint so the jobs function authenticates with client credentials
// as in a cluster. Started unless POLICY_MANAGER_URL names a real Policy Manager.

// pmClientID and pmClientSecret are the client credentials of the local run.
const (
	pmClientID     = "ocm-jobs"
	pmClientSecret = "local-only-secret"
	pmTokenPath    = "/realms/icos/protocol/openid-connect/token"
	pmRecordPath   = "/recorder/requests"
)

// pmRecord is one registration event the stand-in received.
type pmRecord struct {
	At          time.Time `json:"at"`
	Event       string    `json:"event"`
	AppInstance string    `json:"app_instance"`
	Service     string    `json:"service"`
	// DescriptorBytes is the size of app_descriptor; Callback its callback's uri.
	DescriptorBytes int    `json:"descriptor_bytes,omitempty"`
	Callback        string `json:"callback,omitempty"`
	// Auth says how the request was authenticated.
	Auth string `json:"auth"`
}

type pmStandIn struct {
	log    *zap.SugaredLogger
	issuer *auth.Issuer
	srv    *http.Server

	mu      sync.Mutex
	records []pmRecord
	tokens  map[string]bool
}

func startPolicyManager(port int, issuer *auth.Issuer, log *zap.SugaredLogger) (*pmStandIn, error) {
	p := &pmStandIn{log: log, issuer: issuer, tokens: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+polman.Path, p.register)
	mux.HandleFunc("POST "+pmTokenPath, p.token)
	mux.HandleFunc("GET "+pmRecordPath, p.list)
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, fmt.Errorf("the Policy Manager stand-in's port %d: %w", port, err)
	}
	p.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := p.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Errorw("Policy Manager stand-in", "error", err)
		}
	}()
	return p, nil
}

func (p *pmStandIn) register(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	var req polman.Request
	if err := json.Unmarshal(raw, &req); err != nil {
		http.Error(w, `{"status_code":422,"detail":"not JSON"}`, http.StatusUnprocessableEntity)
		return
	}
	rec := pmRecord{At: time.Now().UTC(), Event: req.Event, AppInstance: req.AppInstance, Service: req.Service,
		DescriptorBytes: len(req.AppDescriptor), Auth: "none"}
	if req.Callback != nil {
		rec.Callback = req.Callback.URI
	}
	if h := r.Header.Get("Authorization"); len(h) > 7 {
		p.mu.Lock()
		known := p.tokens[h[7:]]
		p.mu.Unlock()
		rec.Auth = "bearer (a caller's token)"
		if known {
			rec.Auth = "bearer (client credentials of " + pmClientID + ")"
		}
	}
	p.mu.Lock()
	p.records = append(p.records, rec)
	p.mu.Unlock()
	p.log.Infow("Policy Manager (stand-in) received a registration event", "event", rec.Event, "app_instance", rec.AppInstance,
		"service", rec.Service, "descriptorBytes", rec.DescriptorBytes, "callback", rec.Callback, "auth", rec.Auth)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte("[]"))
}

func (p *pmStandIn) token(w http.ResponseWriter, r *http.Request) {
	if r.ParseForm() != nil || r.PostForm.Get("grant_type") != "client_credentials" ||
		r.PostForm.Get("client_id") != pmClientID || r.PostForm.Get("client_secret") != pmClientSecret {
		http.Error(w, `{"error":"unauthorized_client"}`, http.StatusUnauthorized)
		return
	}
	tok, err := p.issuer.Sign(auth.Grant{Subject: "service-account-" + pmClientID, TTL: 5 * time.Minute})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	p.mu.Lock()
	p.tokens[tok] = true
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 300})
}

func (p *pmStandIn) list(w http.ResponseWriter, _ *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(p.records)
}

func (p *pmStandIn) stop() {
	if p != nil {
		_ = p.srv.Close()
	}
}

// pmPort is the stand-in's port: the next after the functions'.
func (s *Stack) pmPort() int { return s.Config.FunctionPort + len(s.ports) }

// startPolicyManager starts the stand-in, unless POLICY_MANAGER_URL names a Policy Manager.
func (s *Stack) startPolicyManager() error {
	if s.Config.PolicyManagerURL != "" {
		s.pmURL = s.Config.PolicyManagerURL
		s.Log.Infow("job groups are registered with the Policy Manager POLICY_MANAGER_URL names", "url", s.pmURL)
		return nil
	}
	var err error
	if s.pm, err = startPolicyManager(s.pmPort(), s.issuer, s.Log.Named("policy-manager")); err != nil {
		return err
	}
	s.pmURL = fmt.Sprintf("http://127.0.0.1:%d", s.pmPort())
	s.Log.Infow("a stand-in for the ICOS Dynamic Policy Manager records the registrations (set POLICY_MANAGER_URL for a real one)",
		"url", s.pmURL, "received", s.pmURL+pmRecordPath)
	return nil
}

// policyManagerEnv configures the functions for the Policy Manager: the stand-in's token
// endpoint and client credentials, as Keycloak's in a cluster.
func (s *Stack) policyManagerEnv() []string {
	env := []string{"POLICY_MANAGER_URL=" + s.pmURL}
	if s.pm != nil {
		env = append(env, "POLICY_MANAGER_AUTH=client-credentials", "POLICY_MANAGER_TOKEN_URL="+s.pmURL+pmTokenPath,
			"POLICY_MANAGER_CLIENT_ID="+pmClientID, "POLICY_MANAGER_CLIENT_SECRET="+pmClientSecret)
	}
	return env
}
