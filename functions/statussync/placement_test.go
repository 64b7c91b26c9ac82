package statussync

import (
	"reflect"
	"testing"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

func placedJob(id string, ty model.JobType, st model.JobState, cluster string) model.Job {
	j := model.Job{ID: id, Type: ty, State: st, Component: "web"}
	if cluster != "" {
		j.Targets = &model.Target{ClusterName: cluster, Orchestrator: model.OCM}
	}
	return j
}

// TestFollowPlacement: a cluster decided without a job gets one, a job whose cluster left the
// decision is dropped, a job awaiting a target gets the first cluster decided; an unknown
// decision and a stopped component change nothing; a component whose every job its Placement
// dropped comes back when a cluster is decided again.
func TestFollowPlacement(t *testing.T) {
	const (
		create = model.CreateDeployment
		del    = model.DeleteDeployment
	)
	tests := map[string]struct {
		jobs    []model.Job
		dropped []string
		decided []string
		known   bool
		add     []string
		drop    []string
		target  string
	}{
		"same clusters": {
			jobs:    []model.Job{placedJob("a", create, model.Finished, "c1"), placedJob("b", create, model.Finished, "c2")},
			decided: []string{"c2", "c1"}, known: true,
		},
		"a cluster joins": {
			jobs:    []model.Job{placedJob("a", create, model.Finished, "c1")},
			decided: []string{"c1", "c2"}, known: true, add: []string{"c2"},
		},
		"a cluster leaves": {
			jobs:    []model.Job{placedJob("a", create, model.Finished, "c1"), placedJob("b", model.ReplaceDeployment, model.Created, "c2")},
			decided: []string{"c1"}, known: true, drop: []string{"b"},
		},
		"a decision of no cluster drops every job": {
			jobs:  []model.Job{placedJob("a", create, model.Finished, "c1"), placedJob("b", create, model.Degraded, "c2")},
			known: true, drop: []string{"a", "b"},
		},
		"no PlacementDecision at all changes nothing": {
			jobs:    []model.Job{placedJob("a", create, model.Finished, "c1")},
			decided: nil, known: false,
		},
		"a cluster whose job is being undeployed waits for it": {
			jobs:    []model.Job{placedJob("a", create, model.Finished, "c1"), placedJob("b", del, model.Progressing, "c2")},
			dropped: []string{"b"}, decided: []string{"c1", "c2"}, known: true,
		},
		"a cluster whose job was undeployed gets a new one": {
			jobs:    []model.Job{placedJob("a", create, model.Finished, "c1"), placedJob("b", del, model.Finished, "c2")},
			dropped: []string{"b"}, decided: []string{"c1", "c2"}, known: true, add: []string{"c2"},
		},
		"a cluster a stop undeployed gets no new job while the stop goes on": {
			jobs:    []model.Job{placedJob("a", create, model.Finished, "c1"), placedJob("b", del, model.Finished, "c2")},
			decided: []string{"c1", "c2"}, known: true,
		},
		"a stopped component is left alone": {
			jobs:    []model.Job{placedJob("a", del, model.Finished, "c1"), placedJob("b", del, model.Finished, "c2")},
			dropped: []string{"b"}, decided: []string{"c1", "c2", "c3"}, known: true,
		},
		"a component its Placement emptied comes back": {
			jobs:    []model.Job{placedJob("a", del, model.Finished, "c1")},
			dropped: []string{"a"}, decided: []string{"c1"}, known: true, add: []string{"c1"},
		},
		"a job awaiting a target gets the first cluster": {
			jobs:    []model.Job{placedJob("a", create, model.Created, "")},
			decided: []string{"c2", "c1"}, known: true, target: "c2", add: []string{"c1"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dropped := map[string]bool{}
			for _, id := range tc.dropped {
				dropped[id] = true
			}
			step := followPlacement(tc.jobs, dropped, tc.decided, tc.known)
			if !reflect.DeepEqual(step.add, tc.add) || !reflect.DeepEqual(step.drop, tc.drop) {
				t.Errorf("add %v drop %v, want add %v drop %v", step.add, step.drop, tc.add, tc.drop)
			}
			got := ""
			if step.target != nil {
				got = step.targetCluster
			}
			if got != tc.target {
				t.Errorf("target %q, want %q", got, tc.target)
			}
		})
	}
}

// TestPlacedJobID: the id of the n-th job a Placement gives a component on a cluster is the
// same for every tick that computes it, differs for another n, cluster or component, and is
// in its group's bucket.
func TestPlacedJobID(t *testing.T) {
	g := model.NewID()
	a := placedJobID(g, "web", "c1", 0)
	if a != placedJobID(g, "web", "c1", 0) {
		t.Fatal("not deterministic")
	}
	for _, other := range []string{placedJobID(g, "web", "c1", 1), placedJobID(g, "web", "c2", 0), placedJobID(g, "api", "c1", 0)} {
		if other == a {
			t.Errorf("%s repeats", other)
		}
	}
	if model.Bucket(a) != model.Bucket(g) {
		t.Errorf("job %s not in the bucket of group %s", a, g)
	}
}
