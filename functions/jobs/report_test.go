package jobs

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

func i64(n int64) *int64 { return &n }

func TestBuildReport(t *testing.T) {
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	web := model.Job{ID: "0a000000-0000-4000-8000-000000000001", Component: "web", Type: model.CreateDeployment,
		State: model.Finished, Fence: 1, Namespace: "shop",
		Targets: &model.Target{ClusterName: "cluster1", Orchestrator: model.OCM},
		Manifests: []model.PlainManifest{
			{YamlString: "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 3}\n"},
			{YamlString: "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent, namespace: infra}\n"},
			{YamlString: "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: NodePort\n  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080, protocol: TCP}]\n"},
			{YamlString: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"},
			{YamlString: "not: [yaml"},
		},
		Resource: &model.Resource{Conditions: []model.Condition{{Type: model.ConditionAvailable, Status: metav1.ConditionTrue, Reason: "Available"}},
			Workloads: []model.WorkloadStatus{{Kind: "Deployment", Namespace: "shop", Name: "web", Replicas: i64(3), ReadyReplicas: i64(2), AvailableReplicas: i64(2)}}},
		Remediation: &model.Remediation{IncomplianceID: "inc-done", Action: model.ScaleOut},
	}
	db := model.Job{ID: "0a000000-0000-4000-8000-000000000002", Component: "db", Type: model.UpdateDeployment, SubType: model.ScaleUp,
		State: model.Progressing, Fence: 2, Namespace: "shop",
		Targets:     &model.Target{ClusterName: "cluster2", Orchestrator: model.OCM},
		Manifests:   []model.PlainManifest{{YamlString: "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\n"}},
		Remediation: &model.Remediation{IncomplianceID: "inc-open", Action: model.ScaleUp},
	}
	g := &model.JobGroup{ID: "0a000000-0000-4000-8000-0000000000aa", AppName: "shop", Jobs: []model.Job{web, db}}
	hist := map[string][]model.HistoryEntry{
		web.ID: {{At: at.Add(2 * time.Minute), Action: "target", From: 3, To: 3},
			{At: at, Action: "finish", From: model.Progressing, To: model.Finished}},
		db.ID: {{At: at, Action: "reopen-7", From: model.Finished, To: model.Created}},
	}
	incs := []model.Incompliance{
		{ID: "inc-done", JobID: web.ID, PolicyName: "p", Remediation: model.ScaleOut, Outcome: model.OutcomeApplied},
		{ID: "inc-open", JobID: db.ID, PolicyName: "q", Remediation: model.ScaleUp, Outcome: model.OutcomeApplied},
		{ID: "inc-pending", JobID: web.ID, PolicyName: "r", Remediation: model.ScaleIn, Outcome: model.OutcomePending},
		{ID: "inc-rejected", JobID: web.ID, PolicyName: "s", Remediation: model.ScaleIn, Outcome: model.OutcomeRejected},
	}
	got := BuildReport(g, hist, incs)
	want := GroupReport{ID: g.ID, AppName: "shop", Components: []ComponentReport{
		{Name: "db", Instances: []InstanceReport{{JobID: db.ID, Cluster: "cluster2", Type: "UpdateDeployment", SubType: "scale-up",
			State: "Progressing", OakestraStatus: OakCreating, LastTransition: &hist[db.ID][0],
			Workloads:     []WorkloadReport{{Kind: "StatefulSet", Namespace: "shop", Name: "db", Desired: i64(1)}},
			Services:      []ServiceReport{},
			Conditions:    []model.Condition{},
			Incompliances: []IncomplianceReport{{ID: "inc-open", PolicyName: "q", Remediation: model.ScaleUp, Outcome: model.OutcomeApplied}}}}},
		{Name: "web", Instances: []InstanceReport{{JobID: web.ID, Cluster: "cluster1", Type: "CreateDeployment",
			State: "Finished", OakestraStatus: OakRunning, LastTransition: &hist[web.ID][1],
			Workloads: []WorkloadReport{
				{Kind: "Deployment", Namespace: "shop", Name: "web", Desired: i64(3), Replicas: i64(3), ReadyReplicas: i64(2), AvailableReplicas: i64(2)},
				{Kind: "DaemonSet", Namespace: "infra", Name: "agent"}},
			Services: []ServiceReport{{Namespace: "shop", Name: "web", Type: "NodePort",
				Ports: []ServicePort{{Name: "http", Port: 80, TargetPort: float64(8080), NodePort: 30080, Protocol: "TCP"}}}},
			Conditions:    web.Resource.Conditions,
			Incompliances: []IncomplianceReport{{ID: "inc-pending", PolicyName: "r", Remediation: model.ScaleIn, Outcome: model.OutcomePending}}}}},
	}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("report (-want +got):\n%s", d)
	}
}

func TestOakestraStatus(t *testing.T) {
	target := &model.Target{ClusterName: "c1", Orchestrator: model.OCM}
	applied := &model.Resource{Conditions: []model.Condition{{Type: model.ConditionApplied, Status: metav1.ConditionTrue}}}
	noHub := &model.Resource{Conditions: []model.Condition{{Type: model.ConditionProgressing, Status: metav1.ConditionFalse, Reason: model.ReasonNoManagingHub}}}
	tests := map[string]struct {
		job  model.Job
		want string
	}{
		"no target yet":           {model.Job{Type: model.CreateDeployment, State: model.Created}, OakRequested},
		"no hub manages it":       {model.Job{Type: model.CreateDeployment, State: model.Created, Targets: target, Resource: noHub}, OakTargetClusterNotActive},
		"placed":                  {model.Job{Type: model.CreateDeployment, State: model.Created, Targets: target}, OakClusterScheduled},
		"executing":               {model.Job{Type: model.CreateDeployment, State: model.Progressing, Targets: target, Fence: 1}, OakCreating},
		"applied, not available":  {model.Job{Type: model.CreateDeployment, State: model.Progressing, Targets: target, Fence: 1, Resource: applied}, OakCreated},
		"finished":                {model.Job{Type: model.CreateDeployment, State: model.Finished, Targets: target, Fence: 1}, OakRunning},
		"re-opened for a restart": {model.Job{Type: model.UpdateDeployment, State: model.Created, Targets: target, Fence: 1}, OakCreating},
		"degraded":                {model.Job{Type: model.UpdateDeployment, State: model.Degraded, Targets: target, Fence: 2}, OakFailed},
		"stopping":                {model.Job{Type: model.DeleteDeployment, State: model.Progressing, Targets: target, Fence: 2}, OakUndeployed},
		"stopped":                 {model.Job{Type: model.DeleteDeployment, State: model.Finished, Targets: target, Fence: 2}, OakUndeployed},
		"failed to stop":          {model.Job{Type: model.DeleteDeployment, State: model.Degraded, Targets: target, Fence: 2}, OakFailed},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := OakestraStatus(&tc.job); got != tc.want {
				t.Errorf("%s, want %s", got, tc.want)
			}
		})
	}
}
