package statussync

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

func rolloutJob(id, cluster string, st model.JobState, fence uint64) *model.Job {
	return &model.Job{ID: id, State: st, Fence: fence, Component: "web",
		Targets: &model.Target{ClusterName: cluster, Orchestrator: model.OCM}}
}

// TestStepRollout: the next wave starts only after the current one was Finished for
// minSuccessTime; a degraded job halts (and rolls the clusters done back when asked); jobs not
// promoted since the change started do not count.
func TestStepRollout(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mc := intstr.FromInt32(1)
	plan := func(rollback bool) *model.Rollout {
		s := model.RolloutStrategy{Strategy: model.RolloutProgressive, MaxConcurrency: &mc, MinSuccessTime: "10s", RollbackOnFailure: rollback}
		return model.NewRollout("r1", "update", s, map[string]string{"a": "c1", "b": "c2", "c": "c3"}, map[string]uint64{"a": 1, "b": 1, "c": 1})
	}
	since := func(r *model.Rollout, at time.Time) *model.Rollout { r.AvailableSince = &at; return r }
	at := func(r *model.Rollout, wave int) *model.Rollout {
		r.Wave = wave
		r.Done = []string{"c1"}
		r.Pending = []string{"c2", "c3"}
		return r
	}
	tests := map[string]struct {
		r        *model.Rollout
		jobs     []*model.Job
		now      time.Time
		phase    string
		wave     int
		release  string
		rollback string
		since    bool
	}{
		"wave 1 still applying": {r: plan(false), jobs: []*model.Job{rolloutJob("a", "c1", model.Progressing, 2)},
			now: t0, phase: model.RolloutRolling},
		"finished before the change does not count": {r: plan(false), jobs: []*model.Job{rolloutJob("a", "c1", model.Finished, 1)},
			now: t0, phase: model.RolloutRolling},
		"wave 1 Available: the clock starts": {r: plan(false), jobs: []*model.Job{rolloutJob("a", "c1", model.Finished, 2)},
			now: t0, phase: model.RolloutRolling, since: true},
		"not long enough": {r: since(plan(false), t0), jobs: []*model.Job{rolloutJob("a", "c1", model.Finished, 2)},
			now: t0.Add(9 * time.Second), phase: model.RolloutRolling, since: true},
		"long enough: wave 2 released": {r: since(plan(false), t0), jobs: []*model.Job{rolloutJob("a", "c1", model.Finished, 2)},
			now: t0.Add(10 * time.Second), phase: model.RolloutRolling, wave: 1, release: "b"},
		"degraded halts, nothing released": {r: at(plan(false), 1), jobs: []*model.Job{rolloutJob("a", "c1", model.Finished, 2), rolloutJob("b", "c2", model.Degraded, 2)},
			now: t0, phase: model.RolloutHalted, wave: 1},
		"degraded with rollback rolls the done clusters back": {r: at(plan(true), 1), jobs: []*model.Job{rolloutJob("a", "c1", model.Finished, 2), rolloutJob("b", "c2", model.Degraded, 2)},
			now: t0, phase: model.RolloutRollingBack, wave: 1, rollback: "a"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			jobs := map[string]*model.Job{}
			for _, j := range tc.jobs {
				jobs[j.ID] = j
			}
			st := stepRollout(tc.r, jobs, tc.now)
			if st.next.Phase != tc.phase || st.next.Wave != tc.wave || strings.Join(st.release, ",") != tc.release ||
				strings.Join(st.rollback, ",") != tc.rollback || (st.next.AvailableSince != nil) != tc.since {
				t.Errorf("step: phase %s wave %d release %v rollback %v since %v", st.next.Phase, st.next.Wave, st.release, st.rollback, st.next.AvailableSince)
			}
		})
	}
}
