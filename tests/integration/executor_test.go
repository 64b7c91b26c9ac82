package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	workv1 "open-cluster-management.io/api/work/v1"
	"sigs.k8s.io/yaml"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// waitJob polls a job until cond holds.
func waitJob(t testing.TB, st *store.Store, id string, timeout time.Duration, what string, cond func(*model.Job) bool) *model.Job {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var j *model.Job
	var err error
	for time.Now().Before(deadline) {
		if j, err = st.GetJob(context.Background(), id); err == nil && cond(j) {
			return j
		}
		time.Sleep(150 * time.Millisecond)
	}
	t.Fatalf("job %s never %s: last %+v (%v)", id, what, j, err)
	return nil
}

func finished(j *model.Job) bool { return j.State == model.Finished }

// spokeDeployment reads a Deployment from the spoke of cluster, or nil when absent.
func spokeDeployment(t *testing.T, cluster, ns, name string) *appsv1.Deployment {
	t.Helper()
	d, err := env.Spoke(cluster).Kube.AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestCreateDeploysToBothClusters(t *testing.T) {
	s := startE2E(t, nil)
	s.ticking(t, time.Second)
	r := s.rest(t, http.MethodPost, "/jobmanager/groups", guestbook(t), s.token)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /groups: %d %s", r.status, r.body)
	}
	var g model.JobGroup
	r.decode(t, &g)
	hubID, _ := env.Hub.HubID(context.Background())
	for _, j := range g.Jobs {
		done := waitJob(t, s.store, j.ID, 90*time.Second, "finished", finished)
		cluster := j.Targets.ClusterName
		if done.OwnerID != hubID || done.Resource == nil || done.Resource.ManifestWorkName != ocm.WorkName(j.ID) {
			t.Errorf("job %s: owner %q resource %+v", j.ID, done.OwnerID, done.Resource)
		}
		mw, err := env.Hub.Work.WorkV1().ManifestWorks(cluster).Get(context.Background(), ocm.WorkName(j.ID), metav1.GetOptions{})
		if err != nil {
			t.Fatalf("ManifestWork of %s: %v", j.Component, err)
		}
		want := map[string]string{ocm.LabelManagedBy: ocm.ManagedBy, ocm.LabelJob: j.ID, ocm.LabelInstance: g.ID,
			ocm.LabelComponent: j.Component, ocm.LabelOwner: hubID}
		for k, v := range want {
			if mw.Labels[k] != v {
				t.Errorf("label %s = %q, want %q", k, mw.Labels[k], v)
			}
		}
		// The namespace is the access work's; the agent applies the job's objects as the
		// namespace's deployer, and never deletes (or adopts) the namespace.
		if n := len(mw.Spec.Workload.Manifests); n != 3 {
			t.Errorf("%s: %d manifests, want the Deployment + Service + ConfigMap", j.Component, n)
		}
		if len(mw.Spec.ManifestConfigs) != 1 || mw.Spec.DeleteOption == nil ||
			mw.Spec.DeleteOption.PropagationPolicy != workv1.DeletePropagationPolicyTypeSelectivelyOrphan ||
			mw.Spec.DeleteOption.SelectivelyOrphan == nil || len(mw.Spec.DeleteOption.SelectivelyOrphan.OrphaningRules) != 1 ||
			mw.Spec.DeleteOption.SelectivelyOrphan.OrphaningRules[0] != (workv1.OrphaningRule{Resource: "namespaces", Name: "guestbook"}) {
			t.Errorf("%s: feedback rules %+v, delete option %+v", j.Component, mw.Spec.ManifestConfigs, mw.Spec.DeleteOption)
		}
		if ex := mw.Spec.Executor; ex == nil || ex.Subject.ServiceAccount == nil ||
			*ex.Subject.ServiceAccount != (workv1.ManifestWorkSubjectServiceAccount{Namespace: "guestbook", Name: ocm.Deployer}) {
			t.Errorf("%s: executor %+v, want the deployer of guestbook", j.Component, ex)
		}
		access, err := env.Hub.Work.WorkV1().ManifestWorks(cluster).Get(context.Background(), ocm.AccessWorkName("guestbook"), metav1.GetOptions{})
		if err != nil || !meta.IsStatusConditionTrue(access.Status.Conditions, workv1.WorkApplied) {
			t.Errorf("access work of guestbook on %s: %v", cluster, err)
		}
		sa, err := env.Spoke(cluster).Kube.CoreV1().ServiceAccounts("guestbook").Get(context.Background(), ocm.Deployer, metav1.GetOptions{})
		if err != nil || sa.Name != ocm.Deployer {
			t.Errorf("the deployer service account on %s: %v", cluster, err)
		}
		d := spokeDeployment(t, cluster, "guestbook", j.Component)
		if d == nil {
			t.Fatalf("Deployment %s not on the spoke of %s", j.Component, cluster)
		}
		if d.Annotations[ocm.AnnotationInstance] != g.ID || d.Annotations[ocm.AnnotationComponent] != j.Component {
			t.Errorf("ICOS annotations on the applied Deployment: %v", d.Annotations)
		}
	}
	if n := len(s.sink.ofType("eu.icos.job.progressing.v1", g.ID)); n != 2 {
		t.Errorf("job.progressing published %d times, want 2", n)
	}
}

// workload is one component app: a Deployment + Service + ConfigMap on cluster1.
func workloadApp(name string) string {
	return `
name: ` + name + `
components:
  - name: web
    manifests: [{name: web}, {name: web-svc}, {name: web-config}]
    targets: {cluster_name: cluster1, orchestrator: ocm}
manifests:
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web}
    spec:
      replicas: 2
      selector: {matchLabels: {app: web}}
      template:
        metadata: {labels: {app: web}}
        spec:
          containers:
            - name: web
              image: nginx:1.27
              resources:
                requests: {cpu: 200m, memory: 128Mi}
                limits: {cpu: 400m, memory: 256Mi}
  - apiVersion: v1
    kind: Service
    metadata: {name: web-svc}
    spec: {selector: {app: web}, ports: [{port: 80}]}
  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: web-config}
    data: {mode: demo}
`
}

// TestRemediations runs every remediation end to end: a deployed job, an incompliance, the
// UpdateDeployment executed on the hub, applied by the real agent, and the result read on the
// spoke. The manifests a remediation is not about stay exactly as they were.
func TestRemediations(t *testing.T) {
	tests := map[string]struct {
		remediation string
		extra       map[string]any
		check       func(t *testing.T, d *appsv1.Deployment)
		cluster     string
	}{
		"scale-out adds a replica": {remediation: "scale-out", check: func(t *testing.T, d *appsv1.Deployment) {
			if *d.Spec.Replicas != 3 {
				t.Errorf("replicas %d, want 3", *d.Spec.Replicas)
			}
		}},
		"scale-in removes a replica": {remediation: "scale-in", check: func(t *testing.T, d *appsv1.Deployment) {
			if *d.Spec.Replicas != 1 {
				t.Errorf("replicas %d, want 1", *d.Spec.Replicas)
			}
		}},
		"scale-up adds CPU and memory": {remediation: "scale-up", check: func(t *testing.T, d *appsv1.Deployment) {
			c := d.Spec.Template.Spec.Containers[0].Resources
			if c.Requests.Cpu().String() != "300m" || c.Requests.Memory().String() != "228Mi" || c.Limits.Cpu().String() != "500m" {
				t.Errorf("resources %v", c)
			}
		}},
		"scale-down removes CPU and memory": {remediation: "scale-down", check: func(t *testing.T, d *appsv1.Deployment) {
			c := d.Spec.Template.Spec.Containers[0].Resources
			if c.Requests.Cpu().String() != "100m" || c.Limits.Memory().String() != "156Mi" {
				t.Errorf("resources %v", c)
			}
		}},
		"patch applies a merge patch": {remediation: "patch", extra: map[string]any{"patch": map[string]any{"spec": map[string]any{"paused": true}}},
			check: func(t *testing.T, d *appsv1.Deployment) {
				if !d.Spec.Paused {
					t.Error("Deployment not paused")
				}
			}},
		"secure hardens the pod template": {remediation: "secure", extra: map[string]any{"image": "nginx:1.28"},
			check: func(t *testing.T, d *appsv1.Deployment) {
				p := d.Spec.Template.Spec
				c := p.Containers[0]
				if p.SecurityContext == nil || p.SecurityContext.RunAsNonRoot == nil || !*p.SecurityContext.RunAsNonRoot ||
					c.SecurityContext == nil || c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation ||
					c.Image != "nginx:1.28" {
					t.Errorf("pod %+v container %+v", p.SecurityContext, c.SecurityContext)
				}
			}},
		"reallocation moves the workload to cluster2": {remediation: "reallocation", extra: map[string]any{"targetCluster": "cluster2"}, cluster: "cluster2",
			check: func(t *testing.T, d *appsv1.Deployment) {
				if *d.Spec.Replicas != 2 {
					t.Errorf("replicas %d after the move", *d.Spec.Replicas)
				}
			}},
	}
	s := startE2E(t, nil)
	s.ticking(t, time.Second)
	i := 0
	for name, tc := range tests {
		i++
		app := fmt.Sprintf("rem%d", i)
		t.Run(name, func(t *testing.T) {
			r := s.rest(t, http.MethodPost, "/jobmanager/groups", workloadApp(app), s.token)
			if r.status != http.StatusCreated {
				t.Fatalf("POST /groups: %d %s", r.status, r.body)
			}
			var g model.JobGroup
			r.decode(t, &g)
			job := g.Jobs[0]
			before := waitJob(t, s.store, job.ID, 90*time.Second, "finished", finished)
			inc := map[string]any{"policyName": "p-" + app, "remediation": tc.remediation,
				"subject": map[string]string{"appInstance": g.ID, "appComponent": "web"}}
			for k, v := range tc.extra {
				inc[k] = v
			}
			if r := s.rest(t, http.MethodPost, "/jobmanager/policies/incompliance", inc, s.token); r.status != http.StatusOK {
				t.Fatalf("incompliance: %d %s", r.status, r.body)
			}
			after := waitJob(t, s.store, job.ID, 90*time.Second, "remediated", func(j *model.Job) bool {
				return j.Type == model.UpdateDeployment && j.State == model.Finished
			})
			cluster := "cluster1"
			if tc.cluster != "" {
				cluster = tc.cluster
				if after.Targets.ClusterName != cluster {
					t.Errorf("job targets %s after reallocation", after.Targets.ClusterName)
				}
				deadline := time.Now().Add(60 * time.Second)
				for spokeDeployment(t, "cluster1", app, "web") != nil && time.Now().Before(deadline) {
					time.Sleep(200 * time.Millisecond)
				}
				if spokeDeployment(t, "cluster1", app, "web") != nil {
					t.Error("the old cluster still runs the workload after the reallocation")
				}
			}
			var d *appsv1.Deployment
			deadline := time.Now().Add(60 * time.Second)
			for {
				d = spokeDeployment(t, cluster, app, "web")
				if d != nil && d.Generation > 1 || tc.cluster != "" && d != nil || time.Now().After(deadline) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if d == nil {
				t.Fatalf("no Deployment on %s", cluster)
			}
			tc.check(t, d)
			// Every manifest the remediation is not about is byte-for-byte as it was.
			for k := 1; k < len(before.Manifests); k++ {
				if before.Manifests[k].YamlString != after.Manifests[k].YamlString {
					t.Errorf("manifest %d changed by %s:\n%s\n-> %s", k, tc.remediation, before.Manifests[k].YamlString, after.Manifests[k].YamlString)
				}
			}
		})
	}
}

// createJobs stores a group of n jobs on cluster (no events), for the executor tests.
func createJobs(t testing.TB, st *store.Store, n int, cluster, manifest string) []model.Job {
	t.Helper()
	if manifest == "" {
		manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: b}\n"
	}
	g := &model.JobGroup{ID: model.NewID(), AppName: "exec-" + strings.ToLower(model.NewID()[:6])}
	for i := 0; i < n; i++ {
		g.Jobs = append(g.Jobs, model.Job{ID: model.NewJobID(g.ID), Component: fmt.Sprintf("c%d", i), Namespace: g.AppName,
			Manifests: []model.PlainManifest{{YamlString: manifest}}, Targets: &model.Target{ClusterName: cluster, Orchestrator: model.OCM}})
	}
	if err := st.CreateGroup(context.Background(), g, "test"); err != nil {
		t.Fatal(err)
	}
	return g.Jobs
}

// deliverClient keeps a connection per concurrent sender, as a broker's dispatcher does
// (http.DefaultClient keeps two idle connections per host: eight senders would dial anew for
// most events and measure that).
var deliverClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// deliver POSTs a job.created event like a broker: retried while the answer is 5xx.
func deliver(t testing.TB, url, eventID string, j model.Job) int {
	t.Helper()
	data, _ := json.Marshal(j)
	for attempt := 0; attempt < 50; attempt++ {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(data))
		req.Header.Set("Ce-Specversion", "1.0")
		req.Header.Set("Ce-Id", eventID)
		req.Header.Set("Ce-Source", "/tests/executor")
		req.Header.Set("Ce-Type", "eu.icos.job.created.v1")
		req.Header.Set("Ce-Jobid", j.ID)
		req.Header.Set("Content-Type", "application/json")
		resp, err := deliverClient.Do(req)
		if err != nil {
			return 0
		}
		// Read to the end: a body closed unread takes its connection with it, and every
		// delivery would pay a new one (a broker's dispatcher reuses them).
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 500 {
			return resp.StatusCode
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 503
}

func worksOf(t testing.TB, cluster, jobID string) int {
	t.Helper()
	l, err := env.Hub.Work.WorkV1().ManifestWorks(cluster).List(context.Background(), metav1.ListOptions{LabelSelector: ocm.LabelJob + "=" + jobID})
	if err != nil {
		t.Fatal(err)
	}
	return len(l.Items)
}

func promotes(t testing.TB, st *store.Store, jobID string) int {
	t.Helper()
	return historyActions(t, st, jobID, "promote")
}

// historyActions counts the entries of a job's history with this action.
func historyActions(t testing.TB, st *store.Store, jobID, action string) int {
	t.Helper()
	h, err := st.History(context.Background(), jobID)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range h {
		if e.Action == action {
			n++
		}
	}
	return n
}

// TestExactlyOnce: the same job.created event delivered 10 times, concurrently, to 3 executor
// processes → one ManifestWork, one owner, one execution.
func TestExactlyOnce(t *testing.T) {
	prefix := "x" + model.NewID()[:8]
	st := newStore(t, prefix)
	var procs []*process
	for i := 0; i < 3; i++ {
		procs = append(procs, startProcess(t, baseEnv(prefix, "executor")))
	}
	jobs := createJobs(t, st, 5, "cluster1", "")
	var wg sync.WaitGroup
	for _, j := range jobs {
		for k := 0; k < 10; k++ {
			wg.Add(1)
			go func(j model.Job, k int) {
				defer wg.Done()
				if status := deliver(t, procs[k%3].url, "created-"+j.ID, j); status >= 300 {
					t.Errorf("delivery %d of %s: %d", k, j.ID, status)
				}
			}(j, k)
		}
	}
	wg.Wait()
	for _, j := range jobs {
		got, _ := st.GetJob(context.Background(), j.ID)
		if n := worksOf(t, "cluster1", j.ID); n != 1 {
			t.Errorf("job %s: %d ManifestWorks", j.ID, n)
		}
		if n := promotes(t, st, j.ID); n != 1 || got.Fence != 1 {
			t.Errorf("job %s: %d executions (fence %d), want 1", j.ID, n, got.Fence)
		}
	}
}

// TestCrashAfterApply: an executor killed (SIGKILL) after it applied the ManifestWork but
// before it recorded anything; the next sweep of another executor resumes the job with the
// same fence and converges on the same single ManifestWork.
func TestCrashAfterApply(t *testing.T) {
	prefix := "c" + model.NewID()[:8]
	st := newStore(t, prefix)
	vars := baseEnv(prefix, "executor")
	vars["LEASE_TTL"] = "2s"
	crashing := map[string]string{"FAULT_KILL_AFTER_APPLY": "true"}
	for k, v := range vars {
		crashing[k] = v
	}
	p := startProcess(t, crashing)
	j := createJobs(t, st, 1, "cluster1", "")[0]
	deliver(t, p.url, "crash-"+j.ID, j)
	select {
	case <-p.done:
		if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Errorf("the executor ended with %v, want killed by SIGKILL", p.cmd.ProcessState)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the executor did not crash after applying the ManifestWork")
	}
	mid, _ := st.GetJob(context.Background(), j.ID)
	if mid.State != model.Progressing || worksOf(t, "cluster1", j.ID) != 1 {
		t.Fatalf("after the crash: state %s, %d works", mid.State, worksOf(t, "cluster1", j.ID))
	}
	if mid.Applied == mid.Fence {
		t.Fatal("the crashed execution recorded that it was applied: the fault hit too late")
	}
	q := startProcess(t, vars)
	time.Sleep(2500 * time.Millisecond) // the dead execution's lease lapses
	tick := fmt.Sprintf(`{"specversion":"1.0","id":"tick-%s","source":"/apis/v1/namespaces/ocm-jobs/pingsources/ocm-jobs-cron","type":"dev.knative.sources.ping","data":{}}`, j.ID)
	resp, err := http.Post(q.url, "application/cloudevents+json", strings.NewReader(tick))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("sweep: %v %v", resp, err)
	}
	after := waitJob(t, st, j.ID, 10*time.Second, "recorded as applied", func(j *model.Job) bool {
		return j.Applied == j.Fence
	})
	if after.Fence != mid.Fence || promotes(t, st, j.ID) != 1 || worksOf(t, "cluster1", j.ID) != 1 {
		t.Errorf("resumed: fence %d (was %d), %d promotes, %d works", after.Fence, mid.Fence, promotes(t, st, j.ID), worksOf(t, "cluster1", j.ID))
	}
}

// TestTwoHubs: executors of two hubs compete for the same jobs; each job is owned and
// executed by exactly one, and its ManifestWork carries that owner.
func TestTwoHubs(t *testing.T) {
	prefix := "h" + model.NewID()[:8]
	st := newStore(t, prefix)
	a, b := baseEnv(prefix, "executor"), baseEnv(prefix, "executor")
	a["HUB_ID"], b["HUB_ID"] = "hub-a", "hub-b"
	pa, pb := startProcess(t, a), startProcess(t, b)
	jobs := createJobs(t, st, 12, "cluster2", "")
	var wg sync.WaitGroup
	for _, j := range jobs {
		for _, p := range []*process{pa, pb} {
			wg.Add(1)
			go func(j model.Job, url string) {
				defer wg.Done()
				if status := deliver(t, url, "two-"+j.ID, j); status >= 300 {
					t.Errorf("%s: %d", j.ID, status)
				}
			}(j, p.url)
		}
	}
	wg.Wait()
	owners := map[string]int{}
	for _, j := range jobs {
		got, _ := st.GetJob(context.Background(), j.ID)
		owners[got.OwnerID]++
		mw, err := env.Hub.Work.WorkV1().ManifestWorks("cluster2").Get(context.Background(), ocm.WorkName(j.ID), metav1.GetOptions{})
		if err != nil || mw.Labels[ocm.LabelOwner] != got.OwnerID || promotes(t, st, j.ID) != 1 {
			t.Errorf("job %s owned by %q: work %v (%v), %d promotes", j.ID, got.OwnerID, mw.GetLabels(), err, promotes(t, st, j.ID))
		}
	}
	if owners["hub-a"]+owners["hub-b"] != len(jobs) {
		t.Errorf("owners %v", owners)
	}
	t.Logf("12 jobs split between two hubs: %v", owners)
}

// TestExecutorBadInput: what cannot be executed goes Degraded with a reason, never a panic or
// a retry loop.
func TestExecutorBadInput(t *testing.T) {
	prefix := "b" + model.NewID()[:8]
	st := newStore(t, prefix)
	p := startProcess(t, baseEnv(prefix, "executor"))
	cases := map[string]struct {
		cluster, manifest, reason string
	}{
		"invalid name":   {cluster: "cluster1", manifest: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Not_A_Name}\n", reason: "ManifestInvalid"},
		"not a manifest": {cluster: "cluster1", manifest: "just text\n", reason: "ManifestInvalid"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			j := createJobs(t, st, 1, tc.cluster, tc.manifest)[0]
			if status := deliver(t, p.url, "bad-"+j.ID, j); status != http.StatusOK {
				t.Fatalf("answer %d, want 200 (retrying cannot help)", status)
			}
			got, _ := st.GetJob(context.Background(), j.ID)
			c := got.Resource.Condition(model.ConditionDegraded)
			if got.State != model.Degraded || c == nil || c.Reason != tc.reason {
				t.Errorf("state %s, condition %+v, want Degraded %s", got.State, c, tc.reason)
			}
		})
	}
	t.Run("a cluster no hub manages: the job waits, never Degraded", func(t *testing.T) {
		j := createJobs(t, st, 1, "atlantis", "")[0]
		if status := deliver(t, p.url, "atlantis-"+j.ID, j); status != http.StatusOK {
			t.Fatalf("answer %d, want 200 (not this hub's job)", status)
		}
		tick := fmt.Sprintf(`{"specversion":"1.0","id":"tick-%s","source":"/apis/v1/namespaces/ocm-jobs/pingsources/ocm-jobs-cron","type":"dev.knative.sources.ping","data":{}}`, j.ID)
		resp, err := http.Post(p.url, "application/cloudevents+json", strings.NewReader(tick))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got, _ := st.GetJob(context.Background(), j.ID)
		c := got.Resource.Condition(model.ConditionProgressing)
		if got.State != model.Created || got.OwnerID != "" || c == nil || c.Reason != model.ReasonNoManagingHub {
			t.Errorf("state %s owner %q condition %+v, want Created, no owner, %s", got.State, got.OwnerID, c, model.ReasonNoManagingHub)
		}
	})
	deployed := func(t *testing.T, owner string) model.Job {
		m := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec: {containers: [{name: c, image: nginx}]}\n"
		j := createJobs(t, st, 1, "cluster1", m)[0]
		c, err := st.Promote(context.Background(), j.ID, owner, "earlier-execution")
		if err == nil {
			_, err = st.Finish(context.Background(), c, "deployed")
		}
		if err == nil {
			_, err = st.Reopen(context.Background(), j.ID, store.Reopen{Type: model.UpdateDeployment, SubType: model.Patch,
				Remediation: &model.Remediation{Action: model.Patch, Patch: "{not json"}, By: "test"})
		}
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	t.Run("a patch that is not JSON", func(t *testing.T) {
		hubID, _ := env.Hub.HubID(context.Background())
		j := deployed(t, hubID)
		if status := deliver(t, p.url, "patch-"+j.ID, j); status != http.StatusOK {
			t.Fatalf("answer %d", status)
		}
		got, _ := st.GetJob(context.Background(), j.ID)
		c := got.Resource.Condition(model.ConditionDegraded)
		if got.State != model.Degraded || c == nil || c.Reason != "InvalidPatch" {
			t.Errorf("state %s, condition %+v, want Degraded InvalidPatch", got.State, c)
		}
	})
	t.Run("another hub's job is acknowledged and left alone", func(t *testing.T) {
		j := deployed(t, "some-other-hub")
		if status := deliver(t, p.url, "other-"+j.ID, j); status != http.StatusOK {
			t.Fatalf("answer %d", status)
		}
		if got, _ := st.GetJob(context.Background(), j.ID); got.State != model.Created || got.OwnerID != "some-other-hub" {
			t.Errorf("another hub's job was touched: %s owned by %s", got.State, got.OwnerID)
		}
	})
}

func newStore(t testing.TB, prefix string) *store.Store {
	t.Helper()
	st, err := store.New(redisClient(t), store.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

var _ = meta.IsStatusConditionTrue
var _ = yaml.Marshal

// TestStopRemovesTheWorkload: stopping a deployed group deletes its ManifestWork (the agent
// removes the objects from the spoke), finishes the Delete job, and then the group deletes.
func TestStopRemovesTheWorkload(t *testing.T) {
	s := startE2E(t, nil)
	s.ticking(t, time.Second)
	var g model.JobGroup
	r := s.rest(t, http.MethodPost, "/jobmanager/groups", workloadApp("stopme"), s.token)
	r.decode(t, &g)
	job := g.Jobs[0]
	waitJob(t, s.store, job.ID, 90*time.Second, "finished", finished)
	if spokeDeployment(t, "cluster1", "stopme", "web") == nil {
		t.Fatal("not deployed")
	}
	if r := s.rest(t, http.MethodPut, "/jobmanager/groups/undeploy/"+g.ID, nil, s.token); r.status != http.StatusOK {
		t.Fatalf("undeploy: %d %s", r.status, r.body)
	}
	defer func() {
		if !t.Failed() {
			return
		}
		h, _ := s.store.History(context.Background(), job.ID)
		for _, e := range h {
			t.Logf("history: %+v", e)
		}
		mw, err := env.Hub.Work.WorkV1().ManifestWorks("cluster1").Get(context.Background(), ocm.WorkName(job.ID), metav1.GetOptions{})
		if err == nil {
			t.Logf("work: deletion %v finalizers %v conditions %+v", mw.DeletionTimestamp, mw.Finalizers, mw.Status.Conditions)
		} else {
			t.Logf("work: %v", err)
		}
	}()
	waitJob(t, s.store, job.ID, 90*time.Second, "undeployed", func(j *model.Job) bool {
		return j.Type == model.DeleteDeployment && j.State == model.Finished
	})
	if worksOf(t, "cluster1", job.ID) != 0 {
		t.Error("the ManifestWork is still on the hub")
	}
	deadline := time.Now().Add(30 * time.Second)
	for spokeDeployment(t, "cluster1", "stopme", "web") != nil && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if spokeDeployment(t, "cluster1", "stopme", "web") != nil {
		t.Error("the Deployment is still on the spoke")
	}
	if r := s.rest(t, http.MethodDelete, "/jobmanager/groups/"+g.ID, nil, s.token); r.status != http.StatusOK {
		t.Errorf("delete: %d %s", r.status, r.body)
	}
}

// TestStaleJobCreated: the executor acts on a job.created from what the event says only when
// the job still is that Created job with that target; a job retargeted since, or promoted by
// another hub, is decided from its stored state: never executed on the cluster the event named.
func TestStaleJobCreated(t *testing.T) {
	prefix := "sc" + model.NewID()[:8]
	st := newStore(t, prefix)
	p := startProcess(t, baseEnv(prefix, "executor"))
	ctx := context.Background()
	jobs := createJobs(t, st, 3, "cluster1", "")
	retargeted, taken, current := jobs[0], jobs[1], jobs[2]
	// A cluster no hub manages.
	if _, err := st.SetTargets(ctx, retargeted.ID, model.Target{ClusterName: "nowhere", Orchestrator: model.OCM}, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Promote(ctx, taken.ID, "hub-x", "hub-x/1"); err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		// Each event says what the job was when it was created: Created, on cluster1.
		if status := deliver(t, p.url, "stale-"+j.ID, j); status != 200 {
			t.Errorf("job %s: %d, want 200", j.ID, status)
		}
	}
	if n := worksOf(t, "cluster1", retargeted.ID); n != 0 {
		t.Errorf("the job retargeted to another cluster got %d ManifestWorks on the cluster of its stale event", n)
	}
	if got, _ := st.GetJob(ctx, retargeted.ID); got.State != model.Created || got.Fence != 0 {
		t.Errorf("the retargeted job is %s at fence %d, want Created, never promoted", got.State, got.Fence)
	}
	if got, _ := st.GetJob(ctx, taken.ID); got.OwnerID != "hub-x" || got.Fence != 1 || worksOf(t, "cluster1", taken.ID) != 0 {
		t.Errorf("the job hub-x promoted: owner %s fence %d, %d works", got.OwnerID, got.Fence, worksOf(t, "cluster1", taken.ID))
	}
	if got, _ := st.GetJob(ctx, current.ID); got.Fence != 1 || worksOf(t, "cluster1", current.ID) != 1 {
		t.Errorf("the job as its event said: fence %d, %d works, want executed once", got.Fence, worksOf(t, "cluster1", current.ID))
	}
}
