// Package statussync tests the status sync function against a real kube-apiserver with OCM's
// CRDs, the real OCM work agent of cluster1 (applying to the hub's own API server) and a real
// redis-server; its benchmark syncs 10,000 ManifestWorks on the same API server.
package statussync

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/protocol"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	workv1 "open-cluster-management.io/api/work/v1"

	"github.com/ocm-jobs/ocm-jobs/functions/statussync"
	"github.com/ocm-jobs/ocm-jobs/shared/config"
	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/shared/platform"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

var env *servers.Env

func TestMain(m *testing.M) {
	servers.Main(m, servers.Need{Redis: true, Hub: true, Clusters: 1}, &env)
}

// cluster is the managed cluster whose real work agent applies to the hub's own API server.
const cluster = "cluster1"

// recorder is the broker: it keeps every event the function publishes.
type recorder struct {
	mu     sync.Mutex
	events []event.Event
}

func (r *recorder) Publish(_ context.Context, e event.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	return nil
}

// of returns the recorded events of a type about a job ("" for any job).
func (r *recorder) of(typ, jobID string) []event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []event.Event
	for _, e := range r.events {
		if e.Type() == typ && (jobID == "" || e.Subject() == jobID) {
			out = append(out, e)
		}
	}
	return out
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// commands counts what a Redis client sends, by command name; a pipeline counts as one
// round trip.
type commands struct {
	mu         sync.Mutex
	byName     map[string]int
	roundTrips atomic.Int64
}

func newCommands() *commands { return &commands{byName: map[string]int{}} }

func (c *commands) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *commands) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.roundTrips.Add(1)
		c.add(cmd)
		return next(ctx, cmd)
	}
}

func (c *commands) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.roundTrips.Add(1)
		for _, cmd := range cmds {
			c.add(cmd)
		}
		return next(ctx, cmds)
	}
}

func (c *commands) add(cmd redis.Cmder) {
	c.mu.Lock()
	c.byName[strings.ToLower(cmd.Name())]++
	c.mu.Unlock()
}

// writes counts the commands sent that may write: the store writes only through scripts.
func (c *commands) writes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for name, k := range c.byName {
		switch name {
		case "evalsha", "eval", "hset", "set", "del", "lpush", "sadd", "srem", "zadd", "zrem", "expire", "pexpire":
			n += k
		}
	}
	return n
}

// suite is one status sync function with its own hub id and store prefix, so tests never see
// each other's jobs or ManifestWorks.
type suite struct {
	t     *testing.T
	hubID string
	fn    *statussync.Function
	store *store.Store
	rdb   *redis.Client
	cmds  *commands
	pub   *recorder
	hub   *ocm.Hub
	cfg   statussync.Config
}

// newSuite starts a status sync function; tune changes its configuration.
func newSuite(t *testing.T, tune func(*statussync.Config)) *suite {
	t.Helper()
	s := &suite{t: t, hubID: "hub-" + uuid.NewString()[:8], cmds: newCommands(), pub: &recorder{}}
	s.rdb = redis.NewClient(&redis.Options{Addr: env.Redis.Addr, PoolSize: 32})
	s.rdb.AddHook(s.cmds)
	t.Cleanup(func() { s.rdb.Close() })
	var cfg statussync.Config
	if err := config.Load(&cfg); err != nil {
		t.Fatal(err)
	}
	cfg.HubID = s.hubID
	cfg.Store.Prefix = "ss" + uuid.NewString()[:8]
	cfg.SyncGrace = 2 * time.Second
	cfg.ProgressWait = 10 * time.Second
	if tune != nil {
		tune(&cfg)
	}
	var err error
	if s.store, err = store.New(s.rdb, cfg.Store.Options()); err != nil {
		t.Fatal(err)
	}
	if s.hub, err = ocm.NewHub(env.Hub.Config); err != nil {
		t.Fatal(err)
	}
	s.cfg = cfg
	if s.fn, err = statussync.New(context.Background(), cfg, platform.Platform{Redis: s.rdb, Store: s.store, Hub: s.hub, HubID: s.hubID}); err != nil {
		t.Fatal(err)
	}
	return s
}

// job stores a job of jobType targeted at clusterName and promotes it as hub owner (the
// executor's first step): it is Progressing, owned by owner, with fence 1.
func (s *suite) job(owner, clusterName string) *model.Job {
	s.t.Helper()
	g := &model.JobGroup{AppName: "shop", Jobs: []model.Job{{
		Component: "web", Namespace: "shop",
		Targets:   &model.Target{ClusterName: clusterName, Orchestrator: model.OCM},
		Manifests: []model.PlainManifest{{YamlString: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n"}},
	}}}
	if err := s.store.CreateGroup(context.Background(), g, "test"); err != nil {
		s.t.Fatal(err)
	}
	id := g.Jobs[0].ID
	if _, err := s.store.Promote(context.Background(), id, owner, "exec-"+uuid.NewString()[:8]); err != nil {
		s.t.Fatal(err)
	}
	return s.get(id)
}

func (s *suite) get(id string) *model.Job {
	s.t.Helper()
	j, err := s.store.GetJob(context.Background(), id)
	if err != nil {
		s.t.Fatal(err)
	}
	return j
}

// tick runs one sync tick, publishes the events its changes appended to the outbox (as the
// root function does after every handler), and fails the test on error.
func (s *suite) tick() statussync.Report {
	s.t.Helper()
	ctx, pending := store.WithPending(context.Background())
	r, err := s.fn.Tick(ctx)
	if err != nil {
		s.t.Fatalf("tick: %v", err)
	}
	s.flush(pending)
	return r
}

// handle delivers one event to the function and publishes the events its changes appended,
// as the root function does.
func (s *suite) handle(e event.Event) (*event.Event, protocol.Result) {
	ctx, pending := store.WithPending(context.Background())
	reply, res := s.fn.Handle(ctx, e)
	s.flush(pending)
	return reply, res
}

// flush publishes the outbox entries a handler's changes made to the suite's recorder.
func (s *suite) flush(p *store.Pending) {
	s.t.Helper()
	relay := &events.Relay{Store: s.store, Publisher: s.pub}
	if _, err := relay.Flush(context.Background(), p.Take()); err != nil {
		s.t.Fatal(err)
	}
}

// until ticks every 300 ms until ok holds for the job, or fails after timeout.
func (s *suite) until(id string, timeout time.Duration, what string, ok func(*model.Job) bool) *model.Job {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s.tick()
		j := s.get(id)
		if ok(j) {
			return j
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("job %s: not %s after %s: state %s, resource %s", id, what, timeout, j.State, toJSON(j.Resource))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// workOf builds the ManifestWork the executor makes for a job's current execution: the
// deterministic name in the cluster's namespace, the labels, the execution's fence, and
// feedback rules for the workloads among objs.
func workOf(j *model.Job, owner string, objs ...runtime.Object) *workv1.ManifestWork {
	mw := &workv1.ManifestWork{
		ObjectMeta: metav1.ObjectMeta{
			Name: ocm.WorkName(j.ID), Namespace: j.Targets.ClusterName,
			Annotations: map[string]string{ocm.AnnotationFence: strconv.FormatUint(j.Fence, 10)},
			Labels: map[string]string{
				ocm.LabelManagedBy: ocm.ManagedBy, ocm.LabelJob: j.ID, ocm.LabelInstance: j.JobGroupID,
				ocm.LabelComponent: j.Component, ocm.LabelOwner: ocm.LabelValue(owner),
			},
		},
	}
	for _, o := range objs {
		raw, err := json.Marshal(o)
		if err != nil {
			panic(err)
		}
		mw.Spec.Workload.Manifests = append(mw.Spec.Workload.Manifests, workv1.Manifest{RawExtension: runtime.RawExtension{Raw: raw}})
		if d, ok := o.(*appsv1.Deployment); ok {
			mw.Spec.ManifestConfigs = append(mw.Spec.ManifestConfigs, ocm.FeedbackRule("apps", "deployments", d.Namespace, d.Name))
		}
	}
	return mw
}

func namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func configMap(ns, name string) *corev1.ConfigMap {
	return &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Data: map[string]string{"k": "v"}}
}

func deployment(ns, name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx:1.27"}}},
			},
		},
	}
}

// create creates a ManifestWork on the hub.
func (s *suite) create(mw *workv1.ManifestWork) *workv1.ManifestWork {
	s.t.Helper()
	got, err := s.hub.Work.WorkV1().ManifestWorks(mw.Namespace).Create(context.Background(), mw, metav1.CreateOptions{})
	if err != nil {
		s.t.Fatalf("creating ManifestWork %s/%s: %v", mw.Namespace, mw.Name, err)
	}
	return got
}

// uniq is a fresh name for a spoke namespace.
func uniq(prefix string) string {
	return prefix + "-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
}

// dirty is Redis' count of writes since the last save: it moves on every write, from any
// client.
func dirty(t testing.TB, rdb redis.UniversalClient) int64 {
	t.Helper()
	info, err := rdb.Info(context.Background(), "persistence").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "rdb_changes_since_last_save:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no rdb_changes_since_last_save in INFO persistence")
	return 0
}

func fmtConds(cs []model.Condition) string {
	var b strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&b, "[%s=%s %s: %s] ", c.Type, c.Status, c.Reason, c.Message)
	}
	return b.String()
}
