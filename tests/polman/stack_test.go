package polman

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	function "github.com/ocm-jobs/ocm-jobs"
	"github.com/ocm-jobs/ocm-jobs/shared/auth"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// Modes of the recorder.
const (
	answerOK   = "ok"
	answer503  = "503"
	answerHang = "hang"
	answerSlow = "slow"
)

// received is one request the recorder got.
type received struct {
	At            time.Time
	Event         string `json:"event"`
	AppInstance   string `json:"app_instance"`
	Service       string `json:"service"`
	AppDescriptor string `json:"app_descriptor"`
	Callback      *struct {
		Type               string            `json:"type"`
		URI                string            `json:"uri"`
		HTTPMethod         string            `json:"http_method"`
		IncludeAccessToken bool              `json:"include_access_token"`
		ExtraParams        map[string]string `json:"extra_params"`
	} `json:"callback"`
	Auth   string
	Status int
	// Keys are the body's top-level fields.
	Keys []string
}

// recorder stands in for the Policy Manager's registry: it records every request to
// /polman/registry/api/v1/icos/app and answers as its mode says.
type recorder struct {
	t   *testing.T
	srv *httptest.Server

	mu      sync.Mutex
	mode    string
	reqs    []received
	release chan struct{}
}

func newRecorder(t *testing.T) *recorder {
	r := &recorder{t: t, mode: answerOK, release: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /polman/registry/api/v1/icos/app", r.serve)
	r.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		r.setMode(answerOK) // releases hung requests
		r.srv.Close()
	})
	return r
}

func (r *recorder) setMode(m string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mode == answerHang && m != answerHang {
		close(r.release)
		r.release = make(chan struct{})
	}
	r.mode = m
}

func (r *recorder) serve(w http.ResponseWriter, req *http.Request) {
	raw, _ := io.ReadAll(req.Body)
	var rec received
	if err := json.Unmarshal(raw, &rec); err != nil {
		r.t.Errorf("the Policy Manager got a body that is not JSON: %v: %s", err, raw)
	}
	var fields map[string]json.RawMessage
	_ = json.Unmarshal(raw, &fields)
	for k := range fields {
		rec.Keys = append(rec.Keys, k)
	}
	rec.At, rec.Auth = time.Now(), req.Header.Get("Authorization")
	r.mu.Lock()
	mode, release := r.mode, r.release
	r.mu.Unlock()
	switch mode {
	case answerHang:
		select {
		case <-release:
		case <-req.Context().Done():
		}
		rec.Status = 0 // the sender gave up (or the test released it): no answer counted
	case answer503:
		rec.Status = http.StatusServiceUnavailable
	case answerSlow:
		time.Sleep(300 * time.Millisecond)
		rec.Status = http.StatusOK
	default:
		rec.Status = http.StatusOK
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, rec)
	r.mu.Unlock()
	if rec.Status == 0 {
		http.Error(w, "given up", http.StatusServiceUnavailable)
		return
	}
	if rec.Status != http.StatusOK {
		http.Error(w, `{"status_code":503,"detail":"down"}`, rec.Status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte("[]"))
}

// all is every request received, in order.
func (r *recorder) all() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.reqs...)
}

// taken are the events the Policy Manager took (answered 200) about group, in order.
func (r *recorder) taken(group string) []string {
	var out []string
	for _, q := range r.all() {
		if q.AppInstance == group && q.Status == http.StatusOK {
			out = append(out, q.Event)
		}
	}
	return out
}

// stack is the jobs and incompliance functions in process, on a store prefix of their own.
type stack struct {
	t      *testing.T
	url    string
	token  string
	dm     string
	pm     *recorder
	prefix string
	client *http.Client
}

// dmOwner is the deployment manager the tests deploy jobs as.
const dmOwner = "dm-1"

func startStack(t *testing.T, pm *recorder, extra map[string]string) *stack {
	t.Helper()
	iss, err := auth.NewIssuer()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := iss.Token("tester", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dm, err := iss.Sign(auth.Grant{Subject: dmOwner, TTL: time.Hour, Roles: auth.AllRoles, Owner: dmOwner})
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, token: tok, dm: dm, pm: pm, prefix: "pm" + uuid.NewString()[:8], client: &http.Client{Timeout: time.Minute}}
	vars := map[string]string{
		"REDIS_URL": env.Redis.URL(), "STORE_PREFIX": s.prefix, "FUNCTION": "jobs,incompliance",
		"HUB_ID": "hub-test", "KUBECONFIG": "/nonexistent", "KEYCLOAK_PUBLIC_KEY": iss.PublicKeyBase64(),
		"AUTH_CLOUDEVENTS": "false", "LOG_LEVEL": "error", "K_SINK": "",
		"POLICY_MANAGER_URL": pm.srv.URL, "POLICY_MANAGER_TIMEOUT": "2s",
		"POLICY_MANAGER_RETRY_MIN": "20ms", "POLICY_MANAGER_RETRY_MAX": "100ms",
	}
	for k, v := range extra {
		vars[k] = v
	}
	for k, v := range vars {
		t.Setenv(k, v)
	}
	f := function.New()
	if err := f.Start(context.Background(), nil); err != nil {
		t.Fatalf("starting the functions: %v", err)
	}
	t.Cleanup(func() { _ = f.Stop(context.Background()) })
	h, err := f.Server().HTTPHandler(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

type reply struct {
	status int
	body   []byte
}

func (r reply) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
}

func (s *stack) rest(method, path string, body any, token string) reply {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, body: raw}
}

// must is rest that wants status.
func (s *stack) must(status int, method, path string, body any) reply {
	s.t.Helper()
	r := s.rest(method, path, body, s.token)
	if r.status != status {
		s.t.Fatalf("%s %s: %d %s (want %d)", method, path, r.status, r.body, status)
	}
	return r
}

// tick sends the cron tick, as the PingSource does.
func (s *stack) tick() {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.url, strings.NewReader("{}"))
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Id", uuid.NewString())
	req.Header.Set("Ce-Source", "/test/cron")
	req.Header.Set("Ce-Type", "dev.knative.sources.ping")
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("tick: %v", err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		s.t.Fatalf("tick: %d %s", resp.StatusCode, raw)
	}
}

// groupView is GET /jobmanager/groups/{id}.
type groupView struct {
	model.JobGroup
	PolicyManager *store.Registration
}

func (s *stack) group(id string) groupView {
	s.t.Helper()
	return view(s.t, s.must(http.StatusOK, http.MethodGet, "/jobmanager/groups/"+id, nil))
}

// view decodes a group answer (model.JobGroup decodes itself, so the registration apart).
func view(t *testing.T, r reply) groupView {
	t.Helper()
	var g groupView
	r.decode(t, &g.JobGroup)
	var reg struct {
		PolicyManager *store.Registration `json:"policy_manager"`
	}
	r.decode(t, &reg)
	g.PolicyManager = reg.PolicyManager
	return g
}

// create submits app (a descriptor) and returns the group.
func (s *stack) create(app string) groupView {
	s.t.Helper()
	return view(s.t, s.must(http.StatusCreated, http.MethodPost, "/jobmanager/groups", app))
}

// settle deploys every Created job of the group as the deployment manager does: promote,
// then report Finished.
func (s *stack) settle(id string) {
	s.t.Helper()
	for _, j := range s.group(id).Jobs {
		if j.State != model.Created {
			continue
		}
		if r := s.rest(http.MethodPatch, "/jobmanager/jobs/promote/"+j.ID, map[string]string{"owner_id": dmOwner}, s.dm); r.status != http.StatusNoContent {
			s.t.Fatalf("promote %s: %d %s", j.ID, r.status, r.body)
		}
		if r := s.rest(http.MethodPut, "/jobmanager/jobs", map[string]any{"id": j.ID, "owner_id": dmOwner, "state": int(model.Finished)}, s.dm); r.status != http.StatusOK {
			s.t.Fatalf("report %s: %d %s", j.ID, r.status, r.body)
		}
	}
}

// eventually ticks until cond holds.
func (s *stack) eventually(what string, timeout time.Duration, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out waiting for %s; the Policy Manager got %s", what, describe(s.pm.all()))
		}
		time.Sleep(50 * time.Millisecond)
		s.tick()
	}
}

func describe(rs []received) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "\n  %s %s → %d", r.AppInstance, r.Event, r.Status)
	}
	return b.String()
}

// app is an ICOS descriptor of two components deployed by a Nuvla deployment manager
// (targets of their own: no hub needed), with policies.
func app(name string) string {
	return `name: ` + name + `
description: a shop
components:
- name: web
  type: manifest
  manifests: [{name: web}]
  targets: {cluster_name: edge-1, orchestrator: nuvla}
  policies:
  - {security: high}
- name: db
  type: manifest
  manifests: [{name: db}]
  targets: {cluster_name: edge-1, orchestrator: nuvla}
policies:
- name: cpu
  type: custom
  fromTemplate: app-host-cpu-usage
  variables: {maxCpu: 0.8}
  remediation: scale-out
  apply-to: web
manifests:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: web}, data: {a: "1"}}
- {apiVersion: v1, kind: ConfigMap, metadata: {name: db}, data: {b: "2"}}
`
}
