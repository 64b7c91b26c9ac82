package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/ocm-jobs/ocm-jobs/shared/config"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// e2e is the whole system in one test: the four functions (one process, FUNCTION unset),
// the real Knative Eventing's broker with the Triggers of k8s/base (e2e_knative_test.go) — so
// a missing or misfiltered Trigger breaks these tests — event authentication on as in a
// cluster (the broker's filter presents a token the functions verify; the functions present
// theirs to the broker's ingress), the suite's Redis and hub, and the real work agents of
// cluster1 and cluster2. What the functions publish is recorded on its way to the broker.
type e2e struct {
	*functions
	broker *knBroker
	store  *store.Store
	prefix string
}

func startE2E(t *testing.T, extraEnv map[string]string) *e2e {
	t.Helper()
	b := takeBroker(t)
	// An event a test sends straight to the functions carries a token as the filter's does.
	eventToken, err := env.Hub.Token(context.Background(), knNamespace, functionsAccount, "ocm-jobs-jobs", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rec := newSink(t)
	sinkURL := b.recordingIngress(t, func(r *http.Request, raw []byte) {
		rr := r.Clone(r.Context())
		rr.Body = io.NopCloser(bytes.NewReader(raw))
		rec.srv.Config.Handler.ServeHTTP(discard{}, rr)
	})
	prefix := "e" + uuid.NewString()[:8]
	env := map[string]string{"K_SINK": sinkURL, "SINK_TOKEN_FILE": b.tokenFile, "STORE_PREFIX": prefix, "LEASE_TTL": "3s",
		"AUTH_CLOUDEVENTS": "true", "EVENTS_OIDC_ISSUER": "hub", "EVENTS_AUDIENCES": functionAudiences()}
	for k, v := range extraEnv {
		env[k] = v
	}
	f := startFunctions(t, env)
	f.sink = rec
	f.eventToken = eventToken
	fnURL := expose(t, b.name, f.url)
	b.run(t, func(string, string) (string, bool) { return fnURL, true })
	st, err := store.New(redis.NewClient(&redis.Options{Addr: envRedisAddr()}), store.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return &e2e{functions: f, broker: b, store: st, prefix: prefix}
}

func envRedisAddr() string { return env.Redis.Addr }

// tick sends the cron tick through the broker, as the PingSource does, and returns once it
// is delivered.
func (s *e2e) tick(t *testing.T) {
	t.Helper()
	if err := s.broker.tick(); err != nil {
		t.Fatal(err)
	}
}

// ticking sends the cron tick every interval until the test ends, as the PingSource would
// (the local run ticks every SYNC_INTERVAL).
func (s *e2e) ticking(t *testing.T, interval time.Duration) {
	tickEvery(t, s.broker, interval)
}

// process is a function process started from the functions/serve binary.
type process struct {
	url  string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func functionBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binPath = filepath.Join(os.TempDir(), "ocm-jobs-serve-"+uuid.NewString()[:8])
		out, err := exec.Command("go", "build", "-o", binPath, "../../functions/serve").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("building functions/serve: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// startProcess runs a function process with vars on a free port and waits until it is ready.
func startProcess(t testing.TB, vars map[string]string) *process {
	t.Helper()
	bin := functionBinary(t)
	port, err := servers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "function.log")
	logf, _ := os.Create(logPath)
	cmd := exec.Command(bin)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", port), "BIND_ADDRESS=127.0.0.1", "AUTH_MODE=none", "LOG_LEVEL=info")
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	p := &process{url: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd, log: logPath, done: done}
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			if resp, err := http.Get(p.url + "/health/readiness"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return p
				}
			}
		}
		select {
		case <-done:
			raw, _ := os.ReadFile(logPath)
			t.Fatalf("function process exited: %s", raw)
		default:
		}
		if time.Now().After(deadline) {
			raw, _ := os.ReadFile(logPath)
			t.Fatalf("function process not ready: %s", raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// baseEnv is what every function process of the suite needs.
func baseEnv(prefix, function string) map[string]string {
	return map[string]string{
		"REDIS_URL": env.Redis.URL(), "KUBECONFIG": env.Hub.Kubeconfig, "STORE_PREFIX": prefix,
		"FUNCTION": function, "HUB_ID": "", "K_SINK": "", "AUTH_CLOUDEVENTS": "false",
	}
}

var _ = config.Executor

func redisClient(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: env.Redis.Addr})
	t.Cleanup(func() { c.Close() })
	return c
}
