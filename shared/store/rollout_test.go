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
