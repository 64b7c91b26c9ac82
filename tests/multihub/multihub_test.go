// Package multihub tests ocm-jobs with two OCM hubs sharing one Redis: hub A (its own API
// server) manages cluster1 and hub B (another API server) manages cluster2, each with its
// real work agent, and each hub runs two executor processes and a status sync process.
package multihub

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

var env *servers.Env

func TestMain(m *testing.M) {
	servers.Main(m, servers.Need{Redis: true, TwoHubs: true}, &env)
}

const root = "../.."

// hub is one hub's function processes.
type hub struct {
	name      string
	id        string
	api       *servers.Hub
	executors []*servers.Function
	sync      *servers.Function
}

func startHubs(t *testing.T, prefix string) []*hub {
	t.Helper()
	var hubs []*hub
	for name, api := range map[string]*servers.Hub{"A": env.Hub, "B": env.HubB} {
		id, err := api.HubID(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		vars := func(function string) map[string]string {
			return map[string]string{"REDIS_URL": env.Redis.URL(), "KUBECONFIG": api.Kubeconfig, "STORE_PREFIX": prefix,
				"FUNCTION": function, "LOG_LEVEL": "info", "AUTH_MODE": "none", "AUTH_CLOUDEVENTS": "false"}
		}
		h := &hub{name: name, id: id, api: api}
		for i := 0; i < 2; i++ {
			h.executors = append(h.executors, servers.StartFunction(t, root, vars("executor")))
		}
		h.sync = servers.StartFunction(t, root, vars("statussync"))
		hubs = append(hubs, h)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, h := range hubs {
			for _, f := range append(append([]*servers.Function(nil), h.executors...), h.sync) {
				t.Logf("hub %s, %s log (tail):\n%s", h.name, f.Vars["FUNCTION"], tail(f.Log, 3000))
			}
		}
	})
	return hubs
}

// tail is the end of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func newStore(t *testing.T, prefix string) *store.Store {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: env.Redis.Addr})
	t.Cleanup(func() { c.Close() })
	st, err := store.New(c, store.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// post sends a CloudEvent in binary mode, retrying 5xx as a broker does.
func post(url, typ, id, jobID string) int {
	for attempt := 0; attempt < 40; attempt++ {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader([]byte("{}")))
		req.Header.Set("Ce-Specversion", "1.0")
		req.Header.Set("Ce-Id", id)
		req.Header.Set("Ce-Source", "/tests/multihub")
		req.Header.Set("Ce-Type", typ)
		if jobID != "" {
			req.Header.Set("Ce-Jobid", jobID)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return resp.StatusCode
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 503
}

func tickAll(hubs []*hub) {
	id := uuid.NewString()
	for _, h := range hubs {
		for _, f := range append(append([]*servers.Function(nil), h.executors...), h.sync) {
			post(f.URL, "dev.knative.sources.ping", id, "")
		}
	}
}

// deliverEverywhere sends each job's job.created to every executor of both hubs, concurrently
// and in a random order.
func deliverEverywhere(t *testing.T, hubs []*hub, jobs []model.Job, eventID func(model.Job) string) {
	t.Helper()
	var urls []string
	for _, h := range hubs {
		for _, f := range h.executors {
			urls = append(urls, f.URL)
		}
	}
	var wg sync.WaitGroup
	for _, j := range jobs {
		order := rand.Perm(len(urls))
		for _, i := range order {
			wg.Add(1)
			go func(url string, j model.Job) {
				defer wg.Done()
				if status := post(url, "eu.icos.job.created.v1", eventID(j), j.ID); status >= 300 {
					t.Errorf("job.created of %s to %s: %d", j.ID, url, status)
				}
			}(urls[i], j)
		}
	}
	wg.Wait()
}

func waitAll(t *testing.T, hubs []*hub, st *store.Store, jobs []model.Job, what string, cond func(*model.Job) bool) {
	t.Helper()
	deadline := time.Now().Add(120 * time.Second)
	for {
		pending := 0
		for _, j := range jobs {
			got, err := st.GetJob(context.Background(), j.ID)
			if err != nil || !cond(got) {
				pending++
			}
		}
		if pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, j := range jobs {
				got, _ := st.GetJob(context.Background(), j.ID)
				if got != nil && !cond(got) {
					t.Errorf("job %s (%s) not %s: %s %s owner %q fence %d applied %d", j.ID, j.Targets.ClusterName, what, got.Type, got.State, got.OwnerID, got.Fence, got.Applied)
					mw, err := env.HubOf(j.Targets.ClusterName).Work.WorkV1().ManifestWorks(j.Targets.ClusterName).Get(context.Background(), ocm.WorkName(j.ID), metav1.GetOptions{})
					if err != nil {
						t.Logf("  its work: %v", err)
					} else {
						t.Logf("  its work: labels %v annotations %v conditions %+v", mw.Labels, mw.Annotations, mw.Status.Conditions)
					}
				}
			}
			t.FailNow()
		}
		tickAll(hubs)
		time.Sleep(300 * time.Millisecond)
	}
}

// works lists the ManifestWorks of a job on a hub, in every cluster namespace.
func works(t *testing.T, api *servers.Hub, jobID string) []string {
	t.Helper()
	l, err := api.Work.WorkV1().ManifestWorks(metav1.NamespaceAll).List(context.Background(),
		metav1.ListOptions{LabelSelector: ocm.LabelJob + "=" + jobID})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, w := range l.Items {
		out = append(out, w.Namespace+"/"+w.Name)
	}
	return out
}

// TestEachJobRunsOnTheHubOfItsCluster (hole 2 of the correctness review): jobs for cluster1
// and cluster2, announced to every executor of both hubs in random order, are each owned and
// executed only by the hub that manages their cluster — never Degraded by the other one — and
// stopping them removes exactly the right ManifestWorks.
func TestEachJobRunsOnTheHubOfItsCluster(t *testing.T) {
	prefix := "mh" + model.NewID()[:8]
	st := newStore(t, prefix)
	hubs := startHubs(t, prefix)
	hubOf := map[string]*hub{}
	for _, h := range hubs {
		if h.api == env.Hub {
			hubOf["cluster1"] = h
		} else {
			hubOf["cluster2"] = h
		}
	}
	g := &model.JobGroup{ID: model.NewID(), AppName: "multihub"}
	for i := 0; i < 8; i++ {
		cluster := fmt.Sprintf("cluster%d", i%2+1)
		g.Jobs = append(g.Jobs, model.Job{ID: model.NewJobID(g.ID), Component: fmt.Sprintf("c%d", i), Namespace: "multihub",
			Manifests: []model.PlainManifest{{YamlString: fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg%d}\ndata: {a: b}\n", i)}},
			Targets:   &model.Target{ClusterName: cluster, Orchestrator: model.OCM}})
	}
	if err := st.CreateGroup(context.Background(), g, "test"); err != nil {
		t.Fatal(err)
	}
	deliverEverywhere(t, hubs, g.Jobs, func(j model.Job) string { return "created-" + j.ID })
	waitAll(t, hubs, st, g.Jobs, "Finished", func(j *model.Job) bool { return j.State == model.Finished })

	for _, j := range g.Jobs {
		got, _ := st.GetJob(context.Background(), j.ID)
		right := hubOf[j.Targets.ClusterName]
		if got.OwnerID != right.id {
			t.Errorf("job %s for %s owned by %q, want hub %s (%s)", j.ID, j.Targets.ClusterName, got.OwnerID, right.name, right.id)
		}
		for _, h := range hubs {
			want := 0
			if h == right {
				want = 1
			}
			if w := works(t, h.api, j.ID); len(w) != want {
				t.Errorf("job %s for %s: hub %s has works %v, want %d", j.ID, j.Targets.ClusterName, h.name, w, want)
			}
		}
		h, _ := st.History(context.Background(), j.ID)
		for _, e := range h {
			if e.Action == "degrade" {
				t.Errorf("job %s was degraded on its way: %+v", j.ID, e)
			}
		}
	}

	// Stop: every job becomes a DeleteDeployment; only the right hub may run it.
	for _, j := range g.Jobs {
		if _, err := st.Reopen(context.Background(), j.ID, store.Reopen{Type: model.DeleteDeployment, By: "test", Why: "stop"}); err != nil {
			t.Fatal(err)
		}
	}
	deliverEverywhere(t, hubs, g.Jobs, func(j model.Job) string { return "delete-" + j.ID })
	waitAll(t, hubs, st, g.Jobs, "undeployed", func(j *model.Job) bool {
		return j.Type == model.DeleteDeployment && j.State == model.Finished
	})
	for _, j := range g.Jobs {
		for _, h := range hubs {
			if w := works(t, h.api, j.ID); len(w) != 0 {
				t.Errorf("job %s stopped, but hub %s still has %v", j.ID, h.name, w)
			}
		}
		spoke := env.Spoke(j.Targets.ClusterName)
		name := "cfg" + strings.TrimPrefix(j.Component, "c")
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := spoke.Kube.CoreV1().ConfigMaps("multihub").Get(context.Background(), name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("ConfigMap %s of job %s still on the spoke of %s (%v)", name, j.ID, j.Targets.ClusterName, err)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}
