package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clusterv1beta1 "open-cluster-management.io/api/cluster/v1beta1"

	"github.com/ocm-jobs/ocm-jobs/shared/auth"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

func TestRESTRequiresAValidToken(t *testing.T) {
	f := startFunctions(t, nil)
	expired, _ := f.issuer.Token("old", -time.Minute)
	for name, tok := range map[string]string{"none": "", "garbage": "x.y.z", "expired": expired} {
		r := f.rest(t, http.MethodGet, "/jobmanager/groups", nil, tok)
		var body map[string]string
		r.decode(t, &body)
		if r.status != http.StatusUnauthorized || body["error"] == "" {
			t.Errorf("%s token: %d %s, want 401 with an error", name, r.status, r.body)
		}
	}
	if r := f.rest(t, http.MethodGet, "/jobmanager/healthz", nil, ""); r.status != http.StatusOK {
		t.Errorf("healthz needs no token: %d", r.status)
	}
}

func TestCreateAndReadGroup(t *testing.T) {
	f := startFunctions(t, nil)
	r := f.rest(t, http.MethodPost, "/jobmanager/groups", guestbook(t), f.token)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /groups: %d %s", r.status, r.body)
	}
	var g model.JobGroup
	r.decode(t, &g)
	if g.AppName != "guestbook" || len(g.Jobs) != 2 {
		t.Fatalf("group %+v", g)
	}
	clusters := map[string]string{}
	for _, j := range g.Jobs {
		if j.State != model.Created || j.Type != model.CreateDeployment || j.Targets == nil || j.Namespace != "guestbook" {
			t.Errorf("job %+v", j)
			continue
		}
		clusters[j.Component] = j.Targets.ClusterName
	}
	if clusters["frontend"] != "cluster1" || clusters["backend"] != "cluster2" {
		t.Errorf("targets %v", clusters)
	}
	if got := len(f.sink.ofType("eu.icos.job.created.v1", g.ID)); got != 2 {
		t.Errorf("job.created published %d times, want 2", got)
	}
	// Reads: the group, the list, the job (ICOS clients read both `id` and `ID`).
	var got model.JobGroup
	f.rest(t, http.MethodGet, "/jobmanager/groups/"+g.ID, nil, f.token).decode(t, &got)
	if got.ID != g.ID || len(got.Jobs) != 2 {
		t.Errorf("GET /groups/{id}: %+v", got)
	}
	var all []model.JobGroup
	f.rest(t, http.MethodGet, "/jobmanager/groups", nil, f.token).decode(t, &all)
	if len(all) == 0 {
		t.Error("GET /groups is empty")
	}
	r = f.rest(t, http.MethodGet, "/jobmanager/jobs/"+g.Jobs[0].ID, nil, f.token)
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"id":"`+g.Jobs[0].ID+`"`) {
		t.Errorf("GET /jobs/{id}: %d %s", r.status, r.body)
	}
	if r := f.rest(t, http.MethodGet, "/jobmanager/jobs/00000000-0000-4000-8000-000000000000", nil, f.token); r.status != http.StatusNotFound {
		t.Errorf("unknown job: %d %s", r.status, r.body)
	}
}

func TestBadDescriptorIs422AndWritesNothing(t *testing.T) {
	f := startFunctions(t, nil)
	var before []model.JobGroup
	f.rest(t, http.MethodGet, "/jobmanager/groups", nil, f.token).decode(t, &before)
	r := f.rest(t, http.MethodPost, "/jobmanager/groups", `
name: broken
components:
  - name: web
    manifests: [{name: missing}]
  - name: web
    manifests: [{name: cm}]
manifests:
  - {apiVersion: v1, kind: ConfigMap, metadata: {name: cm}}
`, f.token)
	var body map[string]string
	r.decode(t, &body)
	if r.status != http.StatusUnprocessableEntity || !strings.Contains(body["error"], `"missing"`) || !strings.Contains(body["error"], "duplicate component") {
		t.Errorf("bad descriptor: %d %s", r.status, r.body)
	}
	if r := f.rest(t, http.MethodPost, "/jobmanager/groups", "name: [", f.token); r.status != http.StatusUnprocessableEntity {
		t.Errorf("YAML that does not parse: %d %s", r.status, r.body)
	}
	var after []model.JobGroup
	f.rest(t, http.MethodGet, "/jobmanager/groups", nil, f.token).decode(t, &after)
	if len(after) != len(before) {
		t.Errorf("a refused descriptor wrote a group: %d groups before, %d after", len(before), len(after))
	}
}

const nuvlaApp = `
name: edge
components:
  - {name: sensor, manifests: [{name: sensor}], targets: {cluster_name: edge-a, orchestrator: nuvla}}
  - {name: relay, manifests: [{name: relay}], targets: {cluster_name: edge-b, orchestrator: nuvla}}
  - {name: store, manifests: [{name: store}], targets: {cluster_name: edge-c, orchestrator: nuvla}}
manifests:
  - {apiVersion: v1, kind: ConfigMap, metadata: {name: sensor}}
  - {apiVersion: v1, kind: ConfigMap, metadata: {name: relay}}
  - {apiVersion: v1, kind: ConfigMap, metadata: {name: store}}
`

// TestNuvlaPollPromoteReportLoop runs the loop a non-OCM deployment manager drives through
// the API, with two competing pollers: every job is promoted by exactly one of them (the
// other gets 409), executed, reported Finished, and its resource status recorded.
func TestNuvlaPollPromoteReportLoop(t *testing.T) {
	f := startFunctions(t, nil)
	r := f.rest(t, http.MethodPost, "/jobmanager/groups", nuvlaApp, f.token)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /groups: %d %s", r.status, r.body)
	}
	var g model.JobGroup
	r.decode(t, &g)
	mine := map[string]bool{}
	for _, j := range g.Jobs {
		mine[j.ID] = true
	}
	var mu sync.Mutex
	won := map[string][]string{}
	conflicts := 0
	var wg sync.WaitGroup
	// A deployment manager's token names the owner it acts as.
	tokens := map[string]string{}
	for _, owner := range []string{"nuvla-a", "nuvla-b"} {
		token, err := f.issuer.Sign(auth.Grant{Subject: owner, TTL: time.Hour, Roles: auth.AllRoles, Owner: owner})
		if err != nil {
			t.Fatal(err)
		}
		tokens[owner] = token
	}
	for _, owner := range []string{"nuvla-a", "nuvla-b"} {
		wg.Add(1)
		token := tokens[owner]
		go func(owner string) {
			defer wg.Done()
			for round := 0; round < 20; round++ {
				var jobs []model.Job
				f.rest(t, http.MethodGet, "/jobmanager/jobs/executable/nuvla/"+owner, nil, token).decode(t, &jobs)
				if len(jobs) == 0 {
					return
				}
				for _, j := range jobs {
					if !mine[j.ID] {
						continue
					}
					p := f.rest(t, http.MethodPatch, "/jobmanager/jobs/promote/"+j.ID, map[string]string{"owner_id": owner}, token)
					mu.Lock()
					switch p.status {
					case http.StatusNoContent:
						won[j.ID] = append(won[j.ID], owner)
					case http.StatusConflict:
						conflicts++
					default:
						t.Errorf("promote %s by %s: %d %s", j.ID, owner, p.status, p.body)
					}
					mu.Unlock()
					if p.status != http.StatusNoContent {
						continue
					}
					// Execute, then report as the owner.
					res := map[string]any{"job_id": j.ID, "resource_name": j.Component, "conditions": []metav1.Condition{{
						Type: "Available", Status: metav1.ConditionTrue, Reason: "Deployed", Message: "running on " + j.Targets.ClusterName,
						LastTransitionTime: metav1.Now(),
					}}}
					if s := f.rest(t, http.MethodPut, "/jobmanager/resources/status", res, token); s.status != http.StatusOK {
						t.Errorf("PUT /resources/status: %d %s", s.status, s.body)
					}
					rep := f.rest(t, http.MethodPut, "/jobmanager/jobs", map[string]any{"ID": j.ID, "owner_id": owner, "state": 3}, token)
					if rep.status != http.StatusOK {
						t.Errorf("PUT /jobs: %d %s", rep.status, rep.body)
					}
				}
			}
		}(owner)
	}
	wg.Wait()
	for id := range mine {
		if len(won[id]) != 1 {
			t.Errorf("job %s promoted by %v, want exactly one owner", id, won[id])
		}
		var j model.Job
		f.rest(t, http.MethodGet, "/jobmanager/jobs/"+id, nil, f.token).decode(t, &j)
		if j.State != model.Finished || j.OwnerID != won[id][0] {
			t.Errorf("job %s: state %s owner %q", id, j.State, j.OwnerID)
		}
		var conds []metav1.Condition
		f.rest(t, http.MethodGet, "/jobmanager/resources/status/"+id, nil, f.token).decode(t, &conds)
		if len(conds) != 1 || conds[0].Type != "Available" {
			t.Errorf("resource status of %s: %+v", id, conds)
		}
		var hist []model.HistoryEntry
		f.rest(t, http.MethodGet, "/jobmanager/jobs/"+id+"/history", nil, f.token).decode(t, &hist)
		if len(hist) < 3 {
			t.Errorf("history of %s: %+v", id, hist)
		}
	}
	t.Logf("3 jobs, 2 pollers: %d promotes refused with 409", conflicts)
	// A second promote of a promoted job is a 409, never a silent success.
	for id := range mine {
		p := f.rest(t, http.MethodPatch, "/jobmanager/jobs/promote/"+id, map[string]string{"owner_id": "nuvla-a"}, tokens["nuvla-a"])
		if p.status != http.StatusConflict {
			t.Errorf("second promote of %s: %d %s", id, p.status, p.body)
		}
		break
	}
	// A report from a deployment manager that does not own the job is refused: 409 when it
	// reports as itself, 403 when it claims to be the owner its token does not name.
	for id := range mine {
		owner, other := won[id][0], "nuvla-a"
		if owner == "nuvla-a" {
			other = "nuvla-b"
		}
		if rep := f.rest(t, http.MethodPut, "/jobmanager/jobs", map[string]any{"id": id, "owner_id": other, "state": 4}, tokens[other]); rep.status != http.StatusConflict {
			t.Errorf("report by a non-owner as itself: %d %s", rep.status, rep.body)
		}
		if rep := f.rest(t, http.MethodPut, "/jobmanager/jobs", map[string]any{"id": id, "owner_id": owner, "state": 4}, tokens[other]); rep.status != http.StatusForbidden {
			t.Errorf("report by a non-owner as the owner: %d %s", rep.status, rep.body)
		}
		break
	}
}

// TestStopAndDelete: stop turns deployed jobs into Delete jobs and never-started ones into
// Finished; delete refuses (409) while Delete jobs are pending and succeeds once they finish.
func TestStopAndDelete(t *testing.T) {
	f := startFunctions(t, nil)
	var g model.JobGroup
	f.rest(t, http.MethodPost, "/jobmanager/groups", nuvlaApp, f.token).decode(t, &g)
	// Deploy one job (promote + finish), leave the others never started.
	deployed := g.Jobs[0].ID
	if p := f.rest(t, http.MethodPatch, "/jobmanager/jobs/promote/"+deployed, map[string]string{"owner_id": "dm"}, f.asOwner(t, "dm")); p.status != http.StatusNoContent {
		t.Fatalf("promote: %d %s", p.status, p.body)
	}
	if rep := f.rest(t, http.MethodPut, "/jobmanager/jobs", map[string]any{"id": deployed, "owner_id": "dm", "state": 3}, f.asOwner(t, "dm")); rep.status != http.StatusOK {
		t.Fatalf("report: %d %s", rep.status, rep.body)
	}
	r := f.rest(t, http.MethodPut, "/jobmanager/groups/undeploy/"+g.ID, nil, f.token)
	if r.status != http.StatusOK {
		t.Fatalf("undeploy: %d %s", r.status, r.body)
	}
	var stopped model.JobGroup
	r.decode(t, &stopped)
	for _, j := range stopped.Jobs {
		want := model.Finished
		if j.ID == deployed {
			want = model.Created
		}
		if j.Type != model.DeleteDeployment || j.State != want {
			t.Errorf("after stop, job %s: %s %s, want DeleteDeployment %s", j.ID, j.Type, j.State, want)
		}
	}
	d := f.rest(t, http.MethodDelete, "/jobmanager/groups/"+g.ID, nil, f.token)
	if d.status != http.StatusConflict || !strings.Contains(string(d.body), deployed) {
		t.Errorf("delete with a pending Delete job: %d %s", d.status, d.body)
	}
	// The deployment manager runs the Delete job.
	f.rest(t, http.MethodPatch, "/jobmanager/jobs/promote/"+deployed, map[string]string{"owner_id": "dm"}, f.asOwner(t, "dm"))
	f.rest(t, http.MethodPut, "/jobmanager/jobs", map[string]any{"id": deployed, "owner_id": "dm", "state": 3}, f.asOwner(t, "dm"))
	if d := f.rest(t, http.MethodDelete, "/jobmanager/groups/"+g.ID, nil, f.token); d.status != http.StatusOK {
		t.Errorf("delete after the Delete jobs finished: %d %s", d.status, d.body)
	}
	if r := f.rest(t, http.MethodGet, "/jobmanager/groups/"+g.ID, nil, f.token); r.status != http.StatusNotFound {
		t.Errorf("deleted group still readable as live: %d", r.status)
	}
}

// TestIncomplianceFromThePolicyManager: the Policy Manager's webhook shape (appInstance +
// appComponent) re-opens the Finished job as an UpdateDeployment; a storm within the
// cooldown yields no second job; an unknown subject is a 422, recorded.
func TestIncomplianceFromThePolicyManager(t *testing.T) {
	f := startFunctions(t, nil)
	var g model.JobGroup
	f.rest(t, http.MethodPost, "/jobmanager/groups", nuvlaApp, f.token).decode(t, &g)
	job := g.Jobs[0]
	f.rest(t, http.MethodPatch, "/jobmanager/jobs/promote/"+job.ID, map[string]string{"owner_id": "dm"}, f.asOwner(t, "dm"))
	f.rest(t, http.MethodPut, "/jobmanager/jobs", map[string]any{"id": job.ID, "owner_id": "dm", "state": 3}, f.asOwner(t, "dm"))

	inc := func(id string) map[string]any {
		return map[string]any{"id": id, "policyName": "cpu-high", "policyId": "p1", "currentValue": 97, "threshold": 80,
			"measurementBackend": "prometheus", "remediation": "scale-out",
			"subject": map[string]string{"type": "app", "appName": "edge", "appInstance": g.ID, "appComponent": job.Component}}
	}
	createdBefore := len(f.sink.ofType("eu.icos.job.created.v1", g.ID))
	r := f.rest(t, http.MethodPost, "/jobmanager/policies/incompliance", inc("11111111-1111-4111-8111-111111111111"), f.token)
	if r.status != http.StatusOK {
		t.Fatalf("incompliance: %d %s", r.status, r.body)
	}
	var rec model.Incompliance
	r.decode(t, &rec)
	if rec.Outcome != model.OutcomeApplied || rec.JobID != job.ID {
		t.Errorf("incompliance record %+v", rec)
	}
	var j model.Job
	f.rest(t, http.MethodGet, "/jobmanager/jobs/"+job.ID, nil, f.token).decode(t, &j)
	if j.Type != model.UpdateDeployment || j.SubType != model.ScaleOut || j.State != model.Created || j.OwnerID != "dm" {
		t.Errorf("remediated job: %s %s %s owner %q", j.Type, j.SubType, j.State, j.OwnerID)
	}
	if n := len(f.sink.ofType("eu.icos.job.created.v1", g.ID)) - createdBefore; n != 1 {
		t.Errorf("job.created published %d times for one remediation, want 1", n)
	}
	// A storm: fifty more of the same policy on the same job.
	for i := 0; i < 50; i++ {
		r := f.rest(t, http.MethodPost, "/jobmanager/policies/incompliance", inc(fmt.Sprintf("22222222-2222-4222-8222-%012d", i)), f.token)
		if r.status != http.StatusAccepted {
			t.Fatalf("storm incompliance %d: %d %s", i, r.status, r.body)
		}
	}
	var hist []model.HistoryEntry
	f.rest(t, http.MethodGet, "/jobmanager/jobs/"+job.ID+"/history", nil, f.token).decode(t, &hist)
	reopens := 0
	for _, h := range hist {
		if strings.HasPrefix(h.Action, "reopen") {
			reopens++
		}
	}
	if reopens != 1 {
		t.Errorf("51 incompliances re-opened the job %d times, want 1", reopens)
	}
	// Redelivery of the first answers as before.
	if r := f.rest(t, http.MethodPost, "/jobmanager/policies/incompliance", inc("11111111-1111-4111-8111-111111111111"), f.token); r.status != http.StatusOK {
		t.Errorf("redelivered incompliance: %d %s", r.status, r.body)
	}
	// Unknown subject.
	bad := inc("33333333-3333-4333-8333-333333333333")
	bad["subject"] = map[string]string{"appInstance": g.ID, "appComponent": "nope"}
	r = f.rest(t, http.MethodPost, "/jobmanager/policies/incompliance", bad, f.token)
	if r.status != http.StatusUnprocessableEntity || !strings.Contains(string(r.body), "nope") {
		t.Errorf("unknown subject: %d %s", r.status, r.body)
	}
	// Missing required fields.
	if r := f.rest(t, http.MethodPost, "/jobmanager/policies/incompliance", map[string]any{"subject": map[string]string{}}, f.token); r.status != http.StatusUnprocessableEntity {
		t.Errorf("missing fields: %d %s", r.status, r.body)
	}
}

// TestCloudEventsDriveGroups: create (binary, YAML), duplicate delivery, stop and delete as
// CloudEvents alone.
func TestCloudEventsDriveGroups(t *testing.T) {
	f := startFunctions(t, nil)
	r := f.event(t, "eu.icos.jobgroup.create.v1", "create-1", "application/yaml", []byte(nuvlaApp))
	if r.status != http.StatusOK || r.header.Get("Ce-Type") == "" {
		t.Fatalf("create event: %d %s", r.status, r.body)
	}
	var g model.JobGroup
	r.decode(t, &g)
	again := f.redeliver(t, "eu.icos.jobgroup.create.v1", "create-1", "application/yaml", []byte(nuvlaApp))
	var g2 model.JobGroup
	again.decode(t, &g2)
	if again.status != http.StatusOK || g2.ID != g.ID {
		t.Errorf("redelivered create: %d, group %s, want %s", again.status, g2.ID, g.ID)
	}
	var all []model.JobGroup
	f.rest(t, http.MethodGet, "/jobmanager/groups", nil, f.token).decode(t, &all)
	n := 0
	for _, x := range all {
		if x.AppName == "edge" && x.ID == g.ID {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d groups from one event delivered twice", n)
	}
	if r := f.event(t, "eu.icos.jobgroup.create.v1", "create-bad", "application/yaml", []byte("components: []")); r.status != http.StatusUnprocessableEntity {
		t.Errorf("bad descriptor event: %d %s", r.status, r.body)
	}
	if r := f.event(t, "eu.icos.jobgroup.stop.v1", "stop-1", "application/json", []byte(`{"id":"`+g.ID+`"}`)); r.status != http.StatusOK {
		t.Errorf("stop event: %d %s", r.status, r.body)
	}
	if r := f.event(t, "eu.icos.jobgroup.delete.v1", "delete-1", "application/json", []byte(`{"id":"`+g.ID+`"}`)); r.status != http.StatusOK {
		t.Errorf("delete event after stopping a never-started group: %d %s", r.status, r.body)
	}
	if r := f.event(t, "eu.icos.jobgroup.delete.v1", "delete-2", "application/json", []byte(`{}`)); r.status != http.StatusUnprocessableEntity {
		t.Errorf("delete without an id: %d %s", r.status, r.body)
	}
}

// TestPlacementTargets: a component without targets is placed by the OCM Placement the
// descriptor names, read from its PlacementDecisions on the real API server (local-cluster
// skipped); with no decision yet, the job waits in Created with a condition saying so.
func TestPlacementTargets(t *testing.T) {
	ctx := t.Context()
	ns := "placements"
	if err := env.Hub.EnsureNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	pd := &clusterv1beta1.PlacementDecision{ObjectMeta: metav1.ObjectMeta{Name: "web-decision-1", Namespace: ns,
		Labels: map[string]string{clusterv1beta1.PlacementLabel: "web"}}}
	created, err := env.Hub.OCM.ClusterV1beta1().PlacementDecisions(ns).Create(ctx, pd, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Status.Decisions = []clusterv1beta1.ClusterDecision{{ClusterName: "local-cluster"}, {ClusterName: "cluster2"}}
	if _, err := env.Hub.OCM.ClusterV1beta1().PlacementDecisions(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f := startFunctions(t, map[string]string{"PLACEMENT_NAMESPACE": ns, "DEFAULT_PLACEMENT": "undecided", "FUNCTION": "jobs"})
	app := func(placement string) string {
		p := ""
		if placement != "" {
			p = "placement: " + placement
		}
		return `
name: placed
` + p + `
components: [{name: web, manifests: [{name: web}]}]
manifests: [{apiVersion: v1, kind: ConfigMap, metadata: {name: web}}]
`
	}
	var g model.JobGroup
	r := f.rest(t, http.MethodPost, "/jobmanager/groups", app("web"), f.token)
	r.decode(t, &g)
	if r.status != http.StatusCreated || g.Jobs[0].Targets == nil || g.Jobs[0].Targets.ClusterName != "cluster2" {
		t.Fatalf("placed by Placement web: %d %s", r.status, r.body)
	}
	r = f.rest(t, http.MethodPost, "/jobmanager/groups", app(""), f.token)
	r.decode(t, &g)
	j := g.Jobs[0]
	if r.status != http.StatusCreated || j.Targets != nil || j.State != model.Created {
		t.Fatalf("no decision: %d %s", r.status, r.body)
	}
	if j.Resource == nil || j.Resource.Condition(model.ConditionProgressing) == nil ||
		j.Resource.Condition(model.ConditionProgressing).Reason != "AwaitingTarget" {
		t.Errorf("a job without a target has no AwaitingTarget condition: %+v", j.Resource)
	}
	// The default Placement decides; the cron tick gives the waiting job its target.
	later := &clusterv1beta1.PlacementDecision{ObjectMeta: metav1.ObjectMeta{Name: "undecided-decision-1", Namespace: ns,
		Labels: map[string]string{clusterv1beta1.PlacementLabel: "undecided"}}}
	if later, err = env.Hub.OCM.ClusterV1beta1().PlacementDecisions(ns).Create(ctx, later, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	later.Status.Decisions = []clusterv1beta1.ClusterDecision{{ClusterName: "cluster1"}}
	if _, err := env.Hub.OCM.ClusterV1beta1().PlacementDecisions(ns).UpdateStatus(ctx, later, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	tick := f.event(t, "dev.knative.sources.ping", "tick-1", "application/json", []byte(`{}`))
	if tick.status != http.StatusOK {
		t.Fatalf("cron tick: %d %s", tick.status, tick.body)
	}
	var after model.Job
	f.rest(t, http.MethodGet, "/jobmanager/jobs/"+j.ID, nil, f.token).decode(t, &after)
	if after.Targets == nil || after.Targets.ClusterName != "cluster1" {
		t.Errorf("after the tick the job targets %+v, want cluster1", after.Targets)
	}
	if len(f.sink.ofType("eu.icos.job.created.v1", g.ID)) != 1 {
		t.Errorf("the job that got a target was not announced with job.created")
	}
}

// TestUpdateAndStartEvents: an update replaces the manifests of a deployed job (Replace),
// adds new components as new jobs and undeploys removed ones; start re-creates a stopped
// group's jobs.
func TestUpdateAndStartEvents(t *testing.T) {
	f := startFunctions(t, nil)
	r := f.event(t, "eu.icos.jobgroup.create.v1", "upd-create", "application/yaml", []byte(nuvlaApp))
	var g model.JobGroup
	r.decode(t, &g)
	byComp := map[string]model.Job{}
	for _, j := range g.Jobs {
		byComp[j.Component] = j
	}
	deployed := byComp["sensor"].ID
	f.rest(t, http.MethodPatch, "/jobmanager/jobs/promote/"+deployed, map[string]string{"owner_id": "dm"}, f.asOwner(t, "dm"))
	f.rest(t, http.MethodPut, "/jobmanager/jobs", map[string]any{"id": deployed, "owner_id": "dm", "state": 3}, f.asOwner(t, "dm"))

	updated := strings.Replace(nuvlaApp, "  - {name: store, manifests: [{name: store}], targets: {cluster_name: edge-c, orchestrator: nuvla}}\n",
		"  - {name: cache, manifests: [{name: store}], targets: {cluster_name: edge-c, orchestrator: nuvla}}\n", 1)
	updated = strings.Replace(updated, "metadata: {name: sensor}}", "metadata: {name: sensor}, data: {rate: '5'}}", 1)
	body, _ := json.Marshal(map[string]string{"id": g.ID, "descriptor": updated})
	r = f.event(t, "eu.icos.jobgroup.update.v1", "upd-1", "application/json", body)
	if r.status != http.StatusOK {
		t.Fatalf("update event: %d %s", r.status, r.body)
	}
	var u model.JobGroup
	r.decode(t, &u)
	got := map[string]string{}
	for _, j := range u.Jobs {
		got[j.Component] = fmt.Sprintf("%s %s", j.Type, j.State)
	}
	want := map[string]string{
		"sensor": "ReplaceDeployment Created", // deployed, manifests changed
		"relay":  "CreateDeployment Created",  // never deployed, unchanged
		"store":  "DeleteDeployment Finished", // removed, never deployed: nothing to undeploy
		"cache":  "CreateDeployment Created",  // new component
	}
	for c, w := range want {
		if got[c] != w {
			t.Errorf("after update, %s is %q, want %q", c, got[c], w)
		}
	}
	// Stop, run the Delete job, then start again.
	f.rest(t, http.MethodPatch, "/jobmanager/jobs/promote/"+deployed, map[string]string{"owner_id": "dm"}, f.asOwner(t, "dm"))
	f.rest(t, http.MethodPut, "/jobmanager/jobs", map[string]any{"id": deployed, "owner_id": "dm", "state": 3}, f.asOwner(t, "dm"))
	if r := f.event(t, "eu.icos.jobgroup.stop.v1", "upd-stop", "application/json", []byte(`{"id":"`+g.ID+`"}`)); r.status != http.StatusOK {
		t.Fatalf("stop: %d %s", r.status, r.body)
	}
	f.rest(t, http.MethodPatch, "/jobmanager/jobs/promote/"+deployed, map[string]string{"owner_id": "dm"}, f.asOwner(t, "dm"))
	f.rest(t, http.MethodPut, "/jobmanager/jobs", map[string]any{"id": deployed, "owner_id": "dm", "state": 3}, f.asOwner(t, "dm"))
	r = f.event(t, "eu.icos.jobgroup.start.v1", "upd-start", "application/json", []byte(`{"id":"`+g.ID+`"}`))
	if r.status != http.StatusOK {
		t.Fatalf("start: %d %s", r.status, r.body)
	}
	var started model.JobGroup
	r.decode(t, &started)
	for _, j := range started.Jobs {
		if j.ID == deployed && (j.Type != model.CreateDeployment || j.State != model.Created || j.OwnerID != "dm") {
			t.Errorf("started job %s: %s %s owner %q, want CreateDeployment Created owned by dm", j.ID, j.Type, j.State, j.OwnerID)
		}
	}
}

// TestStructuredModeCreate: the same create as a structured-mode CloudEvent with JSON data.
func TestStructuredModeCreate(t *testing.T) {
	f := startFunctions(t, nil)
	body := `{"specversion":"1.0","id":"structured-1","source":"/tests","type":"eu.icos.jobgroup.create.v1",
		"datacontenttype":"application/json","data":{"name":"js","components":[{"name":"a","manifests":[{"name":"x"}],
		"targets":{"cluster_name":"cluster1","orchestrator":"ocm"}}],"manifests":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}]}}`
	req, _ := http.NewRequest(http.MethodPost, f.url+"/", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/cloudevents+json")
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(resp.Body)
		t.Fatalf("structured create: %d %s", resp.StatusCode, raw)
	}
}

// TestCloudEventsCanRequireTokens: with AUTH_CLOUDEVENTS the CloudEvents endpoint checks
// bearer tokens as the REST API does.
func TestCloudEventsCanRequireTokens(t *testing.T) {
	f := startFunctions(t, map[string]string{"AUTH_CLOUDEVENTS": "true"})
	send := func(token string) int {
		req, _ := http.NewRequest(http.MethodPost, f.url+"/", strings.NewReader(nuvlaApp))
		req.Header.Set("Ce-Specversion", "1.0")
		req.Header.Set("Ce-Id", "auth-"+token[:min(len(token), 6)])
		req.Header.Set("Ce-Source", "/tests")
		req.Header.Set("Ce-Type", "eu.icos.jobgroup.create.v1")
		req.Header.Set("Content-Type", "application/yaml")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := f.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := send(""); got != http.StatusUnauthorized {
		t.Errorf("event without a token: %d, want 401", got)
	}
	if got := send(f.token); got != http.StatusOK {
		t.Errorf("event with a token: %d, want 200", got)
	}
}

// TestRemainingRESTRoutes: PUT /groups, GET /jobs, DELETE /jobs/{id}, PUT /groups/deploy/{id},
// and the incompliance as a CloudEvent.
func TestRemainingRESTRoutes(t *testing.T) {
	f := startFunctions(t, nil)
	var g model.JobGroup
	f.rest(t, http.MethodPost, "/jobmanager/groups", nuvlaApp, f.token).decode(t, &g)
	updated := strings.Replace(nuvlaApp, "metadata: {name: relay}}", "metadata: {name: relay}, data: {v: '2'}}", 1)
	r := f.rest(t, http.MethodPut, "/jobmanager/groups", map[string]string{"id": g.ID, "descriptor": updated}, f.token)
	if r.status != http.StatusOK {
		t.Fatalf("PUT /groups: %d %s", r.status, r.body)
	}
	if r := f.rest(t, http.MethodPut, "/jobmanager/groups", map[string]string{"id": g.ID}, f.token); r.status != http.StatusUnprocessableEntity {
		t.Errorf("PUT /groups without a descriptor: %d", r.status)
	}
	var all []model.Job
	f.rest(t, http.MethodGet, "/jobmanager/jobs", nil, f.token).decode(t, &all)
	found := 0
	for _, j := range all {
		if j.JobGroupID == g.ID {
			found++
		}
	}
	if found != 3 {
		t.Errorf("GET /jobs lists %d of the group's 3 jobs", found)
	}
	// DELETE /jobs/{id} undeploys one job: never started, it finishes at once.
	var del model.Job
	r = f.rest(t, http.MethodDelete, "/jobmanager/jobs/"+g.Jobs[0].ID, nil, f.token)
	r.decode(t, &del)
	if r.status != http.StatusOK || del.Type != model.DeleteDeployment || del.State != model.Finished {
		t.Errorf("DELETE /jobs/{id}: %d %s", r.status, r.body)
	}
	// Stop and start: a started group deploys its manifests again.
	if r := f.rest(t, http.MethodPut, "/jobmanager/groups/undeploy/"+g.ID, nil, f.token); r.status != http.StatusOK {
		t.Fatalf("undeploy: %d %s", r.status, r.body)
	}
	r = f.rest(t, http.MethodPut, "/jobmanager/groups/deploy/"+g.ID, nil, f.token)
	if r.status != http.StatusOK {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	// The incompliance endpoint also takes CloudEvents: an unknown subject is a 422.
	body, _ := json.Marshal(map[string]any{"policyName": "p", "remediation": "scale-out", "subject": map[string]string{"resourceId": "00000000-0000-4000-8000-000000000000"}})
	if r := f.event(t, "eu.icos.policy.incompliance.v1", "inc-event-1", "application/json", body); r.status != http.StatusUnprocessableEntity {
		t.Errorf("incompliance event about an unknown job: %d %s", r.status, r.body)
	}
}
