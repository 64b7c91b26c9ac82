package model

import (
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestRolloutWaves(t *testing.T) {
	one, half := intstr.FromInt32(1), intstr.FromString("50%")
	cs := []string{"c3", "c1", "c2"}
	tests := map[string]struct {
		s    RolloutStrategy
		want string
	}{
		"all":                  {RolloutStrategy{}, "[[c1 c2 c3]]"},
		"progressive by one":   {RolloutStrategy{Strategy: RolloutProgressive, MaxConcurrency: &one}, "[[c1] [c2] [c3]]"},
		"progressive by 50%":   {RolloutStrategy{Strategy: RolloutProgressive, MaxConcurrency: &half}, "[[c1 c2] [c3]]"},
		"canary then the rest": {RolloutStrategy{Strategy: RolloutCanary, Canary: "c2"}, "[[c2] [c1 c3]]"},
		"canary then by one":   {RolloutStrategy{Strategy: RolloutCanary, Canary: "c2", MaxConcurrency: &one}, "[[c2] [c1] [c3]]"},
	}
	for name, tc := range tests {
		if got := fmt.Sprint(tc.s.Waves(cs)); got != tc.want {
			t.Errorf("%s: %s, want %s", name, got, tc.want)
		}
	}
}

func TestRolloutValidate(t *testing.T) {
	zero, big := intstr.FromInt32(0), intstr.FromString("150%")
	tests := map[string]struct {
		s     RolloutStrategy
		paths string
	}{
		"fine":             {RolloutStrategy{Strategy: RolloutCanary, Canary: "c1", MinSuccessTime: "5s"}, ""},
		"unknown":          {RolloutStrategy{Strategy: "waves"}, "strategy"},
		"progressive bad":  {RolloutStrategy{Strategy: RolloutProgressive, MaxConcurrency: &zero, MinSuccessTime: "-1s"}, "maxConcurrency minSuccessTime"},
		"percentage":       {RolloutStrategy{Strategy: RolloutProgressive, MaxConcurrency: &big}, "maxConcurrency"},
		"no concurrency":   {RolloutStrategy{Strategy: RolloutProgressive}, "maxConcurrency"},
		"canary elsewhere": {RolloutStrategy{Strategy: RolloutCanary, Canary: "c9"}, "canary"},
		"canary missing":   {RolloutStrategy{Strategy: RolloutCanary}, "canary"},
	}
	for name, tc := range tests {
		err := tc.s.Validate([]string{"c1", "c2"})
		for _, p := range strings.Fields(tc.paths) {
			if err == nil || !strings.Contains(err.Error(), p) {
				t.Errorf("%s: %v does not name %s", name, err, p)
			}
		}
		if tc.paths == "" && err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestPlanRollout: a change is planned in waves only under a waved strategy and over two
// clusters or more; a canary the change does not touch (a remediation of a component that
// does not run there) gives way to the first of its clusters.
func TestPlanRollout(t *testing.T) {
	on := func(id, cluster string) Job {
		return Job{ID: id, Targets: &Target{ClusterName: cluster}}
	}
	canary := &RolloutStrategy{Strategy: RolloutCanary, Canary: "cluster1"}
	for name, tc := range map[string]struct {
		s     *RolloutStrategy
		jobs  []Job
		waves string
	}{
		"no strategy":      {jobs: []Job{on("a", "cluster1"), on("b", "cluster2")}},
		"all":              {s: &RolloutStrategy{Strategy: RolloutAll}, jobs: []Job{on("a", "cluster1"), on("b", "cluster2")}},
		"one cluster":      {s: canary, jobs: []Job{on("a", "cluster1")}},
		"canary first":     {s: canary, jobs: []Job{on("b", "cluster2"), on("a", "cluster1"), on("c", "cluster3")}, waves: "[a] [b c]"},
		"canary untouched": {s: canary, jobs: []Job{on("c", "cluster3"), on("b", "cluster2")}, waves: "[b] [c]"},
		"no target":        {s: canary, jobs: []Job{on("a", "cluster1"), {ID: "x"}}},
	} {
		t.Run(name, func(t *testing.T) {
			p := PlanRollout("r", "remediation", tc.s, tc.jobs)
			got := ""
			if p != nil {
				for i, w := range p.Waves {
					if i > 0 {
						got += " "
					}
					got += fmt.Sprint(w.Jobs)
				}
				if tc.s.Canary != "cluster1" {
					t.Errorf("planning changed the group's strategy: %+v", tc.s)
				}
			}
			if got != tc.waves {
				t.Errorf("waves %q, want %q", got, tc.waves)
			}
		})
	}
}

// TestRolloutWithout: a change's jobs that did not take it leave its rollout, which never
// waits for them; a wave left empty loses its clusters (dropped when it is a later one); a
// rollout left with no job is complete.
func TestRolloutWithout(t *testing.T) {
	one := intstr.FromInt32(1)
	s := RolloutStrategy{Strategy: RolloutProgressive, MaxConcurrency: &one}
	r := NewRollout("r", "restart", s, map[string]string{"a": "c1", "b": "c2", "c": "c3"}, map[string]uint64{"a": 1, "b": 2, "c": 3})
	got := r.Without([]string{"b"})
	if len(got.Waves) != 2 || got.Waves[1].Jobs[0] != "c" || strings.Join(got.Pending, ",") != "c1,c3" || got.Fences["b"] != 0 || got.Phase != RolloutRolling {
		t.Errorf("without a later wave's job: %+v", got)
	}
	got = r.Without([]string{"a"})
	if len(got.Waves) != 3 || len(got.Waves[0].Jobs) != 0 || len(got.Waves[0].Clusters) != 0 || got.Phase != RolloutRolling {
		t.Errorf("without the current wave's job: %+v", got)
	}
	got = r.Without([]string{"a", "b", "c"})
	if got.Phase != RolloutComplete || len(got.Pending) != 0 || got.Active() {
		t.Errorf("without every job: %+v", got)
	}
	if len(r.Waves) != 3 || r.Phase != RolloutRolling || len(r.Waves[1].Jobs) != 1 {
		t.Errorf("Without changed the rollout it was called on: %+v", r)
	}
}
