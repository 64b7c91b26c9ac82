package integration

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ocm-jobs/ocm-jobs/functions/jobs"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// oakestraSLA is an Oakestra SLA v2.0 of two applications: a web server with a port on
// cluster1, and a one-shot job on cluster2. Zero values of fields with no equivalent are fine.
func oakestraSLA(app string) string {
	return `{
  "sla_version": "v2.0", "customerID": "Admin",
  "applications": [{
    "applicationID": "", "application_name": "` + app + `", "application_namespace": "test", "application_desc": "from Oakestra",
    "microservices": [{
      "microserviceID": "", "microservice_name": "web", "microservice_namespace": "test", "virtualization": "container",
      "environment": ["MODE=demo"], "memory": 64, "vcpus": 0, "vgpus": 0, "vtpus": 0, "bandwidth_in": 0, "bandwidth_out": 0,
      "storage": 0, "code": "docker.io/library/nginx:1.27", "state": "", "port": "8080:80", "addresses": {"rr_ip": ""},
      "added_files": [], "constraints": [{"type": "direct", "cluster": "cluster1"}]
    }]
  }, {
    "application_name": "` + app + `b", "application_namespace": "test",
    "microservices": [{"microservice_name": "once", "microservice_namespace": "test", "virtualization": "container",
      "code": "busybox:1.36", "cmd": ["true"], "one_shot": true, "constraints": [{"type": "direct", "cluster": "cluster2"}]}]
  }]
}`
}

// TestOakestraImport: an Oakestra SLA posted to POST /jobmanager/groups becomes one group per
// application whose workloads the real agents apply on the clusters its direct constraints
// name (a Deployment and its Service, a batch Job for the one-shot); an SLA asking for what
// has no equivalent is a 422 listing each path and stores nothing, unless ignoreUnsupported;
// the same SLA as a create event makes the groups too.
func TestOakestraImport(t *testing.T) {
	s := startE2E(t, nil)
	s.ticking(t, time.Second)
	ctx := context.Background()
	countGroups := func() int {
		var gs []model.JobGroup
		s.rest(t, http.MethodGet, "/jobmanager/groups", nil, s.token).decode(t, &gs)
		return len(gs)
	}

	unsupported := strings.NewReplacer(`"vgpus": 0`, `"vgpus": 1`, `{"rr_ip": ""}`, `{"rr_ip": "10.30.0.7"}`).Replace(oakestraSLA("oak1"))
	r := s.rest(t, http.MethodPost, "/jobmanager/groups", unsupported, s.token)
	if r.status != http.StatusUnprocessableEntity {
		t.Fatalf("SLA with vgpus and rr_ip: %d %s, want 422", r.status, r.body)
	}
	jsonError(t, r, "unsupported SLA")
	for _, p := range []string{"applications[0].microservices[0].vgpus", "applications[0].microservices[0].addresses"} {
		if !strings.Contains(string(r.body), p) {
			t.Errorf("the 422 does not list %s: %s", p, r.body)
		}
	}
	// A bad second application: nothing of the first is stored either.
	badSecond := strings.Replace(oakestraSLA("oak1"), `"code": "busybox:1.36"`, `"code": ""`, 1)
	if r := s.rest(t, http.MethodPost, "/jobmanager/groups", badSecond, s.token); r.status != http.StatusUnprocessableEntity {
		t.Fatalf("SLA with a bad second application: %d %s", r.status, r.body)
	}
	if n := countGroups(); n != 0 {
		t.Fatalf("%d groups stored by refused SLAs", n)
	}

	r = s.rest(t, http.MethodPost, "/jobmanager/groups", oakestraSLA("oak1"), s.token)
	if r.status != http.StatusCreated {
		t.Fatalf("POST SLA: %d %s", r.status, r.body)
	}
	var gs []model.JobGroup
	r.decode(t, &gs)
	if len(gs) != 2 || gs[0].AppName != "oak1" || gs[1].AppName != "oak1b" {
		t.Fatalf("groups %s", r.body)
	}
	for _, g := range gs {
		waitJob(t, s.store, g.Jobs[0].ID, 90*time.Second, "finished", func(j *model.Job) bool { return j.State != model.Created && j.State != model.Progressing })
	}
	d := spokeDeployment(t, "cluster1", "oak1-test", "web")
	if d == nil {
		t.Fatal("no Deployment web in oak1-test on cluster1")
	}
	if c := d.Spec.Template.Spec.Containers[0]; c.Image != "docker.io/library/nginx:1.27" || c.Resources.Requests.Memory().String() != "64Mi" {
		t.Errorf("container %+v", c)
	}
	svc, err := env.Spoke("cluster1").Kube.CoreV1().Services("oak1-test").Get(ctx, "web", metav1.GetOptions{})
	if err != nil || svc.Spec.Ports[0].Port != 8080 || svc.Spec.Ports[0].TargetPort.IntValue() != 80 {
		t.Errorf("Service: %v %+v", err, svc)
	}
	if _, err := env.Spoke("cluster2").Kube.BatchV1().Jobs("oak1b-test").Get(ctx, "once", metav1.GetOptions{}); err != nil {
		t.Errorf("the one-shot Job on cluster2: %v", err)
	}
	var rep jobs.GroupReport
	s.rest(t, http.MethodGet, "/jobmanager/groups/"+gs[0].ID+"/report", nil, s.token).decode(t, &rep)
	if len(rep.Components) != 1 || rep.Components[0].Instances[0].OakestraStatus != jobs.OakRunning {
		t.Errorf("report in Oakestra's words: %+v", rep)
	}

	// As events: refused (422) unless the extension ignores the unsupported fields.
	if r := s.event(t, "eu.icos.jobgroup.create.v1", "oak-ev-1", "application/json", []byte(strings.ReplaceAll(unsupported, "oak1", "oak2"))); r.status != http.StatusUnprocessableEntity {
		t.Errorf("unsupported SLA as an event: %d %s", r.status, r.body)
	}
	r = s.eventWith(t, "eu.icos.jobgroup.create.v1", "oak-ev-2", map[string]string{"Content-Type": "application/json",
		"Ce-" + jobs.ExtIgnoreUnsupported: "true"}, []byte(strings.ReplaceAll(unsupported, "oak1", "oak3")))
	if r.status != http.StatusOK {
		t.Fatalf("SLA event with ignoreunsupported: %d %s", r.status, r.body)
	}
	var evGroups []model.JobGroup
	r.decode(t, &evGroups)
	if len(evGroups) != 2 || evGroups[0].AppName != "oak3" {
		t.Errorf("groups from the event: %s", r.body)
	}
}
