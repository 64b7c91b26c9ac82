package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/ocm-jobs/ocm-jobs/functions/jobs/webui"
	"github.com/ocm-jobs/ocm-jobs/shared/auth"
	"github.com/ocm-jobs/ocm-jobs/shared/config"
	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// Stack is everything `make run` starts.
type Stack struct {
	Config Config
	Log    *zap.SugaredLogger

	root      string
	env       *servers.Env
	redisURL  string
	embedded  *miniredis.Miniredis
	functions map[string]*servers.Process
	ports     map[string]int
	// sinkSrv is the dead-letter sink of the Broker and its Triggers.
	sinkSrv *http.Server
	// brokerURL is the real broker's ingress as this machine reaches it; brokerAudience
	// the audience a sender's token must be issued for; sinkToken the file the functions
	// read it from (SINK_TOKEN_FILE, as Knative's SinkBinding would mount it).
	brokerURL      string
	brokerAudience string
	sinkToken      string
	ticker         *events.SinkPublisher
	hubID          string
	issuer         *auth.Issuer
	token          string
	readonly       string
	identity       *servers.Identity
	janitor        *janitorProc
	// pm is the Policy Manager stand-in (nil when POLICY_MANAGER_URL names one); pmURL the
	// Policy Manager the jobs function registers groups with.
	pm    *pmStandIn
	pmURL string
}

// The broker of k8s/base, and the service accounts of the tokens .run/env hands scripts: one
// for each Trigger's subscriber audience (ocm-jobs-<function>, what Knative's filter presents),
// one for the broker's audience (what a sender presents to the ingress). The functions' own
// token for the ingress is that of the SinkBinding's account (functionsAccount).
const (
	brokerNamespace = "ocm-jobs"
	brokerName      = "ocm-jobs"
	// workEventsBroker carries the ApiServerSource's ManifestWork events alone (k8s/base).
	workEventsBroker = "ocm-jobs-work-events"
	brokerAccount    = "ocm-jobs-broker"
	functionsAccount = "ocm-jobs-functions"
	// pingSource and pingData are the PingSource of k8s/base: the stack adds a tick every
	// SYNC_INTERVAL (the PingSource ticks once a minute) with the same source and data.
	pingSource = "/apis/v1/namespaces/ocm-jobs/pingsources/ocm-jobs-cron"
	pingData   = `{"tick":"ocm-jobs"}`
)

// audience is the OIDC audience of a function (its Triggers' subscriber.audience).
func audience(function string) string { return "ocm-jobs-" + function }

// Run starts the stack and blocks until ctx is done.
func (s *Stack) Run(ctx context.Context) error {
	t0 := time.Now()
	var err error
	if s.root, err = repoRoot(); err != nil {
		return err
	}
	run := s.runDir()
	if err := os.MkdirAll(filepath.Join(run, "logs"), 0o755); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(run, "env"))
	if s.janitor, err = startJanitor(run); err != nil {
		return err
	}

	s.ports = map[string]int{}
	for i, f := range config.Functions {
		s.ports[f] = s.Config.FunctionPort + i
	}
	if err := s.checkPorts(); err != nil {
		return err
	}

	s.Log.Info("starting the local hub: kube-apiserver + etcd with OCM CRDs, cluster1 (the hub as spoke) and cluster2 (a second API server), each with a real OCM work agent; " +
		"Knative Eventing " + servers.KnativeVersion + " with OIDC sender identity on")
	s.env, err = servers.Start(ctx, servers.Need{Hub: true, Clusters: 2, Eventing: true, OIDC: true, Placement: true,
		Brokers: []string{brokerNamespace + "/" + brokerName, brokerNamespace + "/" + workEventsBroker}})
	if err != nil {
		return err
	}
	if err := s.startPlacements(ctx); err != nil {
		return err
	}
	s.Log.Infow("Knative Eventing runs", "components", s.env.Knative.Components())
	if s.hubID, err = s.env.Hub.HubID(ctx); err != nil {
		return err
	}
	s.Log.Infow("hub ready", "url", s.env.Hub.URL(), "hubID", s.hubID, "clusters", []string{"cluster1", "cluster2"})

	if err := s.startRedis(); err != nil {
		return err
	}

	if s.identity, err = s.env.Hub.SenderIdentity(ctx, brokerNamespace, brokerAccount); err != nil {
		return err
	}
	if err := s.startEventing(ctx, run); err != nil {
		return err
	}

	// Authentication stays on locally: the stack stands in for Keycloak with its own key and
	// hands scripts a ready bearer token, so they use the API as production clients do.
	if s.issuer, err = auth.NewIssuer(); err != nil {
		return err
	}
	if s.token, err = s.issuer.Token("ocm-jobs-local", 7*24*time.Hour); err != nil {
		return err
	}
	if s.readonly, err = s.issuer.Sign(auth.Grant{Subject: "reader", TTL: 7 * 24 * time.Hour, Roles: []auth.Role{auth.RoleReader}}); err != nil {
		return err
	}

	if err := s.startPolicyManager(); err != nil {
		return err
	}

	bin, err := s.buildFunctions(ctx, run)
	if err != nil {
		return err
	}
	if err := s.startFunctions(bin, run); err != nil {
		return err
	}
	if err := s.waitReady(ctx); err != nil {
		return err
	}
	if err := s.applyEventing(ctx); err != nil {
		return err
	}
	if err := s.writeEnv(run); err != nil {
		return err
	}
	s.Log.Infow("ocm-jobs is running; `source .run/env` to use it (Ctrl-C stops everything)",
		"env", filepath.Join(run, "env"), "startup", time.Since(t0).Round(100*time.Millisecond).String(),
		"broker", s.brokerURL, "jobs", s.url(config.Jobs), "incompliance", s.url(config.Incompliance),
		"executor", s.url(config.Executor), "statussync", s.url(config.StatusSync), "logs", filepath.Join(run, "logs"))
	// The token rides in the fragment, which the browser never sends; the page keeps it in
	// the tab's sessionStorage and takes it out of the address bar.
	fmt.Printf("\nweb UI (signed in with TOKEN): %s\n\n", s.uiURL())

	s.tick(ctx)
	return nil
}

// tick sends the cron event through the broker every SYNC_INTERVAL until ctx is done, and
// watches the functions.
func (s *Stack) tick(ctx context.Context) {
	t := time.NewTicker(s.Config.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.Log.Info("stopping")
			return
		case <-t.C:
		}
		for name, p := range s.functions {
			if p.Exited() {
				s.Log.Errorw("function exited", "function", name, "log", p.Log)
			}
		}
		e := event.New()
		e.SetID(uuid.NewString())
		e.SetType(events.Ping)
		e.SetSource(pingSource)
		e.SetTime(time.Now())
		_ = e.SetData("application/json", []byte(pingData))
		if err := s.ticker.Publish(ctx, e); err != nil && ctx.Err() == nil {
			s.Log.Warnw("cron tick not published", "error", err)
		}
	}
}

func (s *Stack) checkPorts() error {
	var all []int
	if s.Config.PolicyManagerURL == "" {
		all = append(all, s.pmPort())
	}
	for _, p := range s.ports {
		all = append(all, p)
	}
	for _, p := range all {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return fmt.Errorf("port %d is taken (is another `make run` up?): %w; set BROKER_PORT / FUNCTION_PORT_BASE", p, err)
		}
		l.Close()
	}
	return nil
}

func (s *Stack) startRedis() error {
	if s.Config.RedisURL != "" {
		s.redisURL = s.Config.RedisURL
		s.Log.Infow("using the Redis REDIS_URL names", "url", s.redisURL)
		return nil
	}
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return fmt.Errorf("embedded redis: %w", err)
	}
	s.embedded = m
	// miniredis expires keys only when its clock moves: move it with the wall clock.
	go func() {
		for range time.Tick(time.Second) {
			m.FastForward(time.Second)
		}
	}()
	s.redisURL = "redis://" + m.Addr() + "/0"
	s.Log.Warnw("REDIS_URL is not set: using an EMBEDDED IN-PROCESS REDIS (miniredis) — development only: "+
		"not persistent, not a real redis-server; set REDIS_URL to use a real one", "url", s.redisURL)
	return nil
}

func (s *Stack) url(function string) string {
	return fmt.Sprintf("http://127.0.0.1:%d", s.ports[function])
}

// uiURL is the jobs function's web UI, signed in with the run's token.
func (s *Stack) uiURL() string { return s.url(config.Jobs) + webui.Path + "#token=" + s.token }

// buildFunctions builds the process that serves the functions once (Go's build cache makes
// a rebuild take seconds).
func (s *Stack) buildFunctions(ctx context.Context, run string) (string, error) {
	bin := filepath.Join(run, "bin", "ocm-jobs")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./functions/serve")
	cmd.Dir = s.root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the functions: %w\n%s", err, out)
	}
	return bin, nil
}

// startFunctions starts the functions as tests/servers starts its servers: each in its own
// process group (a Ctrl-C reaches only the stack, which stops them in order) and killed if
// the stack dies without stopping them.
func (s *Stack) startFunctions(bin, run string) error {
	s.functions = map[string]*servers.Process{}
	for _, name := range config.Functions {
		logPath := filepath.Join(run, "logs", name+".log")
		if err := os.WriteFile(logPath, nil, 0o644); err != nil {
			return err
		}
		p, err := servers.StartProcess("function "+name, logPath, append([]string{
			"FUNCTION=" + name,
			fmt.Sprintf("PORT=%d", s.ports[name]),
			"BIND_ADDRESS=127.0.0.1",
			"REDIS_URL=" + s.redisURL,
			"K_SINK=" + s.brokerURL, "SINK_TOKEN_FILE=" + s.sinkToken,
			"KUBECONFIG=" + s.env.Hub.Kubeconfig,
			"LOG_LEVEL=" + s.Config.LogLevel,
			"KEYCLOAK_PUBLIC_KEY=" + s.issuer.PublicKeyBase64(),
			// Events are authenticated as in a cluster with Knative's OIDC sender identity.
			"AUTH_CLOUDEVENTS=true", "EVENTS_OIDC_ISSUER=hub", "EVENTS_AUDIENCES=" + audience(name),
		}, s.policyManagerEnv()...), bin)
		if err != nil {
			return fmt.Errorf("starting function %s: %w", name, err)
		}
		s.functions[name] = p
		s.Log.Infow("function started", "function", name, "pid", p.PID(), "url", s.url(name))
	}
	return nil
}

func (s *Stack) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, name := range config.Functions {
		for {
			resp, err := http.Get(s.url(name) + events.ReadinessPath)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if s.functions[name].Exited() {
				return fmt.Errorf("function %s exited; see %s", name, s.functions[name].Log)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("function %s not ready: %v", name, err)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

func (s *Stack) writeEnv(run string) error {
	hub, cluster2 := filepath.Join(run, "hub.kubeconfig"), filepath.Join(run, "cluster2.kubeconfig")
	for src, dst := range map[string]string{s.env.Hub.Kubeconfig: hub, s.env.Spoke("cluster2").Kubeconfig: cluster2} {
		raw, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(dst, raw, 0o600); err != nil {
			return err
		}
	}
	eventsToken := map[string]string{}
	for _, fn := range config.Functions {
		tok, err := s.env.Hub.Token(context.Background(), brokerNamespace, brokerAccount, audience(fn), 24*time.Hour)
		if err != nil {
			return err
		}
		eventsToken[fn] = tok
	}
	// A token for the broker's ingress (it refuses events without one), for scripts.
	brokerToken, err := s.env.Hub.Token(context.Background(), brokerNamespace, brokerAccount, s.brokerAudience, 24*time.Hour)
	if err != nil {
		return err
	}
	vars := map[string]string{
		"KUBECONFIG":                hub,
		"CLUSTER2_KUBECONFIG":       cluster2,
		"REDIS_URL":                 s.redisURL,
		"BROKER_URL":                s.brokerURL,
		"BROKER_TOKEN":              brokerToken,
		"JOBS_URL":                  s.url(config.Jobs),
		"INCOMPLIANCE_URL":          s.url(config.Incompliance),
		"EXECUTOR_URL":              s.url(config.Executor),
		"STATUSSYNC_URL":            s.url(config.StatusSync),
		"HUB_ID":                    s.hubID,
		"KUBECTL":                   filepath.Join(servers.BinDir(), "kubectl"),
		"TOKEN":                     s.token,
		"TOKEN_READONLY":            s.readonly,
		"JOBS_EVENTS_TOKEN":         eventsToken[config.Jobs],
		"INCOMPLIANCE_EVENTS_TOKEN": eventsToken[config.Incompliance],
		"EXECUTOR_EVENTS_TOKEN":     eventsToken[config.Executor],
		"STATUSSYNC_EVENTS_TOKEN":   eventsToken[config.StatusSync],
		"POLICY_MANAGER_URL":        s.pmURL,
		"UI_URL":                    s.uiURL(),
		pidVar:                      strconv.Itoa(os.Getpid()),
	}
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# written by `make run` (LOCALSTACK_PID); removed when it stops or dies\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "export %s=%q\n", k, vars[k])
	}
	tmp := filepath.Join(run, "env.tmp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(run, "env"))
}

// Stop stops everything Run started, in reverse order, and removes .run/env.
func (s *Stack) Stop(ctx context.Context) {
	if s.root != "" {
		for _, f := range runFiles {
			_ = os.Remove(filepath.Join(s.runDir(), f))
		}
	}
	var wg sync.WaitGroup
	for name, p := range s.functions {
		wg.Go(func() {
			p.Stop(10 * time.Second)
			s.Log.Infow("function stopped", "function", name)
		})
	}
	wg.Wait()
	s.pm.stop()
	if s.sinkSrv != nil {
		_ = s.sinkSrv.Shutdown(ctx)
	}
	if s.embedded != nil {
		s.embedded.Close()
	}
	s.env.Stop()
	s.janitor.release()
	s.Log.Info("everything stopped")
}

// runDir is RUN_DIR: relative to the repository unless absolute.
func (s *Stack) runDir() string {
	if filepath.IsAbs(s.Config.RunDir) {
		return s.Config.RunDir
	}
	return filepath.Join(s.root, s.Config.RunDir)
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "k8s", "base")); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the ocm-jobs repository (no go.mod with k8s/base above the current directory)")
		}
		dir = parent
	}
}
