package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"

	function "github.com/ocm-jobs/ocm-jobs"
	"github.com/ocm-jobs/ocm-jobs/shared/auth"
)

// sink records the events the functions publish (it stands where the broker would).
type sink struct {
	mu     sync.Mutex
	events []event.Event
	srv    *httptest.Server
}

func newSink(t *testing.T) *sink {
	s := &sink{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e, err := binding.ToEvent(r.Context(), cehttp.NewMessageFromHttpRequest(r))
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.events = append(s.events, *e)
		s.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// ofType returns the recorded events of a type about a job group.
func (s *sink) ofType(typ, group string) []event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []event.Event
	for _, e := range s.events {
		if e.Type() == typ && (group == "" || e.Extensions()["jobgroupid"] == group) {
			out = append(out, e)
		}
	}
	return out
}

// functions is the root function (all four functions in one process, as `FUNCTION` unset
// runs them) served over real HTTP against the suite's Redis and hub.
type functions struct {
	url    string
	token  string
	issuer *auth.Issuer
	sink   *sink
	client *http.Client
	// eventToken, when set, is presented with each event sent straight to the functions, as
	// the broker's filter presents its token (the e2e tests run with event authentication on).
	eventToken string
}

func startFunctions(t *testing.T, extraEnv map[string]string) *functions {
	t.Helper()
	iss, err := auth.NewIssuer()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := iss.Token("tester", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := newSink(t)
	vars := map[string]string{
		"REDIS_URL": env.Redis.URL(), "KUBECONFIG": env.Hub.Kubeconfig, "K_SINK": s.srv.URL,
		"KEYCLOAK_PUBLIC_KEY": iss.PublicKeyBase64(), "STORE_PREFIX": "t" + uuid.NewString()[:8],
		"FUNCTION": "", "LOG_LEVEL": "error", "PUBLISH_BACKOFF": "1ms",
		// The suites send events straight to the functions; event authentication has its
		// own tests (TestEventsNeedASenderIdentity, TestCloudEventsCanRequireTokens).
		"AUTH_CLOUDEVENTS": "false",
	}
	for k, v := range extraEnv {
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
	return &functions{url: srv.URL, token: tok, issuer: iss, sink: s, client: &http.Client{Timeout: time.Minute}}
}

// asOwner is a token with every role acting as owner (a deployment manager's owner_id).
func (f *functions) asOwner(t *testing.T, owner string) string {
	t.Helper()
	tok, err := f.issuer.Sign(auth.Grant{Subject: owner, TTL: time.Hour, Roles: auth.AllRoles, Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type reply struct {
	status int
	body   []byte
	header http.Header
}

func (r reply) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
}

// rest calls the REST API with the suite's bearer token (token "" sends none), the body as
// given ([]byte, string) or as JSON, without a Content-Type.
func (f *functions) rest(t *testing.T, method, path string, body any, token string) reply {
	t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		raw = b
	case string:
		raw = []byte(b)
	default:
		raw, _ = json.Marshal(b)
	}
	return f.send(t, method, path, "", raw, token)
}

// event sends a CloudEvent in binary mode.
func (f *functions) event(t *testing.T, typ, id, contentType string, data []byte) reply {
	t.Helper()
	return f.eventWith(t, typ, id, map[string]string{"Content-Type": contentType}, data)
}

// eventWith sends a CloudEvent in binary mode with extra headers (extensions, content type).
func (f *functions) eventWith(t *testing.T, typ, id string, headers map[string]string, data []byte) reply {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.url+"/", bytes.NewReader(data))
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Id", id)
	req.Header.Set("Ce-Source", "/tests/integration")
	req.Header.Set("Ce-Type", typ)
	if f.eventToken != "" {
		req.Header.Set("Authorization", "Bearer "+f.eventToken)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, body: raw, header: resp.Header}
}

// redeliver sends an event again as a broker redelivers it: a 503 (the first delivery's answer
// is not remembered yet, it is remembered after the answer) is retried, for up to 10 s.
func (f *functions) redeliver(t *testing.T, typ, id, contentType string, data []byte) reply {
	t.Helper()
	var r reply
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		r = f.event(t, typ, id, contentType, data)
		if r.status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return r
		}
	}
}

func guestbook(t *testing.T) []byte {
	t.Helper()
	raw, err := os.ReadFile("../../config/examples/guestbook.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// readAll reads a request body and returns a function that makes fresh readers of it.
func readAll(r *http.Request) (func() io.ReadCloser, error) {
	raw, err := io.ReadAll(r.Body)
	return func() io.ReadCloser { return io.NopCloser(bytes.NewReader(raw)) }, err
}

// discard is a ResponseWriter that drops the answer.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}
