package eventing

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	workv1 "open-cluster-management.io/api/work/v1"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// statusEvents wires k8s/base's event-driven status sync on the suite's stack: the
// statussync function (a real process, no cron tick sent) behind the broker, the
// ApiServerSource on ManifestWorks labelled as ocm-jobs's (Reference mode, a read-only
// account) and the Triggers for its add, update and delete events. With a tap, the broker
// delivers to the tap, which records each delivery and passes it on to statussync.
func statusEvents(t testing.TB, prefix string, tp *tap) {
	t.Helper()
	broker(t)
	statusBroker(t)
	fn := servers.StartFunction(t, "../..", map[string]string{
		"FUNCTION": "statussync", "REDIS_URL": env.Redis.URL(), "KUBECONFIG": env.Hub.Kubeconfig,
		"STORE_PREFIX": prefix, "K_SINK": env.Knative.BrokerURL(ns, "default"), "LOG_LEVEL": "info",
		"AUTH_MODE": "none", "AUTH_CLOUDEVENTS": "false",
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("statussync log:\n%s", tailOf(fn.Log, 3000))
		}
	})
	target := fn.URL[len("http://"):]
	if tp != nil {
		target = tp.front(t, fn.URL)
	}
	url, err := env.Knative.Expose("statussync.ocm-jobs.test", target)
	if err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"add", "update", "delete"} {
		triggerOn(t, worksBroker, "statussync-work-"+verb, "dev.knative.apiserver.ref."+verb, url,
			"  delivery:\n    retry: 2\n    backoffPolicy: exponential\n    backoffDelay: PT0.2S\n")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err = env.Knative.Apply(ctx, `
apiVersion: v1
kind: ServiceAccount
metadata:
  name: work-watcher
  namespace: `+ns+`
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: ocm-jobs-test-work-watcher
rules:
- apiGroups: [work.open-cluster-management.io]
  resources: [manifestworks]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: ocm-jobs-test-work-watcher
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: ocm-jobs-test-work-watcher
subjects:
- kind: ServiceAccount
  name: work-watcher
  namespace: `+ns+`
---
apiVersion: sources.knative.dev/v1
kind: ApiServerSource
metadata:
  name: works
  namespace: `+ns+`
spec:
  mode: Reference
  serviceAccountName: work-watcher
  namespaceSelector: {}
  resources:
  - apiVersion: work.open-cluster-management.io/v1
    kind: ManifestWork
    selector:
      matchLabels:
        app.kubernetes.io/managed-by: ocm-jobs
  sink:
    ref:
      apiVersion: eventing.knative.dev/v1
      kind: Broker
      name: `+worksBroker+`
`)
	if err == nil {
		err = waitReady(ctx, apiSources, "works")
	}
	if err != nil {
		t.Fatal(err)
	}
}

// worksBroker is the broker of the ManifestWorks' events, as k8s/base's ocm-jobs-work-events: its
// in-memory channel answers the ingress as soon as it holds an event (async-handler), not
// after every Trigger's delivery. The ApiServerSource's adapter sends one event at a time and
// waits for that answer, so with a synchronous channel every event waited for statussync's
// handling of the ones before it (p99 1.2 s from the status write to the broker's ingress at
// 10 changes/s). An event the channel loses that way (its dispatcher dies) is the tick's,
// as is one lost by a missed watch; the events the store's outbox publishes keep the
// synchronous default broker, which accepts an event only once it is delivered.
const worksBroker = "work-events"

var (
	statusBrokerOnce sync.Once
	statusBrokerErr  error
)

// statusBroker creates the works' broker (once, with the suite's namespace and broker) and
// waits until it is Ready.
func statusBroker(t testing.TB) {
	t.Helper()
	broker(t)
	statusBrokerOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		statusBrokerErr = applyBroker(ctx, worksBroker, "    messaging.knative.dev/async-handler: \"true\"\n")
	})
	if statusBrokerErr != nil {
		t.Fatalf("broker %s: %v", worksBroker, statusBrokerErr)
	}
}

// The works' broker answers a sender (the ApiServerSource's adapter, which sends one event at
// a time) once its channel holds the event, not once the event is delivered: a delivery its
// subscriber holds does not hold the sender's answer. (On the suite's default broker, whose
// channel is synchronous, the answer would wait for the subscriber.)
func TestWorkEventsBrokerAnswersBeforeDelivery(t *testing.T) {
	statusBroker(t)
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	held := newReceiver(t, "held", func(delivery, int) int { <-release; return http.StatusAccepted })
	triggerOn(t, worksBroker, "held-work-update", "dev.knative.apiserver.ref.update", held.URL, "")
	type answer struct {
		id     string
		status int
	}
	answers := make(chan answer, 100)
	post := func(id string) {
		req, _ := http.NewRequest(http.MethodPost, env.Knative.BrokerURL(ns, worksBroker),
			strings.NewReader(`{"apiVersion":"work.open-cluster-management.io/v1","kind":"ManifestWork","namespace":"cluster1","name":"held"}`))
		req.Header.Set("Ce-Specversion", "1.0")
		req.Header.Set("Ce-Id", id)
		req.Header.Set("Ce-Type", "dev.knative.apiserver.ref.update")
		req.Header.Set("Ce-Source", "/ocm-jobs/tests/eventing")
		req.Header.Set("Content-Type", "application/json")
		status := 0
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			status = resp.StatusCode
		}
		answers <- answer{id, status}
	}
	// An event sent before the channel's dispatcher has the Trigger's subscription goes
	// nowhere: send one a second until one is delivered (and held).
	var heldID string
	for deadline := time.Now().Add(30 * time.Second); heldID == ""; {
		if time.Now().After(deadline) {
			t.Fatalf("no event delivered within 30 s\nKnative's pods:\n%s", env.Knative.PodLogs(1500))
		}
		go post("held-" + uuid.NewString()[:8])
		for wait := time.Now().Add(time.Second); heldID == "" && time.Now().Before(wait); time.Sleep(50 * time.Millisecond) {
			if ds := held.deliveries(); len(ds) > 0 {
				heldID = ds[0].ID
			}
		}
	}
	timeout := time.After(30 * time.Second)
	for {
		select {
		case a := <-answers:
			if a.id != heldID {
				continue
			}
			if a.status != http.StatusAccepted {
				t.Fatalf("the broker answered %d, want 202", a.status)
			}
		case <-timeout:
			t.Fatal("the broker had not answered its sender 30 s into a delivery its subscriber holds: its channel waits for the delivery")
		}
		break
	}
	free()
}

// Deleting a ManifestWork by hand turns its job Degraded within 2 s: the ApiServerSource's
// delete event reaches statussync through the real broker, with no cron tick at all. The job
// got Finished the same way (the agent's status write, an update event).
func TestDeletedWorkDegradesItsJobWithin2s(t *testing.T) {
	prefix := "se" + uuid.NewString()[:8]
	statusEvents(t, prefix, nil)
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: env.Redis.Addr})
	t.Cleanup(func() { rdb.Close() })
	st, err := store.New(rdb, store.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	hubID, err := env.Hub.HubID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for round := 1; round <= 3; round++ {
		j := promotedJob(t, st, hubID)
		mw, err := env.Hub.Work.WorkV1().ManifestWorks("cluster1").Create(ctx, workOf(t, j, hubID), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		waitJob(t, st, j.ID, time.Minute, "Finished on the agent's status write", func(j *model.Job) bool { return j.State == model.Finished })

		start := time.Now()
		if err := env.Hub.Work.WorkV1().ManifestWorks("cluster1").Delete(ctx, mw.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		got := waitJob(t, st, j.ID, 10*time.Second, "Degraded", func(j *model.Job) bool { return j.State == model.Degraded })
		took := time.Since(start)
		t.Logf("round %d: ManifestWork deleted → job Degraded in %s (%s)", round, took.Round(time.Millisecond),
			got.Resource.Condition(model.ConditionDegraded).Reason)
		if took > 2*time.Second {
			t.Fatalf("round %d: job Degraded %s after its work's delete, want within 2s", round, took)
		}
	}
}

// promotedJob stores a one-component group and promotes its job to the hub hubID.
func promotedJob(t testing.TB, st *store.Store, hubID string) *model.Job {
	t.Helper()
	ctx := context.Background()
	g := &model.JobGroup{AppName: "shop", Jobs: []model.Job{{
		Component: "web", Namespace: "default",
		Targets:   &model.Target{ClusterName: "cluster1", Orchestrator: model.OCM},
		Manifests: []model.PlainManifest{{YamlString: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n"}},
	}}}
	if err := st.CreateGroup(ctx, g, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Promote(ctx, g.Jobs[0].ID, hubID, "exec-"+uuid.NewString()[:8]); err != nil {
		t.Fatal(err)
	}
	j, err := st.GetJob(ctx, g.Jobs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// workOf is the ManifestWork the executor writes for j (labels, fence), holding a ConfigMap.
func workOf(t testing.TB, j *model.Job, hubID string) *workv1.ManifestWork {
	t.Helper()
	cm := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: "web-" + j.ID, Namespace: "default"}, Data: map[string]string{"k": "v"}}
	raw, err := json.Marshal(cm)
	if err != nil {
		t.Fatal(err)
	}
	return &workv1.ManifestWork{
		ObjectMeta: metav1.ObjectMeta{
			Name: ocm.WorkName(j.ID), Namespace: j.Targets.ClusterName,
			Annotations: map[string]string{ocm.AnnotationFence: strconv.FormatUint(j.Fence, 10)},
			Labels: map[string]string{
				ocm.LabelManagedBy: ocm.ManagedBy, ocm.LabelJob: j.ID, ocm.LabelInstance: j.JobGroupID,
				ocm.LabelComponent: j.Component, ocm.LabelOwner: ocm.LabelValue(hubID),
			},
		},
		Spec: workv1.ManifestWorkSpec{Workload: workv1.ManifestsTemplate{Manifests: []workv1.Manifest{
			{RawExtension: runtime.RawExtension{Raw: raw}}}}},
	}
}

// waitJob polls the job (20 ms) until ok holds, or fails after timeout.
func waitJob(t testing.TB, st *store.Store, id string, timeout time.Duration, what string, ok func(*model.Job) bool) *model.Job {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		j, err := st.GetJob(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if ok(j) {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s not %s within %s: state %s", id, what, timeout, j.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// answers are the tick's answers, for a failure message.
var answers struct {
	sync.Mutex
	got []string
}

func tickAnswers() string {
	answers.Lock()
	defer answers.Unlock()
	return strings.Join(answers.got, " ")
}

// tick posts the cron tick to a function every interval until the returned func is called.
func tick(b *testing.B, url string, every time.Duration) func() {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-t.C:
				req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{}`))
				req.Header.Set("Ce-Specversion", "1.0")
				req.Header.Set("Ce-Id", "bench-tick-"+strconv.Itoa(i))
				req.Header.Set("Ce-Type", "dev.knative.sources.ping")
				req.Header.Set("Ce-Source", "/apis/v1/namespaces/ocm-jobs/pingsources/ocm-jobs-cron")
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				answers.Lock()
				if err == nil {
					// The answer's text is the tick's report (its ManifestWorks and hub calls).
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					answers.got = append(answers.got, strconv.Itoa(resp.StatusCode)+" ("+strings.TrimSpace(string(body))+")")
				} else {
					answers.got = append(answers.got, err.Error())
				}
				answers.Unlock()
			}
		}
	}()
	return func() { close(stop); <-done }
}

// percentile is the p-th percentile (nearest rank) of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	k := (p*len(s) + 99) / 100
	if k < 1 {
		k = 1
	}
	return s[k-1]
}
