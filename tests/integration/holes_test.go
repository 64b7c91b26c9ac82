package integration

// Regression tests for the holes a review found in the exactly-once promise (each failed on
// the main before the transactional outbox and the ownership rules): a Degraded job taken over
// and re-run, a remediation applied twice after a crash, a reallocation that outlives its
// request, and a committed change that is never announced. The two-hub hole is tested in
// tests/multihub, which runs two hubs with their own API servers.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// outage is an event sink that refuses every delivery (503) while it is down, and records
// what it accepts.
type outage struct {
	down   atomic.Bool
	mu     sync.Mutex
	events []event.Event
	srv    *httptest.Server
}

func newOutage(t *testing.T) *outage {
	o := &outage{}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.down.Load() {
			http.Error(w, "broker down", http.StatusServiceUnavailable)
			return
		}
		e, err := binding.ToEvent(r.Context(), cehttp.NewMessageFromHttpRequest(r))
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		o.mu.Lock()
		o.events = append(o.events, *e)
		o.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(o.srv.Close)
	return o
}

// count is how many events it accepted.
func (o *outage) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.events)
}

// about counts the accepted events of a type about a job.
func (o *outage) about(typ, jobID string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, e := range o.events {
		if e.Type() == typ && e.Extensions()["jobid"] == jobID {
			n++
		}
	}
	return n
}

// tickOnce sends one cron tick to a function process and returns the answer's status; 0 when
// the request did not complete within timeout (the sender gave up, as Knative does).
func tickOnce(url, id string, timeout time.Duration) int {
	body := fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"/apis/v1/namespaces/ocm-jobs/pingsources/ocm-jobs-cron","type":"dev.knative.sources.ping","data":{}}`, id)
	c := &http.Client{Timeout: timeout}
	resp, err := c.Post(url, "application/cloudevents+json", strings.NewReader(body))
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// tickUntil ticks the given processes every interval until cond holds or timeout passes.
func tickUntil(t *testing.T, timeout time.Duration, cond func() bool, urls ...string) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, u := range urls {
			tickOnce(u, uuid.NewString(), 20*time.Second)
		}
		if cond() {
			return true
		}
		time.Sleep(300 * time.Millisecond)
	}
	return cond()
}

// deployedOn runs one job to Finished on cluster with the given executor and status sync
// processes.
func deployedOn(t *testing.T, st *store.Store, exec, sync *process, cluster, manifest string) model.Job {
	t.Helper()
	j := createJobs(t, st, 1, cluster, manifest)[0]
	if status := deliver(t, exec.url, "created-"+j.ID, j); status != http.StatusOK {
		t.Fatalf("job.created: %d", status)
	}
	if !tickUntil(t, 60*time.Second, func() bool {
		got, err := st.GetJob(context.Background(), j.ID)
		return err == nil && got.State == model.Finished
	}, sync.url) {
		got, _ := st.GetJob(context.Background(), j.ID)
		t.Fatalf("job %s never finished: %+v", j.ID, got)
	}
	return j
}

// actionsAfterTerminal lists the promotes and takeovers in a job's history that follow a
// transition into Finished or Degraded with no re-open in between.
func actionsAfterTerminal(t *testing.T, st *store.Store, jobID string) []string {
	t.Helper()
	h, err := st.History(context.Background(), jobID)
	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	terminal := false
	for i := len(h) - 1; i >= 0; i-- { // oldest first
		e := h[i]
		switch {
		case strings.HasPrefix(e.Action, "reopen"):
			terminal = false
		case e.Action == "promote" || e.Action == "takeover":
			if terminal {
				bad = append(bad, fmt.Sprintf("%s by %s at fence %d", e.Action, e.By, e.Fence))
			}
		}
		if e.To == model.Finished || e.To == model.Degraded {
			terminal = true
		}
	}
	return bad
}

const deployment2 = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n"

// TestDegradedJobIsNeverExecutedAgain (hole 1): a job whose ManifestWork was deleted from
// outside goes Degraded (ManifestWorkMissing) and stays so: no takeover re-creates the work,
// however long its lease has lapsed.
func TestDegradedJobIsNeverExecutedAgain(t *testing.T) {
	prefix := "d" + model.NewID()[:8]
	st := newStore(t, prefix)
	vars := baseEnv(prefix, "executor")
	vars["LEASE_TTL"], vars["TAKEOVER_TTL"] = "1s", "1s"
	exec := startProcess(t, vars)
	syncVars := baseEnv(prefix, "statussync")
	syncVars["LEASE_TTL"], syncVars["TAKEOVER_TTL"] = "1s", "1s"
	sync := startProcess(t, syncVars)
	j := deployedOn(t, st, exec, sync, "cluster1", "")
	before, _ := st.GetJob(context.Background(), j.ID)

	works := env.Hub.Work.WorkV1().ManifestWorks("cluster1")
	if err := works.Delete(context.Background(), ocm.WorkName(j.ID), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if !tickUntil(t, 60*time.Second, func() bool {
		got, _ := st.GetJob(context.Background(), j.ID)
		return got.State == model.Degraded && worksOf(t, "cluster1", j.ID) == 0
	}, sync.url) {
		t.Fatal("the job did not go Degraded after its ManifestWork was deleted")
	}
	// Well past the lease and the takeover TTL, the sweeps of both functions run a few times.
	time.Sleep(2500 * time.Millisecond)
	for i := 0; i < 5; i++ {
		tickOnce(exec.url, uuid.NewString(), 20*time.Second)
		tickOnce(sync.url, uuid.NewString(), 20*time.Second)
		time.Sleep(300 * time.Millisecond)
	}
	after, _ := st.GetJob(context.Background(), j.ID)
	if n := worksOf(t, "cluster1", j.ID); n != 0 {
		t.Errorf("the deleted ManifestWork was re-created (%d works)", n)
	}
	if after.State != model.Degraded || after.Fence != before.Fence {
		t.Errorf("job %s: state %s fence %d, want Degraded at fence %d", j.ID, after.State, after.Fence, before.Fence)
	}
	if bad := actionsAfterTerminal(t, st, j.ID); len(bad) > 0 {
		t.Errorf("executed again after a terminal state: %v", bad)
	}
}

// TestRemediationIsAppliedOnce (hole 3): an executor killed right after it applied a
// scale-out and before it recorded the execution; the execution resumed by another executor
// applies the same result again, not a second scale-out.
func TestRemediationIsAppliedOnce(t *testing.T) {
	prefix := "r" + model.NewID()[:8]
	st := newStore(t, prefix)
	vars := baseEnv(prefix, "executor")
	vars["LEASE_TTL"] = "2s"
	exec := startProcess(t, vars)
	sync := startProcess(t, baseEnv(prefix, "statussync"))
	j := deployedOn(t, st, exec, sync, "cluster1", deployment2)
	ns := j.Namespace

	if _, err := st.Reopen(context.Background(), j.ID, store.Reopen{Type: model.UpdateDeployment, SubType: model.ScaleOut,
		Remediation: &model.Remediation{Action: model.ScaleOut}, By: "test", Why: "an incompliance"}); err != nil {
		t.Fatal(err)
	}
	crashing := map[string]string{"FAULT_KILL_AFTER_APPLY": "true"}
	for k, v := range vars {
		crashing[k] = v
	}
	q := startProcess(t, crashing)
	deliver(t, q.url, "scale-"+j.ID, j)
	select {
	case <-q.done:
		if ws, ok := q.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("the executor ended with %v, want killed by SIGKILL", q.cmd.ProcessState)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the executor did not crash after applying the remediation")
	}
	time.Sleep(2500 * time.Millisecond) // the dead execution's lease lapses
	if !tickUntil(t, 60*time.Second, func() bool {
		got, _ := st.GetJob(context.Background(), j.ID)
		return got.State == model.Finished
	}, exec.url, sync.url) {
		got, _ := st.GetJob(context.Background(), j.ID)
		t.Fatalf("the resumed remediation never finished: %+v", got)
	}
	d := spokeDeployment(t, "cluster1", ns, "web")
	if d == nil || d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("replicas on the spoke: %d, want 3 (2 + one scale-out)", *d.Spec.Replicas)
	}
	got, _ := st.GetJob(context.Background(), j.ID)
	if !strings.Contains(got.Manifests[0].YamlString, "replicas: 3") {
		t.Errorf("stored manifest after the remediation:\n%s", got.Manifests[0].YamlString)
	}
}

// TestReallocationSurvivesItsRequests (hole 4): a reallocation whose new cluster never
// becomes Available, driven only by deliveries that the sender gives up on after 2 s (as
// Knative's request timeout does), still ends after REALLOCATION_TIMEOUT: the copy on the new
// cluster is removed and the job is Degraded, still running on its old cluster.
func TestReallocationSurvivesItsRequests(t *testing.T) {
	ctx := context.Background()
	// cluster3 is a ManagedCluster without a work agent: nothing there ever becomes Available.
	if err := servers.RegisterCluster(ctx, env.Hub, "cluster3"); err != nil {
		t.Fatal(err)
	}
	prefix := "m" + model.NewID()[:8]
	st := newStore(t, prefix)
	vars := baseEnv(prefix, "executor")
	vars["LEASE_TTL"], vars["REALLOCATION_TIMEOUT"] = "2s", "10s"
	exec := startProcess(t, vars)
	sync := startProcess(t, baseEnv(prefix, "statussync"))
	j := deployedOn(t, st, exec, sync, "cluster1", deployment2)

	target := &model.Target{ClusterName: "cluster3", Orchestrator: model.OCM}
	if _, err := st.Reopen(ctx, j.ID, store.Reopen{Type: model.UpdateDeployment, SubType: model.Reallocation,
		Remediation: &model.Remediation{Action: model.Reallocation, Target: target}, By: "test", Why: "move"}); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"specversion":"1.0","id":"move-%s","source":"/tests","type":"eu.icos.job.created.v1","jobid":%q,"data":{}}`, j.ID, j.ID)
	c := &http.Client{Timeout: 2 * time.Second}
	if resp, err := c.Post(exec.url, "application/cloudevents+json", strings.NewReader(body)); err == nil {
		resp.Body.Close()
	}
	gone := func() bool {
		_, err := env.Hub.Work.WorkV1().ManifestWorks("cluster3").Get(ctx, ocm.WorkName(j.ID), metav1.GetOptions{})
		return err != nil
	}
	deadline := time.Now().Add(90 * time.Second)
	var got *model.Job
	for time.Now().Before(deadline) {
		tickOnce(exec.url, uuid.NewString(), 2*time.Second)
		tickOnce(sync.url, uuid.NewString(), 2*time.Second)
		got, _ = st.GetJob(ctx, j.ID)
		if got.State == model.Degraded && gone() {
			break
		}
		time.Sleep(time.Second)
	}
	cond := got.Resource.Condition(model.ConditionDegraded)
	if got.State != model.Degraded || cond == nil || cond.Reason != "ReallocationFailed" {
		t.Errorf("job %s: state %s, degraded condition %+v; want Degraded ReallocationFailed", j.ID, got.State, cond)
	}
	if !gone() {
		t.Error("the ManifestWork on cluster3 was left behind")
	}
	if worksOf(t, "cluster1", j.ID) != 1 || got.Targets.ClusterName != "cluster1" {
		t.Errorf("the job should still run on cluster1: %d works there, target %+v", worksOf(t, "cluster1", j.ID), got.Targets)
	}
}

// TestCommittedChangesAreAnnounced (hole 5): status sync finishes a job while the broker
// refuses every event; once the broker is back, job.finished arrives all the same.
func TestCommittedChangesAreAnnounced(t *testing.T) {
	prefix := "p" + model.NewID()[:8]
	st := newStore(t, prefix)
	sink := newOutage(t)
	vars := baseEnv(prefix, "executor")
	vars["K_SINK"] = sink.srv.URL
	exec := startProcess(t, vars)
	syncVars := baseEnv(prefix, "statussync")
	syncVars["K_SINK"], syncVars["PUBLISH_RETRIES"], syncVars["PUBLISH_BACKOFF"] = sink.srv.URL, "1", "10ms"
	sync := startProcess(t, syncVars)
	j := createJobs(t, st, 1, "cluster1", "")[0]
	if status := deliver(t, exec.url, "created-"+j.ID, j); status != http.StatusOK {
		t.Fatalf("job.created: %d", status)
	}
	sink.down.Store(true)
	for i := 0; i < 60; i++ {
		if got, _ := st.GetJob(context.Background(), j.ID); got.State == model.Finished {
			break
		}
		// The broker retries a tick answered 5xx with the same id, as Knative does.
		id := uuid.NewString()
		for attempt := 0; attempt < 3 && tickOnce(sync.url, id, 20*time.Second) >= 500; attempt++ {
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if got, _ := st.GetJob(context.Background(), j.ID); got.State != model.Finished {
		t.Fatalf("job %s is %s, want Finished", j.ID, got.State)
	}
	sink.down.Store(false)
	if !tickUntil(t, 30*time.Second, func() bool { return sink.about("eu.icos.job.finished.v1", j.ID) > 0 }, sync.url, exec.url) {
		t.Errorf("job.finished of job %s never arrived after the broker came back", j.ID)
	}
}

// TestInterruptedIncomplianceIsFinished: an incompliance recorded by an intake that died
// before deciding (it stays pending, and its sender never redelivers it) is finished by the
// incompliance function's cron tick: the remediation it asked for is opened, and its outcome
// recorded. Found by the chaos suite (an incompliance left pending forever).
func TestInterruptedIncomplianceIsFinished(t *testing.T) {
	ctx := context.Background()
	prefix := "i" + model.NewID()[:8]
	st := newStore(t, prefix)
	j := createJobs(t, st, 1, "cluster1", deployment2)[0]
	c, err := st.Promote(ctx, j.ID, "some-hub", "e1")
	if err == nil {
		_, err = st.Finish(ctx, c, "deployed")
	}
	if err != nil {
		t.Fatal(err)
	}
	in := &model.Incompliance{ID: "inc-" + model.NewID()[:8], PolicyName: "cpu", Remediation: model.ScaleOut,
		Subject: model.Subject{ResourceID: j.ID}, Payload: &model.Remediation{Action: model.ScaleOut, Workload: "Deployment/web"}}
	lost := &model.Incompliance{ID: "inc-" + model.NewID()[:8], PolicyName: "cpu", Remediation: model.ScaleOut,
		Subject: model.Subject{ResourceID: model.NewID()}}
	for _, x := range []*model.Incompliance{in, lost} {
		if _, err := st.RecordIncompliance(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	vars := baseEnv(prefix, "incompliance")
	vars["INCOMPLIANCE_RETRY_AFTER"] = "1s"
	p := startProcess(t, vars)
	time.Sleep(1200 * time.Millisecond)
	if status := tickOnce(p.url, uuid.NewString(), 20*time.Second); status != http.StatusOK {
		t.Fatalf("tick: %d", status)
	}
	got, err := st.GetIncompliance(ctx, in.ID)
	if err != nil {
		t.Fatal(err)
	}
	job, _ := st.GetJob(ctx, j.ID)
	if got.Outcome != model.OutcomeApplied || got.JobID != j.ID || job.Type != model.UpdateDeployment || job.State != model.Created ||
		job.Remediation == nil || job.Remediation.IncomplianceID != in.ID || job.Remediation.Workload != "Deployment/web" {
		t.Errorf("incompliance %s: %s (%s) job %s; job %s %s remediation %+v", in.ID, got.Outcome, got.Reason, got.JobID, job.Type, job.State, job.Remediation)
	}
	if got, _ := st.GetIncompliance(ctx, lost.ID); got.Outcome != model.OutcomeRejected {
		t.Errorf("incompliance about no job: %s, want rejected", got.Outcome)
	}
	if pending, _ := st.PendingIncompliances(ctx, 0); len(pending) != 0 {
		t.Errorf("still pending: %v", pending)
	}
}
