package chaos

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clusterv1beta1 "open-cluster-management.io/api/cluster/v1beta1"

	"github.com/ocm-jobs/ocm-jobs/shared/auth"
	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/tests/broker"
	"github.com/ocm-jobs/ocm-jobs/tests/chaos/invariants"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// storePrefix is the STORE_PREFIX of a run (its Redis is its own).
const storePrefix = "chaos"

// Settings are the knobs of the functions under test that a run shortens, so that leases
// lapse, takeovers happen and the cron sweeps within a run of minutes.
type Settings struct {
	Tick        time.Duration
	LeaseTTL    time.Duration
	TakeoverTTL time.Duration
	Cooldown    time.Duration
	// ExecutorFaults is the executors' FAULTS (shared/faults).
	ExecutorFaults string
	// Duplicate and MaxDelay are the broker's standing redelivery and reordering.
	Duplicate float64
	MaxDelay  time.Duration
}

// DefaultSettings are those of `make chaos` and of the short run alike.
var DefaultSettings = Settings{
	Tick: 2 * time.Second, LeaseTTL: 3 * time.Second, TakeoverTTL: 6 * time.Second, Cooldown: 3 * time.Second,
	ExecutorFaults: "delay-before-apply=0.05:5s,kill-after-apply=0.02",
	Duplicate:      0.1, MaxDelay: 500 * time.Millisecond,
}

// Stack is the real system a run drives: redis-server with AOF, two OCM hubs (each its own
// kube-apiserver + etcd and the work agent of its one cluster), the function processes —
// per hub two executors and a status sync, and one jobs and one incompliance process — the
// local broker routing by k8s/base's Triggers (each hub's executors and status sync
// subscribed on their own), the recording subscriber in front of its ingress, and the cron.
type Stack struct {
	Dir      string
	Settings Settings
	Redis    *servers.Redis
	Env      *servers.Env
	// Hubs are the hubs by name ("a", "b"); HubIDs their owner ids.
	Hubs     map[string]*servers.Hub
	HubIDs   map[string]string
	Broker   *broker.Broker
	Faults   *broker.Faults
	Recorder *Recorder
	Store    *store.Store
	RDB      *redis.Client
	Token    string
	// Functions are the function processes by name.
	Functions map[string]*function

	binDir   string
	ingress  *httptest.Server
	stopTick chan struct{}
	tickDone chan struct{}
	// deliveries are told every delivery's outcome (the workload learns of its creates).
	mu         sync.Mutex
	deliveries []func(broker.Trigger, event.Event, int, *event.Event)
	rnd        *rand.Rand
}

// StartStack starts everything; on error, what started is stopped.
func StartStack(ctx context.Context, seed int64, s Settings, logf func(string, ...any)) (st *Stack, err error) {
	dir, err := os.MkdirTemp("", "ocm-jobs-chaos-")
	if err != nil {
		return nil, err
	}
	st = &Stack{Dir: dir, Settings: s, Hubs: map[string]*servers.Hub{}, HubIDs: map[string]string{},
		Functions: map[string]*function{}, rnd: rand.New(rand.NewSource(seed))}
	defer func() {
		if err != nil {
			st.Stop()
		}
	}()
	t0 := time.Now()
	bin, err := buildFunctions(ctx)
	if err != nil {
		return st, err
	}
	st.binDir = filepath.Dir(bin)
	if st.Redis, err = servers.StartRedis(servers.RedisOptions{AppendFsync: "always"}); err != nil {
		return st, fmt.Errorf("redis-server: %w", err)
	}
	if st.Env, err = servers.Start(ctx, servers.Need{TwoHubs: true}); err != nil {
		return st, fmt.Errorf("two hubs: %w", err)
	}
	st.Hubs["a"], st.Hubs["b"] = st.Env.Hub, st.Env.HubB
	for name, h := range st.Hubs {
		if st.HubIDs[name], err = h.HubID(ctx); err != nil {
			return st, fmt.Errorf("hub %s id: %w", name, err)
		}
	}
	logf("servers up in %s: redis %s, hub a %s (%s), hub b %s (%s)", time.Since(t0).Round(time.Second),
		st.Redis.Addr, st.Hubs["a"].URL(), clusterOfHub["a"], st.Hubs["b"].URL(), clusterOfHub["b"])
	if err := st.decide(ctx, spreadPlacement, clusters); err != nil {
		return st, err
	}
	st.RDB = redis.NewClient(&redis.Options{Addr: st.Redis.Addr})
	if st.Store, err = store.New(st.RDB, store.Options{Prefix: storePrefix}); err != nil {
		return st, err
	}
	if err := st.startBroker(seed); err != nil {
		return st, err
	}
	iss, err := auth.NewIssuer()
	if err != nil {
		return st, err
	}
	if st.Token, err = iss.Token("chaos", 24*time.Hour); err != nil {
		return st, err
	}
	if err := st.startFunctions(bin, seed, iss.PublicKeyBase64()); err != nil {
		return st, err
	}
	st.startTicker()
	logf("stack ready in %s (logs in %s)", time.Since(t0).Round(time.Second), dir)
	return st, nil
}

// buildFunctions builds functions/serve into a directory of its own (removed by Stop: the
// supervisors start the processes again from it).
func buildFunctions(ctx context.Context) (string, error) {
	dir, err := os.MkdirTemp("", "ocm-jobs-chaos-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "ocm-jobs")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/ocm-jobs/ocm-jobs/functions/serve").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("building functions/serve: %v\n%s", err, out)
	}
	return bin, nil
}

// startBroker starts the broker with k8s/base's Triggers, each executor and status sync
// Trigger copied once per hub, behind an ingress that records what the functions publish.
func (st *Stack) startBroker(seed int64) error {
	triggers, _, err := broker.Load(filepath.Join(repoRoot(), "k8s", "base"))
	if err != nil {
		return err
	}
	var routed []broker.Trigger
	for _, t := range triggers {
		fn := strings.TrimPrefix(t.Subscriber, "ocm-jobs-")
		if fn != "executor" && fn != "statussync" {
			routed = append(routed, t)
			continue
		}
		for _, hub := range hubNames {
			c := t
			c.Name, c.Subscriber = t.Name+"@"+hub, t.Subscriber+"@"+hub
			routed = append(routed, c)
		}
	}
	st.Faults = broker.NewFaults(seed, st.Settings.Duplicate, st.Settings.MaxDelay)
	st.Broker = &broker.Broker{Triggers: routed, Resolve: st.resolve, Faults: st.Faults,
		DeadLetters: filepath.Join(st.Dir, "dead-letters.jsonl"),
		// Deliveries present a token, as Knative's broker does: events are authenticated here too.
		Identity: func(context.Context, string) (string, error) { return st.Token, nil },
		OnDelivery: func(t broker.Trigger, e event.Event, status int, reply *event.Event) {
			st.mu.Lock()
			fs := append([]func(broker.Trigger, event.Event, int, *event.Event){}, st.deliveries...)
			st.mu.Unlock()
			for _, f := range fs {
				f(t, e, status, reply)
			}
		}}
	st.Recorder = &Recorder{}
	st.ingress = httptest.NewServer(st.Recorder.Front(st.Broker.Handler()))
	return nil
}

// OnDelivery adds a listener of every delivery's outcome.
func (st *Stack) OnDelivery(f func(broker.Trigger, event.Event, int, *event.Event)) {
	st.mu.Lock()
	st.deliveries = append(st.deliveries, f)
	st.mu.Unlock()
}

// resolve maps a Trigger subscriber to a process: ocm-jobs-<function>[@hub], one replica of
// the hub's chosen at random per attempt, as a Knative Service balances its pods.
func (st *Stack) resolve(sub string) (string, bool) {
	name, hub, _ := strings.Cut(strings.TrimPrefix(sub, "ocm-jobs-"), "@")
	var cands []*function
	for _, f := range st.Functions {
		if strings.HasPrefix(f.name, name) && f.hub == hub {
			cands = append(cands, f)
		}
	}
	if len(cands) == 0 {
		return "", false
	}
	st.mu.Lock()
	i := st.rnd.Intn(len(cands))
	st.mu.Unlock()
	return cands[i].url, true
}

func (st *Stack) startFunctions(bin string, seed int64, publicKey string) error {
	common := []string{
		"REDIS_URL=" + st.Redis.URL(), "STORE_PREFIX=" + storePrefix, "K_SINK=" + st.ingress.URL, "BIND_ADDRESS=127.0.0.1",
		"LOG_LEVEL=info", "HUB_ID=", "AUTH_MODE=jwt", "KEYCLOAK_PUBLIC_KEY=" + publicKey,
		"LEASE_TTL=" + st.Settings.LeaseTTL.String(), "TAKEOVER_TTL=" + st.Settings.TakeoverTTL.String(),
		"HISTORY_CAP=100000", "PUBLISH_BACKOFF=100ms",
	}
	kube := func(hub string) string { return "KUBECONFIG=" + st.Hubs[hub].Kubeconfig }
	specs := []struct {
		name, fn, hub string
		env           []string
	}{
		{"jobs", "jobs", "", []string{kube("a"), "DEFAULT_PLACEMENT=" + latePlacement, "PLACEMENT_NAMESPACE=" + placementNamespace}},
		{"incompliance", "incompliance", "", []string{kube("a"), "INCOMPLIANCE_COOLDOWN=" + st.Settings.Cooldown.String()}},
	}
	for _, hub := range hubNames {
		for _, n := range []string{"1", "2"} {
			specs = append(specs, struct {
				name, fn, hub string
				env           []string
			}{"executor-" + hub + n, "executor", hub, []string{kube(hub), "FAULTS=" + st.Settings.ExecutorFaults, "DELETE_WAIT=5s", "REALLOCATION_TIMEOUT=15s"}})
		}
		specs = append(specs, struct {
			name, fn, hub string
			env           []string
		}{"statussync-" + hub, "statussync", hub, []string{kube(hub), "PROGRESS_DEADLINE=10m"}})
	}
	for i, s := range specs {
		port, err := servers.FreePort()
		if err != nil {
			return err
		}
		env := append(append(append([]string{}, common...), "FUNCTION="+s.fn), s.env...)
		f := newFunction(s.name, s.hub, bin, st.Dir, port, env, seed*100+int64(i)*1000)
		if err := f.start(); err != nil {
			return fmt.Errorf("starting %s: %w", s.name, err)
		}
		st.Functions[s.name] = f
	}
	for _, f := range st.Functions {
		if err := f.ready(time.Minute); err != nil {
			return err
		}
	}
	return nil
}

// startTicker sends the cron tick through the broker every Tick, as the PingSource would.
func (st *Stack) startTicker() {
	st.stopTick, st.tickDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(st.tickDone)
		t := time.NewTicker(st.Settings.Tick)
		defer t.Stop()
		for {
			select {
			case <-st.stopTick:
				return
			case <-t.C:
				e := event.New()
				e.SetID(uuid.NewString())
				e.SetType(events.Ping)
				e.SetSource("/apis/v1/namespaces/ocm-jobs/pingsources/ocm-jobs-cron")
				_ = e.SetData("application/json", []byte(`{}`))
				_ = st.Broker.Publish(context.Background(), e)
			}
		}
	}()
}

// decide makes placement decide clusters: a PlacementDecision on hub A, where the jobs
// function reads them.
func (st *Stack) decide(ctx context.Context, placement string, clusters []string) error {
	hub := st.Hubs["a"]
	if err := hub.EnsureNamespace(ctx, placementNamespace); err != nil {
		return err
	}
	pd := &clusterv1beta1.PlacementDecision{ObjectMeta: metav1.ObjectMeta{
		Name: placement + "-decision-1", Namespace: placementNamespace,
		Labels: map[string]string{clusterv1beta1.PlacementLabel: placement},
	}}
	decisions := hub.OCM.ClusterV1beta1().PlacementDecisions(placementNamespace)
	got, err := decisions.Create(ctx, pd, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = decisions.Get(ctx, pd.Name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("PlacementDecision of %s: %w", placement, err)
	}
	got.Status.Decisions = nil
	for _, c := range clusters {
		got.Status.Decisions = append(got.Status.Decisions, clusterv1beta1.ClusterDecision{ClusterName: c, Reason: "chaos"})
	}
	if _, err := decisions.UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("deciding %s: %w", placement, err)
	}
	return nil
}

// Stop stops everything the stack started, functions first.
func (st *Stack) Stop() {
	if st.stopTick != nil {
		close(st.stopTick)
		<-st.tickDone
		st.stopTick = nil
	}
	var wg sync.WaitGroup
	for _, f := range st.Functions {
		wg.Add(1)
		go func() { defer wg.Done(); f.stop() }()
	}
	wg.Wait()
	if st.Broker != nil {
		done := make(chan struct{})
		go func() { st.Broker.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	}
	if st.ingress != nil {
		st.ingress.Close()
	}
	if st.RDB != nil {
		st.RDB.Close()
	}
	st.Env.Stop()
	if st.Redis != nil {
		st.Redis.Stop()
	}
	if st.binDir != "" {
		_ = os.RemoveAll(st.binDir)
	}
}

// Recorder is the recording subscriber: it stands in front of the broker's ingress and
// records every job event the broker accepts from the functions.
type Recorder struct {
	mu     sync.Mutex
	events []invariants.Event
}

// jobEventTypes are the events the recorder keeps.
var jobEventTypes = map[string]bool{events.JobCreated: true, events.JobProgressing: true, events.JobFinished: true, events.JobDegraded: true}

// Front wraps the broker's ingress: what it accepts (202) is recorded.
func (rec *Recorder) Front(ingress http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		ingress.ServeHTTP(sw, r)
		if sw.status != http.StatusAccepted {
			return
		}
		c := r.Clone(r.Context())
		c.Body = io.NopCloser(bytes.NewReader(body))
		if e, err := binding.ToEvent(c.Context(), cehttp.NewMessageFromHttpRequest(c)); err == nil {
			rec.record(*e)
		}
	})
}

func (rec *Recorder) record(e event.Event) {
	if !jobEventTypes[e.Type()] {
		return
	}
	var j model.Job
	_ = e.DataAs(&j)
	id, _ := e.Extensions()[events.ExtJobID].(string)
	if id == "" {
		id = j.ID
	}
	rec.mu.Lock()
	rec.events = append(rec.events, invariants.Event{ID: e.ID(), Source: e.Source(), Type: e.Type(), JobID: id,
		Fence: j.Fence, State: j.State, At: time.Now()})
	rec.mu.Unlock()
}

// Events returns what was recorded.
func (rec *Recorder) Events() []invariants.Event {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]invariants.Event(nil), rec.events...)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// repoRoot is the module root (tests run in their package directory).
func repoRoot() string {
	dir, _ := os.Getwd()
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}
