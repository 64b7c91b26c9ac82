package statussync

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ocm-jobs/ocm-jobs/functions/statussync"
	"github.com/ocm-jobs/ocm-jobs/shared/events"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// workEvent is the event a Knative ApiServerSource in Reference mode sends for a change of a
// ManifestWork (its type, source and data as Knative v0.46's adapter writes them).
func workEvent(t *testing.T, typ, namespace, name string) event.Event {
	t.Helper()
	e := event.New()
	e.SetID("ref-" + uniq("e"))
	e.SetType(typ)
	e.SetSource("https://hub.example:6443")
	e.SetSubject("/apis/work.open-cluster-management.io/v1/namespaces/" + namespace + "/manifestworks/" + name)
	if err := e.SetData(event.ApplicationJSON, map[string]string{
		"apiVersion": "work.open-cluster-management.io/v1", "kind": "ManifestWork", "namespace": namespace, "name": name,
	}); err != nil {
		t.Fatal(err)
	}
	return e
}

// An ApiServerSource's delete of a job's ManifestWork degrades the job when the event is
// handled — no tick in between; objects that are not a job's work are answered 200 and
// change nothing, an event whose data is no reference 422.
func TestWorkDeleteEventDegradesItsJobAtOnce(t *testing.T) {
	s := newSuite(t, nil)
	ctx := context.Background()
	j := s.job(s.hubID, cluster)
	mw := s.create(workOf(j, s.hubID, configMap("default", uniq("evt"))))
	s.until(j.ID, 30*time.Second, "Finished", func(j *model.Job) bool { return j.State == model.Finished })

	// Not ours: another kind, another work's name. Nothing changes.
	for _, e := range []event.Event{
		func() event.Event {
			e := workEvent(t, events.APIServerUpdate, cluster, mw.Name)
			_ = e.SetData(event.ApplicationJSON, map[string]string{"apiVersion": "v1", "kind": "ConfigMap", "namespace": cluster, "name": mw.Name})
			return e
		}(),
		workEvent(t, events.APIServerUpdate, cluster, "ocm-jobs-access-shop"),
	} {
		if _, res := s.handle(e); events.StatusOf(res) != http.StatusOK {
			t.Fatalf("an event about another object answered %d: %v", events.StatusOf(res), res)
		}
	}
	bad := workEvent(t, events.APIServerDelete, cluster, mw.Name)
	_ = bad.SetData(event.ApplicationJSON, []string{"not", "a", "reference"})
	if _, res := s.handle(bad); events.StatusOf(res) != http.StatusUnprocessableEntity {
		t.Fatalf("an event whose data is no reference answered %d, want 422: %v", events.StatusOf(res), res)
	}

	if err := s.hub.Work.WorkV1().ManifestWorks(cluster).Delete(ctx, mw.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The agent's finalizer holds the work until it removed what it applied; Knative's
	// delete event comes when the object is gone.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		w, err := s.hub.Work.WorkV1().ManifestWorks(cluster).Get(ctx, mw.Name, metav1.GetOptions{})
		if err != nil || w == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("work %s still there 30s after its delete", mw.Name)
		}
	}
	if st := s.get(j.ID).State; st != model.Finished {
		t.Fatalf("job is %s before the event, want Finished (no tick ran)", st)
	}
	if _, res := s.handle(workEvent(t, events.APIServerDelete, cluster, mw.Name)); events.StatusOf(res) != http.StatusOK {
		t.Fatalf("the delete event answered %d: %v", events.StatusOf(res), res)
	}
	got := s.get(j.ID)
	deg := got.Resource.Condition(model.ConditionDegraded)
	if got.State != model.Degraded || deg == nil || deg.Reason != statussync.ReasonManifestWorkMissing {
		t.Fatalf("after the delete event: job %s, Degraded condition %+v; want Degraded %s", got.State, deg, statussync.ReasonManifestWorkMissing)
	}
	if n := len(s.pub.of(events.JobDegraded, j.ID)); n != 1 {
		t.Errorf("%d degraded events, want 1", n)
	}
	// The same event again (Knative delivers at least once) changes nothing more.
	if _, res := s.handle(workEvent(t, events.APIServerDelete, cluster, mw.Name)); events.StatusOf(res) != http.StatusOK {
		t.Fatalf("the repeated delete event answered %d: %v", events.StatusOf(res), res)
	}
	if n := len(s.pub.of(events.JobDegraded, j.ID)); n != 1 {
		t.Errorf("%d degraded events after a repeat, want 1", n)
	}
}
