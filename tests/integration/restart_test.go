package integration

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ocm-jobs/ocm-jobs/functions/executor/remediation"
	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// restartDescriptor is a Deployment, Service and ConfigMap on cluster1 (web) and a component
// with no pod template, a ConfigMap, on cluster2 (conf).
func restartDescriptor(name string) string {
	return `
name: ` + name + `
components:
  - name: web
    manifests: [{name: web}, {name: web-svc}, {name: web-config}]
    targets: {cluster_name: cluster1, orchestrator: ocm}
  - name: conf
    manifests: [{name: settings}]
    targets: {cluster_name: cluster2, orchestrator: ocm}
manifests:
` + webDeployment("nginx:1.27") + `  - apiVersion: v1
    kind: Service
    metadata: {name: web-svc}
    spec: {selector: {app: web}, ports: [{port: 80}]}
  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: web-config}
    data: {mode: demo}
  - apiVersion: v1
    kind: ConfigMap
    metadata: {name: settings}
    data: {level: info}
`
}

// reopens counts a job's re-opens as an UpdateDeployment (restarts and remediations).
func reopens(t *testing.T, st *store.Store, jobID string) int {
	t.Helper()
	return historyActions(t, st, jobID, "reopen-7")
}

func restartedAt(d interface{ GetAnnotations() map[string]string }) string {
	return d.GetAnnotations()[remediation.AnnotationRestartedAt]
}

// TestRestart: a restart order (event, then REST for one component) re-opens the running
// jobs as UpdateDeployment restart; the real agent applies the new pod template annotation on
// the spoke and nothing else changes (the other manifests byte-for-byte, the spoke ConfigMap's
// resourceVersion unmoved); a component with no pod template goes Degraded NoWorkload; a
// redelivered order restarts nothing twice; bad orders are 4xx.
func TestRestart(t *testing.T) {
	s := startE2E(t, nil)
	s.ticking(t, time.Second)
	ctx := context.Background()
	r := s.rest(t, http.MethodPost, "/jobmanager/groups", restartDescriptor("restart1"), s.token)
	if r.status != http.StatusCreated {
		t.Fatalf("POST /groups: %d %s", r.status, r.body)
	}
	var g model.JobGroup
	r.decode(t, &g)
	byComponent := map[string]model.Job{}
	for _, j := range g.Jobs {
		byComponent[j.Component] = *waitJob(t, s.store, j.ID, 90*time.Second, "finished", finished)
	}
	web, conf := byComponent["web"], byComponent["conf"]
	spoke := env.Spoke("cluster1").Kube
	cmBefore, err := spoke.CoreV1().ConfigMaps("restart1").Get(ctx, "web-config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svcBefore, err := spoke.CoreV1().Services("restart1").Get(ctx, "web-svc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// The order as an event.
	if r := s.event(t, "eu.icos.jobgroup.restart.v1", "restart-1", "application/json", []byte(`{"id":"`+g.ID+`"}`)); r.status != http.StatusOK {
		t.Fatalf("restart event: %d %s", r.status, r.body)
	}
	after := waitJob(t, s.store, web.ID, 90*time.Second, "restarted", func(j *model.Job) bool {
		return j.Type == model.UpdateDeployment && j.SubType == model.Restart && j.State == model.Finished
	})
	if after.Remediation == nil || after.Remediation.RestartedAt == "" {
		t.Fatalf("the restart job carries no restarted_at: %+v", after.Remediation)
	}
	at := after.Remediation.RestartedAt
	d := waitDeployment(t, "cluster1", "restart1", "web", func(d *corev1.PodTemplateSpec) bool { return restartedAt(d) == at })
	if restartedAt(&d.Spec.Template) != at {
		t.Errorf("spoke template annotation %q, want %q", restartedAt(&d.Spec.Template), at)
	}
	for k := 1; k < len(web.Manifests); k++ {
		if web.Manifests[k].YamlString != after.Manifests[k].YamlString {
			t.Errorf("manifest %d changed by the restart:\n%s\n-> %s", k, web.Manifests[k].YamlString, after.Manifests[k].YamlString)
		}
	}
	cmAfter, _ := spoke.CoreV1().ConfigMaps("restart1").Get(ctx, "web-config", metav1.GetOptions{})
	svcAfter, _ := spoke.CoreV1().Services("restart1").Get(ctx, "web-svc", metav1.GetOptions{})
	if cmAfter.ResourceVersion != cmBefore.ResourceVersion || svcAfter.ResourceVersion != svcBefore.ResourceVersion {
		t.Errorf("the restart touched other objects on the spoke: ConfigMap %s -> %s, Service %s -> %s",
			cmBefore.ResourceVersion, cmAfter.ResourceVersion, svcBefore.ResourceVersion, svcAfter.ResourceVersion)
	}
	noWorkload := waitJob(t, s.store, conf.ID, 90*time.Second, "degraded", func(j *model.Job) bool { return j.State == model.Degraded })
	if c := noWorkload.Resource.Condition(model.ConditionDegraded); c == nil || c.Reason != remediation.ReasonNoWorkload {
		t.Errorf("component without pod template: condition %+v, want Degraded %s", c, remediation.ReasonNoWorkload)
	}

	// Redelivered (the broker's at-least-once) — even past the remembered answer, the store
	// re-opens nothing twice.
	if r := s.event(t, "eu.icos.jobgroup.restart.v1", "restart-1", "application/json", []byte(`{"id":"`+g.ID+`"}`)); r.status != http.StatusOK {
		t.Fatalf("restart redelivered: %d %s", r.status, r.body)
	}
	_, err = s.store.Reopen(ctx, web.ID, store.Reopen{Type: model.UpdateDeployment, SubType: model.Restart,
		Remediation: after.Remediation, Order: after.Remediation.Order, By: "test", Why: "the same order again"})
	if !errors.Is(err, store.ErrOrderSeen) {
		t.Errorf("the same order again: %v, want ErrOrderSeen", err)
	}
	if n := reopens(t, s.store, web.ID); n != 1 {
		t.Errorf("%d restarts of %s after one order delivered twice, want 1", n, web.ID)
	}

	// REST, one component: only web restarts again, with a later time.
	if r := s.rest(t, http.MethodPut, "/jobmanager/groups/restart/"+g.ID+"?component=web", nil, s.token); r.status != http.StatusOK {
		t.Fatalf("PUT restart: %d %s", r.status, r.body)
	}
	again := waitJob(t, s.store, web.ID, 90*time.Second, "restarted again", func(j *model.Job) bool {
		return j.State == model.Finished && j.Remediation != nil && j.Remediation.RestartedAt != at
	})
	waitDeployment(t, "cluster1", "restart1", "web", func(d *corev1.PodTemplateSpec) bool {
		return restartedAt(d) == again.Remediation.RestartedAt
	})
	if n := reopens(t, s.store, conf.ID); n != 1 {
		t.Errorf("component conf re-opened %d times, want once (the REST order named web)", n)
	}

	bad := map[string]struct {
		do   func() reply
		want int
	}{
		"unknown component": {func() reply {
			return s.rest(t, http.MethodPut, "/jobmanager/groups/restart/"+g.ID+"?component=nope", nil, s.token)
		}, http.StatusNotFound},
		"unknown group": {func() reply {
			return s.rest(t, http.MethodPut, "/jobmanager/groups/restart/0a000000-0000-4000-8000-000000000009", nil, s.token)
		}, http.StatusNotFound},
		"body not JSON": {func() reply {
			return s.rest(t, http.MethodPut, "/jobmanager/groups/restart/"+g.ID, "component: [", s.token)
		}, http.StatusUnprocessableEntity},
		"event without a group": {func() reply {
			return s.event(t, "eu.icos.jobgroup.restart.v1", "restart-bad", "application/json", []byte(`{"component":"web"}`))
		}, http.StatusUnprocessableEntity},
	}
	for name, tc := range bad {
		t.Run(name, func(t *testing.T) {
			r := tc.do()
			if r.status != tc.want {
				t.Errorf("%d %s, want %d", r.status, r.body, tc.want)
			}
			if name != "event without a group" {
				jsonError(t, r, name)
			}
		})
	}
}

// waitDeployment polls a spoke Deployment until cond holds for its pod template.
func waitDeployment(t *testing.T, cluster, ns, name string, cond func(*corev1.PodTemplateSpec) bool) *appsv1.Deployment {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		d := spokeDeployment(t, cluster, ns, name)
		if d != nil && cond(&d.Spec.Template) || time.Now().After(deadline) {
			if d == nil {
				t.Fatalf("no Deployment %s/%s on %s", ns, name, cluster)
			}
			return d
		}
		time.Sleep(200 * time.Millisecond)
	}
}
