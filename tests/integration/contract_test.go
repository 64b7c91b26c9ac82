package integration

// Contract tests: each replays one real ICOS client's conversation with the Job Manager as its
// public source has it (../shared/reference/icos-facts.md, "What the real clients send and
// read"; policy-manager.md): the routes, methods, bodies and content types it sends, and the
// JSON fields it reads with the types it decodes them into.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	workv1 "open-cluster-management.io/api/work/v1"
	"sigs.k8s.io/yaml"

	"github.com/ocm-jobs/ocm-jobs/shared/auth"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/ocm"
)

// send is one request as a client sends it: its own content type ("" for none) and body.
func (f *functions) send(t *testing.T, method, path, contentType string, body []byte, token string) reply {
	t.Helper()
	req, err := http.NewRequest(method, f.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, body: raw, header: resp.Header}
}

// jsonError is what the shell shows of a failure: the answer must be a JSON object with a
// string "error".
func jsonError(t *testing.T, r reply, what string) {
	t.Helper()
	var e struct {
		Error *string `json:"error"`
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: content type %q, want JSON (body %s)", what, ct, r.body)
	}
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == nil || *e.Error == "" {
		t.Errorf("%s: %d %s: want {\"error\": …}", what, r.status, r.body)
	}
}

func layout(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "shell-layout-"+name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestShellContract is the icos-shell's conversation: POST /groups with raw YAML
// (application/x-yaml, 201 expected) in each of its three layouts; GET /groups and
// /groups/{id}; PUT /groups/{id} with the new descriptor as JSON and no Content-Type; PUT
// /groups/stop/{id} and /groups/start/{id} (and /groups/undeploy/{id}, its older route), a
// stop accepted while a job is being executed; DELETE; and every failure a JSON {"error"}.
func TestShellContract(t *testing.T) {
	s := startE2E(t, nil)
	s.ticking(t, 500*time.Millisecond)

	var groups []model.JobGroup
	for _, l := range []string{"a", "b", "c"} {
		r := s.send(t, http.MethodPost, "/jobmanager/groups", "application/x-yaml", layout(t, l), s.token)
		if r.status != http.StatusCreated {
			t.Fatalf("layout %s: POST /groups: %d %s", l, r.status, r.body)
		}
		var g model.JobGroup
		r.decode(t, &g)
		if g.ID == "" || g.AppName != "hello" || len(g.Jobs) != 1 || g.Jobs[0].Component != "web" || len(g.Jobs[0].Manifests) != 2 {
			t.Fatalf("layout %s: group %+v", l, g)
		}
		groups = append(groups, g)
	}
	for _, g := range groups {
		waitJob(t, s.store, g.Jobs[0].ID, 90*time.Second, "finished", finished)
	}

	// The shell lists and reads groups as JSON arrays and objects.
	r := s.send(t, http.MethodGet, "/jobmanager/groups", "", nil, s.token)
	var list []map[string]any
	if err := json.Unmarshal(r.body, &list); r.status != http.StatusOK || err != nil || len(list) < 3 {
		t.Fatalf("GET /groups: %d %v %.200s", r.status, err, r.body)
	}

	// PUT /groups/{id}: the new descriptor as JSON, no Content-Type (layout A with 2 replicas).
	g := groups[0]
	var desc map[string]any
	if err := yamlToJSON(layout(t, "a"), &desc); err != nil {
		t.Fatal(err)
	}
	desc["description"] = "updated by the shell"
	body, _ := json.Marshal(desc)
	r = s.send(t, http.MethodPut, "/jobmanager/groups/"+g.ID, "", body, s.token)
	if r.status != http.StatusOK {
		t.Fatalf("PUT /groups/{id}: %d %s", r.status, r.body)
	}
	var updated model.JobGroup
	r.decode(t, &updated)
	if updated.ID != g.ID || len(updated.Jobs) != 1 {
		t.Errorf("PUT /groups/{id} answered %+v", updated)
	}

	// A stop that arrives while the job is being executed (the Replace just ordered) is
	// accepted and carried out once the job ends; then the group deletes.
	r = s.send(t, http.MethodPut, "/jobmanager/groups/stop/"+g.ID, "", nil, s.token)
	if r.status != http.StatusOK && r.status != http.StatusAccepted {
		t.Fatalf("PUT /groups/stop/{id}: %d %s", r.status, r.body)
	}
	var stopped model.JobGroup
	r.decode(t, &stopped)
	if r.status == http.StatusAccepted && stopped.Pending != "stop" {
		t.Errorf("an accepted stop: pending %q, want stop", stopped.Pending)
	}
	t.Logf("stop while executing: %d (pending %q)", r.status, stopped.Pending)
	waitJob(t, s.store, g.Jobs[0].ID, 90*time.Second, "stopped", func(j *model.Job) bool {
		return j.Type == model.DeleteDeployment && j.State == model.Finished
	})
	// Start again, stop with the older route, delete.
	if r := s.send(t, http.MethodPut, "/jobmanager/groups/start/"+groups[1].ID, "", nil, s.token); r.status != http.StatusOK {
		t.Errorf("PUT /groups/start/{id} of a running group: %d %s", r.status, r.body)
	}
	if r := s.send(t, http.MethodPut, "/jobmanager/groups/undeploy/"+groups[1].ID, "", nil, s.token); r.status != http.StatusOK && r.status != http.StatusAccepted {
		t.Errorf("PUT /groups/undeploy/{id}: %d %s", r.status, r.body)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		r = s.send(t, http.MethodDelete, "/jobmanager/groups/"+g.ID, "", nil, s.token)
		if r.status == http.StatusOK || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if r.status != http.StatusOK {
		t.Errorf("DELETE /groups/{id} after the stop: %d %s", r.status, r.body)
	}

	// Every failure is a JSON {"error"}: a bad descriptor, an unknown group, an unknown
	// route, a method a route does not take, no token.
	jsonError(t, s.send(t, http.MethodPost, "/jobmanager/groups", "application/x-yaml", []byte("name: x\n"), s.token), "bad descriptor")
	jsonError(t, s.send(t, http.MethodGet, "/jobmanager/groups/"+uuid.NewString(), "", nil, s.token), "unknown group")
	r = s.send(t, http.MethodGet, "/jobmanager/no-such-route", "", nil, s.token)
	if r.status != http.StatusNotFound {
		t.Errorf("unknown route: %d", r.status)
	}
	jsonError(t, r, "unknown route")
	r = s.send(t, http.MethodPatch, "/jobmanager/groups/"+g.ID, "", nil, s.token)
	if r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") == "" {
		t.Errorf("wrong method: %d, Allow %q", r.status, r.header.Get("Allow"))
	}
	jsonError(t, r, "wrong method")
	jsonError(t, s.send(t, http.MethodGet, "/jobmanager/groups", "", nil, ""), "no token")
}

// yamlToJSON decodes YAML into v as JSON would.
func yamlToJSON(y []byte, v any) error { return yaml.Unmarshal(y, v) }

// TestDashboardContract: the ICOS dashboard reads a group's lowercase "id", and of each job
// "id", "orchestrator", "namespace" (strings) and "state" (a number).
func TestDashboardContract(t *testing.T) {
	f := startFunctions(t, nil)
	r := f.send(t, http.MethodPost, "/jobmanager/groups", "application/x-yaml", layout(t, "c"), f.token)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /groups: %d %s", r.status, r.body)
	}
	r = f.send(t, http.MethodGet, "/jobmanager/groups", "", nil, f.token)
	var groups []struct {
		ID   string `json:"id"`
		Jobs []struct {
			ID           string `json:"id"`
			Orchestrator string `json:"orchestrator"`
			Namespace    string `json:"namespace"`
			State        int    `json:"state"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(r.body, &groups); err != nil || len(groups) == 0 {
		t.Fatalf("the dashboard cannot decode GET /groups: %v %.300s", err, r.body)
	}
	for _, g := range groups {
		for _, j := range g.Jobs {
			if g.ID == "" || j.ID == "" || j.Orchestrator != "ocm" || j.Namespace == "" || j.State < 1 || j.State > 4 {
				t.Errorf("group %q job %+v", g.ID, j)
			}
		}
	}
}

// TestOCMDeploymentManagerContract is the ICOS OCM deployment manager's conversation, with
// ocm-jobs' own executor not running: it polls GET /jobs/executable/ocm/{owner} (decoding
// []Job), skips jobs without targets.node_name, dereferences job.resource, promotes with
// PATCH /jobs/promote/{id} {"owner_id"}, creates its ManifestWork with generateName
// <resource_name>- (the real agent applies it), reports the job with PUT
// /jobs?id=…&orchestrator=ocm (the whole job, no Content-Type) and the resource with PUT
// /resources/status carrying only resource_uuid and resource_name, every 15 s in life (here a
// few times). Status sync then follows the deployment manager's work: the job stays Finished,
// its resource names that work, and no Degraded condition appears.
func TestOCMDeploymentManagerContract(t *testing.T) {
	ctx := context.Background()
	owner, err := env.Hub.HubID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := startE2E(t, map[string]string{"FUNCTION": "jobs,incompliance,statussync"})
	s.ticking(t, 500*time.Millisecond)
	dm, err := s.issuer.Sign(auth.Grant{Subject: "icos-ocm-dm", TTL: time.Hour, Roles: []auth.Role{auth.RoleDeploymentManager}, Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	r := s.send(t, http.MethodPost, "/jobmanager/groups", "application/x-yaml", layout(t, "a"), s.token)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /groups: %d %s", r.status, r.body)
	}
	var g model.JobGroup
	r.decode(t, &g)

	// Poll: the DM decodes []Job whatever the status and dereferences job.resource.
	r = s.send(t, http.MethodGet, "/jobmanager/jobs/executable/ocm/"+owner, "", nil, dm)
	var raw []map[string]any
	if err := json.Unmarshal(r.body, &raw); r.status != http.StatusOK || err != nil {
		t.Fatalf("executable: %d %v %.300s", r.status, err, r.body)
	}
	var job map[string]any
	for _, j := range raw {
		if j["id"] == g.Jobs[0].ID {
			job = j
		}
	}
	if job == nil {
		t.Fatalf("job %s is not executable: %.300s", g.Jobs[0].ID, r.body)
	}
	res, _ := job["resource"].(map[string]any)
	targets, _ := job["targets"].(map[string]any)
	if res == nil || res["resource_name"] != "web" || res["resource_uuid"] == "" {
		t.Fatalf("the DM dereferences job.resource: %v", job["resource"])
	}
	if targets == nil || targets["node_name"] == "" {
		t.Fatalf("the DM skips jobs without targets.node_name: %v", job["targets"])
	}
	id := job["id"].(string)
	if r := s.send(t, http.MethodPatch, "/jobmanager/jobs/promote/"+id, "", []byte(`{"owner_id":"`+owner+`"}`), dm); r.status != http.StatusNoContent {
		t.Fatalf("promote: %d %s", r.status, r.body)
	}

	// Its own ManifestWork, named after resource_name by generateName.
	var manifests []workv1.Manifest
	for _, m := range job["manifests"].([]any) {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(m.(map[string]any)["yamlString"].(string)), &obj); err != nil {
			t.Fatal(err)
		}
		obj["metadata"].(map[string]any)["namespace"] = "default"
		b, _ := json.Marshal(obj)
		manifests = append(manifests, workv1.Manifest{RawExtension: runtime.RawExtension{Raw: b}})
	}
	mw := &workv1.ManifestWork{ObjectMeta: metav1.ObjectMeta{GenerateName: res["resource_name"].(string) + "-", Namespace: "cluster1"},
		Spec: workv1.ManifestWorkSpec{Workload: workv1.ManifestsTemplate{Manifests: manifests}}}
	created, err := env.Hub.Work.WorkV1().ManifestWorks("cluster1").Create(ctx, mw, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Hub.Work.WorkV1().ManifestWorks("cluster1").Delete(context.Background(), created.Name, metav1.DeleteOptions{})
	})

	// Report the job Finished (the whole job back, no Content-Type), then the resource status
	// the way the DM does: resource_uuid and resource_name only, a few times.
	job["state"] = float64(model.Finished)
	body, _ := json.Marshal(job)
	if r := s.send(t, http.MethodPut, "/jobmanager/jobs?id="+id+"&orchestrator=ocm", "", body, dm); r.status != http.StatusOK {
		t.Fatalf("PUT /jobs: %d %s", r.status, r.body)
	}
	status := map[string]any{"resource_uuid": res["resource_uuid"], "resource_name": res["resource_name"],
		"conditions": []map[string]any{{"type": "Applied", "status": "True", "reason": "AppliedManifestWorkComplete",
			"message": "Apply manifest work complete", "lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}}}
	body, _ = json.Marshal(status)
	for i := 0; i < 3; i++ {
		if r := s.send(t, http.MethodPut, "/jobmanager/resources/status", "", body, dm); r.status != http.StatusOK {
			t.Fatalf("PUT /resources/status (resource_uuid only): %d %s", r.status, r.body)
		}
		time.Sleep(time.Second)
	}
	// Status sync ticks for a while: the job stays Finished and follows the DM's work.
	deadline := time.Now().Add(30 * time.Second)
	var got *model.Job
	for time.Now().Before(deadline) {
		if got, err = s.store.GetJob(ctx, id); err != nil {
			t.Fatal(err)
		}
		if got.Resource != nil && got.Resource.ManifestWorkName == created.Name && got.Resource.Condition(model.ConditionAvailable) != nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(12 * time.Second) // well past the 9 s after which it used to degrade the job
	if got, err = s.store.GetJob(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got.State != model.Finished {
		t.Errorf("job %s is %s after the DM reported it Finished", id, got.State)
	}
	if got.Resource == nil || got.Resource.ManifestWorkName != created.Name {
		t.Errorf("status sync does not follow the DM's work %s: resource %+v", created.Name, got.Resource)
	}
	if c := got.Resource.Condition(model.ConditionDegraded); c != nil && c.Status == metav1.ConditionTrue {
		t.Errorf("a Degraded condition beside the DM's Finished: %+v", c)
	}
	if _, err := env.Hub.Work.WorkV1().ManifestWorks("cluster1").Get(ctx, ocm.WorkName(id), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ocm-jobs wrote a work of its own for a job the DM executed (err %v)", err)
	}
}

// TestPolicyManagerContract: the Policy Manager calls back the path ICOS registers,
// /jobmanager/policies/incompliance/create, with a plain JSON violation (no resourceId; the
// job found by appInstance and appComponent) and its client-credentials token.
func TestPolicyManagerContract(t *testing.T) {
	s := startE2E(t, nil)
	s.ticking(t, 500*time.Millisecond)
	r := s.send(t, http.MethodPost, "/jobmanager/groups", "application/x-yaml", layout(t, "b"), s.token)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /groups: %d %s", r.status, r.body)
	}
	var g model.JobGroup
	r.decode(t, &g)
	waitJob(t, s.store, g.Jobs[0].ID, 90*time.Second, "finished", finished)
	pm, err := s.issuer.Sign(auth.Grant{Subject: "service-account-polman", TTL: time.Hour, Roles: []auth.Role{auth.RolePolicyManager}})
	if err != nil {
		t.Fatal(err)
	}
	violation := map[string]any{
		"id": uuid.NewString(), "currentValue": "97.5", "threshold": "critical", "policyName": "hello-" + g.ID + "-1",
		"policyId": uuid.NewString(), "measurementBackend": "prom-1", "extraLabels": map[string]string{"instance": "node1"},
		"subject":     map[string]string{"type": "app", "appName": "hello", "appInstance": g.ID, "appComponent": "web"},
		"remediation": "scale-out",
	}
	body, _ := json.Marshal(violation)
	r = s.send(t, http.MethodPost, "/jobmanager/policies/incompliance/create", "application/json", body, pm)
	if r.status != http.StatusOK {
		t.Fatalf("POST /policies/incompliance/create: %d %s", r.status, r.body)
	}
	waitJob(t, s.store, g.Jobs[0].ID, 90*time.Second, "remediated", func(j *model.Job) bool {
		return j.Type == model.UpdateDeployment && j.State == model.Finished
	})
}

// ping delivers one cron tick to the functions, as the PingSource would.
func (f *functions) ping(t *testing.T) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.url, strings.NewReader(`{}`))
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Id", uuid.NewString())
	req.Header.Set("Ce-Source", "/apis/v1/namespaces/ocm-jobs/pingsources/ocm-jobs-cron")
	req.Header.Set("Ce-Type", "dev.knative.sources.ping")
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Fatalf("tick: %d", resp.StatusCode)
	}
}

// TestStopWhileExecuting: a stop that arrives while a job of the group is being executed is
// accepted (202, the group's pending order "stop", visible on GET) and carried out by the
// first cron tick after the job ended; a start after it replaces it (the last order wins).
func TestStopWhileExecuting(t *testing.T) {
	f := startFunctions(t, map[string]string{"FUNCTION": "jobs"})
	r := f.send(t, http.MethodPost, "/jobmanager/groups", "application/x-yaml", layout(t, "a"), f.token)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /groups: %d %s", r.status, r.body)
	}
	var g model.JobGroup
	r.decode(t, &g)
	id := g.Jobs[0].ID
	owner := "dm-" + uuid.NewString()[:8]
	dm := f.asOwner(t, owner)
	if r := f.send(t, http.MethodPatch, "/jobmanager/jobs/promote/"+id, "", []byte(`{"owner_id":"`+owner+`"}`), dm); r.status != http.StatusNoContent {
		t.Fatalf("promote: %d %s", r.status, r.body)
	}
	// The job is being executed: the stop is accepted and waits.
	r = f.send(t, http.MethodPut, "/jobmanager/groups/stop/"+g.ID, "", nil, f.token)
	var got model.JobGroup
	r.decode(t, &got)
	if r.status != http.StatusAccepted || got.Pending != "stop" || got.Jobs[0].Type != model.CreateDeployment {
		t.Fatalf("stop while executing: %d, pending %q, job type %s; want 202, stop, still the create", r.status, got.Pending, got.Jobs[0].Type)
	}
	f.send(t, http.MethodGet, "/jobmanager/groups/"+g.ID, "", nil, f.token).decode(t, &got)
	if got.Pending != "stop" {
		t.Errorf("GET /groups/{id}: pending %q, want stop", got.Pending)
	}
	f.ping(t)
	f.send(t, http.MethodGet, "/jobmanager/groups/"+g.ID, "", nil, f.token).decode(t, &got)
	if got.Pending != "stop" || got.Jobs[0].Type != model.CreateDeployment {
		t.Errorf("a tick while the job still runs: pending %q, type %s", got.Pending, got.Jobs[0].Type)
	}
	// The job ends; the next tick carries the stop out.
	var job map[string]any
	f.send(t, http.MethodGet, "/jobmanager/jobs/"+id, "", nil, f.token).decode(t, &job)
	job["state"] = float64(model.Finished)
	body, _ := json.Marshal(job)
	if r := f.send(t, http.MethodPut, "/jobmanager/jobs?id="+id+"&orchestrator=ocm", "", body, dm); r.status != http.StatusOK {
		t.Fatalf("report: %d %s", r.status, r.body)
	}
	f.ping(t)
	f.send(t, http.MethodGet, "/jobmanager/groups/"+g.ID, "", nil, f.token).decode(t, &got)
	if got.Pending != "" || got.Jobs[0].Type != model.DeleteDeployment {
		t.Fatalf("after the job ended and a tick: pending %q, job type %s; want the stop carried out", got.Pending, got.Jobs[0].Type)
	}
	// Promote the undeploy, then order a start while it runs: the start replaces nothing
	// pending and waits itself; once the undeploy ends the tick starts the group again.
	if r := f.send(t, http.MethodPatch, "/jobmanager/jobs/promote/"+id, "", []byte(`{"owner_id":"`+owner+`"}`), dm); r.status != http.StatusNoContent {
		t.Fatalf("promote the undeploy: %d %s", r.status, r.body)
	}
	r = f.send(t, http.MethodPut, "/jobmanager/groups/start/"+g.ID, "", nil, f.token)
	r.decode(t, &got)
	if r.status != http.StatusAccepted || got.Pending != "start" {
		t.Fatalf("start while the undeploy runs: %d pending %q", r.status, got.Pending)
	}
	f.send(t, http.MethodGet, "/jobmanager/jobs/"+id, "", nil, f.token).decode(t, &job)
	job["state"] = float64(model.Finished)
	body, _ = json.Marshal(job)
	if r := f.send(t, http.MethodPut, "/jobmanager/jobs?id="+id+"&orchestrator=ocm", "", body, dm); r.status != http.StatusOK {
		t.Fatalf("report the undeploy: %d %s", r.status, r.body)
	}
	f.ping(t)
	f.send(t, http.MethodGet, "/jobmanager/groups/"+g.ID, "", nil, f.token).decode(t, &got)
	if got.Pending != "" || got.Jobs[0].Type != model.CreateDeployment || got.Jobs[0].State != model.Created {
		t.Errorf("after the undeploy ended: pending %q, job %s %s; want the start carried out", got.Pending, got.Jobs[0].Type, got.Jobs[0].State)
	}
}
