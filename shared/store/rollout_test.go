package store_test

import (
	"errors"
	"testing"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// TestRolloutHold: a group created with a rollout holds the jobs of its later waves — the
// promote script refuses them, they are not executable — until AdvanceRollout releases them
// in the same step as it writes the rollout, compare-and-set: a second advance from the same
// read (a racing tick) is refused and releases nothing.
func TestRolloutHold(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{})
		a, c := newJob("web", true), newJob("web", true)
		c.Targets = &model.Target{ClusterName: "cluster2", Orchestrator: model.OCM}
		g := newGroup(a, c)
		g.ID = model.NewID()
		g.Jobs[0].ID, g.Jobs[1].ID = model.NewJobID(g.ID), model.NewJobID(g.ID)
		strategy := model.RolloutStrategy{Strategy: model.RolloutCanary, Canary: g.Jobs[0].Targets.ClusterName}
		g.Rollout = model.NewRollout("r1", "create", strategy, map[string]string{
			g.Jobs[0].ID: g.Jobs[0].Targets.ClusterName, g.Jobs[1].ID: "cluster2"}, nil)
		if err := s.CreateGroup(ctx, g, "test"); err != nil {
			t.Fatal(err)
		}
		held := g.Jobs[1].ID
		if exec := ids(must(s.ExecutableJobs(ctx, model.OCM, hubA)).in(t)); contains(exec, held) || !contains(exec, g.Jobs[0].ID) {
			t.Errorf("executable %v: want the first wave's job only", exec)
		}
		if _, err := s.Promote(ctx, held, hubA, "x1"); !errors.Is(err, store.ErrHeld) {
			t.Fatalf("promote of a held job: %v", err)
		}
		verifyIndexes(t, b.client, s.Options().Prefix) // a held job is out of the ready index
		if ids := must(s.RollingGroups(ctx)).in(t); len(ids) != 1 || ids[0] != g.ID {
			t.Errorf("rolling groups %v", ids)
		}
		read, err := s.GetRollout(ctx, g.ID)
		if err != nil || read.Rollout == nil || read.Rollout.ID != "r1" {
			t.Fatalf("rollout %+v: %v", read.Rollout, err)
		}
		next := *read.Rollout
		next.Wave, next.Phase = 1, model.RolloutComplete
		if n, err := s.AdvanceRollout(ctx, read, &next, []string{held}); err != nil || n != 1 {
			t.Fatalf("advance: %d, %v", n, err)
		}
		if _, err := s.AdvanceRollout(ctx, read, &next, []string{held}); !errors.Is(err, store.ErrRolloutChanged) {
			t.Errorf("a second advance from the same read: %v", err)
		}
		if exec := ids(must(s.ExecutableJobs(ctx, model.OCM, hubA)).in(t)); !contains(exec, held) {
			t.Errorf("executable %v: the released job is missing", exec)
		}
		if _, err := s.Promote(ctx, held, hubA, "x1"); err != nil {
			t.Errorf("promote of the released job: %v", err)
		}
		if ids := must(s.RollingGroups(ctx)).in(t); len(ids) != 0 {
			t.Errorf("rolling groups after the rollout completed: %v", ids)
		}
		if got, err := s.GetGroup(ctx, g.ID); err != nil || got.Rollout == nil || got.Rollout.Phase != model.RolloutComplete {
			t.Errorf("group's rollout: %+v (%v)", got, err)
		}
	})
}

// TestStartRolloutAndAddHeldJobs: a change that starts a rollout on an existing group (an
// update adding a cluster, a remediation, a restart) writes it unless another one is rolling,
// and a redelivered order gets back the rollout its first delivery started; jobs added under
// it are held when their wave is a later one, and released by AdvanceRollout.
func TestStartRolloutAndAddHeldJobs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{})
		g := newGroup(newJob("web", true))
		g.ID = model.NewID()
		g.Jobs[0].ID = model.NewJobID(g.ID)
		if err := s.CreateGroup(ctx, g, "test"); err != nil {
			t.Fatal(err)
		}
		added := newJob("web", true)
		added.ID = model.NewJobID(g.ID)
		added.Targets = &model.Target{ClusterName: "zz-cluster", Orchestrator: model.OCM}
		strategy := &model.RolloutStrategy{Strategy: model.RolloutCanary, Canary: g.Jobs[0].Targets.ClusterName}
		plan := model.PlanRollout("u1", "update", strategy, []model.Job{g.Jobs[0], added})
		if plan == nil || !plan.HeldBy(added.ID) || plan.HeldBy(g.Jobs[0].ID) {
			t.Fatalf("plan %+v", plan)
		}
		r, ok, err := s.StartRollout(ctx, g.ID, plan)
		if err != nil || !ok || r.ID != "u1" {
			t.Fatalf("start: %+v %v %v", r, ok, err)
		}
		again := *plan
		again.Fences = map[string]uint64{"changed": 9}
		if r, ok, err := s.StartRollout(ctx, g.ID, &again); err != nil || !ok || r.Fences["changed"] != 0 {
			t.Errorf("the same rollout started again: %+v %v %v (want the stored one back)", r, ok, err)
		}
		other := model.PlanRollout("u2", "update", strategy, []model.Job{g.Jobs[0], added})
		if r, ok, err := s.StartRollout(ctx, g.ID, other); err != nil || ok || r.ID != "u1" {
			t.Errorf("another rollout while u1 rolls: %+v %v %v", r, ok, err)
		}
		if err := s.AddHeldJobs(ctx, g.ID, []model.Job{added}, "test", plan); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Promote(ctx, added.ID, hubA, "x1"); !errors.Is(err, store.ErrHeld) {
			t.Fatalf("promote of a held added job: %v", err)
		}
		verifyIndexes(t, b.client, s.Options().Prefix)
		read, err := s.GetRollout(ctx, g.ID)
		if err != nil || read.Rollout == nil || read.Rollout.ID != "u1" || read.Rollout.Wave != 0 {
			t.Fatalf("adding the jobs changed the rollout: %+v %v", read.Rollout, err)
		}
		next := *read.Rollout
		next.Wave = 1
		if n, err := s.AdvanceRollout(ctx, read, &next, []string{added.ID}); err != nil || n != 1 {
			t.Fatalf("advance: %d %v", n, err)
		}
		if _, err := s.Promote(ctx, added.ID, hubA, "x1"); err != nil {
			t.Errorf("promote of the released job: %v", err)
		}
	})
}

// TestIncomplianceCoversJobs: an incompliance settled for several jobs (every cluster of a
// component) names them all, the first as its job_id; one settled for one job names it in
// job_ids too, so a reader looks in one place.
func TestIncomplianceCoversJobs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{})
		for _, id := range []string{"inc-every", "inc-one"} {
			in := &model.Incompliance{ID: id, PolicyName: "cpu", Remediation: model.ScaleOut,
				Subject: model.Subject{AppInstance: "g1", AppComponent: "web"}}
			must(s.RecordIncompliance(ctx, in)).in(t)
		}
		if ok := must(s.SetIncomplianceOutcomeJobs(ctx, "inc-every", model.OutcomeApplied, "", []string{"job-1", "job-2"})).in(t); !ok {
			t.Error("settling reported no change")
		}
		if ok := must(s.SetIncomplianceOutcomeJobs(ctx, "inc-every", model.OutcomeApplied, "", []string{"job-1", "job-2"})).in(t); ok {
			t.Error("settling the same way twice reported a change")
		}
		got := must(s.GetIncompliance(ctx, "inc-every")).in(t)
		if got.JobID != "job-1" || len(got.JobIDs) != 2 || got.JobIDs[1] != "job-2" || !got.Covers("job-2") || got.Covers("job-3") {
			t.Errorf("incompliance covering two jobs read back as %+v", got)
		}
		must(s.SetIncomplianceOutcomeJobs(ctx, "inc-one", model.OutcomeApplied, "", []string{"job-1"})).in(t)
		if got := must(s.GetIncompliance(ctx, "inc-one")).in(t); got.JobID != "job-1" || len(got.JobIDs) != 1 {
			t.Errorf("incompliance covering one job read back as %+v", got)
		}
	})
}

// TestDropFromRollout: the jobs of a change that did not take it leave the rollout it
// started; a rollout left with no job is complete and leaves the rolling index, so it never
// blocks the group's next change; another rollout is left alone.
func TestDropFromRollout(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{})
		a, c := newJob("web", true), newJob("web", true)
		c.Targets = &model.Target{ClusterName: "zz-cluster", Orchestrator: model.OCM}
		g := newGroup(a, c)
		g.ID = model.NewID()
		g.Jobs[0].ID, g.Jobs[1].ID = model.NewJobID(g.ID), model.NewJobID(g.ID)
		if err := s.CreateGroup(ctx, g, "test"); err != nil {
			t.Fatal(err)
		}
		strategy := &model.RolloutStrategy{Strategy: model.RolloutCanary, Canary: g.Jobs[0].Targets.ClusterName}
		plan := model.PlanRollout("restart-1", "restart", strategy, g.Jobs)
		if _, ok, err := s.StartRollout(ctx, g.ID, plan); err != nil || !ok {
			t.Fatalf("start: %v %v", ok, err)
		}
		if err := s.DropFromRollout(ctx, g.ID, "another", []string{g.Jobs[0].ID}); err != nil {
			t.Fatal(err)
		}
		if r := must(s.GetRollout(ctx, g.ID)).in(t).Rollout; len(r.Waves[0].Jobs) != 1 {
			t.Errorf("dropping from another rollout changed this one: %+v", r)
		}
		if err := s.DropFromRollout(ctx, g.ID, "restart-1", []string{g.Jobs[0].ID, g.Jobs[1].ID}); err != nil {
			t.Fatal(err)
		}
		if r := must(s.GetRollout(ctx, g.ID)).in(t).Rollout; r.Phase != model.RolloutComplete || r.Active() {
			t.Errorf("a rollout no job took: %+v", r)
		}
		if ids := must(s.RollingGroups(ctx)).in(t); len(ids) != 0 {
			t.Errorf("rolling groups %v", ids)
		}
		next := model.PlanRollout("update-2", "update", strategy, g.Jobs)
		if _, ok, err := s.StartRollout(ctx, g.ID, next); err != nil || !ok {
			t.Errorf("the next change's rollout: %v %v", ok, err)
		}
	})
}
