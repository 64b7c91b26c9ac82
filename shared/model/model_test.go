package model_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// icosJob is a job as the ICOS 1.4.1 Job Manager writes it: the id untagged as "ID".
const icosJob = `{"ID":"5f0c…","job_group_id":"g1","owner_id":"hub","job_group_name":"shop",
"job_group_description":"d","type":7,"sub_type":"scale-out","state":3,
"manifests":[{"yamlString":"kind: Deployment"}],"targets":{"cluster_name":"c1","node_name":"n1","orchestrator":"ocm"},
"orchestrator":"ocm","resource":{"ID":"r1","job_id":"5f0c…","resource_uuid":"u","resource_name":"web",
"conditions":[{"type":"Available","status":"True","lastTransitionTime":"2026-01-02T03:04:05Z","reason":"r","message":"m"}]},
"namespace":"shop","created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:04:06Z"}`

func TestJobJSON(t *testing.T) {
	var j model.Job
	if err := json.Unmarshal([]byte(icosJob), &j); err != nil {
		t.Fatal(err)
	}
	want := model.Job{ID: "5f0c…", JobGroupID: "g1", OwnerID: "hub", JobGroupName: "shop", JobGroupDescription: "d",
		Type: model.UpdateDeployment, SubType: model.ScaleOut, State: model.Finished,
		Manifests:    []model.PlainManifest{{YamlString: "kind: Deployment"}},
		Targets:      &model.Target{ClusterName: "c1", NodeName: "n1", Orchestrator: model.OCM},
		Orchestrator: model.OCM, Namespace: "shop",
		Resource: &model.Resource{ID: "r1", JobID: "5f0c…", ResourceUUID: "u", ResourceName: "web",
			Conditions: []model.Condition{{Type: "Available", Status: metav1.ConditionTrue, Reason: "r", Message: "m",
				LastTransitionTime: metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))}}},
		CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), UpdatedAt: time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC),
	}
	if diff := cmp.Diff(want, j); diff != "" {
		t.Errorf("ICOS job read (-want +got):\n%s", diff)
	}
	if err := j.Validate(); err != nil {
		t.Errorf("a valid ICOS job: %v", err)
	}

	out, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"id":"5f0c…"`) || strings.Contains(string(out), `"ID"`) {
		t.Errorf("written as %s, want id", out)
	}
	for _, internal := range []string{"lease", "fence", "component", "remediation"} {
		if strings.Contains(string(out), internal) {
			t.Errorf("an ICOS job gained %q: %s", internal, out)
		}
	}
	var back model.Job
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(j, back); diff != "" {
		t.Errorf("round trip (-first +second):\n%s", diff)
	}

	// id wins over ID when a client sends both; groups and incompliances read both too.
	var both model.Job
	_ = json.Unmarshal([]byte(`{"ID":"upper","id":"lower"}`), &both)
	var g model.JobGroup
	_ = json.Unmarshal([]byte(`{"ID":"g","appName":"a","jobs":[{"ID":"j"}]}`), &g)
	var in model.Incompliance
	_ = json.Unmarshal([]byte(`{"ID":"i","policyName":"p","remediation":"patch"}`), &in)
	if both.ID != "lower" || g.ID != "g" || g.Jobs[0].ID != "j" || in.ID != "i" {
		t.Errorf("ids read: job %q, group %q, its job %q, incompliance %q", both.ID, g.ID, g.Jobs[0].ID, in.ID)
	}
}

func TestValidateNamesEveryProblem(t *testing.T) {
	cases := map[string]struct {
		v    interface{ Validate() error }
		want []string
	}{
		"group": {v: validator(func() error {
			g := &model.JobGroup{Jobs: []model.Job{
				{Type: 5, State: 1, Manifests: []model.PlainManifest{{YamlString: "x"}}},
				{Type: 12, State: 0, SubType: "grow", Orchestrator: "k8s", Targets: &model.Target{Orchestrator: "swarm"},
					Manifests: []model.PlainManifest{{}}},
				{Type: model.UpdateDeployment, State: model.Created, Remediation: &model.Remediation{Action: model.Reallocation}},
			}}
			return g.Validate()
		}), want: []string{"missing field(s): appName", "jobs[1].type", "jobs[1].state", "jobs[1].sub_type",
			"jobs[1].orchestrator", "jobs[1].targets.cluster_name", "jobs[1].targets.orchestrator",
			"jobs[1].manifests[0].yamlString", "jobs[2].sub_type"}},
		"incompliance": {v: validator(func() error {
			in := &model.Incompliance{Remediation: "reboot", CurrentValue: json.RawMessage(`{"a":1}`), Outcome: model.OutcomeRejected}
			return in.Validate()
		}), want: []string{"policyName", "remediation", "currentValue", "reason"}},
		"resource": {v: validator(func() error {
			r := &model.Resource{Conditions: []model.Condition{{Type: "Available", Status: "True"}, {Type: "Available", Status: "Yes"}, {}}}
			return r.Validate()
		}), want: []string{"conditions[1].type", "conditions[1].status", "conditions[2].type", "conditions[2].status"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := tc.v.Validate()
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q missing from:\n%v", w, err)
				}
			}
		})
	}
}

type validator func() error

func (f validator) Validate() error {
	if err := f(); err != nil && err.Error() != "" {
		return err
	}
	return nil
}

func TestSetCondition(t *testing.T) {
	r := &model.Resource{}
	t0 := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(time.Minute))
	if !r.SetCondition(model.Condition{Type: model.ConditionAvailable, Status: metav1.ConditionFalse, Reason: "Pending", LastTransitionTime: t0}) {
		t.Error("first condition: no change")
	}
	if r.SetCondition(model.Condition{Type: model.ConditionAvailable, Status: metav1.ConditionFalse, Reason: "Pending", LastTransitionTime: t1}) {
		t.Error("same status again reported a change")
	}
	r.SetCondition(model.Condition{Type: model.ConditionAvailable, Status: metav1.ConditionTrue, Reason: "Ready", LastTransitionTime: t1})
	if len(r.Conditions) != 1 || !r.Condition(model.ConditionAvailable).LastTransitionTime.Equal(&t1) || r.Conditions[0].Reason != "Ready" {
		t.Errorf("conditions %+v: want one Available, moved at %v", r.Conditions, t1)
	}
}

func TestBuckets(t *testing.T) {
	g := model.NewID()
	for i := 0; i < 100; i++ {
		if j := model.NewJobID(g); model.Bucket(j) != model.Bucket(g) || j[:2] != g[:2] {
			t.Fatalf("job id %s is not in the bucket of group %s", j, g)
		}
	}
	if model.Bucket("AB12") != 0xab || model.Bucket("ab") != 0xab {
		t.Error("hex ids are bucketed by their first byte")
	}
	if model.Bucket("policy-7") != model.Bucket("policy-7") {
		t.Error("other ids are bucketed by a stable hash")
	}
}

func TestEnums(t *testing.T) {
	if model.Created != 1 || model.Progressing != 2 || model.Finished != 3 || model.Degraded != 4 ||
		model.CreateDeployment != 5 || model.DeleteDeployment != 6 || model.UpdateDeployment != 7 || model.ReplaceDeployment != 8 {
		t.Error("the ICOS integers changed")
	}
	if model.JobState(9).Valid() || model.JobType(4).Valid() || model.SubType("grow").Valid() || model.Orchestrator("k8s").Valid() {
		t.Error("an invalid enum value passed")
	}
	if model.Progressing.String() != "Progressing" || model.ReplaceDeployment.String() != "ReplaceDeployment" {
		t.Error("enum names")
	}
}
