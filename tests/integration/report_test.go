package integration

import (
	"net/http"
	"testing"
	"time"

	"github.com/ocm-jobs/ocm-jobs/functions/jobs"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// TestGroupReport: a deployed group's report lists, per component and cluster, the workload
// with its desired replicas (from the manifest) and those the real work agent reported, the
// Service and its port, the conditions, the state with its last transition and the Oakestra
// status — and a jobs process with no hub at all serves the same report: it reads the store
// only.
func TestGroupReport(t *testing.T) {
	s := startE2E(t, nil)
	s.ticking(t, time.Second)
	r := s.rest(t, http.MethodPost, "/jobmanager/groups", workloadApp("report1"), s.token)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /groups: %d %s", r.status, r.body)
	}
	var g model.JobGroup
	r.decode(t, &g)
	job := g.Jobs[0]
	waitJob(t, s.store, job.ID, 90*time.Second, "finished with feedback", func(j *model.Job) bool {
		return j.State == model.Finished && j.Resource != nil && len(j.Resource.Workloads) > 0
	})
	var rep jobs.GroupReport
	r = s.rest(t, http.MethodGet, "/jobmanager/groups/"+g.ID+"/report", nil, s.token)
	if r.status != http.StatusOK {
		t.Fatalf("GET report: %d %s", r.status, r.body)
	}
	r.decode(t, &rep)
	if rep.ID != g.ID || len(rep.Components) != 1 || rep.Components[0].Name != "web" || len(rep.Components[0].Instances) != 1 {
		t.Fatalf("report %s", r.body)
	}
	in := rep.Components[0].Instances[0]
	if in.JobID != job.ID || in.Cluster != "cluster1" || in.State != "Finished" || in.OakestraStatus != jobs.OakRunning {
		t.Errorf("instance %+v", in)
	}
	if in.LastTransition == nil || in.LastTransition.To != model.Finished {
		t.Errorf("last transition %+v, want the finish", in.LastTransition)
	}
	if len(in.Workloads) != 1 || in.Workloads[0].Kind != "Deployment" || in.Workloads[0].Desired == nil || *in.Workloads[0].Desired != 2 ||
		in.Workloads[0].Replicas == nil {
		t.Errorf("workloads %s", r.body)
	}
	if len(in.Services) != 1 || in.Services[0].Name != "web-svc" || len(in.Services[0].Ports) != 1 || in.Services[0].Ports[0].Port != 80 {
		t.Errorf("services %+v", in.Services)
	}
	available := false
	for _, c := range in.Conditions {
		available = available || c.Type == model.ConditionAvailable && c.Status == "True"
	}
	if !available {
		t.Errorf("conditions %+v: want Available", in.Conditions)
	}

	// The same report from a jobs process that has no hub.
	blind := startFunctions(t, map[string]string{"FUNCTION": "jobs", "STORE_PREFIX": s.prefix,
		"KUBECONFIG": "/nonexistent/kubeconfig", "HUB_ID": "no-hub"})
	r2 := blind.rest(t, http.MethodGet, "/jobmanager/groups/"+g.ID+"/report", nil, blind.token)
	if r2.status != http.StatusOK {
		t.Fatalf("GET report without a hub: %d %s", r2.status, r2.body)
	}
	var rep2 jobs.GroupReport
	r2.decode(t, &rep2)
	if len(rep2.Components) != 1 || len(rep2.Components[0].Instances) != 1 || rep2.Components[0].Instances[0].OakestraStatus != jobs.OakRunning ||
		len(rep2.Components[0].Instances[0].Workloads) != 1 {
		t.Errorf("report without a hub: %s", r2.body)
	}
	if r := s.rest(t, http.MethodGet, "/jobmanager/groups/0a000000-0000-4000-8000-00000000000f/report", nil, s.token); r.status != http.StatusNotFound {
		t.Errorf("report of no group: %d %s", r.status, r.body)
	} else {
		jsonError(t, r, "report of no group")
	}
}
