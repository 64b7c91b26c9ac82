package polman

import (
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// TestLifecycleInOrder: a group's whole life reaches the Policy Manager in order — created
// (with the descriptor as submitted, the group id and the callback), started once its jobs
// run, stopped, started again once they run again, stopped, deleted — and GET shows where the
// registration is.
func TestLifecycleInOrder(t *testing.T) {
	pm := newRecorder(t)
	s := startStack(t, pm, nil)
	desc := app("shop")
	g := s.create(desc)
	s.eventually("created", 10*time.Second, func() bool { return len(pm.taken(g.ID)) == 1 })

	first := pm.all()[0]
	if first.Event != "created" || first.AppInstance != g.ID || first.Service != "job-manager" || first.AppDescriptor != desc {
		t.Errorf("created: %+v", first)
	}
	cb := first.Callback
	if cb == nil || cb.Type != "icos-service" || cb.URI != "/jobmanager/policies/incompliance/create" || cb.HTTPMethod != "POST" ||
		!cb.IncludeAccessToken || cb.ExtraParams == nil || len(cb.ExtraParams) != 0 {
		t.Errorf("callback: %+v", cb)
	}
	if first.Auth != "Bearer "+s.token {
		t.Errorf("created was not sent with the caller's token (POLICY_MANAGER_AUTH auto, no token URL: caller): %q", first.Auth)
	}
	reg := s.group(g.ID).PolicyManager
	if reg == nil || reg.State != store.RegStateAwaitingStart || reg.Delivered != "created" || len(reg.Pending) != 0 {
		t.Fatalf("registration after created: %+v", reg)
	}

	// Not running yet: no started, however many ticks.
	s.tick()
	s.tick()
	if got := pm.taken(g.ID); len(got) != 1 {
		t.Fatalf("started sent before the jobs run: %v", got)
	}
	s.settle(g.ID)
	s.eventually("started", 10*time.Second, func() bool { return len(pm.taken(g.ID)) == 2 })

	s.must(http.StatusOK, http.MethodPut, "/jobmanager/groups/undeploy/"+g.ID, nil)
	s.eventually("stopped", 10*time.Second, func() bool { return len(pm.taken(g.ID)) == 3 })
	s.settle(g.ID) // the DeleteDeployment jobs finish

	s.must(http.StatusOK, http.MethodPut, "/jobmanager/groups/deploy/"+g.ID, nil)
	if reg := s.group(g.ID).PolicyManager; reg == nil || !reg.AwaitingStart {
		t.Errorf("a started group awaits its jobs: %+v", reg)
	}
	s.tick()
	if got := pm.taken(g.ID); len(got) != 3 {
		t.Fatalf("started sent again before the jobs run again: %v", got)
	}
	s.settle(g.ID)
	s.eventually("started again", 10*time.Second, func() bool { return len(pm.taken(g.ID)) == 4 })

	s.must(http.StatusOK, http.MethodPut, "/jobmanager/groups/undeploy/"+g.ID, nil)
	s.settle(g.ID)
	s.must(http.StatusOK, http.MethodDelete, "/jobmanager/groups/"+g.ID, nil)
	s.eventually("deleted", 10*time.Second, func() bool { return len(pm.taken(g.ID)) == 6 })

	want := []string{"created", "started", "stopped", "started", "stopped", "deleted"}
	if got := pm.taken(g.ID); !slices.Equal(got, want) {
		t.Errorf("the Policy Manager got %v, want %v", got, want)
	}
	for _, r := range pm.all()[1:] {
		if r.AppDescriptor != "" || r.Callback != nil || r.Service != "job-manager" {
			t.Errorf("%s carries more than app_instance, event and service: %v", r.Event, r.Keys)
		}
	}
}

// TestRetriedAfterAnOutage: while the Policy Manager answers 503 every event waits, the
// attempts and the last error are on the group, and the users' requests succeed; once it is
// back every event of every group arrives, each group's in order, none lost. A created that
// was answered 5xx may have left policies behind (the Policy Manager keeps them), so it is
// sent again only after a deleted.
func TestRetriedAfterAnOutage(t *testing.T) {
	pm := newRecorder(t)
	pm.setMode(answer503)
	s := startStack(t, pm, nil)
	var kept, deleted []string
	for i := range 6 {
		g := s.create(app("shop"))
		if i%2 == 0 {
			s.must(http.StatusOK, http.MethodDelete, "/jobmanager/groups/"+g.ID, nil)
			deleted = append(deleted, g.ID)
		} else {
			kept = append(kept, g.ID)
		}
	}
	s.tick()
	s.tick()
	reg := s.group(kept[0]).PolicyManager
	if reg == nil || reg.State != store.RegStateRetrying || reg.Attempts < 1 || !strings.Contains(reg.LastError, "503") ||
		reg.LastAttemptAt == nil || !slices.Equal(reg.Pending, []string{"created"}) {
		t.Fatalf("registration during the outage: %+v", reg)
	}
	if n := len(pm.all()); n < 6 {
		t.Fatalf("only %d attempts during the outage", n)
	}

	pm.setMode(answerOK)
	s.eventually("every event delivered", 20*time.Second, func() bool {
		for _, id := range kept {
			if len(pm.taken(id)) < 2 {
				return false
			}
		}
		for _, id := range deleted {
			if len(pm.taken(id)) < 3 {
				return false
			}
		}
		return true
	})
	for _, id := range kept {
		if got, want := pm.taken(id), []string{"deleted", "created"}; !slices.Equal(got, want) {
			t.Errorf("group %s: the Policy Manager took %v, want %v (a clearing deleted, then created)", id, got, want)
		}
		if reg := s.group(id).PolicyManager; reg.State != store.RegStateAwaitingStart || reg.Attempts != 0 || len(reg.Pending) != 0 {
			t.Errorf("group %s after the outage: %+v", id, reg)
		}
	}
	for _, id := range deleted {
		if got, want := pm.taken(id), []string{"deleted", "created", "deleted"}; !slices.Equal(got, want) {
			t.Errorf("deleted group %s: the Policy Manager took %v, want %v", id, got, want)
		}
	}
	// Nothing is sent once everything is delivered.
	n := len(pm.all())
	s.tick()
	if len(pm.all()) != n {
		t.Errorf("ticks after delivery sent %s", describe(pm.all()[n:]))
	}
}

// TestRequestsNeverWaitForThePolicyManager: while the Policy Manager hangs, users' requests
// answer at once (well within the request timeout the sender would wait); once it answers
// again, slowly, what they recorded arrives in order.
func TestRequestsNeverWaitForThePolicyManager(t *testing.T) {
	pm := newRecorder(t)
	pm.setMode(answerHang)
	const pmTimeout = 5 * time.Second
	s := startStack(t, pm, map[string]string{"POLICY_MANAGER_TIMEOUT": pmTimeout.String()})
	var latencies []time.Duration
	timed := func(f func()) {
		t0 := time.Now()
		f()
		latencies = append(latencies, time.Since(t0))
	}
	var ids []string
	for range 4 {
		timed(func() { ids = append(ids, s.create(app("shop")).ID) })
	}
	timed(func() { s.group(ids[0]) })
	timed(func() { s.must(http.StatusOK, http.MethodPut, "/jobmanager/groups/undeploy/"+ids[1], nil) })
	timed(func() { s.must(http.StatusOK, http.MethodDelete, "/jobmanager/groups/"+ids[2], nil) })
	sort.Slice(latencies, func(a, b int) bool { return latencies[a] < latencies[b] })
	t.Logf("REST latencies while the Policy Manager hangs: min %s, median %s, max %s (Policy Manager timeout %s)",
		latencies[0], latencies[len(latencies)/2], latencies[len(latencies)-1], pmTimeout)
	if worst := latencies[len(latencies)-1]; worst >= pmTimeout/2 {
		t.Errorf("a request took %s while the Policy Manager hung: it waited for it", worst)
	}
	if hung := len(pm.all()); hung != 0 {
		t.Logf("%d requests to the Policy Manager answered meanwhile", hung)
	}

	pm.setMode(answerSlow)
	s.eventually("the events recorded during the hang", 30*time.Second, func() bool {
		return len(pm.taken(ids[2])) >= 2 && len(pm.taken(ids[0])) >= 1 && len(pm.taken(ids[3])) >= 1
	})
	// A created that hung may have been carried out: it is cleared first.
	for _, id := range ids {
		got := pm.taken(id)
		if i := slices.Index(got, "created"); i < 0 || (i > 0 && got[i-1] != "deleted") || i > 1 {
			t.Errorf("group %s: %v", id, got)
		}
	}
	if got := pm.taken(ids[2]); got[len(got)-1] != "deleted" {
		t.Errorf("deleted group %s: its deleted is not the last event: %v", ids[2], got)
	}
}

// TestConcurrentSendersKeepOrder: two processes sharing the store tick at once while the
// deliveries after requests run and the groups are stopped: every group's events still arrive
// in the order they were recorded, each once.
func TestConcurrentSendersKeepOrder(t *testing.T) {
	pm := newRecorder(t)
	pm.setMode(answerSlow)
	a := startStack(t, pm, nil)
	b := startStack(t, pm, map[string]string{"STORE_PREFIX": a.prefix})
	var ids []string
	for range 3 {
		g := a.create(app("shop"))
		ids = append(ids, g.ID)
		a.settle(g.ID)
	}
	// One tick sees them all running: started is recorded for each (delivered or not yet:
	// the deliveries after the creates may still hold them).
	a.tick()
	var wg sync.WaitGroup
	for _, st := range []*stack{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				st.tick()
			}
		}()
	}
	for _, id := range ids {
		a.must(http.StatusOK, http.MethodPut, "/jobmanager/groups/undeploy/"+id, nil)
	}
	wg.Wait()
	a.eventually("every stop", 20*time.Second, func() bool {
		for _, id := range ids {
			if len(pm.taken(id)) < 3 {
				return false
			}
		}
		return true
	})
	for _, id := range ids {
		if got, want := pm.taken(id), []string{"created", "started", "stopped"}; !slices.Equal(got, want) {
			t.Errorf("group %s: %v, want %v", id, got, want)
		}
	}
}

// TestPoliciesValidatedAtIntake: a malformed policy is a 422 naming its path; nothing is
// stored or registered.
func TestPoliciesValidatedAtIntake(t *testing.T) {
	pm := newRecorder(t)
	s := startStack(t, pm, nil)
	bad := strings.Replace(app("shop"), "  - {security: high}", "  - {type: security, level: high, threshold: 10}", 1)
	bad = strings.Replace(bad, "fromTemplate: app-host-cpu-usage", "spec: {type: promql, expr: up}", 1)
	r := s.rest(http.MethodPost, "/jobmanager/groups", bad, s.token)
	if r.status != http.StatusUnprocessableEntity {
		t.Fatalf("malformed policies: %d %s", r.status, r.body)
	}
	for _, p := range []string{"components[0].policies[0].level", "components[0].policies[0].threshold", "policies[0].spec.type"} {
		if !strings.Contains(string(r.body), p) {
			t.Errorf("the answer does not name %s: %s", p, r.body)
		}
	}
	var gs []model.JobGroup
	s.must(http.StatusOK, http.MethodGet, "/jobmanager/groups", nil).decode(t, &gs)
	s.tick()
	if len(gs) != 0 || len(pm.all()) != 0 {
		t.Errorf("a refused descriptor left %d groups and %d Policy Manager requests", len(gs), len(pm.all()))
	}
}

// TestPolicyManagerRemediations: the remediation names the Policy Manager sends beyond ours,
// on the callback path it is given: none is recorded and does nothing, redeploy re-applies
// the job's manifests as they are, migrate is a reallocation.
func TestPolicyManagerRemediations(t *testing.T) {
	pm := newRecorder(t)
	s := startStack(t, pm, nil)
	g := s.create(app("shop"))
	s.settle(g.ID)
	jobOf := func(component string) model.Job {
		for _, j := range s.group(g.ID).Jobs {
			if j.Component == component {
				return j
			}
		}
		t.Fatalf("no job for %s", component)
		return model.Job{}
	}
	violation := func(id, remediation, component string) reply {
		return s.rest(http.MethodPost, "/jobmanager/policies/incompliance/create", map[string]any{
			"id": id, "currentValue": "0.93", "threshold": "critical", "policyName": "shop-" + g.ID + "-cpu",
			"policyId": id, "measurementBackend": "prom-1", "extraLabels": map[string]string{}, "remediation": remediation,
			"subject": map[string]string{"type": "app", "appName": "shop", "appInstance": g.ID, "appComponent": component},
		}, s.token)
	}

	before := jobOf("web")
	r := violation("11111111-1111-4111-8111-111111111111", "none", "web")
	var rec model.Incompliance
	r.decode(t, &rec)
	if r.status != http.StatusAccepted || rec.Outcome != model.OutcomeApplied || !strings.Contains(rec.Reason, "nothing") {
		t.Errorf("none: %d %s", r.status, r.body)
	}
	if after := jobOf("web"); after.Type != before.Type || after.State != before.State || after.Fence != before.Fence {
		t.Errorf("none changed the job: %s %s fence %d → %s %s fence %d", before.Type, before.State, before.Fence, after.Type, after.State, after.Fence)
	}

	if r := violation("22222222-2222-4222-8222-222222222222", "redeploy", "web"); r.status != http.StatusOK {
		t.Fatalf("redeploy: %d %s", r.status, r.body)
	}
	if j := jobOf("web"); j.Type != model.UpdateDeployment || j.SubType != model.Redeploy || j.State != model.Created || j.OwnerID != dmOwner {
		t.Errorf("redeploy opened %s %s %s owner %s", j.Type, j.SubType, j.State, j.OwnerID)
	}

	if r := violation("33333333-3333-4333-8333-333333333333", "migrate", "db"); r.status != http.StatusOK {
		t.Fatalf("migrate: %d %s", r.status, r.body)
	}
	if j := jobOf("db"); j.Type != model.UpdateDeployment || j.SubType != model.Reallocation || j.Remediation == nil || j.Remediation.Action != model.Reallocation {
		t.Errorf("migrate opened %s %s (remediation %+v)", j.Type, j.SubType, j.Remediation)
	}
}
