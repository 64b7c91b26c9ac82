package polman

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ocm-jobs/ocm-jobs/shared/config"
)

func testConfig(url string) config.PolicyManager {
	return config.PolicyManager{URL: url, Auth: config.PolicyManagerAuthAuto, Timeout: time.Second, RetryMin: time.Second,
		RetryMax: time.Minute, CallbackURI: "/jobmanager/policies/incompliance/create"}
}

// TestRequestBodies: the bodies are exactly what the Policy Manager's models read.
func TestRequestBodies(t *testing.T) {
	tests := map[string]struct {
		req  Request
		want string
	}{
		"created": {NewRequest("g-1", "created", "name: a\n", "/cb"),
			`{"app_instance":"g-1","event":"created","service":"job-manager","app_descriptor":"name: a\n","callback":{"type":"icos-service","uri":"/cb","http_method":"POST","include_access_token":true,"extra_params":{}}}`},
		"started": {NewRequest("g-1", "started", "ignored", "/cb"), `{"app_instance":"g-1","event":"started","service":"job-manager"}`},
		"deleted": {NewRequest("g-1", "deleted", "", ""), `{"app_instance":"g-1","event":"deleted","service":"job-manager"}`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, _ := json.Marshal(tc.req)
			var a, b any
			_ = json.Unmarshal(got, &a)
			_ = json.Unmarshal([]byte(tc.want), &b)
			if d := cmp.Diff(b, a); d != "" {
				t.Errorf("body (-want +got):\n%s", d)
			}
		})
	}
}

// TestSendErrors: what a failed send says about retrying and about what may have happened.
func TestSendErrors(t *testing.T) {
	status := atomic.Int32{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != Path || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("request %s %s %s", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	c := NewClient(testConfig(srv.URL), nil)
	for code, want := range map[int]*SendError{
		200: nil, 204: nil,
		500: {Ambiguous: true}, 503: {Ambiguous: true},
		400: {Permanent: true}, 422: {Permanent: true},
		401: {}, 403: {}, 404: {}, 429: {},
	} {
		status.Store(int32(code))
		err := c.Send(context.Background(), NewRequest("g", "started", "", ""), "")
		var se *SendError
		switch {
		case want == nil && err != nil:
			t.Errorf("%d: %v", code, err)
		case want != nil && !errors.As(err, &se):
			t.Errorf("%d: want a SendError, got %v", code, err)
		case want != nil && (se.Permanent != want.Permanent || se.Ambiguous != want.Ambiguous || se.Status != code):
			t.Errorf("%d: %+v", code, se)
		}
	}
	// Nobody listening: the request never left, so it cannot have been carried out.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	err := NewClient(testConfig("http://"+addr), nil).Send(context.Background(), NewRequest("g", "created", "x", "/cb"), "")
	var se *SendError
	if !errors.As(err, &se) || se.Ambiguous || se.Permanent {
		t.Errorf("refused connection: %#v", err)
	}
	// A Policy Manager that answers too late: the request was written, it may have happened.
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { time.Sleep(2 * time.Second) }))
	defer slow.Close()
	cfg := testConfig(slow.URL)
	cfg.Timeout = 200 * time.Millisecond
	err = NewClient(cfg, nil).Send(context.Background(), NewRequest("g", "created", "x", "/cb"), "")
	if !errors.As(err, &se) || !se.Ambiguous {
		t.Errorf("timeout: %#v", err)
	}
}

// TestAuthModes: the caller's token when there is one (caller mode), else client
// credentials, fetched once and reused until the Policy Manager refuses them.
func TestAuthModes(t *testing.T) {
	var fetched atomic.Int32
	var seen []string
	var refuse atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		if r.PostForm.Get("grant_type") != "client_credentials" || r.PostForm.Get("client_id") != "jm" || r.PostForm.Get("client_secret") != "s3cret" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		n := fetched.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "cc-" + string(rune('0'+n)), "expires_in": 300})
	})
	mux.HandleFunc("POST "+Path, func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Get("Authorization"))
		if refuse.CompareAndSwap(true, false) {
			w.WriteHeader(http.StatusUnauthorized)
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	send := func(c *Client, caller string) error {
		return c.Send(context.Background(), NewRequest("g", "started", "", ""), caller)
	}

	cfg := testConfig(srv.URL)
	cfg.TokenURL, cfg.ClientID, cfg.ClientSecret = srv.URL+"/token", "jm", "s3cret"
	cc := NewClient(cfg, nil) // auto with a token URL: client credentials
	for range 3 {
		if err := send(cc, "user-token"); err != nil {
			t.Fatal(err)
		}
	}
	refuse.Store(true)
	if err := send(cc, ""); err == nil {
		t.Fatal("a 401 is an error")
	}
	if err := send(cc, ""); err != nil {
		t.Fatal(err)
	}
	want := []string{"Bearer cc-1", "Bearer cc-1", "Bearer cc-1", "Bearer cc-1", "Bearer cc-2"}
	if d := cmp.Diff(want, seen); d != "" || fetched.Load() != 2 {
		t.Errorf("client credentials: %d fetches, tokens (-want +got):\n%s", fetched.Load(), d)
	}

	seen = nil
	cfg.Auth = config.PolicyManagerAuthCaller
	caller := NewClient(cfg, nil)
	_ = send(caller, "user-token")
	_ = send(caller, "") // a retry: client credentials, as configured
	cfg.TokenURL = ""
	_ = send(NewClient(cfg, nil), "") // caller mode without client credentials: no token
	cfg.Auth = config.PolicyManagerAuthNone
	_ = send(NewClient(cfg, nil), "user-token")
	if d := cmp.Diff([]string{"Bearer user-token", "Bearer cc-3", "", ""}, seen); d != "" {
		t.Errorf("caller and none (-want +got):\n%s", d)
	}
}

func TestBackoff(t *testing.T) {
	c := config.PolicyManager{RetryMin: time.Second, RetryMax: 10 * time.Second}
	var got []time.Duration
	for n := 1; n <= 6; n++ {
		got = append(got, c.Backoff(n))
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("backoff (-want +got):\n%s", d)
	}
}
