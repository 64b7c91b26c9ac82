package statussync

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	workv1 "open-cluster-management.io/api/work/v1"

	"github.com/ocm-jobs/ocm-jobs/functions/statussync"
	"github.com/ocm-jobs/ocm-jobs/shared/config"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/shared/platform"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// The benchmark's scale: 10,000 jobs over 100 cluster namespaces.
var benchJobs = envInt("STATUSSYNC_BENCH_JOBS", 10000)

const (
	benchClusters   = 100
	benchHub        = "bench-hub"
	benchCreateConc = 16
)

// envInt reads an int from the environment (to iterate on a smaller world), else def.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// apiCalls counts the requests a REST client sends.
type apiCalls struct{ n atomic.Int64 }

func (a *apiCalls) wrap(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 5000, 10000
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			a.n.Add(1)
			return rt.RoundTrip(r)
		})
	}
	return cfg
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// countingPublisher is a broker that only counts (the broker is not what is measured).
type countingPublisher struct{ n atomic.Int64 }

func (c *countingPublisher) Publish(context.Context, event.Event) error {
	c.n.Add(1)
	return nil
}

func runtimeRaw(raw []byte) runtime.RawExtension { return runtime.RawExtension{Raw: raw} }

// benchWorld is what every benchmark of this binary shares: 10,000 jobs of benchHub in the
// store, Progressing, and their ManifestWorks on the hub with Applied and Available set and
// replica feedback, as the agent would report them.
type benchWorld struct {
	prefix string
	jobs   []model.Job
	setup  time.Duration
}

var (
	worldOnce sync.Once
	world     *benchWorld
	worldErr  error
)

// manifestKiB is a ~1 KiB Deployment, the size the API server baselines were measured with.
func manifestKiB(ns, name string) []byte {
	d := deployment(ns, name, 2)
	d.Annotations = map[string]string{"app.icos.eu/name": "shop", "app.icos.eu/component": name, "note": strings.Repeat("x", 512)}
	raw, _ := json.Marshal(d)
	return raw
}

func buildWorld() (*benchWorld, error) {
	ctx := context.Background()
	start := time.Now()
	w := &benchWorld{prefix: "bench" + uuid.NewString()[:8]}
	rdb := redis.NewClient(&redis.Options{Addr: env.Redis.Addr, PoolSize: 64})
	defer rdb.Close()
	st, err := store.New(rdb, store.Options{Prefix: w.prefix})
	if err != nil {
		return nil, err
	}
	for c := 0; c < benchClusters; c++ {
		if err := env.Hub.EnsureNamespace(ctx, fmt.Sprintf("bench-c%03d", c)); err != nil {
			return nil, err
		}
	}
	// 100 groups of 100 jobs; job i targets cluster namespace i%100.
	for g := 0; g < benchJobs/100; g++ {
		grp := &model.JobGroup{AppName: fmt.Sprintf("app%d", g)}
		for i := 0; i < 100; i++ {
			n := g*100 + i
			grp.Jobs = append(grp.Jobs, model.Job{
				Component: fmt.Sprintf("c%d", i), Namespace: "shop",
				Targets:   &model.Target{ClusterName: fmt.Sprintf("bench-c%03d", n%benchClusters), Orchestrator: model.OCM},
				Manifests: []model.PlainManifest{{YamlString: string(manifestKiB("shop", fmt.Sprintf("c%d", i)))}},
			})
		}
		if err := st.CreateGroup(ctx, grp, "bench"); err != nil {
			return nil, err
		}
		w.jobs = append(w.jobs, grp.Jobs...)
	}
	hub, err := ocm.NewHub((&apiCalls{}).wrap(env.Hub.Config))
	if err != nil {
		return nil, err
	}
	// Promote, create the work, set its status: concurrently, as many executors and agents
	// would.
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
	)
	for range benchCreateConc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(w.jobs) {
					return
				}
				if err := benchJob(ctx, st, hub, &w.jobs[i]); err != nil {
					errMu.Lock()
					if first == nil {
						first = err
					}
					errMu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	w.setup = time.Since(start)
	return w, nil
}

func benchJob(ctx context.Context, st *store.Store, hub *ocm.Hub, j *model.Job) error {
	c, err := st.Promote(ctx, j.ID, benchHub, "bench-exec")
	if err != nil {
		return err
	}
	j.Fence = c.Fence
	mw := workOf(j, benchHub)
	mw.Spec.Workload.Manifests = []workv1.Manifest{{RawExtension: runtimeRaw(manifestKiB("shop", j.Component))}}
	mw.Spec.ManifestConfigs = []workv1.ManifestConfigOption{ocm.FeedbackRule("apps", "deployments", "shop", j.Component)}
	works := hub.Work.WorkV1().ManifestWorks(mw.Namespace)
	created, err := works.Create(ctx, mw, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating work %s/%s: %w", mw.Namespace, mw.Name, err)
	}
	now := metav1.Now()
	two := int64(2)
	created.Status = workv1.ManifestWorkStatus{
		Conditions: []metav1.Condition{
			{Type: workv1.WorkApplied, Status: metav1.ConditionTrue, Reason: "AppliedManifestWorkComplete", Message: "Apply manifest work complete", ObservedGeneration: created.Generation, LastTransitionTime: now},
			{Type: workv1.WorkAvailable, Status: metav1.ConditionTrue, Reason: "ResourcesAvailable", Message: "All resources are available", ObservedGeneration: created.Generation, LastTransitionTime: now},
		},
		ResourceStatus: workv1.ManifestResourceStatus{Manifests: []workv1.ManifestCondition{{
			ResourceMeta: workv1.ManifestResourceMeta{Group: "apps", Version: "v1", Kind: "Deployment", Resource: "deployments", Namespace: "shop", Name: j.Component},
			StatusFeedbacks: workv1.StatusFeedbackResult{Values: []workv1.FeedbackValue{
				{Name: ocm.FeedbackReplicas, Value: workv1.FieldValue{Type: workv1.Integer, Integer: &two}},
				{Name: ocm.FeedbackReadyReplicas, Value: workv1.FieldValue{Type: workv1.Integer, Integer: &two}},
				{Name: ocm.FeedbackAvailableReplicas, Value: workv1.FieldValue{Type: workv1.Integer, Integer: &two}},
			}},
			Conditions: []metav1.Condition{{Type: workv1.WorkAvailable, Status: metav1.ConditionTrue, Reason: "ResourceAvailable", Message: "Resource is available", LastTransitionTime: now}},
		}}},
	}
	if _, err := works.UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting the status of work %s: %w", created.Name, err)
	}
	return nil
}

func getWorld(b *testing.B) *benchWorld {
	b.Helper()
	worldOnce.Do(func() {
		world, worldErr = buildWorld()
		if worldErr == nil {
			fmt.Printf("statussync bench: %d jobs, %d ManifestWorks in %d cluster namespaces set up in %s\n",
				benchJobs, benchJobs, benchClusters, world.setup.Round(time.Millisecond))
		}
	})
	if worldErr != nil {
		b.Fatalf("setting up %d jobs and ManifestWorks: %v", benchJobs, worldErr)
	}
	return world
}

// benchFunc is a status sync function on the world, counting its API calls and Redis round
// trips.
type benchFunc struct {
	fn    *statussync.Function
	api   *apiCalls
	redis *commands
	rdb   *redis.Client
	pub   *countingPublisher
	hub   *ocm.Hub
}

func newBenchFunc(b *testing.B, w *benchWorld, pageSize int64) *benchFunc {
	b.Helper()
	bf := &benchFunc{api: &apiCalls{}, redis: newCommands(), pub: &countingPublisher{}}
	bf.rdb = redis.NewClient(&redis.Options{Addr: env.Redis.Addr, PoolSize: 64})
	bf.rdb.AddHook(bf.redis)
	b.Cleanup(func() { bf.rdb.Close() })
	var cfg statussync.Config
	if err := config.Load(&cfg); err != nil {
		b.Fatal(err)
	}
	cfg.HubID, cfg.Store.Prefix, cfg.ListPageSize = benchHub, w.prefix, pageSize
	var err error
	if bf.hub, err = ocm.NewHub(bf.api.wrap(env.Hub.Config)); err != nil {
		b.Fatal(err)
	}
	st, serr := store.New(bf.rdb, cfg.Store.Options())
	if serr != nil {
		b.Fatal(serr)
	}
	if bf.fn, err = statussync.New(context.Background(), cfg, platform.Platform{Redis: bf.rdb, Store: st, Hub: bf.hub, HubID: benchHub}); err != nil {
		b.Fatal(err)
	}
	return bf
}

// tick runs one tick and returns its figures.
func (bf *benchFunc) tick(b *testing.B) (statussync.Report, int64, int64) {
	b.Helper()
	api0, rt0 := bf.api.n.Load(), bf.redis.roundTrips.Load()
	rep, err := bf.fn.Tick(context.Background())
	if err != nil {
		b.Fatalf("tick: %v", err)
	}
	return rep, bf.api.n.Load() - api0, bf.redis.roundTrips.Load() - rt0
}

// firstTick is the first sync of the world: every job Finished, every resource written.
var (
	firstOnce sync.Once
	firstRep  statussync.Report
	firstAPI  int64
	firstRT   int64
)

// BenchmarkSyncTick measures one status sync tick over 10,000 jobs and ManifestWorks: the
// first (every job becomes Finished: 10,000 resource writes, state changes and events) and a
// steady one (nothing changed: nothing written), with the LIST served from the watch cache
// and, for comparison, paginated from etcd; then the ICOS approach (one GET per ManifestWork
// and one write per job) as the peer, and the ratio.
func BenchmarkSyncTick(b *testing.B) {
	w := getWorld(b)
	firstOnce.Do(func() {
		bf := newBenchFunc(b, w, 0)
		firstRep, firstAPI, firstRT = bf.tick(b)
		if firstRep.Finished != benchJobs || firstRep.ResourceWrites != benchJobs {
			b.Fatalf("first tick: %s; want %d finished and resources written", firstRep, benchJobs)
		}
		fmt.Printf("statussync bench: first tick %s, %d API calls, %d Redis round trips, %d events\n",
			firstRep, firstAPI, firstRT, bf.pub.n.Load())
	})
	var steady time.Duration
	for _, tc := range []struct {
		name     string
		pageSize int64
	}{{"steady/watchcache", 0}, {"steady/paged500", 500}} {
		b.Run(tc.name, func(b *testing.B) {
			bf := newBenchFunc(b, w, tc.pageSize)
			bf.tick(b) // warm: connections, the watch cache
			var (
				api, rt int64
				last    statussync.Report
			)
			dirty0 := dirty(b, bf.rdb)
			if path := os.Getenv("STATUSSYNC_BENCH_CPUPROFILE"); path != "" && tc.pageSize == 0 {
				// The client's share of a steady tick, without the setup in the profile.
				out, err := os.Create(path)
				if err != nil {
					b.Fatal(err)
				}
				if err := pprof.StartCPUProfile(out); err != nil {
					b.Fatal(err)
				}
				defer func() { pprof.StopCPUProfile(); out.Close() }()
			}
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				rep, a, r := bf.tick(b)
				last = rep
				if rep.Jobs != benchJobs || rep.Works != benchJobs || rep.ResourceWrites+rep.Finished+rep.Degraded != 0 {
					b.Fatalf("steady tick: %s", rep)
				}
				api, rt = api+a, rt+r
			}
			took := time.Since(start) / time.Duration(b.N)
			b.StopTimer()
			if d := dirty(b, bf.rdb) - dirty0; d != 0 {
				b.Fatalf("steady ticks changed Redis %d times", d)
			}
			b.ReportMetric(took.Seconds(), "s/tick")
			b.ReportMetric(float64(api)/float64(b.N), "api-calls/tick")
			b.ReportMetric(float64(rt)/float64(b.N), "redis-roundtrips/tick")
			b.ReportMetric(float64(bf.pub.n.Load())/float64(b.N), "events/tick")
			b.ReportMetric(firstRep.Took.Seconds(), "first-tick-s")
			b.ReportMetric(float64(firstAPI), "first-tick-api-calls")
			b.ReportMetric(float64(firstRT), "first-tick-redis-roundtrips")
			if tc.pageSize == 0 {
				steady = took
			}
			fmt.Printf("statussync bench: %s tick %s, %.0f API calls, %.0f Redis round trips (last: %s)\n",
				tc.name, took.Round(time.Millisecond), float64(api)/float64(b.N), float64(rt)/float64(b.N), last)
		})
	}
	b.Run("icos-peer", func(b *testing.B) {
		bf := newBenchFunc(b, w, 0)
		var api, rt int64
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i++ {
			a, r := icosTick(b, bf, w)
			api, rt = api+a, rt+r
		}
		took := time.Since(start) / time.Duration(b.N)
		b.StopTimer()
		b.ReportMetric(took.Seconds(), "s/tick")
		b.ReportMetric(float64(api)/float64(b.N), "api-calls/tick")
		b.ReportMetric(float64(rt)/float64(b.N), "redis-roundtrips/tick")
		if steady > 0 {
			b.ReportMetric(took.Seconds()/steady.Seconds(), "x-slower-than-ocm-jobs")
		}
		fmt.Printf("statussync bench: ICOS peer tick %s, %.0f API calls, %.0f Redis round trips; ocm-jobs steady tick %s: ratio %.1fx\n",
			took.Round(time.Millisecond), float64(api)/float64(b.N), float64(rt)/float64(b.N), steady.Round(time.Millisecond), took.Seconds()/steady.Seconds())
	})
}

// icosTick is the ICOS status sync's approach, generously run 16 at a time: for every job, GET
// its ManifestWork and write the job's resource back, changed or not.
func icosTick(b *testing.B, bf *benchFunc, w *benchWorld) (int64, int64) {
	b.Helper()
	ctx := context.Background()
	api0, rt0 := bf.api.n.Load(), bf.redis.roundTrips.Load()
	var (
		next   atomic.Int64
		wg     sync.WaitGroup
		failed atomic.Value
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(w.jobs) {
					return
				}
				j := &w.jobs[i]
				mw, err := bf.hub.Work.WorkV1().ManifestWorks(j.Targets.ClusterName).Get(ctx, ocm.WorkName(j.ID), metav1.GetOptions{})
				if err != nil {
					failed.Store(err)
					return
				}
				res := model.Resource{ID: j.ID, JobID: j.ID, ResourceUUID: string(mw.UID), Conditions: mw.Status.Conditions}
				doc, _ := json.Marshal(res)
				if err := bf.rdb.HSet(ctx, "icospeer:"+w.prefix+":"+j.ID, "resource", doc).Err(); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatalf("ICOS peer: %v", err)
	}
	return bf.api.n.Load() - api0, bf.redis.roundTrips.Load() - rt0
}
