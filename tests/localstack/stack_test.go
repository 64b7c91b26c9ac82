package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// The stack starts this binary again as its janitor (janitor.go).
func TestMain(m *testing.M) {
	if isJanitor() {
		janitor(os.Args[2], os.Args[3])
		return
	}
	os.Exit(m.Run())
}

// TestMakeRunEventsGoThroughTheRealBroker runs `make run`'s stack (real redis-server) and
// follows events through Knative's broker with OIDC sender identity on: the ingress refuses an
// event without a token, or with a token for another audience, and takes one with a token for
// the broker's; a group submitted to the jobs function finishes, which needs every hop — the
// jobs function publishing job.created with the SinkBinding's token (SINK_TOKEN_FILE), the
// ingress and the in-memory channel checking tokens, the filter presenting the executor's
// Trigger token, the executor verifying it — and nothing is dead-lettered.
func TestMakeRunEventsGoThroughTheRealBroker(t *testing.T) {
	redis, err := servers.StartRedis(servers.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer redis.Stop()
	_, base, err := servers.LocalstackPorts()
	if err != nil {
		t.Fatal(err)
	}
	run := t.TempDir()
	log, err := zap.NewDevelopment(zap.IncreaseLevel(zap.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	s := &Stack{Log: log.Sugar(), Config: Config{RedisURL: redis.URL(), FunctionPort: base, SyncInterval: 2 * time.Second,
		RunDir: run, LogLevel: "info"}}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	t0 := time.Now()
	go func() { ran <- s.Run(ctx) }()
	defer func() {
		cancel()
		<-ran
		stop, done := context.WithTimeout(context.Background(), time.Minute)
		defer done()
		s.Stop(stop)
	}()
	env := waitEnv(t, filepath.Join(run, "env"), ran)
	t.Logf("make run's stack up in %s", time.Since(t0).Round(100*time.Millisecond))

	ping := func(token string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, env["BROKER_URL"], strings.NewReader(`{}`))
		req.Header.Set("Ce-Specversion", "1.0")
		req.Header.Set("Ce-Id", uuid.NewString())
		req.Header.Set("Ce-Type", "eu.icos.tests.nobody-subscribes.v1")
		req.Header.Set("Ce-Source", "/ocm-jobs/tests/localstack")
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name, token string
		want        int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"a token for the jobs function's audience", env["JOBS_EVENTS_TOKEN"], http.StatusUnauthorized},
		{"a token for the broker's audience", env["BROKER_TOKEN"], http.StatusAccepted},
	} {
		if got := ping(tc.token); got != tc.want {
			t.Errorf("broker ingress, %s: %d, want %d", tc.name, got, tc.want)
		}
	}

	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	descriptor, err := os.ReadFile(filepath.Join(root, "config", "examples", "guestbook.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, env["JOBS_URL"], bytes.NewReader(descriptor))
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Id", uuid.NewString())
	req.Header.Set("Ce-Type", "eu.icos.jobgroup.create.v1")
	req.Header.Set("Ce-Source", "/ocm-jobs/tests/localstack")
	req.Header.Set("Content-Type", "application/yaml")
	req.Header.Set("Authorization", "Bearer "+env["JOBS_EVENTS_TOKEN"])
	var g struct {
		ID   string `json:"id"`
		Jobs []struct {
			State int `json:"state"`
		} `json:"jobs"`
	}
	if status, raw := call(t, req, &g); status != http.StatusOK || g.ID == "" {
		t.Fatalf("create: %d %s", status, raw)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		req, _ := http.NewRequest(http.MethodGet, env["JOBS_URL"]+"/jobmanager/groups/"+g.ID, nil)
		req.Header.Set("Authorization", "Bearer "+env["TOKEN"])
		status, raw := call(t, req, &g)
		finished := status == http.StatusOK && len(g.Jobs) > 0
		for _, j := range g.Jobs {
			finished = finished && j.State == 3
		}
		if finished {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s not Finished within 3m: %d %s\nlocal run's logs in %s", g.ID, status, raw, filepath.Join(run, "logs"))
		}
		time.Sleep(300 * time.Millisecond)
	}
	if raw, err := os.ReadFile(filepath.Join(run, "dead-letters.jsonl")); err == nil {
		t.Errorf("dead letters:\n%s", raw)
	}
}

// call does req and decodes a 200's JSON body into out.
func call(t *testing.T, req *http.Request, out any) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s: %v: %s", req.URL, err, raw)
		}
	}
	return resp.StatusCode, string(raw)
}

// waitEnv waits until the stack wrote its env file (or ended) and returns its variables.
func waitEnv(t *testing.T, path string, ran <-chan error) map[string]string {
	t.Helper()
	deadline := time.After(6 * time.Minute)
	for {
		if f, err := os.Open(path); err == nil {
			defer f.Close()
			vars := map[string]string{}
			sc := bufio.NewScanner(f)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
				if !ok || strings.HasPrefix(k, "#") {
					continue
				}
				if u, err := strconv.Unquote(v); err == nil {
					vars[k] = u
				}
			}
			return vars
		}
		select {
		case err := <-ran:
			t.Fatalf("the stack ended before it was up: %v", err)
		case <-deadline:
			t.Fatal(fmt.Errorf("%s not written within 6m", path))
		case <-time.After(200 * time.Millisecond):
		}
	}
}
