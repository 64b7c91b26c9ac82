package statussync

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/redis/go-redis/v9"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/ocm-jobs/ocm-jobs/functions/statussync"
	"github.com/ocm-jobs/ocm-jobs/shared/config"
	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
	"github.com/ocm-jobs/ocm-jobs/shared/platform"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
	"github.com/ocm-jobs/ocm-jobs/tests/servers"
)

// progressing is the job.progressing event the executor publishes after writing a work.
func progressing(t *testing.T, j *model.Job) event.Event {
	t.Helper()
	e, err := events.JobEvent(store.OutboxEntry{Type: events.JobProgressing, Source: events.Source("executor-hub", "executor"), Job: *j})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// oneOfEach checks that a resource has at most one condition of each type.
func oneOfEach(t *testing.T, r *model.Resource) {
	t.Helper()
	seen := map[string]bool{}
	for _, c := range r.Conditions {
		if seen[c.Type] {
			t.Fatalf("condition %s twice: %s", c.Type, fmtConds(r.Conditions))
		}
		seen[c.Type] = true
	}
}

// A job whose work the agent applies becomes Finished (at once, on its job.progressing
// event), its resource records the work and, once the Deployment reports a status, the
// replica counts from status feedback; one finished event, however many ticks follow.
func TestFinishedWithFeedback(t *testing.T) {
	s := newSuite(t, nil)
	ctx := context.Background()
	j := s.job(s.hubID, cluster)
	ns := uniq("fin")
	mw := s.create(workOf(j, s.hubID, namespace(ns), deployment(ns, "web", 2), configMap(ns, "web")))

	// The executor's job.progressing event checks the job at once and, while the agent is
	// still applying the fresh work, again until it has a verdict: no tick is needed.
	_, res := s.handle(progressing(t, j))
	if st := events.StatusOf(res); st != http.StatusOK {
		t.Fatalf("job.progressing answered %d: %v", st, res)
	}
	if st := s.get(j.ID).State; st != model.Finished {
		got, _ := s.hub.Work.WorkV1().ManifestWorks(cluster).Get(ctx, mw.Name, metav1.GetOptions{})
		t.Fatalf("job is %s after its job.progressing event (%s); work conditions %v", st, events.MessageOf(res), got.Status.Conditions)
	}
	t.Logf("job.progressing: %s", events.MessageOf(res))

	// The spoke's kube-controller-manager creates the Deployment's ReplicaSet and pods (no
	// scheduler runs, so they stay Pending): the work agent feeds back 2 replicas, 0 ready.
	got := s.until(j.ID, 30*time.Second, "reporting replicas", func(j *model.Job) bool {
		return j.Resource != nil && len(j.Resource.Workloads) == 1 && j.Resource.Workloads[0].Replicas != nil &&
			*j.Resource.Workloads[0].Replicas == 2
	})
	w := got.Resource.Workloads[0]
	if w.Kind != "Deployment" || w.Namespace != ns || w.Name != "web" || *w.Replicas != 2 ||
		(w.ReadyReplicas != nil && *w.ReadyReplicas != 0) || (w.AvailableReplicas != nil && *w.AvailableReplicas != 0) {
		t.Errorf("workload status = %s, want Deployment %s/web replicas 2, none ready (pods stay Pending)", toJSON(w), ns)
	}
	r := got.Resource
	if r.ManifestWorkName != mw.Name || r.ManifestWorkUID != string(mw.UID) || r.ClusterName != cluster {
		t.Errorf("resource records work %s/%s uid %s, want %s/%s uid %s", r.ClusterName, r.ManifestWorkName, r.ManifestWorkUID, cluster, mw.Name, mw.UID)
	}
	if r.ID != j.ID || r.ResourceUUID != "" || r.ResourceName != j.Component {
		t.Errorf("resource id %q / resource_uuid %q were overwritten", r.ID, r.ResourceUUID)
	}
	oneOfEach(t, r)
	for _, typ := range []string{model.ConditionApplied, model.ConditionAvailable} {
		if c := r.Condition(typ); c == nil || c.Status != metav1.ConditionTrue {
			t.Errorf("condition %s not True: %s", typ, fmtConds(r.Conditions))
		}
	}
	if n := len(s.pub.of(events.JobFinished, j.ID)); n != 1 {
		t.Errorf("%d finished events, want 1", n)
	}
	if n := s.pub.count(); n != 1 {
		t.Errorf("%d events in all, want 1", n)
	}
	fin := s.pub.of(events.JobFinished, j.ID)[0]
	if fin.Extensions()[events.ExtHubID] != s.hubID || fin.Extensions()[events.ExtJobGroupID] != j.JobGroupID {
		t.Errorf("finished event extensions = %v", fin.Extensions())
	}
	var data model.Job
	if err := fin.DataAs(&data); err != nil || data.State != model.Finished {
		t.Errorf("finished event data: state %v, err %v", data.State, err)
	}

	// Idempotence: two more ticks with nothing new write nothing and publish nothing.
	time.Sleep(1500 * time.Millisecond) // let the agent's 1 s status sync settle
	s.tick()
	before, events0, writes0 := dirty(t, s.rdb), s.pub.count(), s.cmds.writes()
	for range 2 {
		rep := s.tick()
		if rep.Jobs != 1 || rep.ResourceWrites+rep.Finished+rep.Degraded != 0 {
			t.Errorf("idle tick: %s", rep)
		}
	}
	if d := dirty(t, s.rdb) - before; d != 0 {
		t.Errorf("two idle ticks changed Redis %d times", d)
	}
	if n := s.cmds.writes() - writes0; n != 0 {
		t.Errorf("two idle ticks sent %d write commands (%v)", n, s.cmds.byName)
	}
	if n := s.pub.count() - events0; n != 0 {
		t.Errorf("two idle ticks published %d events", n)
	}
	// The kept conditions keep their lastTransitionTime.
	after := s.get(j.ID).Resource
	for _, c := range r.Conditions {
		if a := after.Condition(c.Type); a == nil || !a.LastTransitionTime.Equal(&c.LastTransitionTime) {
			t.Errorf("condition %s lastTransitionTime moved: %v → %v", c.Type, c.LastTransitionTime, a)
		}
	}
}

// A manifest the agent cannot apply (a ConfigMap in a namespace that does not exist on the
// spoke) degrades the job with the agent's reason, in the job's history and in the resource's
// Degraded condition.
func TestUnappliableDegrades(t *testing.T) {
	s := newSuite(t, func(c *statussync.Config) { c.SyncGrace = time.Second })
	ctx := context.Background()
	j := s.job(s.hubID, cluster)
	s.create(workOf(j, s.hubID, configMap(uniq("nowhere"), "web")))

	got := s.until(j.ID, 40*time.Second, "Degraded", func(j *model.Job) bool { return j.State == model.Degraded })
	mw, err := s.hub.Work.WorkV1().ManifestWorks(cluster).Get(ctx, ocm.WorkName(j.ID), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	applied := meta.FindStatusCondition(mw.Status.Conditions, model.ConditionApplied)
	if applied == nil || applied.Status != metav1.ConditionFalse {
		t.Fatalf("the agent did not report Applied=False: %v", mw.Status.Conditions)
	}
	deg := got.Resource.Condition(model.ConditionDegraded)
	if deg == nil || deg.Status != metav1.ConditionTrue || deg.Reason != applied.Reason {
		t.Fatalf("Degraded condition = %+v, want True with the agent's reason %q", deg, applied.Reason)
	}
	t.Logf("degraded: %s: %s", deg.Reason, deg.Message)
	oneOfEach(t, got.Resource)
	h, err := s.store.History(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if h[0].To != model.Degraded || h[0].By != s.hubID {
		t.Errorf("newest history entry = %+v", h[0])
	}
	s.tick()
	s.tick()
	if n := len(s.pub.of(events.JobDegraded, j.ID)); n != 1 {
		t.Errorf("%d degraded events, want 1", n)
	}
}

// Deleting the work behind a Finished job degrades it with ManifestWorkMissing (and nothing
// re-creates the work); a DeleteDeployment job whose work is gone finishes.
func TestMissingWorkAndDeleteJob(t *testing.T) {
	s := newSuite(t, nil)
	ctx := context.Background()
	j := s.job(s.hubID, cluster)
	// No Namespace in this work: the spokes run no namespace controller, so a deleted
	// namespace never goes, and neither would the work (its agent deletes in the foreground).
	mw := s.create(workOf(j, s.hubID, configMap("default", uniq("gone"))))
	s.until(j.ID, 30*time.Second, "Finished", func(j *model.Job) bool { return j.State == model.Finished })

	if err := s.hub.Work.WorkV1().ManifestWorks(cluster).Delete(ctx, mw.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	got := s.until(j.ID, 30*time.Second, "Degraded", func(j *model.Job) bool { return j.State == model.Degraded })
	deg := got.Resource.Condition(model.ConditionDegraded)
	if deg == nil || deg.Reason != statussync.ReasonManifestWorkMissing || deg.Status != metav1.ConditionTrue {
		t.Fatalf("Degraded condition = %+v, want True %s", deg, statussync.ReasonManifestWorkMissing)
	}
	if got.Resource.ManifestWorkUID != string(mw.UID) {
		t.Errorf("the gone work's uid %q was not kept (want %s)", got.Resource.ManifestWorkUID, mw.UID)
	}
	// The agent's finalizer holds the work until it removed what it applied.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := s.hub.Work.WorkV1().ManifestWorks(cluster).Get(ctx, mw.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("work %s still there 30s after its delete: %v", mw.Name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.tick()
	s.tick()
	if _, err := s.hub.Work.WorkV1().ManifestWorks(cluster).Get(ctx, mw.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the work was re-created (%v)", err)
	}
	if st := s.get(j.ID).State; st != model.Degraded {
		t.Errorf("job is %s once its work is gone, want Degraded", st)
	}
	if n := len(s.pub.of(events.JobDegraded, j.ID)); n != 1 {
		t.Errorf("%d degraded events, want 1", n)
	}

	// The group is stopped: the job is re-opened as a DeleteDeployment and promoted; its work
	// is gone already, so it finishes.
	if _, err := s.store.Reopen(ctx, j.ID, store.Reopen{Type: model.DeleteDeployment, By: "test", Why: "stop"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.Promote(ctx, j.ID, s.hubID, "exec-delete"); err != nil {
		t.Fatal(err)
	}
	del := s.get(j.ID)
	_, res := s.handle(progressing(t, del))
	if st := events.StatusOf(res); st != http.StatusOK {
		t.Fatalf("job.progressing answered %d: %v", st, res)
	}
	if st := s.get(j.ID).State; st != model.Finished {
		t.Fatalf("delete job is %s, want Finished", st)
	}
	s.tick()
	if n := len(s.pub.of(events.JobFinished, j.ID)); n != 2 {
		t.Errorf("%d finished events, want 2 (the create, then the delete)", n)
	}
}

// A job that stays Progressing past the deadline with no verdict from an agent degrades with
// reason Timeout: one whose work sits in a cluster no agent serves, one that never got a work.
func TestProgressDeadline(t *testing.T) {
	s := newSuite(t, func(c *statussync.Config) { c.ProgressDeadline = 2 * time.Second })
	ctx := context.Background()
	const lonely = "cluster-without-agent"
	if err := servers.RegisterCluster(ctx, env.Hub, lonely); err != nil {
		t.Fatal(err)
	}
	withWork := s.job(s.hubID, lonely)
	noWork := s.job(s.hubID, cluster)
	s.create(workOf(withWork, s.hubID, configMap("default", "web")))

	s.tick()
	if st := s.get(withWork.ID).State; st != model.Progressing {
		t.Fatalf("job is %s before the deadline", st)
	}
	for _, id := range []string{withWork.ID, noWork.ID} {
		got := s.until(id, 20*time.Second, "Degraded", func(j *model.Job) bool { return j.State == model.Degraded })
		deg := got.Resource.Condition(model.ConditionDegraded)
		if deg == nil || deg.Reason != statussync.ReasonTimeout {
			t.Errorf("job %s: Degraded condition = %+v, want reason Timeout", id, deg)
		} else {
			t.Logf("timeout: %s", deg.Message)
		}
	}
	if n := len(s.pub.of(events.JobDegraded, "")); n != 2 {
		t.Errorf("%d degraded events, want 2", n)
	}
}

// Only ours: a work without our owner label, and a job another hub owns (with its own
// available work), are never touched — not by a tick, not by a job.progressing event.
func TestOnlyOurs(t *testing.T) {
	s := newSuite(t, func(c *statussync.Config) { c.ProgressWait = time.Second })
	ctx := context.Background()

	// Our job, not dispatched yet, and a work at its name that does not carry our labels (not
	// the executor's): neither a tick nor a job.progressing event reads it, so the job is
	// neither finished by it nor degraded for its absence.
	ours := s.job(s.hubID, cluster)
	ns := uniq("unlabelled")
	foreignWork := workOf(ours, s.hubID, namespace(ns), configMap(ns, "web"))
	foreignWork.Labels = map[string]string{ocm.LabelJob: ours.ID}
	foreignWork = s.create(foreignWork)

	// Another hub's job with its own, labelled, work.
	const other = "another-hub"
	theirs := s.job(other, cluster)
	ns2 := uniq("theirs")
	theirWork := s.create(workOf(theirs, other, namespace(ns2), configMap(ns2, "web")))
	before := map[string]string{ours.ID: toJSON(s.get(ours.ID)), theirs.ID: toJSON(s.get(theirs.ID))}

	waitAvailable(t, s, foreignWork.Name)
	waitAvailable(t, s, theirWork.Name)
	for range 3 {
		s.tick()
	}
	for _, j := range []*model.Job{ours, theirs} {
		_, res := s.handle(progressing(t, j))
		if st := events.StatusOf(res); st != http.StatusOK {
			t.Fatalf("job.progressing of job %s answered %d: %v", j.ID, st, res)
		}
	}
	for _, id := range []string{ours.ID, theirs.ID} {
		if after := toJSON(s.get(id)); after != before[id] {
			t.Errorf("job %s was touched:\n%s\n→ %s", id, before[id], after)
		}
	}
	if n := s.pub.count(); n != 0 {
		t.Errorf("%d events published", n)
	}
	for _, name := range []string{foreignWork.Name, theirWork.Name} {
		got, err := s.hub.Work.WorkV1().ManifestWorks(cluster).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Generation != 1 {
			t.Errorf("work %s was changed (generation %d)", name, got.Generation)
		}
	}
}

func waitAvailable(t *testing.T, s *suite, name string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := s.hub.Work.WorkV1().ManifestWorks(cluster).Get(context.Background(), name, metav1.GetOptions{})
		if err == nil && meta.IsStatusConditionTrue(got.Status.Conditions, model.ConditionAvailable) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("work %s not Available after 30s", name)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A work an earlier execution wrote (it carries an older fence, as between a promote and the
// executor's apply of the new spec) says nothing about the job: it stays Progressing while
// its resource records what the agent reports; once the current execution's spec is applied
// (its fence on the work), it finishes.
func TestWorkOfAnEarlierExecution(t *testing.T) {
	s := newSuite(t, nil)
	ctx := context.Background()
	j := s.job(s.hubID, cluster)
	ns := uniq("earlier")
	earlier := workOf(j, s.hubID, namespace(ns), configMap(ns, "web"))
	earlier.Annotations[ocm.AnnotationFence] = strconv.FormatUint(j.Fence-1, 10)
	mw := s.create(earlier)
	waitAvailable(t, s, mw.Name)
	s.tick()
	got := s.get(j.ID)
	if got.State != model.Progressing {
		t.Fatalf("job is %s on a work of an earlier execution", got.State)
	}
	if got.Resource == nil || got.Resource.Condition(model.ConditionAvailable) == nil {
		t.Errorf("the work's conditions were not recorded: %s", toJSON(got.Resource))
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"%d"}}}`, ocm.AnnotationFence, j.Fence)
	if _, err := s.hub.Work.WorkV1().ManifestWorks(mw.Namespace).Patch(ctx, mw.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitAvailable(t, s, mw.Name)
	s.tick()
	if st := s.get(j.ID).State; st != model.Finished {
		t.Fatalf("job is %s once its execution's work is applied, want Finished", st)
	}
}

// Redis or the hub unreachable: the event is answered 503 (the broker retries) and nothing
// is written.
func TestUnreachable(t *testing.T) {
	ctx := context.Background()
	var cfg statussync.Config
	if err := config.Load(&cfg); err != nil {
		t.Fatal(err)
	}
	cfg.HubID = "hub-unreachable"
	port, err := servers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dead := "127.0.0.1:" + strconv.Itoa(port)
	tick := event.New()
	tick.SetType(events.Ping)
	tick.SetSource("/test")
	tick.SetID("tick-1")

	goodHub, err := ocm.NewHub(env.Hub.Config)
	if err != nil {
		t.Fatal(err)
	}
	noRedis := redis.NewClient(&redis.Options{Addr: dead, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer noRedis.Close()
	noStore, err := store.New(noRedis, cfg.Store.Options())
	if err != nil {
		t.Fatal(err)
	}
	f, err := statussync.New(ctx, cfg, platform.Platform{Redis: noRedis, Store: noStore, Hub: goodHub, HubID: cfg.HubID})
	if err != nil {
		t.Fatal(err)
	}
	if _, res := f.Handle(ctx, tick); events.StatusOf(res) != http.StatusServiceUnavailable {
		t.Errorf("Redis down: answered %d, want 503", events.StatusOf(res))
	}

	badCfg := rest.CopyConfig(env.Hub.Config)
	badCfg.Host = "https://" + dead
	badCfg.Timeout = 2 * time.Second
	badHub, err := ocm.NewHub(badCfg)
	if err != nil {
		t.Fatal(err)
	}
	s := newSuite(t, nil)
	j := s.job(s.hubID, cluster)
	f, err = statussync.New(ctx, s.cfg, platform.Platform{Redis: s.rdb, Store: s.store, Hub: badHub, HubID: s.hubID})
	if err != nil {
		t.Fatal(err)
	}
	before := dirty(t, s.rdb)
	if _, res := f.Handle(ctx, tick); events.StatusOf(res) != http.StatusServiceUnavailable {
		t.Errorf("hub down, tick: answered %d, want 503", events.StatusOf(res))
	}
	if _, res := f.Handle(ctx, progressing(t, j)); events.StatusOf(res) != http.StatusServiceUnavailable {
		t.Errorf("hub down, job.progressing: answered %d, want 503", events.StatusOf(res))
	}
	if d := dirty(t, s.rdb) - before; d != 0 {
		t.Errorf("Redis changed %d times while the hub was down", d)
	}
}

// interloper is a Redis hook that, on the first resource write of status sync, first lets
// another writer (a deployment manager reporting a condition of its own) write the same job's
// resource: the race status sync's read-modify-write must not lose.
type interloper struct {
	once  sync.Once
	write func()
}

func (i *interloper) DialHook(next redis.DialHook) redis.DialHook { return next }

func (i *interloper) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := strings.ToLower(cmd.Name()); name == "evalsha" || name == "eval" {
			i.once.Do(i.write)
		}
		return next(ctx, cmd)
	}
}

func (i *interloper) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A resource write of another writer between status sync's read and its write is kept: status
// sync reads the job again and derives its write from what is stored now.
func TestConcurrentResourceWriteIsKept(t *testing.T) {
	s := newSuite(t, nil)
	ctx := context.Background()
	j := s.job(s.hubID, cluster)
	ns := uniq("race")
	mw := s.create(workOf(j, s.hubID, namespace(ns), configMap(ns, "web")))
	waitAvailable(t, s, mw.Name)

	other := redis.NewClient(&redis.Options{Addr: env.Redis.Addr})
	defer other.Close()
	executor, err := store.New(other, s.cfg.Store.Options())
	if err != nil {
		t.Fatal(err)
	}
	const note = "reported by a deployment manager meanwhile"
	s.rdb.AddHook(&interloper{write: func() {
		cur, err := executor.GetJob(ctx, j.ID)
		if err != nil {
			t.Error(err)
			return
		}
		r := model.Resource{ID: cur.ID, JobID: cur.ID}
		if cur.Resource != nil {
			r = *cur.Resource
			r.Conditions = append([]model.Condition(nil), r.Conditions...)
		}
		r.SetCondition(metav1.Condition{Type: "Reported", Status: metav1.ConditionTrue, Reason: "Note", Message: note})
		if _, err := executor.WriteResourceStatus(ctx, store.ClaimOf(cur), r); err != nil {
			t.Error(err)
		}
	}})
	rep := s.tick()
	got := s.get(j.ID)
	if got.State != model.Finished {
		t.Fatalf("job is %s after the tick (%s), want Finished", got.State, rep)
	}
	if c := got.Resource.Condition("Reported"); c == nil || c.Message != note {
		t.Errorf("the executor's concurrent write was lost: %s", fmtConds(got.Resource.Conditions))
	}
	if got.Resource.Condition(model.ConditionAvailable) == nil {
		t.Errorf("status sync's write was lost: %s", fmtConds(got.Resource.Conditions))
	}
}
