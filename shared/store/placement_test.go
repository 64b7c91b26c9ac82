package store_test

import (
	"errors"
	"testing"

	"github.com/ocm-jobs/ocm-jobs/shared/store"
)

// TestPlacementBinding: binding a component puts its group in the index the tick reads, a
// write from a stale read is refused (two ticks racing), unbinding every component takes the
// group out, and deleting a bound group takes it out in the same step; the indexes stay
// consistent throughout.
func TestPlacementBinding(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, store.Options{})
		g := newGroup(newJob("web", true), newJob("api", true))
		if err := s.CreateGroup(ctx, g, "test"); err != nil {
			t.Fatal(err)
		}
		if err := s.BindPlacements(ctx, g.ID, map[string]string{"web": "ns/edge", "api": "ns/edge"}, nil); err != nil {
			t.Fatal(err)
		}
		if ids := must(s.PlacementGroups(ctx)).in(t); len(ids) != 1 || ids[0] != g.ID {
			t.Errorf("placement groups %v", ids)
		}
		verifyIndexes(t, b.client, s.Options().Prefix)

		read, err := s.GetPlacement(ctx, g.ID)
		if err != nil || read.Binding.Bound["web"] != "ns/edge" {
			t.Fatalf("binding %+v: %v", read.Binding, err)
		}
		next := read.Binding
		next.Dropped = []string{g.Jobs[0].ID}
		if err := s.WritePlacement(ctx, read, next); err != nil {
			t.Fatal(err)
		}
		if err := s.WritePlacement(ctx, read, next); !errors.Is(err, store.ErrPlacementChanged) {
			t.Errorf("a second write from the same read: %v", err)
		}

		if err := s.BindPlacements(ctx, g.ID, nil, []string{"web", "api"}); err != nil {
			t.Fatal(err)
		}
		if ids := must(s.PlacementGroups(ctx)).in(t); len(ids) != 0 {
			t.Errorf("placement groups after unbinding: %v", ids)
		}
		verifyIndexes(t, b.client, s.Options().Prefix)

		if err := s.BindPlacements(ctx, g.ID, map[string]string{"web": "ns/edge"}, nil); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteGroup(ctx, g.ID, "test"); err != nil {
			t.Fatal(err)
		}
		if ids := must(s.PlacementGroups(ctx)).in(t); len(ids) != 0 {
			t.Errorf("placement groups after the group was deleted: %v", ids)
		}
		verifyIndexes(t, b.client, s.Options().Prefix)
		if err := s.BindPlacements(ctx, g.ID, map[string]string{"web": "ns/other"}, nil); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("binding a deleted group: %v", err)
		}
	})
}
